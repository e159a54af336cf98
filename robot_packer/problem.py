"""Typed containers between pipeline stages, and scene/plan file I/O (DESIGN.md §3, §4, §6).

Frames: container placements are ``[x, y, z, yaw]`` in the container frame (origin at the centre of
the inner floor, z up); current (pick) poses are ``[x, y, z, yaw]`` in the world frame. SI units.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import yaml

DEFAULT_DENSITY = 300.0  # kg/m^3, used when an object's mass is not given (DESIGN.md §3)
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")  # use fullmatch: "$" would accept a trailing newline
REGIONS = ("left", "right", "front", "back", "center")
PLAN_STATUSES = ("solved", "infeasible", "failed", "timeout")
DEFAULT_FINGER = (0.02, 0.01, 0.05)  # Franka hand finger: width, thickness, depth (m)
DEFAULT_MAX_OPENING = 0.08


class SceneError(ValueError):
    """An invalid scene, constraint list or plan; the message names the offending field."""


class InfeasibleProblem(Exception):
    """A valid problem that provably has no solution; the message says why."""


def _vector(value: Any, n: int, name: str, positive: bool = False) -> np.ndarray:
    """Return ``value`` as a finite float64 array of shape (n,), or raise naming ``name``."""
    what = f"{n} positive numbers" if positive else f"{n} finite numbers"
    if isinstance(value, (str, bytes, bool)) or value is None:
        raise SceneError(f"{name}: must be {what}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
        raise SceneError(f"{name}: must be {what}") from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise SceneError(f"{name}: must be {what}")
    if any(isinstance(v, bool) for v in np.asarray(value, dtype=object).ravel()):
        raise SceneError(f"{name}: must be {what}")
    if isinstance(value, (list, tuple)) and not all(isinstance(v, numbers.Real) for v in value):
        raise SceneError(f"{name}: must be {what}")  # e.g. quoted "0.1": numpy would coerce it
    if positive and not np.all(arr > 0):
        raise SceneError(f"{name}: must be {what}")
    arr.setflags(write=False)
    return arr


def _number(value: Any, name: str, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SceneError(f"{name}: must be a finite number")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range (JSON/YAML allow arbitrary integers)
        finite = False
    if not finite:
        raise SceneError(f"{name}: must be a finite number")
    if positive and value <= 0:
        raise SceneError(f"{name}: must be a positive number")
    if minimum is not None and value < minimum:
        raise SceneError(f"{name}: must be >= {minimum}")
    return float(value)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SceneError(f"{name}: must be true or false")
    return value


def _show(key: str) -> str:
    """A key as written in an error message: kept on one line (repr when not printable)."""
    return key if key.isprintable() else repr(key)


def _check_keys(data: Any, allowed: Iterable[str], name: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise SceneError(f"{name}: must be a mapping")
    unknown = sorted(set(map(str, data)) - set(allowed))
    if unknown:
        raise SceneError(f"{name}.{_show(unknown[0])}: unknown key "
                         f"(allowed: {', '.join(sorted(allowed))})")
    return data


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


_SCENE_KEYS = ("container", "objects", "constraints", "rules", "gripper")
_OBJECT_KEYS = ("id", "size", "cloud", "pose", "mass", "fragile", "mesh", "label")


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
    items = tuple(_item_from_dict(o, i, Path(base_dir)) for i, o in enumerate(objs))
    rules_data = _check_keys(_unless_none(data.get("rules"), {}),
                             ("heavy_below", "gripper_clear", "stable"), "rules")
    rules = Rules(**{k: _flag(v, f"rules.{k}") for k, v in rules_data.items()})
    gripper = _gripper_from_dict(_unless_none(data.get("gripper"), {}))
    constraints = parse_constraints(_unless_none(data.get("constraints"), []))
    return PackingProblem(container, items, constraints, rules, gripper)


def _unless_none(value: Any, default: Any) -> Any:
    """An optional section: absent or empty (``rules:``) means the default; ``0``/``""`` do not."""
    return default if value is None else value


def _gripper_from_dict(g: Any) -> Gripper:
    g = _check_keys(g, ("type", "max_opening", "finger", "cup_radius"), "gripper")
    kwargs = dict(g)
    if "max_opening" in kwargs:
        kwargs["max_opening"] = _number(kwargs["max_opening"], "gripper.max_opening", positive=True)
    if "cup_radius" in kwargs:
        kwargs["cup_radius"] = _number(kwargs["cup_radius"], "gripper.cup_radius", positive=True)
    return Gripper(**kwargs)


def _item_from_dict(o: Any, i: int, base_dir: Path) -> Item:
    where = f"objects[{i}]"
    o = _check_keys(o, _OBJECT_KEYS, where)
    if "id" not in o:
        raise SceneError(f"{where}.id: missing")
    oid = o["id"]
    if not isinstance(oid, str) or not ID_PATTERN.fullmatch(oid):
        raise SceneError(f"{where}.id: must match [A-Za-z0-9_-]+, got {oid!r}")
    mass = _number(o["mass"], f"{where}.mass", positive=True) if "mass" in o else None
    fragile = _flag(o.get("fragile", False), f"{where}.fragile")
    pose = _vector(o["pose"], 4, f"{where}.pose") if "pose" in o else None
    mesh = o.get("mesh")
    if mesh is not None:
        if not isinstance(mesh, str):
            raise SceneError(f"{where}.mesh: must be a file path")
        mesh_path = Path(mesh) if os.path.isabs(mesh) else base_dir / mesh
        if not mesh_path.is_file():
            raise SceneError(f"{where}.mesh: file not found: {mesh_path}")
        mesh = str(mesh_path)
    if "size" in o and "cloud" in o:
        raise SceneError(f"{where}: give either size or cloud, not both")
    if "size" in o:
        size = _vector(o["size"], 3, f"{where}.size", positive=True)
        if pose is None:
            raise SceneError(f"{where}.pose: required when the object has a size "
                             "(where to pick it)")
        return Item(oid, size, pose, mass, fragile, mesh=mesh)
    if "cloud" in o:
        size, cloud_pose, points = _perceive_cloud_entry(o["cloud"], f"{where}.cloud", base_dir)
        pose = pose if pose is not None else cloud_pose
        return Item(oid, size, pose, mass, fragile, points, mesh)
    raise SceneError(f"{where}: needs either size or cloud")


def _perceive_cloud_entry(path: Any, name: str, base_dir: Path):
    """Load one object's cloud file and fit its box (perception is imported lazily: open3d)."""
    if not isinstance(path, str):
        raise SceneError(f"{name}: must be a file path")
    full = Path(path) if os.path.isabs(path) else base_dir / path
    from robot_packer import perception

    try:
        points = perception.load_cloud(full)[:, :3]
        obj = perception.fit_single_object(points)
    except (OSError, ValueError) as exc:
        raise SceneError(f"{name}: {exc}") from None
    return obj.size, obj.pose, obj.points


