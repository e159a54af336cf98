"""ROS message conversions for the packer node (DESIGN.md §7). No rclpy node logic lives here.

* PointCloud2 <-> numpy without ``sensor_msgs_py``: a structured dtype built from the message's
  fields (datatype codes 1-8, ``count``), honouring ``point_step`` padding, ``row_step`` row
  padding, ``is_bigendian``, NaN points and organized clouds (``height > 1``).
* Plan -> PoseArray (pick and place, index i = step i), Plan -> MarkerArray, status and
  diagnostics messages.
* ROS parameter table (names, defaults, descriptions, ranges) and its mapping onto
  :class:`NodeSettings` (SolverConfig, Container, Gripper, Rules).
* :func:`build_problem`: a cloud + the ``constraints`` JSON -> PackingProblem. Object ids are
  ``obj<label>`` (label 7 -> ``obj7``); the constraints JSON refers to those ids.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseArray, Quaternion, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header, String
from visualization_msgs.msg import Marker, MarkerArray

from robot_packer.problem import (Constraint, Container, Gripper, PackingProblem, Plan, Rules,
                                  SceneError, parse_constraints)
from robot_packer.solver.base import SolverConfig

DEFAULT_MAX_POINTS = 2_000_000  # clouds with more points are rejected (a configurable parameter)
# PointField datatype code -> numpy type character and byte size (sensor_msgs/PointField).
DATATYPES = {1: ("i1", 1), 2: ("u1", 1), 3: ("i2", 2), 4: ("u2", 2), 5: ("i4", 4), 6: ("u4", 4),
             7: ("f4", 4), 8: ("f8", 8)}
COLORS = {"verified": (0.2, 0.75, 0.3, 0.85), "unverified": (1.0, 0.6, 0.1, 0.85),
          "failed": (0.9, 0.15, 0.15, 0.85), "container": (0.55, 0.57, 0.62, 0.9),
          "text": (1.0, 1.0, 1.0, 1.0)}
STATES = ("idle", "solving", "solved", "failed")


# ----------------------------------------------------------------------------- PointCloud2


def _field_dtype(fields: Sequence[PointField], point_step: int, big_endian: bool) -> np.dtype:
    """Structured dtype of one point (itemsize = point_step, padding kept out of the names)."""
    order = ">" if big_endian else "<"
    names, formats, offsets = [], [], []
    for f in fields:
        if f.datatype not in DATATYPES:
            raise ValueError(f"PointCloud2 field {f.name!r}: unknown datatype {f.datatype} "
                             f"(allowed 1-8)")
        code, size = DATATYPES[f.datatype]
        count = max(int(f.count), 1)
        if f.offset + size * count > point_step:
            raise ValueError(f"PointCloud2 field {f.name!r}: offset {f.offset} + {size * count} "
                             f"bytes exceeds point_step {point_step}")
        if f.name in names:
            raise ValueError(f"PointCloud2: duplicate field {f.name!r}")
        names.append(f.name)
        formats.append((order + code, (count,)) if count > 1 else order + code)
        offsets.append(f.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": point_step})


def _check_layout(msg: PointCloud2, max_points: int) -> int:
    n = int(msg.width) * int(msg.height)
    if n > max_points:
        raise ValueError(f"cloud has {n} points, more than max_points = {max_points}")
    if msg.point_step <= 0 and n:
        raise ValueError(f"PointCloud2: point_step must be positive, got {msg.point_step}")
    if msg.row_step < msg.width * msg.point_step:
        raise ValueError(f"PointCloud2: row_step {msg.row_step} < width {msg.width} x "
                         f"point_step {msg.point_step}")
    if len(msg.data) != msg.row_step * msg.height:
        raise ValueError(f"PointCloud2: data has {len(msg.data)} bytes, expected row_step "
                         f"{msg.row_step} x height {msg.height} = {msg.row_step * msg.height}")
    return n


def _first(column: np.ndarray) -> np.ndarray:
    return column[:, 0] if column.ndim == 2 else column


def cloud_to_arrays(msg: PointCloud2, max_points: int = DEFAULT_MAX_POINTS,
                    require_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Decode a PointCloud2 into finite points and their labels.

    Args:
        msg: x, y, z (any numeric datatype) and a ``label`` field (uint32; int32 or integral
            float32 accepted). Organized clouds are flattened row by row.
        max_points: clouds with more points (width x height) are rejected before decoding.
        require_labels: raise when the ``label`` field is missing (else labels are None).

    Returns:
        points (N, 3) float64, metres, message frame; labels (N,) uint32 or None. Points with a
        non-finite coordinate are dropped.

    Raises:
        ValueError: missing x/y/z or label, inconsistent sizes, too many points, an empty or
            all-NaN cloud, negative or non-integral labels. The message names the problem.
    """
    n = _check_layout(msg, max_points)
    names = [f.name for f in msg.fields]
    missing = [a for a in ("x", "y", "z") if a not in names]
    if missing:
        raise ValueError(f"cloud has no {'/'.join(missing)} field (fields: {names})")
    if require_labels and "label" not in names:
        raise ValueError(f"cloud has no 'label' field (fields: {names}); the packer needs a "
                         f"uint32 label per point")
    if n == 0:
        raise ValueError("cloud is empty (0 points)")
    dtype = _field_dtype(msg.fields, msg.point_step, msg.is_bigendian)
    raw = np.frombuffer(memoryview(msg.data), dtype=np.uint8).reshape(msg.height, msg.row_step)
    rows = np.ascontiguousarray(raw[:, :msg.width * msg.point_step])
    pts_struct = rows.reshape(-1).view(dtype)
    xyz = np.stack([_first(pts_struct[a]).astype(np.float64) for a in "xyz"], axis=1)
    finite = np.all(np.isfinite(xyz), axis=1)
    if not finite.any():
        raise ValueError(f"cloud has no finite points (all {n} are NaN/inf)")
    labels = None
    if "label" in names:
        labels = _labels(_first(pts_struct["label"])[finite])
    return xyz[finite], labels


