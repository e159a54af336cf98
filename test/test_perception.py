"""Perception on synthetic depth-like clouds: box surfaces seen from viewpoints, noise, outliers."""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from robot_packer import perception
from robot_packer.cli_perceive import run_perceive
from robot_packer.perception import fit_single_object, load_cloud, perceive
from robot_packer.problem import DEFAULT_DENSITY, Container, load_scene

VIEWS = ((0.9, -0.9, 1.0), (-0.9, 0.9, 1.0))  # two cameras on opposite sides, above the table
NOISE = 0.0015
BOXES = (  # size, pose [x, y, z, yaw]: z is the table height + half the height
    ((0.16, 0.08, 0.12), (0.30, -0.25, 0.06, 0.4)),
    ((0.06, 0.05, 0.15), (0.05, -0.22, 0.075, -1.1)),
    ((0.19, 0.12, 0.05), (-0.25, 0.05, 0.025, 1.3)),
    ((0.09, 0.09, 0.09), (0.20, 0.20, 0.045, 0.2)),
)


def box_surface(size, pose, rng, views=VIEWS, density=100_000, noise=NOISE, base=0.0):
    """Points on the faces of a box visible from any of ``views`` (no bottom), with range noise."""
    size, centre = np.asarray(size, float), np.asarray(pose[:3], float) + [0, 0, base]
    c, s = math.cos(pose[3]), math.sin(pose[3])
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    faces = []
    for axis in range(3):
        for sign in (-1, 1):
            normal = rot[:, axis] * sign
            face_centre = centre + normal * size[axis] / 2
            seen_from = [np.asarray(v, float) for v in views if (v - face_centre) @ normal > 0]
            if (axis == 2 and sign < 0) or not seen_from:
                continue
            others = [i for i in range(3) if i != axis]
            m = rng.poisson(density * size[others[0]] * size[others[1]])
            local = np.zeros((m, 3))
            local[:, axis] = sign * size[axis] / 2
            for i in others:
                local[:, i] = rng.uniform(-size[i] / 2, size[i] / 2, m)
            faces.append(with_range_noise(local @ rot.T + centre, seen_from[0], noise, rng))
    return np.concatenate(faces)


def with_range_noise(pts, camera, noise, rng):
    """Depth-camera noise: gaussian along each point's ray from ``camera``."""
    ray = pts - camera
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    return pts + ray * rng.normal(0.0, noise, (len(pts), 1))


def table(rng, n=30_000, half=0.5, z=0.0, noise=NOISE):
    pts = np.column_stack([rng.uniform(-half, half, n), rng.uniform(-half, half, n), np.full(n, z)])
    return with_range_noise(pts, np.asarray(VIEWS[0]), noise, rng)


def make_scene(rng, boxes=BOXES, outliers=0.01, base=0.0, views=VIEWS, table_n=30_000,
               density=100_000):
    """Labelled cloud of ``boxes`` on a table at height ``base``; 1% flying-pixel outliers."""
    pts, labels = [table(rng, table_n, z=base)], [np.zeros(table_n, np.uint32)]
    for k, (size, pose) in enumerate(boxes):
        p = box_surface(size, pose, rng, views, density, base=base)
        pts.append(p)
        labels.append(np.full(len(p), k + 1, np.uint32))
    pts, labels = np.concatenate(pts), np.concatenate(labels)
    idx = rng.choice(len(pts), int(outliers * len(pts)), replace=False)
    pts[idx] += rng.normal(0.0, 0.05, (len(idx), 3))
    return pts, labels


def assert_matches(obj, size, pose, base=0.0, tol=0.005, yaw_tol_deg=3.0):
    """Fitted box equals the true one: extents (axes matched mod the box symmetry), yaw, centre."""
    dyaw = math.remainder(obj.pose[3] - pose[3], math.pi / 2)
    quarter = round((obj.pose[3] - pose[3] - dyaw) / (math.pi / 2)) % 2
    true = np.array(size, float)
    if quarter:
        true[:2] = true[1::-1]
    assert np.all(np.abs(obj.size - true) < tol), (obj.size, true)
    assert abs(math.degrees(dyaw)) < yaw_tol_deg, (math.degrees(obj.pose[3]), pose[3])
    assert np.all(np.abs(obj.pose[:3] - (np.array(pose[:3]) + [0, 0, base])) < tol)


@pytest.fixture(scope="module")
def scene():
    return make_scene(np.random.default_rng(0))