class _SceneLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read the relation ``on`` as True."""


_SceneLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SceneLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))


def parse_yaml(text: str) -> Any:
    """Parse YAML with 1.2 booleans (``on``/``yes`` stay strings)."""
    return yaml.load(text, Loader=_SceneLoader)


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


def _read_text(path: Path) -> str:
    """The file's UTF-8 text, or SceneError naming the file (unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SceneError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SceneError(f"{path}: not UTF-8 text (byte {exc.start})") from None


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


def _floats(arr: Iterable[float], nd: int = 6) -> list[float]:
    return [round(float(v), nd) for v in arr]


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
        keys = ("status", "message", "frame", "solver", "placements", "sizes", "steps",
                "constraints", "verification")
        data = _check_keys(data, keys, "plan")
        for k in keys:
            if k not in data:
                raise SceneError(f"plan.{k}: missing")
        clean = _id_vectors(data["placements"], "placements", 4, "[x, y, z, yaw]")
        clean_sizes = _id_vectors(data["sizes"], "sizes", 3, "[sx, sy, sz]", positive=True)
        for name, typ in (("message", str), ("frame", str), ("solver", Mapping),
                          ("steps", list), ("constraints", list), ("verification", Mapping)):
            if not isinstance(data[name], typ):
                raise SceneError(f"plan.{name}: wrong type")
        if not isinstance(data["status"], str):
            raise SceneError("plan.status: must be a string")
        for name in ("solver", "steps", "constraints", "verification"):
            _no_nan(data[name], f"plan.{name}")
        return cls(data["status"], data["message"], data["frame"], dict(data["solver"]), clean,
                   clean_sizes, list(data["steps"]), list(data["constraints"]),
                   dict(data["verification"]))


def _no_nan(value: Any, name: str, depth: int = 0) -> None:
    """Raise when a free-form plan block holds NaN/inf (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SceneError(f"{name}: must not contain NaN or infinity")
    if depth > 20:
        raise SceneError(f"{name}: nested too deeply")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _no_nan(v, f"{name}.{_show(str(k))}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _no_nan(v, f"{name}[{i}]", depth + 1)


def _id_vectors(mapping: Any, key: str, n: int, what: str, positive: bool = False) -> dict:
    """A plan's ``id -> n-vector`` table, validated (ids as in scenes, finite numbers)."""
    if not isinstance(mapping, Mapping):
        raise SceneError(f"plan.{key}: must be a mapping id -> {what}")
    for k in mapping:
        if not isinstance(k, str) or not ID_PATTERN.fullmatch(k):
            raise SceneError(f"plan.{key}: key {k!r} is not an object id ([A-Za-z0-9_-]+)")
    out = {k: _floats(_vector(v, n, f"plan.{key}.{k}", positive), 9) for k, v in mapping.items()}
    for k, v in out.items():  # rounding must not turn a tiny positive size into 0
        if positive and min(v) <= 0:
            raise SceneError(f"plan.{key}.{k}: must be {n} positive numbers (>= 1e-9 m)")
    return out


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
