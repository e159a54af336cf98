"""Property-based fuzzing of every input boundary (hypothesis).

The property, for each boundary: an input either parses to a valid object or raises the
documented error type (``SceneError`` for scene/constraint/plan data, ``ValueError`` for
PointCloud2 messages) with a non-empty, one-line message that names the field. Never another
exception, never a hang.

Examples per boundary: ``ROBOT_PACKER_FUZZ_EXAMPLES`` (default 2000; ``make fuzz`` runs 50000).
See docs/fuzz.md for the runs made and the crashes found.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from robot_packer import cli
from robot_packer.problem import (ID_PATTERN, PackingProblem, Plan, SceneError, load_plan,
                                  load_scene, parse_constraints, problem_from_dict)

EXAMPLES = int(os.environ.get("ROBOT_PACKER_FUZZ_EXAMPLES", "2000"))
HANG_S = 30  # one example taking this long is a hang, not a slow machine
FUZZ = settings(max_examples=EXAMPLES, deadline=timedelta(seconds=10), database=None,
                print_blob=True, suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.data_too_large,
                                                        HealthCheck.filter_too_much])
FEW = settings(FUZZ, max_examples=min(EXAMPLES, 12))
QUARTER = settings(FUZZ, max_examples=max(EXAMPLES // 4, 10))  # oracles beside a main property

# ----------------------------------------------------------------------------- helpers


class Hang(Exception):
    """Raised by the alarm when one example runs past HANG_S."""


@contextlib.contextmanager
def no_hang(seconds: int = HANG_S):
    """Fail (instead of blocking the suite) when the body runs longer than ``seconds``."""
    def alarm(signum, frame):
        raise Hang(f"input boundary did not return within {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def check_error(exc: BaseException, types=(SceneError,), field_hint: str | None = None) -> None:
    """The documented error type, a non-empty single-line message naming a field."""
    assert isinstance(exc, types), f"undocumented exception {type(exc).__name__}: {exc!r}"
    msg = str(exc)
    assert msg.strip(), f"empty message from {type(exc).__name__}"
    assert len(msg.splitlines()) == 1 and "\n" not in msg and "\r" not in msg, \
        f"message is not one line: {msg!r}"
    if field_hint is not None:
        assert field_hint in msg, f"message does not name {field_hint!r}: {msg!r}"
    else:
        head, sep, _ = msg.partition(": ")
        assert sep and head.strip(), f"message does not start with 'field: ': {msg!r}"


def outcome(fn, *args, types=(SceneError,)):
    """Run ``fn``; return its value, or None after checking a documented rejection."""
    try:
        with no_hang():
            return fn(*args)
    except Hang:
        raise
    except Exception as exc:  # noqa: BLE001 - the property under test
        check_error(exc, types)
        return None


def assert_valid_problem(p: PackingProblem) -> None:
    """Invariants of an accepted scene: what every later stage relies on."""
    assert isinstance(p, PackingProblem) and p.items
    assert np.all(np.isfinite(p.container.size)) and np.all(p.container.size > 0)
    assert np.all(np.isfinite(p.container.pose)) and p.container.pose.shape == (4,)
    assert math.isfinite(p.container.wall) and p.container.wall >= 0
    ids = [it.id for it in p.items]
    assert len(set(ids)) == len(ids)
    for it in p.items:
        assert ID_PATTERN.fullmatch(it.id)
        assert it.size.shape == (3,) and np.all(np.isfinite(it.size)) and np.all(it.size > 0)
        assert it.pose is None or (it.pose.shape == (4,) and np.all(np.isfinite(it.pose)))
        assert isinstance(it.mass, float) and math.isfinite(it.mass) and it.mass > 0
        assert isinstance(it.fragile, bool)
    for con in p.constraints:
        assert all(isinstance(a, str) for a in con.args)
    for flag in (p.rules.heavy_below, p.rules.gripper_clear, p.rules.stable):
        assert isinstance(flag, bool)


# ----------------------------------------------------------------------------- strategies

HUGE = [10 ** 400, -(10 ** 400), 2 ** 63, 1e308, -1e308, 5e-324]
ODD_STRINGS = ["", " ", "0.1", "nan", "inf", "-1", "on", "yes", "true", "null", "~", "a\nb",
               "\u00e9t\u00e9", "\u2028", "\x00", "a b", "-", "_", "x" * 300, "\U0001F4E6",
               "../../etc/passwd", "obj1", "cereal", "${HOME}", "!!python/object"]
leaves = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-10, max_value=10), st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.floats(min_value=-1.0, max_value=1.0),
    st.sampled_from(ODD_STRINGS), st.text(max_size=8))
keys = st.one_of(st.sampled_from(["id", "size", "pose", "mass", "fragile", "cloud", "mesh",
                                  "label", "container", "objects", "constraints", "rules",
                                  "gripper", "wall", "type", "finger", "status", "placements",
                                  "Size", "size ", "extra"]), st.text(max_size=6))
junk = st.recursive(leaves, lambda c: st.lists(c, max_size=4)
                    | st.dictionaries(keys, c, max_size=4), max_leaves=8)
ids = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True),
                st.sampled_from(["a", "b", "c"]))
bad_ids = st.one_of(st.sampled_from(["", "a b", "a\n", "\u00e9", "a.b", "a/b", "a:b", "\U0001F4E6",
                                     "a\x00"]), st.integers(), st.none(), st.booleans())
sizes = st.lists(st.floats(min_value=0.01, max_value=0.2), min_size=3, max_size=3)
poses = st.lists(st.floats(min_value=-1.0, max_value=1.0), min_size=4, max_size=4)
RULES = ["heavy_below", "gripper_clear", "stable"]
RELATIONS2 = ["left_of", "right_of", "in_front_of", "behind", "on", "close_to", "away_from",
              "aligned_x", "aligned_y", "cfree"]


@st.composite
def constraint_lists(draw, names):
    """A near-valid constraint list over ``names`` (may contain junk entries)."""
    out = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 9))
        if kind < 5 and len(names) >= 2:
            a, b = draw(st.permutations(names))[:2]
            out.append([draw(st.sampled_from(RELATIONS2)), a, b])
        elif kind < 7:
            out.append(["region", draw(st.sampled_from(names)),
                        draw(st.sampled_from(["left", "right", "front", "back", "center",
                                              "middle", ""]))])
        elif kind == 7:
            out.append(["in", draw(st.sampled_from(names))])
        else:
            out.append(draw(junk))
    return out


@st.composite
def valid_scenes(draw):
    """A valid scene mapping (sizes, no clouds)."""
    n = draw(st.integers(1, 4))
    names = draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    objects = []
    for name in names:
        o = {"id": name, "size": draw(sizes), "pose": draw(poses)}
        if draw(st.booleans()):
            o["mass"] = draw(st.floats(min_value=0.01, max_value=20.0))
        if draw(st.booleans()):
            o["fragile"] = draw(st.booleans())
        objects.append(o)
    scene = {"container": {"size": [0.4, 0.3, 0.2]}, "objects": objects}
    if draw(st.booleans()):
        scene["container"]["pose"] = draw(poses)
        scene["container"]["wall"] = draw(st.floats(min_value=0.0, max_value=0.05))
    if draw(st.booleans()):
        scene["rules"] = {k: draw(st.booleans()) for k in
                          draw(st.sets(st.sampled_from(RULES)))}
    if draw(st.booleans()):
        scene["gripper"] = draw(st.sampled_from([
            {"type": "parallel", "max_opening": 0.08, "finger": [0.02, 0.01, 0.05]},
            {"type": "suction", "cup_radius": 0.02}, {}]))
    if draw(st.booleans()):
        scene["constraints"] = [c for c in draw(constraint_lists(names))
                                if isinstance(c, list) and c
                                and c[0] in RELATIONS2 + ["region", "in"]
                                and all(isinstance(x, str) for x in c)
                                and (c[0] != "region" or c[2] in ("left", "right", "front", "back",
                                                                  "center"))]
    return scene


def _paths(node, prefix=()):
    """Every (path, value) inside a JSON-like tree."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(tree, path, value):
    if not path:
        return value
    node = tree
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return tree