def test_labelled_scene_gives_each_box_within_5mm_and_3deg(scene):
    pts, labels = scene
    result = perceive(pts, labels)
    assert [o.label for o in result.objects] == [1, 2, 3, 4]
    for obj, (size, pose) in zip(result.objects, BOXES):
        assert_matches(obj, size, pose)
        assert obj.size[0] >= obj.size[1] and -math.pi / 2 < obj.pose[3] <= math.pi / 2
        assert obj.mass == pytest.approx(DEFAULT_DENSITY * np.prod(obj.size))
        assert obj.points.shape == (obj.n_points, 3)
    assert abs(result.support_plane[2]) > 0.999 and abs(result.support_plane[3]) < 0.002


def test_unlabelled_scene_finds_every_box_by_clustering(scene):
    pts, _ = scene
    result = perceive(pts)
    assert len(result.objects) == len(BOXES)
    for size, pose in BOXES:
        obj = min(result.objects, key=lambda o: np.hypot(*(o.pose[:2] - pose[:2])))
        assert_matches(obj, size, pose)


def test_partial_view_from_one_camera_on_a_raised_table():
    rng = np.random.default_rng(1)
    boxes = BOXES[:2]
    pts, labels = make_scene(rng, boxes, base=0.1, views=(VIEWS[0],))
    result = perceive(pts, labels)
    for obj, (size, pose) in zip(result.objects, boxes):
        assert_matches(obj, size, pose, base=0.1)
    assert result.support_plane[3] == pytest.approx(-0.1, abs=0.002)


@pytest.mark.parametrize("seed", range(4))
def test_close_objects_are_counted_separately_when_15mm_apart(seed):
    boxes = (((0.10, 0.06, 0.08), (0.0, 0.0, 0.04, 0.0)),
             ((0.10, 0.06, 0.05), (0.0, 0.075, 0.025, 0.0)),     # 1.5 cm gap along y
             ((0.06, 0.06, 0.12), (0.095, 0.0, 0.06, 0.0)))      # 1.5 cm gap along x
    pts, _ = make_scene(np.random.default_rng(seed), boxes)
    result = perceive(pts)
    assert len(result.objects) == 3
    heights = sorted(round(o.size[2], 2) for o in result.objects)
    assert heights == [0.05, 0.08, 0.12]


BODY = ((0.10, 0.08, 0.12), (0.0, 0.0, 0.06, 0.0))


def overhang(gap, size=(0.03, 0.08, 0.05), bottom=0.04):
    """A part of the BODY's object held at ``bottom`` above the table ``gap`` from the body's
    +x face: the surface joining them (under the part) is not in the cloud."""
    return size, (0.05 + gap + size[0] / 2, 0.0, bottom + size[2] / 2, 0.0)


@pytest.mark.parametrize("seed", range(3))
def test_a_part_whose_joining_surface_is_hidden_joins_its_object_unlabelled(seed):
    rng = np.random.default_rng(seed)  # a quiet sensor: noise tails do not bridge the gap
    pts = np.concatenate([table(rng, noise=0.0005)]
                         + [box_surface(*box, rng, noise=0.0005) for box in (BODY, overhang(0.01))])
    split = perceive(pts, config=perception.PerceptionConfig(merge_gap=0.0))
    assert len(split.objects) == 2  # the footprints are apart: clustering alone splits it
    result = perceive(pts)
    assert len(result.objects) == 1
    assert_matches(result.objects[0], (0.14, 0.08, 0.12), (0.02, 0.0, 0.06, 0.0))


@pytest.mark.parametrize("second, joined", [
    (((0.10, 0.08, 0.06), (0.105, 0.0, 0.03, 0.0)), False),  # a box 5 mm away, on the table
    (overhang(0.005), True),                                  # a part held 4 cm up, 5 mm away
    (overhang(0.030), False),                                 # the same part 3 cm away
])
def test_merge_joins_only_clusters_that_do_not_reach_the_plane(second, joined):
    """The merge step on its own (DBSCAN already joins footprints closer than cluster_eps)."""
    rng = np.random.default_rng(8)
    parts = [box_surface(*BODY, rng), box_surface(*second, rng)]
    flat = np.concatenate(parts)  # world = plane frame for the table z = 0
    cluster = np.repeat([0, 1], [len(p) for p in parts])
    merged = perception._merge_unsupported(flat, cluster, np.bincount(cluster),
                                           perception.PerceptionConfig())
    assert len(np.unique(merged)) == (1 if joined else 2)
    assert np.all(merged[cluster == 0] == 0)  # the body stays (it is the host)


def test_small_label_and_small_clusters_are_dropped_with_a_warning(scene):
    rng = np.random.default_rng(3)
    pts, labels = scene
    blob = np.array([0.0, 0.35, 0.05]) + rng.normal(0, 0.002, (12, 3))
    pts2 = np.concatenate([pts, blob])
    labels2 = np.concatenate([labels, np.full(12, 7, np.uint32)])
    result = perceive(pts2, labels2)
    assert [o.label for o in result.objects] == [1, 2, 3, 4]
    assert "label 7: 12 points, below min_points=30, dropped" in result.skipped
    unlabelled = perceive(pts2)
    assert len(unlabelled.objects) == 4
    assert any("below min_points=30 dropped" in w and "points)" in w for w in unlabelled.skipped)


