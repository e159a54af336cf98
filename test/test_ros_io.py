"""Message conversions of the ROS interface (robot_packer.ros_io), with real ROS message types."""
import json
import math

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")

from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from robot_packer import ros_io  # noqa: E402
from robot_packer.problem import Container, Plan  # noqa: E402


def _cloud(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 3)), rng.integers(0, 5, n).astype(np.uint32)


@pytest.mark.parametrize("pad_to,big_endian,label_type", [
    (16, False, PointField.UINT32), (None, False, PointField.UINT32),
    (16, True, PointField.UINT32), (None, True, PointField.INT32),
    (16, False, PointField.FLOAT32), (None, True, PointField.FLOAT32)])
def test_round_trip_layouts(pad_to, big_endian, label_type):
    pts, lab = _cloud()
    msg = ros_io.cloud_to_msg(pts, lab, "world", pad_to=pad_to, big_endian=big_endian,
                              label_type=label_type)
    assert msg.point_step == (32 if pad_to else 16)
    out, out_lab = ros_io.cloud_to_arrays(msg)
    np.testing.assert_allclose(out, pts.astype(np.float32), atol=0)
    np.testing.assert_array_equal(out_lab, lab)
    assert out_lab.dtype == np.uint32


def test_pcl_padding_is_honoured_by_offsets():
    """A 16-byte padded cloud whose padding bytes hold garbage still decodes exactly."""
    pts, lab = _cloud(10)
    msg = ros_io.cloud_to_msg(pts, lab, "world", pad_to=16)
    data = bytearray(msg.data)
    for i in range(10):  # fill the 4 pad bytes after z and the 12 after label
        data[i * 32 + 12:i * 32 + 16] = b"\xff" * 4
        data[i * 32 + 20:i * 32 + 32] = b"\xab" * 12
    msg.data = bytes(data)
    out, out_lab = ros_io.cloud_to_arrays(msg)
    np.testing.assert_allclose(out, pts.astype(np.float32))
    np.testing.assert_array_equal(out_lab, lab)


def test_organized_cloud_with_nans_and_row_padding():
    pts, lab = _cloud(12)
    pts[[1, 5, 7]] = np.nan
    msg = ros_io.cloud_to_msg(pts, lab, "world", shape=(3, 4))
    assert (msg.height, msg.width) == (3, 4) and not msg.is_dense
    # add 8 bytes of padding at the end of every row
    data = bytes(msg.data)
    rows = [data[r * msg.row_step:(r + 1) * msg.row_step] + b"\0" * 8 for r in range(3)]
    msg.row_step += 8
    msg.data = b"".join(bytes(r) for r in rows)
    out, out_lab = ros_io.cloud_to_arrays(msg)
    keep = np.isfinite(pts).all(1)
    assert len(out) == 9
    np.testing.assert_allclose(out, pts[keep].astype(np.float32))
    np.testing.assert_array_equal(out_lab, lab[keep])


def test_float64_fields_with_count_and_extra_fields():
    """Arbitrary layouts: rgb first, float64 xyz, a count=2 normal field, label last."""
    n = 7
    dtype = np.dtype({"names": ["rgb", "x", "y", "z", "n", "label"],
                      "formats": ["<u4", "<f8", "<f8", "<f8", ("<f4", (2,)), "<u4"],
                      "offsets": [0, 8, 16, 24, 32, 40], "itemsize": 48})
    arr = np.zeros(n, dtype)
    arr["x"], arr["y"], arr["z"], arr["label"] = np.arange(n), -np.arange(n), 0.5, 3
    fields = [PointField(name="rgb", offset=0, datatype=6, count=1),
              PointField(name="x", offset=8, datatype=8, count=1),
              PointField(name="y", offset=16, datatype=8, count=1),
              PointField(name="z", offset=24, datatype=8, count=1),
              PointField(name="n", offset=32, datatype=7, count=2),
              PointField(name="label", offset=40, datatype=6, count=1)]
    msg = PointCloud2(height=1, width=n, fields=fields, point_step=48, row_step=48 * n,
                      data=arr.tobytes())
    out, lab = ros_io.cloud_to_arrays(msg)
    np.testing.assert_array_equal(out[:, 0], np.arange(n))
    np.testing.assert_array_equal(lab, np.full(n, 3))