@st.composite
def mutated(draw, base_strategy, cloud_values=()):
    """A valid tree with 1-3 random structural mutations (replace, delete, add key, wrap)."""
    tree = draw(base_strategy)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(tree))
        path, value = draw(st.sampled_from(paths))
        op = draw(st.integers(0, 5))
        if op == 0:  # replace by junk
            tree = _set(tree, path, draw(junk))
        elif op == 1 and path:  # delete
            parent = tree
            for p in path[:-1]:
                parent = parent[p]
            del parent[path[-1]]
        elif op == 2 and isinstance(value, dict):  # add a key
            value[draw(keys)] = draw(junk)
        elif op == 3:  # wrap / unwrap
            tree = _set(tree, path, draw(st.sampled_from([[value], {"value": value}, [value] * 2])))
        elif op == 4 and cloud_values and isinstance(value, dict) and "id" in value:
            value.pop("size", None)
            value["cloud"] = draw(st.sampled_from(cloud_values))
        else:  # a leaf of the wrong kind / value
            tree = _set(tree, path, draw(leaves))
    return tree


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Scratch folder with cloud files of every bad kind (and one good one)."""
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    box = rng.uniform(-0.05, 0.05, (400, 3)) + [0.3, 0.2, 0.05]
    np.save(d / "good.npy", box)
    np.save(d / "empty.npy", np.zeros((0, 3)))
    np.save(d / "nan.npy", np.full((50, 3), np.nan))
    np.save(d / "inf.npy", np.where(rng.random((50, 3)) < 0.5, np.inf, 1.0))
    np.save(d / "one.npy", np.ones((1, 3)))
    np.save(d / "flat.npy", np.c_[rng.random((50, 2)), np.zeros(50)])
    np.save(d / "shape5.npy", np.ones((10, 5)))
    np.save(d / "strings.npy", np.array([["a", "b", "c"]]))
    np.save(d / "objects.npy", np.array([[{}, 1, 2]], dtype=object), allow_pickle=True)
    np.save(d / "huge.npy", np.full((20, 3), 1e300))
    (d / "junk.ply").write_bytes(rng.bytes(300))
    (d / "junk.pcd").write_text("VERSION .7\nFIELDS x y z\nPOINTS -5\nDATA ascii\n1 2\n")
    (d / "junk.npy").write_bytes(b"\x93NUMPY" + rng.bytes(100))
    (d / "text.txt").write_text("1 2 3\n")
    (d / "folder.ply").mkdir()
    return d


CLOUD_VALUES = ["good.npy", "empty.npy", "nan.npy", "inf.npy", "one.npy", "flat.npy",
                "shape5.npy", "strings.npy", "objects.npy", "huge.npy", "junk.ply", "junk.pcd",
                "junk.npy", "text.txt", "folder.ply", "missing.ply", "missing.npy", "", ".",
                "/nonexistent/x.pcd", 7, None, ["good.npy"]]


# ----------------------------------------------------------------------------- scene files


@settings(FUZZ, max_examples=max(EXAMPLES // 10, 10))
@given(scene=valid_scenes())
def test_valid_scenes_load(scene):
    """Sanity of the generator: unmutated scenes always load (else the oracle below is weak)."""
    assert_valid_problem(problem_from_dict(scene))


@FUZZ
@given(data=st.one_of(mutated(valid_scenes(), CLOUD_VALUES), junk))
def test_scene_mapping_parses_or_raises_scene_error(workdir, data):
    result = outcome(problem_from_dict, data, workdir)
    if result is not None:
        assert_valid_problem(result)


BAD_VALUES = {  # field -> values that must be rejected
    "size": [[0.1, 0.1], [0.1, 0.1, 0.0], [0.1, -0.1, 0.1], [float("nan"), 0.1, 0.1],
             [0.1, float("inf"), 0.1], [True, 0.1, 0.1], ["0.1", 0.1, 0.1], [10 ** 400, 1, 1],
             "0.1 0.1 0.1", None, {"x": 0.1}, [[0.1, 0.1, 0.1]]],
    "pose": [[0, 0, 0], [0, 0, 0, float("nan")], [0, 0, 0, False], [0, 0, 10 ** 400, 0], "0 0 0 0"],
    "mass": [0, -1, float("nan"), float("inf"), True, "1", [1], 10 ** 400, None],
    "fragile": [0, 1, "true", "yes", None, [True]],
}


@QUARTER
@given(scene=valid_scenes(), field=st.sampled_from(sorted(BAD_VALUES)), data=st.data())
def test_known_bad_object_fields_are_rejected_naming_the_field(scene, field, data):
    i = data.draw(st.integers(0, len(scene["objects"]) - 1))
    scene["objects"][i][field] = data.draw(st.sampled_from(BAD_VALUES[field]))
    with pytest.raises(SceneError) as info:
        problem_from_dict(scene)
    check_error(info.value, field_hint=f"objects[{i}].{field}")


@QUARTER
@given(scene=valid_scenes(), data=st.data())
def test_known_bad_ids_and_keys_are_rejected(scene, data):
    i = data.draw(st.integers(0, len(scene["objects"]) - 1))
    kind = data.draw(st.sampled_from(["id", "dup", "key", "container", "constraint"]))
    if kind == "id":
        scene["objects"][i]["id"], hint = data.draw(bad_ids), f"objects[{i}].id"
    elif kind == "dup":
        scene["objects"].append(dict(scene["objects"][i]))
        hint = "id"
    elif kind == "key":
        key = data.draw(st.text(min_size=1, max_size=6).filter(
            lambda k: k not in ("id", "size", "cloud", "pose", "mass", "fragile", "mesh", "label")))
        scene["objects"][i][key], hint = 1, f"objects[{i}]."
    elif kind == "container":
        scene["container"]["size"] = data.draw(st.sampled_from(BAD_VALUES["size"]))
        hint = "container.size"
    else:
        scene["constraints"] = [data.draw(st.sampled_from([
            ["left_of", scene["objects"][i]["id"]], ["on", "no_such_id", scene["objects"][i]["id"]],
            ["region", scene["objects"][i]["id"], "middle"], ["teleport", "a", "b"],
            ["left_of", scene["objects"][i]["id"], scene["objects"][i]["id"]], [], [1, 2]]))]
        hint = "constraints[0]"
    with pytest.raises(SceneError) as info:
        problem_from_dict(scene)
    check_error(info.value, field_hint=hint)


def _text_mutation(draw, text: str) -> str:
    """Byte-level damage: truncate, delete, insert, or replace a span."""
    if not text:
        return draw(st.text(max_size=40))
    i = draw(st.integers(0, len(text)))
    j = draw(st.integers(i, min(len(text), i + 20)))
    op = draw(st.integers(0, 3))
    ins = draw(st.sampled_from(["", ":", "-", "[", "]", "{", "}", ",", "\n", " ", "\t", "'", '"',
                                "&a", "*a", "!!binary", "nan", ".inf", "1e999", "\x00", "%",
                                "\ufeff", "\\", "#"]) | st.text(max_size=5))
    return [text[:i], text[:i] + text[j:], text[:i] + ins + text[i:], text[:i] + ins + text[j:]][op]


@st.composite
def scene_texts(draw):
    """(suffix, text): a dumped near-valid scene with textual damage, or random text."""
    suffix = draw(st.sampled_from([".yaml", ".json"]))
    scene = draw(st.one_of(valid_scenes(), mutated(valid_scenes())))
    try:
        text = (json.dumps(scene) if suffix == ".json"
                else yaml.dump(scene, Dumper=yaml.CSafeDumper,
                               default_flow_style=draw(st.booleans())))
    except (TypeError, ValueError, yaml.YAMLError):
        text = repr(scene)
    for _ in range(draw(st.integers(0, 2))):
        text = _text_mutation(draw, text)
    if draw(st.integers(0, 9)) == 0:
        text = draw(st.sampled_from([
            "", "[" * 600, "{" * 600, "{a: " * 3000, "a: &x [*x, *x]", "- - - -",
            "!!python/object/apply:os.system ['true']", "\ufeff{}", "container: 1e999",
            "objects: [" + "{}," * 500 + "]"]))
    return suffix, text


@FUZZ
@given(item=scene_texts(), raw=st.booleans(), junk_bytes=st.binary(max_size=40))
def test_scene_files_load_or_raise_scene_error(workdir, item, raw, junk_bytes):
    suffix, text = item
    path = workdir / f"scene{suffix}"
    if raw and junk_bytes:  # arbitrary bytes, usually not UTF-8
        path.write_bytes(junk_bytes)
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = outcome(load_scene, path)
    if result is not None:
        assert_valid_problem(result)


@pytest.mark.parametrize("cloud", CLOUD_VALUES, ids=[repr(c) for c in CLOUD_VALUES])
def test_every_bad_cloud_file_is_one_scene_error(workdir, cloud):
    """Each kind of bad ``cloud:`` entry, deterministically (the random test samples them)."""
    scene = {"container": {"size": [0.4, 0.3, 0.2]},
             "objects": [{"id": "a", "cloud": cloud, "pose": [0.3, 0.2, 0.05, 0.0]}]}
    result = outcome(problem_from_dict, scene, workdir)
    if result is not None:
        assert_valid_problem(result)


@pytest.mark.parametrize("name", ["missing.yaml", "missing.json", "folder.ply", "."])
def test_unreadable_scene_paths(workdir, name):
    with pytest.raises(SceneError) as info:
        load_scene(workdir / name)
    check_error(info.value)


# ----------------------------------------------------------------------------- constraints topic

CON_IDS = {"a", "b", "c", "obj1", "obj2"}


@FUZZ
@given(data=st.one_of(constraint_lists(sorted(CON_IDS)),
                      mutated(constraint_lists(sorted(CON_IDS)).filter(bool)), junk,
                      st.lists(st.lists(st.sampled_from(sorted(CON_IDS) + RELATIONS2 +
                                                        ["region", "in", "left", "center", ""]),
                                        max_size=4), max_size=4)))
def test_constraints_json_parses_or_raises_scene_error(data):
    text = json.dumps(data)  # as the node's constraints topic receives it (NaN allowed)
    result = outcome(lambda t: parse_constraints(json.loads(t), CON_IDS), text)
    if result is not None:
        from robot_packer.constraints import RELATIONS
        for con in result:
            assert con.name in RELATIONS and len(con.args) == RELATIONS[con.name].arity
            assert con.args[0] in CON_IDS


# ----------------------------------------------------------------------------- plan files

PLAN = {"status": "solved", "message": "", "frame": "world",
        "solver": {"name": "cem", "device": "cpu", "candidates": 8, "time_s": 0.1, "seed": 0},
        "placements": {"a": [0.05, -0.1, 0.05, 1.57], "b": [-0.1, 0.1, 0.05, 0.0]},
        "sizes": {"a": [0.1, 0.1, 0.1], "b": [0.1, 0.1, 0.1]},
        "steps": [{"object": "a", "pick": {"position": [0.2, 0.3, 0.1],
                                           "orientation": [1.0, 0.0, 0.0, 0.0]},
                   "place": {"position": [0.6, -0.1, 0.1], "orientation": [1.0, 0.0, 0.0, 0.0]},
                   "approach": [0, 0, -1], "approach_distance": 0.1, "retreat_distance": 0.1}],
        "constraints": [{"constraint": ["left_of", "a", "b"], "satisfied": True, "violation": 0.0}],
        "verification": {"simulator": "none", "passed": False}}


def assert_valid_plan(plan: Plan) -> None:
    assert plan.status in ("solved", "infeasible", "failed", "timeout")
    for table, n in ((plan.placements, 4), (plan.sizes, 3)):
        for k, v in table.items():
            assert ID_PATTERN.fullmatch(k) and len(v) == n and all(math.isfinite(x) for x in v)
    assert all(s > 0 for v in plan.sizes.values() for s in v)
    json.loads(plan.to_json())  # re-serializable (free-form blocks may hold NaN: see docs/fuzz.md)


plans = mutated(st.just(None).map(lambda _: json.loads(json.dumps(PLAN))))


@FUZZ
@given(data=st.one_of(plans, junk))
def test_plan_mapping_parses_or_raises_scene_error(data):
    result = outcome(Plan.from_dict, data)
    if result is not None:
        assert_valid_plan(result)


@FUZZ
@given(data=plans, damage=st.data())
def test_plan_files_load_or_raise_scene_error(workdir, data, damage):
    text = json.dumps(data)
    for _ in range(damage.draw(st.integers(0, 2))):
        text = _text_mutation(damage.draw, text)
    path = workdir / "plan.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    result = outcome(load_plan, path)
    if result is not None:
        assert_valid_plan(result)


# ----------------------------------------------------------------------------- PointCloud2

try:
    from robot_packer import ros_io
    from sensor_msgs.msg import PointCloud2, PointField
except ImportError as _exc:  # pragma: no cover - ros_io lands with the node helper
    ros_io, _ROS_MISSING = None, f"robot_packer.ros_io not importable ({_exc})"
else:
    _ROS_MISSING = ""
needs_ros_io = pytest.mark.skipif(ros_io is None, reason=_ROS_MISSING or "-")

FIELD_NAMES = ["x", "y", "z", "label", "rgb", "intensity", "", "X", "x ", "\u00e9"]
U32 = 2 ** 32 - 1


@st.composite
def point_fields(draw):
    return PointField(name=draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=3)),
                      offset=draw(st.integers(0, 40) | st.sampled_from([U32, 2 ** 31])),
                      datatype=draw(st.integers(0, 10) | st.just(255)),
                      count=draw(st.integers(0, 3) | st.sampled_from([U32, 2 ** 20])))


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e38, -1e38, 1e-45, 0.3, 2.0 ** 32,
                    -1.0, 4294967296.5], dtype=np.float64)


@st.composite
def clouds(draw):
    """A PointCloud2 that is valid-ish (encoded by ros_io, then damaged) or fully random."""
    if draw(st.booleans()):
        n = draw(st.integers(0, 12))
        pts = np.asarray(draw(st.lists(st.sampled_from(list(SPECIAL)) | st.floats(-2, 2),
                                       min_size=3 * n, max_size=3 * n)), dtype=np.float64)
        labels = np.asarray(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
        with np.errstate(all="ignore"):
            msg = ros_io.cloud_to_msg(pts.reshape(-1, 3), labels if draw(st.booleans()) else None,
                                      "world", pad_to=draw(st.sampled_from([None, 16])),
                                      big_endian=draw(st.booleans()),
                                      label_type=draw(st.sampled_from([6, 5, 7])))
        edit = draw(st.integers(0, 7))
        if edit == 1:
            msg.point_step = draw(st.integers(0, 40))
        elif edit == 2:
            msg.row_step = draw(st.integers(0, 600))
        elif edit == 3:
            msg.height, msg.width = draw(st.integers(0, 4)), draw(st.integers(0, 20))
        elif edit == 4:
            msg.fields = draw(st.lists(point_fields(), max_size=5))
        elif edit == 5:
            k = draw(st.integers(0, max(len(msg.fields) - 1, 0)))
            if msg.fields:
                msg.fields[k] = draw(point_fields())
        elif edit == 6:
            data = bytes(msg.data)
            cut = draw(st.integers(0, len(data)))
            msg.data = data[:cut] + draw(st.binary(max_size=8))
        elif edit == 7:
            msg.is_dense = not msg.is_dense
        return msg
    fields = draw(st.lists(point_fields(), max_size=6))
    width, height = draw(st.integers(0, 6)), draw(st.integers(0, 3))
    step = draw(st.integers(0, 32) | st.sampled_from([U32, 2 ** 16]))
    row = (width * step + draw(st.integers(0, 4)) if draw(st.booleans())
           else draw(st.integers(0, 200)))
    size = row * height if draw(st.booleans()) else draw(st.integers(0, 200))
    size = min(size, 4096)
    return PointCloud2(height=height, width=width, fields=fields,
                       is_bigendian=draw(st.booleans()), point_step=min(step, U32),
                       row_step=min(row, U32), data=draw(st.binary(min_size=size, max_size=size)),
                       is_dense=draw(st.booleans()))


def check_cloud_error(exc: BaseException) -> None:
    """ValueError, one line, naming the cloud or one of its fields/layout values."""
    check_error(exc, (ValueError,), field_hint="")
    assert "cloud" in str(exc).lower(), f"message does not name the cloud/field: {exc}"


@needs_ros_io
@FUZZ
@given(msg=clouds() if ros_io is not None else st.nothing(), require=st.booleans())
def test_pointcloud2_decodes_or_raises_value_error(msg, require):
    try:
        with no_hang(), np.errstate(all="ignore"):
            points, labels = ros_io.cloud_to_arrays(msg, max_points=10_000,
                                                    require_labels=require)
    except Hang:
        raise
    except Exception as exc:  # noqa: BLE001 - the property under test
        check_cloud_error(exc)
        return
    assert points.dtype == np.float64 and points.ndim == 2 and points.shape[1] == 3
    assert len(points) > 0 and np.all(np.isfinite(points))
    if labels is not None:
        assert labels.dtype == np.uint32 and labels.shape == (len(points),)


@needs_ros_io
@FEW
@given(n=st.integers(2_000_001, 2 ** 31))
def test_pointcloud2_too_many_points_rejected_before_decoding(n):
    msg = PointCloud2(height=1, width=min(n, U32), point_step=16, row_step=16,
                      fields=[PointField(name=a, offset=4 * i, datatype=7, count=1)
                              for i, a in enumerate("xyz")], data=b"")
    with pytest.raises(ValueError) as info:
        ros_io.cloud_to_arrays(msg)
    check_cloud_error(info.value)


# ----------------------------------------------------------------------------- the real CLI

CLI_BAD = ["container: {size: [0.4, 0.3]}\nobjects: [{id: a, size: [.1,.1,.1], pose: [0,0,0,0]}]",
           "container: {size: [.4,.3,.2]}\nobjects: [{id: a, size: [.1,.1,.1], pose: [0,0,0,0],"
           " mass: .nan}]",
           "container: {size: [.4,.3,.2]}\n"
           "objects: [{id: 'a\\n', size: [.1,.1,.1], pose: [0,0,0,0]}]",
           "container: {size: [.4,.3,.2]}\nobjects: [{id: a, cloud: missing.ply}]",
           "container: {size: [.4,.3,.2]}\nobjects: []",
           "[" * 1500, "\x00\x01", "objects: [{id: a, size: [1, 1, 1e999]}]"]


def run_cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), no_hang(120):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_cli_rejects(workdir: Path, scene_text: str | bytes, suffix: str = ".yaml") -> None:
    case = Path(workdir) / "cli"
    case.mkdir(exist_ok=True)
    scene = case / f"bad{suffix}"
    (scene.write_bytes if isinstance(scene_text, bytes) else scene.write_text)(scene_text)
    out = case / "plan.json"
    code, _, err = run_cli(["solve", str(scene), "--out", str(out), "--solver", "heuristic",
                            "--no-verify", "--time-budget", "1"])
    assert code == 2, f"exit {code}, stderr {err!r}"
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > 8, err
    assert not out.exists() and not list(case.glob("*.tmp")) and not list(case.glob(".plan*"))


@pytest.mark.parametrize("text", CLI_BAD)
def test_cli_solve_rejects_bad_scene_files(workdir, text):
    assert_cli_rejects(workdir, text)


@FEW
@given(scene=mutated(valid_scenes()), as_json=st.booleans())
def test_cli_solve_rejects_generated_bad_scenes(workdir, scene, as_json):
    try:
        problem_from_dict(scene, workdir)
    except SceneError:
        pass
    else:
        assume(False)  # only the invalid ones: a valid scene would start a solve
    text = json.dumps(scene) if as_json else yaml.safe_dump(scene)
    assert_cli_rejects(workdir, text, ".json" if as_json else ".yaml")


def test_cli_verify_rejects_bad_plan_files(workdir):
    scene = workdir / "ok.yaml"
    scene.write_text("container: {size: [.4,.3,.2]}\nobjects:\n"
                     "  - {id: a, size: [.1,.1,.1], pose: [0.3, 0.2, 0.05, 0]}\n"
                     "  - {id: b, size: [.1,.1,.1], pose: [0.3, -0.2, 0.05, 0]}\n")
    bad = {"truncated": json.dumps(PLAN)[:40], "nan": json.dumps(
        {**PLAN, "placements": {"a": [float("nan"), 0, 0, 0], "b": [0, 0, 0, 0]}}),
        "missing_key": json.dumps({k: v for k, v in PLAN.items() if k != "steps"}),
        "unknown_object": json.dumps({**PLAN, "placements": {**PLAN["placements"], "zz": [0] * 4}}),
        "binary": "\udcff\udcfe"}
    for name, text in bad.items():
        plan = workdir / f"{name}.json"
        plan.write_text(text, encoding="utf-8", errors="surrogateescape")
        code, _, err = run_cli(["verify", str(scene), str(plan)])
        lines = err.strip("\n").split("\n")
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, code, err)


@pytest.mark.parametrize("position", [[10 ** 400, 0, 0], [float("nan"), 0, 0], [0, 0]],
                         ids=["huge_int", "nan", "short"])
def test_cli_verify_rejects_bad_step_positions(workdir, position):
    """Plan steps are free-form in Plan.from_dict; the verifier must still reject them cleanly."""
    scene = workdir / "ok.yaml"
    scene.write_text("container: {size: [.4,.3,.2]}\nobjects:\n"
                     "  - {id: a, size: [.06,.06,.06], pose: [0.3, 0.2, 0.03, 0]}\n"
                     "  - {id: b, size: [.06,.06,.06], pose: [0.3, -0.2, 0.03, 0]}\n")
    step = dict(PLAN["steps"][0], pick={"position": position, "orientation": [1, 0, 0, 0]})
    plan = workdir / "step.json"
    plan.write_text(json.dumps({**PLAN, "steps": [step]}))
    code, _, err = run_cli(["verify", str(scene), str(plan)])
    lines = err.strip("\n").split("\n")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)


@pytest.mark.parametrize("line", [{"approach_distance": "0.1"}, {"retreat_distance": -0.1},
                                  {"approach_distance": float("inf")}, {"approach": [0, 0, 0]},
                                  {"approach": [0, -1]}, {"approach": [0, 0, True]}],
                         ids=["text", "negative", "inf", "zero", "short", "bool"])
def test_cli_verify_rejects_bad_step_approach_lines(workdir, line):
    scene = workdir / "ok.yaml"
    scene.write_text("container: {size: [.4,.3,.2]}\nobjects:\n"
                     "  - {id: a, size: [.06,.06,.06], pose: [0.3, 0.2, 0.03, 0]}\n"
                     "  - {id: b, size: [.06,.06,.06], pose: [0.3, -0.2, 0.03, 0]}\n")
    plan = workdir / "line.json"
    plan.write_text(json.dumps({**PLAN, "steps": [{**PLAN["steps"][0], **line}]}))
    code, _, err = run_cli(["verify", str(scene), str(plan)])
    lines = err.strip("\n").split("\n")
    assert code == 2 and len(lines) == 1 and "plan.steps[0]." in lines[0], (code, err)