def test_non_finite_points_are_dropped_and_results_are_deterministic(scene):
    pts, labels = scene
    dirty = pts.copy()
    dirty[::50] = np.nan
    dirty[1::97, 2] = np.inf
    a, b = perceive(dirty, labels), perceive(dirty, labels)
    assert len(a.objects) == 4
    for oa, ob, (size, pose) in zip(a.objects, b.objects, BOXES):
        np.testing.assert_array_equal(oa.size, ob.size)
        np.testing.assert_array_equal(oa.pose, ob.pose)
        assert_matches(oa, size, pose)


@pytest.mark.parametrize("points, labels, message", [
    (np.zeros((0, 3)), None, "empty"),
    (np.full((100, 3), np.nan), None, "no finite points"),
    (np.zeros((100, 2)), None, r"shape \(N, 3\)"),
    (np.zeros((10, 3, 1)), None, r"shape \(N, 3\)"),
    ([["a", "b", "c"]], None, "numeric"),
    (np.zeros((100, 3)), np.zeros(99), "labels: expected shape"),
    (np.zeros((100, 3)), -np.ones(100), "non-negative"),
    (np.zeros((100, 3)), np.full(100, 0.5), "non-negative integers"),
    (np.zeros((100, 3)), np.array(["x"] * 100), "non-negative integers"),
])
def test_bad_input_raises_a_clear_value_error(points, labels, message):
    with pytest.raises(ValueError, match=message):
        perceive(points, labels)


def test_a_label_below_the_table_is_dropped_not_a_crash(scene):
    pts, labels = scene
    sunk = np.array([0.0, 0.4, -0.2]) + np.random.default_rng(10).normal(0, 0.01, (50, 3))
    result = perceive(np.concatenate([pts, sunk]),
                      np.concatenate([labels, np.full(50, 9, np.uint32)]))
    assert [o.label for o in result.objects] == [1, 2, 3, 4]
    assert any(w.startswith("label 9: 0 points (50 more below the support plane)")
               for w in result.skipped)


def test_only_background_labels_give_no_objects_and_say_so(scene):
    pts, labels = scene
    result = perceive(pts, np.zeros_like(labels))
    assert result.objects == () and "no objects found" in result.skipped[-1]


def test_oversized_objects_are_dropped_with_a_warning():
    rng = np.random.default_rng(4)
    boxes = (((1.3, 0.5, 0.3), (0.0, 0.0, 0.15, 0.0)), ((0.1, 0.08, 0.06), (0.0, 0.6, 0.03, 0.3)))
    pts, labels = make_scene(rng, boxes, table_n=60_000)
    pts = np.concatenate([pts, table(rng, 30_000, half=1.0)])
    labels = np.concatenate([labels, np.zeros(30_000, np.uint32)])
    result = perceive(pts, labels)
    assert [o.label for o in result.objects] == [2]
    assert any(w.startswith("label 1: extent") and "dropped" in w for w in result.skipped)
    in_box = perceive(pts, labels, container=Container([0.08, 0.06, 0.06]))
    assert in_box.objects == () and any("label 2: extent" in w for w in in_box.skipped)


def test_cloud_without_a_table_falls_back_to_the_z0_plane_with_a_warning():
    rng = np.random.default_rng(5)
    size, pose = (0.12, 0.07, 0.10), (0.0, 0.0, 0.05, 0.5)
    pts = box_surface(size, pose, rng)
    result = perceive(pts, np.ones(len(pts), np.uint32))
    assert any("z = 0" in w for w in result.skipped)
    assert_matches(result.objects[0], size, pose)


def test_fit_single_object_rests_on_the_table_plane():
    rng = np.random.default_rng(6)
    size, pose = (0.15, 0.05, 0.08), (0.4, -0.3, 0.04, -0.7)
    obj = fit_single_object(box_surface(size, pose, rng, views=(VIEWS[1],)))
    assert_matches(obj, size, pose)
    with pytest.raises(ValueError, match="below min_points"):
        fit_single_object(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="size limit"):
        fit_single_object(box_surface((1.5, 0.2, 0.2), (0, 0, 0.1, 0), rng, density=5000))


def test_a_300k_point_cloud_is_fast_and_accurate():
    rng = np.random.default_rng(7)
    pts, labels = make_scene(rng, table_n=250_000, density=300_000)
    assert len(pts) > 300_000
    start = time.perf_counter()
    result = perceive(pts, labels)
    assert time.perf_counter() - start < 3.0  # ~0.5 s on a loaded 2-core CI box
    for obj, (size, pose) in zip(result.objects, BOXES):
        assert_matches(obj, size, pose)