def _labels(raw: np.ndarray) -> np.ndarray:
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)) or np.any(raw < 0):
            raise ValueError("cloud 'label' field: float labels must be non-negative integers")
    elif np.any(raw < 0):
        raise ValueError("cloud 'label' field: labels must be non-negative")
    return raw.astype(np.uint32)


def cloud_to_msg(points: np.ndarray, labels: np.ndarray | None, frame_id: str,
                 stamp: Time | None = None, pad_to: int | None = 16,
                 big_endian: bool = False, label_type: int = PointField.UINT32,
                 shape: tuple[int, int] | None = None) -> PointCloud2:
    """Encode points (N, 3) metres and labels (N,) as a PointCloud2 (tests, sim camera).

    ``pad_to=16`` pads x, y, z to 16 bytes and the point to a multiple of 16 (PCL layout:
    label at offset 16, point_step 32); ``None`` packs tightly. ``shape=(height, width)`` makes
    an organized cloud. ``label_type``: PointField.UINT32, INT32 or FLOAT32.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    height, width = shape if shape is not None else (1, len(pts))
    if height * width != len(pts):
        raise ValueError(f"shape {shape}: does not hold {len(pts)} points")
    order = ">" if big_endian else "<"
    fields = [PointField(name=a, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, a in enumerate("xyz")]
    step = 16 if pad_to else 12
    if labels is not None:
        fields.append(PointField(name="label", offset=step, datatype=label_type, count=1))
        step += 4
    if pad_to:
        step = -(-step // pad_to) * pad_to
    dtype = _field_dtype(fields, step, big_endian)
    arr = np.zeros(len(pts), dtype=dtype)
    for i, a in enumerate("xyz"):
        arr[a] = pts[:, i]
    if labels is not None:
        arr["label"] = np.asarray(labels).astype(order + DATATYPES[label_type][0])
    header = Header(frame_id=frame_id, stamp=stamp or Time())
    return PointCloud2(header=header, height=height, width=width, fields=fields,
                       is_bigendian=big_endian, point_step=step, row_step=step * width,
                       data=arr.tobytes(), is_dense=bool(np.all(np.isfinite(pts))))


def transform_points(points: np.ndarray, pose: Sequence[float]) -> np.ndarray:
    """Apply a static transform ``[x, y, z, qx, qy, qz, qw]`` (cloud frame -> world) to (N, 3)."""
    x, y, z, qx, qy, qz, qw = (float(v) for v in pose)
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
    rot = np.array([
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)]])
    return points @ rot.T + np.array([x, y, z])


# ----------------------------------------------------------------------------- plan -> messages


def _pose(d: Mapping[str, Sequence[float]]) -> Pose:
    (x, y, z), (qx, qy, qz, qw) = d["position"], d["orientation"]
    return Pose(position=Point(x=float(x), y=float(y), z=float(z)),
                orientation=Quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw)))


def plan_pose_arrays(plan: Plan, frame_id: str, stamp: Time | None = None
                     ) -> tuple[PoseArray, PoseArray]:
    """(pick, place) PoseArrays of the plan's gripper TCP poses; index i = step i."""
    header = Header(frame_id=frame_id, stamp=stamp or Time())
    pick = PoseArray(header=header, poses=[_pose(s["pick"]) for s in plan.steps])
    place = PoseArray(header=header, poses=[_pose(s["place"]) for s in plan.steps])
    return pick, place


