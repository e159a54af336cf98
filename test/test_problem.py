"""Scene/plan files (DESIGN.md §4, §6): validation names the bad field in one line, nothing is
half-loaded, round trips keep every field, writes are atomic."""
import copy
import json
import math
import os

import numpy as np
import pytest
import yaml

from robot_packer.problem import (Plan, SceneError, atomic_write, load_plan, load_scene,
                                  problem_from_dict, save_plan, save_scene)

SCENE = {
    "container": {"size": [0.40, 0.30, 0.20], "pose": [0.55, 0.0, 0.0, 0.0], "wall": 0.01},
    "objects": [
        {"id": "cereal", "size": [0.19, 0.07, 0.25], "pose": [0.2, -0.35, 0.125, 0.3],
         "mass": 0.5},
        {"id": "soup", "size": [0.07, 0.07, 0.1], "pose": [0.3, 0.35, 0.05, 0.0],
         "fragile": True},
        {"id": "tea-2", "size": [0.1, 0.06, 0.05], "pose": [0.4, 0.35, 0.025, 0.0]},
    ],
    "constraints": [["left_of", "cereal", "soup"], ["close_to", "soup", "tea-2"],
                    ["region", "tea-2", "back"]],
    "rules": {"heavy_below": True, "gripper_clear": False, "stable": True},
    "gripper": {"type": "parallel", "max_opening": 0.08, "finger": [0.02, 0.01, 0.05]},
}


def edited(path, value):
    """A deep copy of SCENE with ``path`` (a list of keys/indices) set to ``value`` (or deleted
    when value is ``DELETE``)."""
    data = copy.deepcopy(SCENE)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


DELETE = object()

