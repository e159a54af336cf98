"""Typed containers between pipeline stages, and scene/plan file I/O (DESIGN.md §3, §4, §6).

Frames: container placements are ``[x, y, z, yaw]`` in the container frame (origin at the centre of
the inner floor, z up); current (pick) poses are ``[x, y, z, yaw]`` in the world frame. SI units.

Field-by-field checks of raw scene and plan mappings (the one-line ``SceneError`` messages) live
in :mod:`robot_packer.validation`; ``SceneError``, ``ID_PATTERN`` and ``parse_yaml`` are
re-exported here.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from robot_packer.validation import (_SCENE_KEYS, ID_PATTERN, SceneError, _check_keys, _flag,
                                     _floats, _gripper_kwargs, _item_kwargs, _number,
                                     _plan_fields, _read_text, _unless_none, _vector, parse_yaml)

DEFAULT_DENSITY = 300.0  # kg/m^3, used when an object's mass is not given (DESIGN.md §3)
REGIONS = ("left", "right", "front", "back", "center")
PLAN_STATUSES = ("solved", "infeasible", "failed", "timeout")
DEFAULT_FINGER = (0.02, 0.01, 0.05)  # Franka hand finger: width, thickness, depth (m)
DEFAULT_MAX_OPENING = 0.08


class InfeasibleProblem(Exception):
    """A valid problem that provably has no solution; the message says why."""


@dataclass(frozen=True)
class Container:
    """An open box. ``size``: (3,) inner extents (m); ``pose``: (4,) its frame in the world."""

    size: np.ndarray
    pose: np.ndarray = field(default_factory=lambda: np.array([0.55, 0.0, 0.0, 0.0]))
    wall: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _vector(self.size, 3, "container.size", positive=True))
        object.__setattr__(self, "pose", _vector(self.pose, 4, "container.pose"))
        object.__setattr__(self, "wall", _number(self.wall, "container.wall", minimum=0.0))

    @property
    def volume(self) -> float:
        return float(np.prod(self.size))

    def to_world(self, pose: np.ndarray) -> np.ndarray:
        """Map a container-frame pose (..., 4) to the world frame."""
        pose = np.asarray(pose, dtype=np.float64)
        cx, cy, cz, cyaw = self.pose
        c, s = math.cos(cyaw), math.sin(cyaw)
        out = np.empty_like(pose)
        out[..., 0] = cx + c * pose[..., 0] - s * pose[..., 1]
        out[..., 1] = cy + s * pose[..., 0] + c * pose[..., 1]
        out[..., 2] = cz + pose[..., 2]
        out[..., 3] = pose[..., 3] + cyaw
        return out

    def from_world(self, pose: np.ndarray) -> np.ndarray:
        """Map a world-frame pose (..., 4) to the container frame."""
        pose = np.asarray(pose, dtype=np.float64)
        cx, cy, cz, cyaw = self.pose
        c, s = math.cos(cyaw), math.sin(cyaw)
        dx, dy = pose[..., 0] - cx, pose[..., 1] - cy
        out = np.empty_like(pose)
        out[..., 0] = c * dx + s * dy
        out[..., 1] = -s * dx + c * dy
        out[..., 2] = pose[..., 2] - cz
        out[..., 3] = pose[..., 3] - cyaw
        return out


@dataclass(frozen=True)
class Item:
    """One object to pack. ``size``: (3,) box extents (m); ``pose``: (4,) world pose or None.

    ``points`` optionally keeps the perceived (M, 3) world-frame points (markers, simulator).
    """

    id: str
    size: np.ndarray
    pose: np.ndarray | None = None
    mass: float | None = None
    fragile: bool = False
    points: np.ndarray | None = field(default=None, compare=False, repr=False)
    mesh: str | None = None  # optional mesh file for simulated scenes (true shape)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not ID_PATTERN.fullmatch(self.id):
            raise SceneError(f"object id {self.id!r}: must match [A-Za-z0-9_-]+")
        object.__setattr__(self, "size", _vector(self.size, 3, f"{self.id}.size", positive=True))
        if self.pose is not None:
            object.__setattr__(self, "pose", _vector(self.pose, 4, f"{self.id}.pose"))
        mass = self.mass if self.mass is not None else DEFAULT_DENSITY * float(np.prod(self.size))
        object.__setattr__(self, "mass", _number(mass, f"{self.id}.mass", positive=True))
        _flag(self.fragile, f"{self.id}.fragile")
        if self.points is not None:
            pts = np.asarray(self.points, dtype=np.float64)
            if pts.ndim != 2 or pts.shape[1] != 3:
                raise SceneError(f"{self.id}.points: must have shape (M, 3), got {pts.shape}")
            object.__setattr__(self, "points", pts)


@dataclass(frozen=True)
class Constraint:
    """A named relation over object ids, e.g. ``Constraint("left_of", ("cereal", "soup"))``.

    For ``region`` the second argument is a region name (one of REGIONS), not an object id.
    """

    name: str
    args: tuple[str, ...]

    def to_list(self) -> list[str]:
        return [self.name, *self.args]


@dataclass(frozen=True)
class Rules:
    """Global rules (DESIGN.md §5); all on by default."""

    heavy_below: bool = True
    gripper_clear: bool = True
    stable: bool = True


@dataclass(frozen=True)
class Gripper:
    """Top-down gripper. ``finger``: (width, thickness, depth) in metres for ``parallel``."""

    type: str = "parallel"
    max_opening: float = DEFAULT_MAX_OPENING
    finger: tuple[float, float, float] = DEFAULT_FINGER
    cup_radius: float = 0.02

    def __post_init__(self) -> None:
        if self.type not in ("parallel", "suction"):
            raise SceneError(f"gripper.type: must be 'parallel' or 'suction', got {self.type!r}")
        _number(self.max_opening, "gripper.max_opening", positive=True)
        object.__setattr__(self, "finger",
                           tuple(float(v) for v in _vector(self.finger, 3, "gripper.finger", True)))
        _number(self.cup_radius, "gripper.cup_radius", positive=True)


@dataclass(frozen=True)
class PackingProblem:
    """Objects to place in a container under constraints. Implied: in(o) and cfree(a, b)."""

    container: Container
    items: tuple[Item, ...]
    constraints: tuple[Constraint, ...] = ()
    rules: Rules = Rules()
    gripper: Gripper = Gripper()

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        seen: set[str] = set()
        for i, item in enumerate(self.items):
            if item.id in seen:
                raise SceneError(f"objects[{i}].id: duplicate id {item.id!r}")
            seen.add(item.id)
        validate_constraints(self.constraints, seen)

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def index(self, object_id: str) -> int:
        for i, item in enumerate(self.items):
            if item.id == object_id:
                return i
        raise KeyError(object_id)

    @property
    def sizes(self) -> np.ndarray:
        """(n, 3) float64 box extents."""
        return np.array([item.size for item in self.items], dtype=np.float64).reshape(-1, 3)

    @property
    def masses(self) -> np.ndarray:
        return np.array([item.mass for item in self.items], dtype=np.float64)

    @property
    def fragile(self) -> np.ndarray:
        return np.array([item.fragile for item in self.items], dtype=bool)


def validate_constraints(constraints: Sequence[Constraint], ids: set[str]) -> None:
    """Check names, arity and ids of constraints against the registry; raise SceneError."""
    from robot_packer.constraints import RELATIONS  # local: constraints imports this module

    for i, con in enumerate(constraints):
        where = f"constraints[{i}]"
        if con.name not in RELATIONS:
            raise SceneError(f"{where}: unknown constraint {con.name!r} "
                             f"(allowed: {', '.join(sorted(RELATIONS))})")
        arity = RELATIONS[con.name].arity
        if len(con.args) != arity:
            raise SceneError(f"{where}: {con.name} takes {arity} arguments, got {len(con.args)}")
        objs = con.args[:1] if con.name == "region" else con.args
        for a in objs:
            if a not in ids:
                raise SceneError(f"{where}: unknown object id {a!r}")
        if con.name == "region" and con.args[1] not in REGIONS:
            raise SceneError(f"{where}: unknown region {con.args[1]!r} "
                             f"(allowed: {', '.join(REGIONS)})")
        if con.name != "region" and len(set(objs)) != len(objs):
            raise SceneError(f"{where}: {con.name} needs two different objects")


def parse_constraints(data: Any, ids: set[str] | None = None) -> tuple[Constraint, ...]:
    """Parse a JSON/YAML list like ``[["left_of", "a", "b"], ...]``; validate ids when given."""
    if not isinstance(data, list):
        raise SceneError("constraints: must be a list of [name, arg, ...] lists")
    out = []
    for i, entry in enumerate(data):
        if (not isinstance(entry, (list, tuple)) or not entry
                or not all(isinstance(x, str) for x in entry)):
            raise SceneError(f"constraints[{i}]: must be a list of strings [name, arg, ...]")
        out.append(Constraint(entry[0], tuple(entry[1:])))
    if ids is not None:
        validate_constraints(out, ids)
    return tuple(out)


def problem_from_dict(data: Any, base_dir: str | Path = ".") -> PackingProblem:
    """Build a validated PackingProblem from a scene mapping (DESIGN.md §4)."""
    data = _check_keys(data, _SCENE_KEYS, "scene")
    for key in ("container", "objects"):
        if key not in data:
            raise SceneError(f"scene.{key}: missing")
    c = _check_keys(data["container"], ("size", "pose", "wall"), "container")
    if "size" not in c:
        raise SceneError("container.size: missing")
    container = Container(size=c["size"], pose=c.get("pose", [0.55, 0.0, 0.0, 0.0]),
                          wall=c.get("wall", 0.01))
    objs = data["objects"]
    if not isinstance(objs, list) or not objs:
        raise SceneError("objects: must be a non-empty list")
    items = tuple(Item(**_item_kwargs(o, i, Path(base_dir))) for i, o in enumerate(objs))
    rules_data = _check_keys(_unless_none(data.get("rules"), {}),
                             ("heavy_below", "gripper_clear", "stable"), "rules")
    rules = Rules(**{k: _flag(v, f"rules.{k}") for k, v in rules_data.items()})
    gripper = Gripper(**_gripper_kwargs(_unless_none(data.get("gripper"), {})))
    constraints = parse_constraints(_unless_none(data.get("constraints"), []))
    return PackingProblem(container, items, constraints, rules, gripper)


def load_scene(path: str | Path) -> PackingProblem:
    """Read a scene file (.yaml/.yml/.json) into a validated PackingProblem."""
    path = Path(path)
    text = _read_text(path)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if path.suffix == ".json" else parse_yaml(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SceneError(f"{path}: not valid {kind}: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # pathologically deep nesting ([[[[...) in a hostile file
        raise SceneError(f"{path}: not valid {kind}: nested too deeply") from None
    return problem_from_dict(data, path.parent)


def problem_to_dict(problem: PackingProblem) -> dict:
    """Scene mapping of a problem (objects with sizes; clouds are not written back)."""
    c = problem.container
    objects = []
    for item in problem.items:
        o: dict[str, Any] = {"id": item.id, "size": _floats(item.size)}
        if item.pose is not None:
            o["pose"] = _floats(item.pose)
        o["mass"] = round(float(item.mass), 6)
        if item.fragile:
            o["fragile"] = True
        if item.mesh:
            o["mesh"] = item.mesh
        objects.append(o)
    g = problem.gripper
    gripper: dict[str, Any] = ({"type": "parallel", "max_opening": float(g.max_opening),
                                "finger": list(g.finger)} if g.type == "parallel"
                               else {"type": "suction", "cup_radius": float(g.cup_radius)})
    return {
        "container": {"size": _floats(c.size), "pose": _floats(c.pose), "wall": float(c.wall)},
        "objects": objects,
        "constraints": [con.to_list() for con in problem.constraints],
        "rules": {"heavy_below": problem.rules.heavy_below,
                  "gripper_clear": problem.rules.gripper_clear, "stable": problem.rules.stable},
        "gripper": gripper,
    }


def save_scene(problem: PackingProblem, path: str | Path) -> None:
    """Write a problem as a YAML (or .json) scene file, atomically."""
    data = problem_to_dict(problem)
    text = (json.dumps(data, indent=2) if str(path).endswith(".json")
            else yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    atomic_write(path, text)


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write to a temp file in the target folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unverified() -> dict:
    """The verification block of a plan that was not checked in simulation."""
    return {"simulator": "none", "passed": False, "max_drift_m": None, "max_penetration_m": None,
            "reachable": None, "gripper_clear": None}


@dataclass
class Plan:
    """Solver output and ``~/plan`` payload (DESIGN.md §6). Placements in the container frame."""

    status: str
    message: str = ""
    frame: str = "world"
    solver: dict = field(default_factory=dict)
    placements: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, list[float]] = field(default_factory=dict)
    steps: list[dict] = field(default_factory=list)
    constraints: list[dict] = field(default_factory=list)
    verification: dict = field(default_factory=unverified)

    def __post_init__(self) -> None:
        if self.status not in PLAN_STATUSES:
            raise SceneError(f"plan.status: must be one of {', '.join(PLAN_STATUSES)}")

    @property
    def verified(self) -> bool:
        return self.status == "solved" and bool(self.verification.get("passed"))

    def poses(self, ids: Sequence[str]) -> np.ndarray:
        """(n, 4) container-frame placements in the order of ``ids``."""
        try:
            return np.array([self.placements[i] for i in ids], dtype=np.float64).reshape(-1, 4)
        except KeyError as exc:
            raise SceneError(f"plan.placements: missing object {exc.args[0]!r}") from None

    def to_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "frame": self.frame,
                "solver": self.solver, "placements": self.placements, "sizes": self.sizes,
                "steps": self.steps, "constraints": self.constraints,
                "verification": self.verification}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> "Plan":
        return cls(*_plan_fields(data))


def save_plan(plan: Plan, path: str | Path) -> None:
    atomic_write(path, plan.to_json() + "\n")


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SceneError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise SceneError(f"{path}: not valid JSON: nested too deeply") from None
    return Plan.from_dict(data)


def resource_path(*parts: str) -> Path:
    """Find an installed data file (launch/, models/, sim/, package.xml).

    Order: the ament index (a colcon install), the install prefix (``share/robot_packer``), then
    the source tree next to this package.
    """
    rel = Path(*parts)
    candidates = []
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        marker = Path(prefix) / "share/ament_index/resource_index/packages/robot_packer"
        if prefix and marker.exists():
            candidates.append(Path(prefix) / "share" / "robot_packer" / rel)
    import sys

    candidates.append(Path(sys.prefix) / "share" / "robot_packer" / rel)
    candidates.append(Path(__file__).resolve().parent.parent / rel)
    for cand in candidates:
        if cand.exists():
            return cand
    raise FileNotFoundError(f"resource {rel} not found (looked in: "
                            f"{', '.join(str(c) for c in candidates)})")
