"""Field-by-field validation of scene and plan mappings (DESIGN.md §4, §6).

Every check raises :class:`SceneError` with a one-line message naming the offending field, e.g.
``objects[2].size: must be 3 positive numbers``. :mod:`robot_packer.problem` builds its typed
containers on these helpers and re-exports ``SceneError``, ``ID_PATTERN`` and ``parse_yaml``; this
module imports nothing else from the package (perception lazily, for object clouds).
"""
from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import yaml

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")  # use fullmatch: "$" would accept a trailing newline


class SceneError(ValueError):
    """An invalid scene, constraint list or plan; the message names the offending field."""


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


# ---------------------------------------------------------------- scene mappings

_SCENE_KEYS = ("container", "objects", "constraints", "rules", "gripper")
_OBJECT_KEYS = ("id", "size", "cloud", "pose", "mass", "fragile", "mesh", "label")


def _unless_none(value: Any, default: Any) -> Any:
    """An optional section: absent or empty (``rules:``) means the default; ``0``/``""`` do not."""
    return default if value is None else value


def _gripper_kwargs(g: Any) -> dict[str, Any]:
    """Validated ``Gripper`` keyword arguments from a scene's ``gripper`` mapping."""
    g = _check_keys(g, ("type", "max_opening", "finger", "cup_radius"), "gripper")
    kwargs = dict(g)
    if "max_opening" in kwargs:
        kwargs["max_opening"] = _number(kwargs["max_opening"], "gripper.max_opening", positive=True)
    if "cup_radius" in kwargs:
        kwargs["cup_radius"] = _number(kwargs["cup_radius"], "gripper.cup_radius", positive=True)
    return kwargs


def _item_kwargs(o: Any, i: int, base_dir: Path) -> dict[str, Any]:
    """Validated ``Item`` keyword arguments from the scene's ``objects[i]`` mapping."""
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
        return dict(id=oid, size=size, pose=pose, mass=mass, fragile=fragile, mesh=mesh)
    if "cloud" in o:
        size, cloud_pose, points = _perceive_cloud_entry(o["cloud"], f"{where}.cloud", base_dir)
        pose = pose if pose is not None else cloud_pose
        return dict(id=oid, size=size, pose=pose, mass=mass, fragile=fragile, points=points,
                    mesh=mesh)
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


def _read_text(path: Path) -> str:
    """The file's UTF-8 text, or SceneError naming the file (unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SceneError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SceneError(f"{path}: not UTF-8 text (byte {exc.start})") from None


# ---------------------------------------------------------------- plan mappings

def _plan_fields(data: Any) -> tuple:
    """Validated ``Plan`` constructor arguments, in field order, from a plan mapping."""
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
    return (data["status"], data["message"], data["frame"], dict(data["solver"]), clean,
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


def _floats(arr: Iterable[float], nd: int = 6) -> list[float]:
    return [round(float(v), nd) for v in arr]