@pytest.mark.parametrize("mutate,words", [
    (lambda m: setattr(m, "fields", [f for f in m.fields if f.name != "label"]), "label"),
    (lambda m: setattr(m, "fields", [f for f in m.fields if f.name != "z"]), "z field"),
    (lambda m: setattr(m, "data", bytes(m.data)[:-3]), "bytes"),
    (lambda m: setattr(m, "row_step", 4), "row_step"),
    (lambda m: setattr(m, "width", 5_000_000), "max_points"),
    (lambda m: m.fields[0].__setattr__("datatype", 42), "datatype"),
    (lambda m: m.fields[3].__setattr__("offset", 30), "point_step"),
])
def test_bad_clouds_are_rejected_with_a_clear_message(mutate, words):
    pts, lab = _cloud(8)
    msg = ros_io.cloud_to_msg(pts, lab, "world")
    mutate(msg)
    with pytest.raises(ValueError, match=words):
        ros_io.cloud_to_arrays(msg)


def test_empty_all_nan_and_bad_labels():
    with pytest.raises(ValueError, match="empty"):
        ros_io.cloud_to_arrays(ros_io.cloud_to_msg(np.zeros((0, 3)), np.zeros(0), "world"))
    with pytest.raises(ValueError, match="no finite points"):
        ros_io.cloud_to_arrays(ros_io.cloud_to_msg(np.full((4, 3), np.nan), np.ones(4), "world"))
    with pytest.raises(ValueError, match="non-negative"):
        ros_io.cloud_to_arrays(ros_io.cloud_to_msg(np.zeros((2, 3)), np.array([1, -2]), "world",
                                                   label_type=PointField.INT32))
    with pytest.raises(ValueError, match="integers"):
        ros_io.cloud_to_arrays(ros_io.cloud_to_msg(np.zeros((2, 3)), np.array([1.5, 2]), "world",
                                                   label_type=PointField.FLOAT32))
    out, lab = ros_io.cloud_to_arrays(ros_io.cloud_to_msg(np.zeros((2, 3)), None, "world"),
                                      require_labels=False)
    assert lab is None and out.shape == (2, 3)


def test_configurable_max_points():
    pts, lab = _cloud(100)
    msg = ros_io.cloud_to_msg(pts, lab, "world")
    with pytest.raises(ValueError, match="100 points, more than max_points = 99"):
        ros_io.cloud_to_arrays(msg, max_points=99)


def test_cloud_frame_transform_and_unknown_frame():
    settings = ros_io.settings_from_params({"cloud_frame": "cam",
                                            "cloud_to_world": [1.0, 0, 0, 0, 0, 0.7071068,
                                                               0.7071068]})
    msg = ros_io.cloud_to_msg(np.array([[1.0, 0.0, 0.0]]), np.array([1]), "cam")
    pts, _ = ros_io.points_in_world(msg, settings)
    np.testing.assert_allclose(pts, [[1.0, 1.0, 0.0]], atol=1e-6)  # yaw 90 deg, then +x
    msg.header.frame_id = "elsewhere"
    with pytest.raises(ValueError, match="elsewhere"):
        ros_io.points_in_world(msg, settings)


def _plan(passed=True, simulator="pybullet", status="solved"):
    steps = [{"object": o, "pick": {"position": [0.3, y, 0.1], "orientation": [1, 0, 0, 0]},
              "place": {"position": [0.55, y, 0.05], "orientation": [0, 1, 0, 0]},
              "approach": [0, 0, -1], "approach_distance": 0.1, "retreat_distance": 0.1}
             for o, y in (("obj2", 0.1), ("obj1", -0.1))]
    return Plan(status, "", "world", {"time_s": 0.1}, {"obj1": [0, -0.1, 0.05, 0.0],
                                                       "obj2": [0, 0.1, 0.05, math.pi / 2]},
                {"obj1": [0.1, 0.1, 0.1], "obj2": [0.1, 0.05, 0.1]}, steps, [],
                {"simulator": simulator, "passed": passed})


def test_pose_arrays_follow_step_order():
    pick, place = ros_io.plan_pose_arrays(_plan(), "world")
    assert pick.header.frame_id == "world" and len(pick.poses) == len(place.poses) == 2
    assert pick.poses[0].position.y == pytest.approx(0.1)   # step 0 is obj2
    assert place.poses[1].position.y == pytest.approx(-0.1)
    assert place.poses[0].orientation.y == pytest.approx(1.0)