def verification_class(plan: Plan) -> str:
    """``verified`` (green), ``unverified`` (orange: solved, simulation skipped) or ``failed``."""
    if plan.verified:
        return "verified"
    if plan.status == "solved" and plan.verification.get("simulator", "none") == "none":
        return "unverified"
    return "failed"


def _color(name: str) -> ColorRGBA:
    r, g, b, a = COLORS[name]
    return ColorRGBA(r=r, g=g, b=b, a=a)


def _yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(z=math.sin(yaw / 2), w=math.cos(yaw / 2))


def _container_marker(container: Container, header: Header, ns: str) -> Marker:
    """LINE_LIST wireframe of the container's inner box (container frame placed in the world)."""
    lx, ly, lz = (float(v) / 2 for v in container.size)
    corners = [(sx * lx, sy * ly, z) for z in (0.0, 2 * lz) for sx, sy in
               ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    edges = [(i, (i + 1) % 4) for i in range(4)] + [(4 + i, 4 + (i + 1) % 4) for i in range(4)]
    edges += [(i, i + 4) for i in range(4)]
    x, y, z, yaw = (float(v) for v in container.pose)
    return Marker(header=header, ns=ns + "/container", id=0, type=Marker.LINE_LIST,
                  action=Marker.ADD, pose=Pose(position=Point(x=x, y=y, z=z),
                                               orientation=_yaw_quaternion(yaw)),
                  scale=Vector3(x=0.004), color=_color("container"),
                  points=[Point(x=c[0], y=c[1], z=c[2]) for e in edges for c in
                          (corners[e[0]], corners[e[1]])])


def plan_markers(plan: Plan, container: Container, frame_id: str,
                 stamp: Time | None = None, ns: str = "robot_packer") -> MarkerArray:
    """DELETEALL, the container wireframe, one box and one id label per placement.

    Boxes are coloured by :func:`verification_class`: green verified, orange unverified, red
    failed.
    """
    header = Header(frame_id=frame_id, stamp=stamp or Time())
    markers = [Marker(header=header, ns=ns, action=Marker.DELETEALL),
               _container_marker(container, header, ns)]
    color = _color(verification_class(plan))
    for k, (oid, placement) in enumerate(sorted(plan.placements.items())):
        x, y, z, yaw = (float(v) for v in container.to_world(np.asarray(placement)))
        size = plan.sizes.get(oid, [0.05, 0.05, 0.05])
        pose = Pose(position=Point(x=x, y=y, z=z), orientation=_yaw_quaternion(yaw))
        markers.append(Marker(header=header, ns=ns + "/boxes", id=k, type=Marker.CUBE,
                              action=Marker.ADD, pose=pose, color=color,
                              scale=Vector3(x=float(size[0]), y=float(size[1]),
                                            z=float(size[2]))))
        label = Pose(position=Point(x=x, y=y, z=z + float(size[2]) / 2 + 0.03))
        markers.append(Marker(header=header, ns=ns + "/labels", id=k,
                              type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, pose=label,
                              scale=Vector3(z=0.025), color=_color("text"), text=oid))
    return MarkerArray(markers=markers)


def plan_summary(plan: Plan) -> dict:
    """Short summary of a plan (service replies, status messages)."""
    return {"status": plan.status, "verified": plan.verified, "objects": len(plan.placements),
            "steps": len(plan.steps), "time_s": plan.solver.get("time_s"),
            "message": plan.message}


def status_msg(state: str, message: str = "", **extra: Any) -> String:
    """``~/status`` payload: JSON {state: idle/solving/solved/failed, message, ...extra}."""
    if state not in STATES:
        raise ValueError(f"state: must be one of {', '.join(STATES)}, got {state!r}")
    return String(data=json.dumps({"state": state, "message": message, **extra}))


def diagnostics_msg(name: str, state: str, message: str, values: Mapping[str, Any],
                    stamp: Time | None = None, warn: bool = False) -> DiagnosticArray:
    """One DiagnosticStatus: ERROR when ``state`` is failed, WARN when ``warn``, else OK."""
    level = (DiagnosticStatus.ERROR if state == "failed"
             else DiagnosticStatus.WARN if warn else DiagnosticStatus.OK)
    status = DiagnosticStatus(level=level, name=name, hardware_id="robot_packer",
                              message=f"{state}: {message}"[:200],
                              values=[KeyValue(key=str(k), value=str(v))
                                      for k, v in values.items()])
    return DiagnosticArray(header=Header(stamp=stamp or Time()), status=[status])


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class ParamSpec:
    """One declared ROS parameter: default (fixes the type), description, optional range."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    read_only: bool = False   # needs a restart (model loading, subscriptions)


PARAMETERS = (
    ParamSpec("world_frame", "world", "frame of the cloud, the container pose and all goals"),
    ParamSpec("cloud_frame", "", "frame_id of clouds not in world_frame ('' = world_frame only)"),
    ParamSpec("cloud_to_world", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
              "static pose [x y z qx qy qz qw] of cloud_frame in world_frame"),
    ParamSpec("container.size", [0.40, 0.30, 0.20], "inner extents x y z of the container (m)"),
    ParamSpec("container.pose", [0.55, 0.0, 0.0, 0.0],
              "x y z yaw of the container frame (inner floor centre) in world_frame"),
    ParamSpec("container.wall", 0.01, "container wall thickness (m)", (0.0, 0.2)),
    ParamSpec("solver", "diffusion",
              "diffusion | heuristic | cpsat (pip install .[cpsat]) | portfolio (diffusion, "
              "heuristic and cpsat when installed race; the first verified plan wins) | "
              "rejection | cem", read_only=True),
    ParamSpec("device", "auto", "auto (CUDA when present) | cpu | cuda", read_only=True),
    ParamSpec("model_dir", "", "diffusion checkpoints folder ('' = the package's models/)",
              read_only=True),
    ParamSpec("threads", 1, "torch CPU threads (0 = torch default; 1 is fastest on small CPUs)",
              (0, 256), read_only=True),
    ParamSpec("candidates", 64, "candidate placements sampled per batch", (1, 65536)),
    ParamSpec("time_budget_s", 5.0, "solver time budget per solve (s)", (0.05, 3600.0)),
    ParamSpec("seed", 0, "solver random seed", (0, 2**31 - 1)),
    ParamSpec("verify", True, "verify candidate plans in PyBullet before publishing"),
    ParamSpec("verify_top_k", 4, "at most this many candidates verified per solve", (1, 64)),
    ParamSpec("auto_solve", True, "solve on every new cloud (debounced)"),
    ParamSpec("debounce_s", 0.2, "auto_solve waits this long for a newer cloud (s)", (0.0, 10.0)),
    ParamSpec("publish_unverified", False,
              "also publish goals of plans whose exact constraints hold but that are not verified"),
    ParamSpec("max_points", DEFAULT_MAX_POINTS, "clouds with more points are rejected",
              (1, 50_000_000)),
    ParamSpec("input_qos", "reliable",
              "cloud subscription QoS: reliable | sensor_data (best effort; large clouds may "
              "be dropped by DDS) | latched (reliable + transient_local)", read_only=True),
    ParamSpec("gripper.type", "parallel", "parallel | suction"),
    ParamSpec("gripper.max_opening", 0.08, "parallel gripper max opening (m)", (0.001, 0.5)),
    ParamSpec("gripper.finger", [0.02, 0.01, 0.05], "finger width, thickness, depth (m)"),
    ParamSpec("gripper.cup_radius", 0.02, "suction cup radius (m)", (0.001, 0.2)),
    ParamSpec("rules.heavy_below", True, "nothing rests on a lighter object"),
    ParamSpec("rules.gripper_clear", True, "the gripper placing each object hits nothing"),
    ParamSpec("rules.stable", True, "the packed state is statically stable (PyBullet)"),
)
INPUT_QOS = ("sensor_data", "reliable", "latched")


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node reads from its parameters, validated."""

    solver: SolverConfig
    container: Container
    gripper: Gripper
    rules: Rules
    world_frame: str = "world"
    cloud_frame: str = ""
    cloud_to_world: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    auto_solve: bool = True
    debounce_s: float = 0.2
    publish_unverified: bool = False
    max_points: int = DEFAULT_MAX_POINTS
    input_qos: str = "reliable"


def settings_from_params(v: Mapping[str, Any]) -> NodeSettings:
    """Map parameter values (name -> value, defaults filled in) onto NodeSettings.

    Raises:
        ValueError: a bad value; the message names the parameter.
    """
    v = {**{p.name: p.default for p in PARAMETERS}, **v}
    if v["input_qos"] not in INPUT_QOS:
        raise ValueError(f"input_qos: must be one of {', '.join(INPUT_QOS)}, "
                         f"got {v['input_qos']!r}")
    if not v["world_frame"]:
        raise ValueError("world_frame: must not be empty")
    pose = [float(x) for x in v["cloud_to_world"]]
    if len(pose) != 7 or not np.all(np.isfinite(pose)) or np.linalg.norm(pose[3:]) < 1e-9:
        raise ValueError("cloud_to_world: must be [x y z qx qy qz qw] with a non-zero quaternion")
    try:
        solver = SolverConfig(solver=v["solver"], seed=int(v["seed"]), device=v["device"],
                              candidates=int(v["candidates"]),
                              time_budget_s=float(v["time_budget_s"]), verify=bool(v["verify"]),
                              verify_top_k=int(v["verify_top_k"]),
                              model_dir=v["model_dir"] or None,
                              threads=int(v["threads"]) or None)
        container = Container(list(v["container.size"]), list(v["container.pose"]),
                              float(v["container.wall"]))
        gripper = Gripper(v["gripper.type"], float(v["gripper.max_opening"]),
                          tuple(float(x) for x in v["gripper.finger"]),
                          float(v["gripper.cup_radius"]))
    except SceneError as exc:
        raise ValueError(str(exc)) from None
    rules = Rules(bool(v["rules.heavy_below"]), bool(v["rules.gripper_clear"]),
                  bool(v["rules.stable"]))
    return NodeSettings(solver, container, gripper, rules, v["world_frame"], v["cloud_frame"],
                        tuple(pose), bool(v["auto_solve"]), float(v["debounce_s"]),
                        bool(v["publish_unverified"]), int(v["max_points"]), v["input_qos"])


# ----------------------------------------------------------------------------- cloud -> problem


def points_in_world(msg: PointCloud2, settings: NodeSettings) -> tuple[np.ndarray, np.ndarray]:
    """Decode a labelled cloud and bring it into ``world_frame`` (ValueError naming the problem)."""
    frame = msg.header.frame_id
    if frame and frame not in (settings.world_frame, settings.cloud_frame):
        raise ValueError(f"cloud frame {frame!r} is neither world_frame "
                         f"{settings.world_frame!r} nor cloud_frame {settings.cloud_frame!r}")
    points, labels = cloud_to_arrays(msg, settings.max_points, require_labels=True)
    if frame and frame != settings.world_frame:
        points = transform_points(points, settings.cloud_to_world)
    return points, labels


def parse_constraints_json(text: str | None, ids: Sequence[str]) -> tuple[Constraint, ...]:
    """Constraints from the ``constraints`` topic: a JSON list as in the scene file (or
    ``{"constraints": [...]}``) over ``obj<label>`` ids. ``None`` or blank: no constraints."""
    if text is None or not text.strip():
        return ()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"constraints: not valid JSON ({exc})") from None
    if isinstance(data, dict) and set(data) == {"constraints"}:
        data = data["constraints"]
    try:
        return parse_constraints(data, set(ids))
    except SceneError as exc:
        raise ValueError(f"{exc} (objects in the cloud: {', '.join(ids) or 'none'})") from None


def build_problem(points: np.ndarray, labels: np.ndarray, constraints_json: str | None,
                  settings: NodeSettings, rng: np.random.Generator | None = None
                  ) -> PackingProblem:
    """Perceive the labelled world-frame cloud and build the packing problem.

    Object ids are ``obj<label>``. Raises ValueError naming the problem (no labelled objects,
    perception found nothing, bad constraints).
    """
    from robot_packer import perception  # local: only perception imports open3d

    if not np.any(labels != 0):
        raise ValueError("cloud has no labelled objects (every label is 0 = background)")
    result = perception.perceive(points, labels, rng=rng, container=settings.container)
    if not result.objects:
        raise ValueError("perception found no objects: " + ("; ".join(result.skipped) or "?"))
    items = perception.to_items(result)
    constraints = parse_constraints_json(constraints_json, [it.id for it in items])
    try:
        return PackingProblem(settings.container, tuple(items), constraints, settings.rules,
                              settings.gripper)
    except SceneError as exc:
        raise ValueError(str(exc)) from None