def test_to_items_maps_objects_to_packable_items(scene):
    pts, labels = scene
    result = perceive(pts, labels)
    items = perception.to_items(result)
    assert [it.id for it in items] == ["obj1", "obj2", "obj3", "obj4"]
    np.testing.assert_allclose(items[0].size, result.objects[0].size)
    assert items[0].mass == pytest.approx(result.objects[0].mass)
    assert items[2].points.shape == result.objects[2].points.shape
    named = perception.to_items(result, ids=["a", "b", "c", "d"])
    assert [it.id for it in named] == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="expected 4 ids"):
        perception.to_items(result, ids=["a"])


def _write_ascii_ply(path, pts):
    header = (f"ply\nformat ascii 1.0\nelement vertex {len(pts)}\nproperty float x\n"
              "property float y\nproperty float z\nend_header\n")
    path.write_text(header + "\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts) + "\n")


def _write_ascii_pcd(path, pts):
    header = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
              f"WIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\n"
              "DATA ascii\n")
    path.write_text(header + "\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in pts) + "\n")


def test_load_cloud_round_trips_npy_ply_pcd(tmp_path):
    rng = np.random.default_rng(8)
    pts = rng.uniform(-1, 1, (500, 3))
    np.save(tmp_path / "a.npy", pts)
    labelled = np.column_stack([pts, rng.integers(0, 5, 500)])
    np.save(tmp_path / "b.npy", labelled)
    _write_ascii_ply(tmp_path / "c.ply", pts)
    _write_ascii_pcd(tmp_path / "d.pcd", pts)
    np.testing.assert_array_equal(load_cloud(tmp_path / "a.npy"), pts)
    np.testing.assert_array_equal(load_cloud(tmp_path / "b.npy"), labelled)
    np.testing.assert_allclose(load_cloud(tmp_path / "c.ply"), pts, atol=1e-6)
    np.testing.assert_allclose(load_cloud(tmp_path / "d.pcd"), pts, atol=1e-6)


def test_load_cloud_rejects_bad_files_naming_them(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((10, 5)))
    (tmp_path / "junk.ply").write_text("not a ply file")
    (tmp_path / "junk.npy").write_bytes(b"garbage")
    (tmp_path / "cloud.txt").write_text("1 2 3")
    cases = (("flat.npy", r"\(N, 3\) or \(N, 4\)"), ("junk.ply", "empty or unreadable"),
             ("junk.npy", "not a readable"), ("cloud.txt", "unsupported"),
             ("missing.pcd", "no such file"))
    for name, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            load_cloud(tmp_path / name)
        assert name in str(err.value)


def test_scene_cloud_entry_is_perceived_into_an_item(tmp_path):
    rng = np.random.default_rng(9)
    size, pose = (0.14, 0.09, 0.06), (0.3, -0.4, 0.03, 0.25)
    _write_ascii_ply(tmp_path / "box.ply", box_surface(size, pose, rng))
    (tmp_path / "scene.yaml").write_text(
        "container: {size: [0.4, 0.3, 0.2]}\nobjects:\n  - {id: box, cloud: box.ply}\n")
    item = load_scene(tmp_path / "scene.yaml").items[0]
    assert_matches(perception.PerceivedObject(0, item.size, item.pose, 1.0, 1, np.zeros((1, 3))),
                   size, pose)


def test_cli_writes_objects_json_and_reports_bad_input(tmp_path, scene, capsys):
    pts, labels = scene
    np.save(tmp_path / "scene.npy", np.column_stack([pts, labels]))
    out = tmp_path / "objects.json"
    assert run_perceive(tmp_path / "scene.npy", True, out) == 0
    data = json.loads(out.read_text())
    assert set(data) == {"objects", "support_plane"} and len(data["support_plane"]) == 4
    assert [o["id"] for o in data["objects"]] == ["obj1", "obj2", "obj3", "obj4"]
    assert set(data["objects"][0]) == {"id", "label", "size", "pose", "n_points"}
    capsys.readouterr()
    np.save(tmp_path / "xyz.npy", pts[:1000])
    bad = tmp_path / "bad.json"
    assert run_perceive(tmp_path / "xyz.npy", True, bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--labelled" in err[0]
    assert run_perceive(tmp_path / "nope.pcd", False, bad) == 2
    np.save(tmp_path / "bg.npy", np.column_stack([pts, np.zeros(len(pts))]))
    assert run_perceive(tmp_path / "bg.npy", True, bad) == 2
    assert not bad.exists()