@pytest.mark.parametrize("plan,rgb", [(_plan(), (0.2, 0.75, 0.3)),
                                      (_plan(False, "none"), (1.0, 0.6, 0.1)),
                                      (_plan(False), (0.9, 0.15, 0.15)),
                                      (_plan(False, "none", "failed"), (0.9, 0.15, 0.15))])
def test_markers_delete_all_first_and_colour_by_verification(plan, rgb):
    container = Container([0.4, 0.3, 0.2], [0.55, 0.0, 0.0, math.pi / 2])
    markers = ros_io.plan_markers(plan, container, "world").markers
    assert markers[0].action == Marker.DELETEALL
    assert markers[1].type == Marker.LINE_LIST and len(markers[1].points) == 24
    cubes = [m for m in markers if m.type == Marker.CUBE]
    texts = sorted(m.text for m in markers if m.type == Marker.TEXT_VIEW_FACING)
    assert len(cubes) == 2 and texts == ["obj1", "obj2"]
    assert (cubes[0].color.r, cubes[0].color.g, cubes[0].color.b) == pytest.approx(rgb)
    # obj1 at container (0, -0.1): container yawed 90 deg -> world (0.55 + 0.1, 0)
    assert (cubes[0].pose.position.x, cubes[0].pose.position.y) == pytest.approx((0.65, 0.0))


def test_status_and_diagnostics():
    data = json.loads(ros_io.status_msg("failed", "cloud has no 'label' field").data)
    assert data == {"state": "failed", "message": "cloud has no 'label' field"}
    with pytest.raises(ValueError):
        ros_io.status_msg("busy")
    diag = ros_io.diagnostics_msg("packer", "failed", "boom", {"received": 3})
    assert diag.status[0].level == diag.status[0].ERROR
    assert diag.status[0].values[0].key == "received"


def test_parameters_map_onto_settings_and_bad_values_name_the_parameter():
    s = ros_io.settings_from_params({"solver": "cem", "device": "cpu", "candidates": 8,
                                     "container.size": [0.5, 0.4, 0.3],
                                     "gripper.type": "suction", "rules.stable": False,
                                     "model_dir": ""})
    assert (s.solver.solver, s.solver.device, s.solver.candidates) == ("cem", "cpu", 8)
    assert s.solver.model_dir is None and s.gripper.type == "suction" and not s.rules.stable
    assert list(s.container.size) == [0.5, 0.4, 0.3]
    for bad, name in (({"device": "tpu"}, "device"), ({"container.size": [0.1, 0.2]},
                                                      "container.size"),
                      ({"gripper.type": "claw"}, "gripper.type"),
                      ({"input_qos": "fast"}, "input_qos")):
        with pytest.raises(ValueError, match=name):
            ros_io.settings_from_params(bad)
    names = [p.name for p in ros_io.PARAMETERS]
    for required in ("container.size", "container.pose", "container.wall", "world_frame",
                     "solver", "device", "candidates", "time_budget_s", "verify", "auto_solve",
                     "publish_unverified", "model_dir", "input_qos", "gripper.max_opening",
                     "gripper.finger", "rules.heavy_below"):
        assert required in names
    assert dict((p.name, p.default) for p in ros_io.PARAMETERS)["publish_unverified"] is False


def test_constraints_json_errors_name_the_problem():
    ids = ["obj1", "obj2"]
    assert ros_io.parse_constraints_json('[["left_of", "obj1", "obj2"]]', ids)[0].args == (
        "obj1", "obj2")
    assert ros_io.parse_constraints_json('{"constraints": []}', ids) == ()
    assert ros_io.parse_constraints_json("", ids) == ()
    with pytest.raises(ValueError, match="not valid JSON"):
        ros_io.parse_constraints_json("[[left_of", ids)
    with pytest.raises(ValueError, match="unknown object id 'obj9'.*obj1, obj2"):
        ros_io.parse_constraints_json('[["left_of", "obj1", "obj9"]]', ids)
    with pytest.raises(ValueError, match="unknown constraint"):
        ros_io.parse_constraints_json('[["beside", "obj1", "obj2"]]', ids)