BAD = [  # (edit path, value, text the error must contain)
    (["colour"], "red", "scene.colour: unknown key"),
    (["objects", 0, "colour"], "red", "objects[0].colour: unknown key"),
    (["container", "height"], 0.2, "container.height: unknown key"),
    (["rules", "upright"], True, "rules.upright: unknown key"),
    (["constraints", 0], ["next_to", "cereal", "soup"],
     "constraints[0]: unknown constraint 'next_to'"),
    (["constraints", 2], ["region", "tea-2", "middle"], "constraints[2]: unknown region 'middle'"),
    (["constraints", 0], ["left_of", "cereal"], "constraints[0]: left_of takes 2 arguments, got 1"),
    (["constraints", 1], ["close_to", "soup", "milk"], "constraints[1]: unknown object id 'milk'"),
    (["objects", 1, "id"], "cereal", "objects[1].id: duplicate id 'cereal'"),
    (["objects", 0, "id"], "corn flakes", "objects[0].id: must match [A-Za-z0-9_-]+"),
    (["objects", 0, "id"], "café", "objects[0].id: must match"),
    (["objects", 0, "size"], [0.19, 0.0, 0.25], "objects[0].size: must be 3 positive numbers"),
    (["objects", 0, "size"], [0.19, -0.07, 0.25], "objects[0].size: must be 3 positive numbers"),
    (["objects", 0, "size"], [0.19, 0.07], "objects[0].size: must be 3 positive numbers"),
    (["container", "size"], [0.4, 0.3, 0.0], "container.size: must be 3 positive numbers"),
    (["objects", 0, "mass"], 0.0, "objects[0].mass: must be a positive number"),
    (["objects", 0, "mass"], -1.0, "objects[0].mass: must be a positive number"),
    (["objects", 1, "fragile"], "yes", "objects[1].fragile: must be true or false"),
    (["objects", 1, "fragile"], 1, "objects[1].fragile: must be true or false"),
    (["rules", "stable"], "true", "rules.stable: must be true or false"),
    (["objects", 0, "size"], [0.19, float("nan"), 0.25], "objects[0].size"),
    (["objects", 0, "pose"], [0.2, float("inf"), 0.1, 0.0], "objects[0].pose: must be 4 finite"),
    (["objects", 0, "mass"], float("inf"), "objects[0].mass: must be a finite number"),
    (["container", "pose"], [0.55, 0.0, float("nan"), 0.0], "container.pose"),
    (["objects", 0, "size"], DELETE, "objects[0]: needs either size or cloud"),
    (["objects", 0, "cloud"], "clouds/missing.ply", "objects[0].cloud"),
    (["gripper", "type"], "magnet", "gripper.type: must be 'parallel' or 'suction'"),
    (["objects"], [], "objects: must be a non-empty list"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[m.split(":")[0] + "-" + str(i)
                                                         for i, (_, _, m) in enumerate(BAD)])
def test_invalid_scene_is_rejected_naming_the_field(path, value, message, tmp_path):
    data = edited(path, value)
    if path[-1] == "cloud":
        del data["objects"][0]["size"]
    with pytest.raises(SceneError) as info:
        problem_from_dict(data, tmp_path)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_invalid_scene_file_fails_as_a_whole(tmp_path):
    """A YAML file with one bad object yields one error and no problem at all."""
    path = tmp_path / "scene.yaml"
    path.write_text(yaml.safe_dump(edited(["objects", 2, "size"], [0.1, 0.1, "big"])))
    with pytest.raises(SceneError, match=r"objects\[2\]\.size"):
        load_scene(path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(SceneError, match="not valid JSON"):
        load_scene(tmp_path / "broken.json")
    with pytest.raises(SceneError, match="cannot read"):
        load_scene(tmp_path / "absent.yaml")


def test_unreadable_cloud_file_is_rejected(tmp_path):
    (tmp_path / "junk.ply").write_text("this is not a point cloud\n")
    data = edited(["objects", 0, "cloud"], "junk.ply")
    del data["objects"][0]["size"]
    with pytest.raises(SceneError, match=r"objects\[0\]\.cloud"):
        problem_from_dict(data, tmp_path)


def test_defaults_and_derived_values():
    problem = problem_from_dict(SCENE)
    soup = problem.items[problem.index("soup")]
    assert soup.mass == pytest.approx(300.0 * 0.07 * 0.07 * 0.1)   # default density 300 kg/m^3
    assert soup.fragile and not problem.items[0].fragile
    assert problem.rules.gripper_clear is False and problem.rules.stable is True
    minimal = problem_from_dict({"container": {"size": [0.4, 0.3, 0.2]},
                                 "objects": [{"id": "a", "size": [0.1, 0.1, 0.1],
                                              "pose": [0, 0, 0.05, 0]}]})
    assert minimal.rules.heavy_below and minimal.rules.gripper_clear and minimal.rules.stable
    assert minimal.gripper.type == "parallel" and minimal.gripper.max_opening == 0.08
    assert list(minimal.container.pose) == [0.55, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_scene_round_trip(suffix, tmp_path):
    problem = problem_from_dict(SCENE)
    path = tmp_path / f"scene{suffix}"
    save_scene(problem, path)
    back = load_scene(path)
    assert back.ids == problem.ids
    np.testing.assert_allclose(back.sizes, problem.sizes)
    np.testing.assert_allclose(back.masses, problem.masses, rtol=1e-6)
    assert list(back.fragile) == list(problem.fragile)
    assert back.constraints == problem.constraints
    assert back.rules == problem.rules and back.gripper == problem.gripper
    np.testing.assert_allclose(back.container.size, problem.container.size)
    for a, b in zip(back.items, problem.items):
        np.testing.assert_allclose(a.pose, b.pose)


def test_container_frame_round_trip():
    problem = problem_from_dict(edited(["container", "pose"], [0.5, 0.1, 0.02, math.pi / 6]))
    pose = np.array([[0.1, -0.05, 0.03, 0.2], [0.0, 0.0, 0.0, 0.0]])
    world = problem.container.to_world(pose)
    np.testing.assert_allclose(world[1], [0.5, 0.1, 0.02, math.pi / 6])
    np.testing.assert_allclose(problem.container.from_world(world), pose, atol=1e-12)


def _plan() -> Plan:
    return Plan("solved", "", "world", {"name": "heuristic", "device": "cpu", "candidates": 64,
                                        "time_s": 0.1, "seed": 0},
                placements={"cereal": [0.05, -0.1, 0.125, 1.57]},
                sizes={"cereal": [0.19, 0.07, 0.25]},
                steps=[{"object": "cereal"}],
                constraints=[{"constraint": ["in", "cereal"], "satisfied": True, "violation": 0.0}])


def test_plan_round_trip(tmp_path):
    plan = _plan()
    save_plan(plan, tmp_path / "plan.json")
    back = load_plan(tmp_path / "plan.json")
    assert back.to_dict() == plan.to_dict()
    assert set(json.loads((tmp_path / "plan.json").read_text())) == {
        "status", "message", "frame", "solver", "placements", "sizes", "steps", "constraints",
        "verification"}
    assert not back.verified     # skipped verification never counts as verified


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.pop("steps"), "plan.steps: missing"),
    (lambda d: d.update(status="done"), "plan.status: must be one of"),
    (lambda d: d["placements"].update(cereal=[0, 0, float("nan"), 0]), "plan.placements.cereal"),
    (lambda d: d.update(extra=1), "plan.extra: unknown key"),
])
def test_invalid_plan_is_rejected(edit, message, tmp_path):
    data = _plan().to_dict()
    edit(data)
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(SceneError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_plan(tmp_path / "plan.json")


def test_atomic_write_never_leaves_a_half_written_file(tmp_path):
    target = tmp_path / "sub" / "plan.json"
    atomic_write(target, "old contents")
    with pytest.raises(TypeError):
        atomic_write(target, 12345)            # fails while writing: the old file survives
    assert target.read_text() == "old contents"
    assert os.listdir(target.parent) == ["plan.json"]   # no temp file left behind
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
