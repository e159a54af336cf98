"""The ``triangles2d`` domain: triangles packed into a square tray (Diffusion-CCSP's 2D task).

A problem is a square tray of side ``tray`` (metres, origin at its centre, the ``tray`` frame)
and n triangles, each given by its 3 vertices in its own local frame (metres). A placement is
``[x, y, yaw]`` per triangle: world vertex = R(yaw) @ local vertex + (x, y). Two constraints hold
for every object/pair without being listed:

* ``in(a)``: every vertex inside the tray; violation = how far the worst vertex lies beyond a
  wall (max over vertices of max(|x| - s/2, |y| - s/2, 0), metres).
* ``cfree(a, b)``: the interiors do not overlap; violation = the separating-axis penetration
  depth of the two convex triangles (min over the 6 edge normals of the projection overlap,
  clipped at 0, metres). Touching is fine.

A constraint holds when its violation is at most ``TOLERANCE``. This module owns the typed
problem, the exact (float64, numpy) checker, the procedural generator and scene file I/O; the
batched torch violations and the solvers live in :mod:`robot_packer.solver.triangles`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_packer.validation import (ID_PATTERN, SceneError, _check_keys, _number, _read_text,
                                     parse_yaml)

DOMAIN = "triangles2d"
TOLERANCE = 1e-4          # m: a violation up to this counts as satisfied
MIN_AREA_RATIO = 1e-6     # a triangle with area < this * tray^2 (or < 1e-10 m^2) is degenerate
SCENE_KEYS = ("domain", "tray", "objects")
FIT_YAWS = 20000          # yaw grid over a quarter turn for the does-it-fit-at-all test


@dataclass(frozen=True)
class Triangle:
    """One triangle. ``vertices``: (3, 2) float64, metres, its local frame."""

    id: str
    vertices: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not ID_PATTERN.fullmatch(self.id):
            raise SceneError(f"object id {self.id!r}: must match [A-Za-z0-9_-]+")
        v = np.array(self.vertices, dtype=np.float64)
        if v.shape != (3, 2) or not np.all(np.isfinite(v)):
            raise SceneError(f"{self.id}.vertices: must be 3 [x, y] pairs of finite numbers")
        v.setflags(write=False)
        object.__setattr__(self, "vertices", v)

    @property
    def area(self) -> float:
        return abs(signed_area(self.vertices))


@dataclass(frozen=True)
class TriangleProblem:
    """A square tray of side ``tray`` (m) and the triangles to place in it."""

    tray: float
    items: tuple[Triangle, ...]

    def __post_init__(self) -> None:
        if isinstance(self.tray, bool) or not (isinstance(self.tray, (int, float))
                                               and math.isfinite(self.tray) and self.tray > 0):
            raise SceneError(f"tray: must be a positive side length in metres, got {self.tray!r}")
        object.__setattr__(self, "tray", float(self.tray))
        if not self.items:
            raise SceneError("objects: must be a non-empty list")
        seen: set[str] = set()
        for i, item in enumerate(self.items):
            if item.id in seen:
                raise SceneError(f"objects[{i}].id: duplicate id {item.id!r}")
            seen.add(item.id)
            if item.area < max(1e-10, MIN_AREA_RATIO * self.tray ** 2):
                raise SceneError(f"objects[{i}].vertices: degenerate triangle {item.id!r} "
                                 f"(area {item.area:.3g} m^2)")

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.items]

    @property
    def vertices(self) -> np.ndarray:
        """(n, 3, 2) float64 local vertices, metres."""
        return np.stack([t.vertices for t in self.items])


@dataclass(frozen=True)
class CheckResult:
    """One constraint's verdict: ``constraint`` e.g. ("cfree", "t0", "t1"); violation in m."""

    constraint: tuple[str, ...]
    satisfied: bool
    violation: float

    def to_dict(self) -> dict:
        return {"constraint": list(self.constraint), "satisfied": self.satisfied,
                "violation": self.violation}


# ---------------------------------------------------------------- geometry

def signed_area(v: np.ndarray) -> float:
    """Signed area of a (3, 2) triangle (positive when counter-clockwise)."""
    (ax, ay), (bx, by), (cx, cy) = v
    return 0.5 * ((bx - ax) * (cy - ay) - (cx - ax) * (by - ay))


def rotation(yaw: np.ndarray) -> np.ndarray:
    """(..., 2, 2) rotation matrices of angles ``yaw`` (...)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def world_vertices(vertices: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """(..., n, 3, 2) tray-frame vertices of local ``vertices`` (n, 3, 2) at poses (..., n, 3)."""
    rot = rotation(poses[..., 2])                                   # (..., n, 2, 2)
    return np.einsum("...ij,...kj->...ki", rot, vertices) + poses[..., None, :2]


def in_violation(world: np.ndarray, tray: float) -> np.ndarray:
    """(...,) distance (m) the worst vertex of each (..., 3, 2) triangle lies beyond a wall."""
    return np.clip(np.abs(world) - tray / 2, 0.0, None).max(axis=(-1, -2))


def edge_normals(world: np.ndarray) -> np.ndarray:
    """(..., 3, 2) unit normals of the 3 edges of (..., 3, 2) triangles."""
    e = np.roll(world, -1, axis=-2) - world
    n = np.stack([-e[..., 1], e[..., 0]], -1)
    return n / np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)


def penetration(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(...,) separating-axis penetration depth (m, >= 0) of triangles a, b (..., 3, 2)."""
    axes = np.concatenate([edge_normals(a), edge_normals(b)], -2)     # (..., 6, 2)
    pa = np.einsum("...kd,...vd->...kv", axes, a)                    # (..., 6, 3)
    pb = np.einsum("...kd,...vd->...kv", axes, b)
    overlap = np.minimum(pa.max(-1), pb.max(-1)) - np.maximum(pa.min(-1), pb.min(-1))
    return np.clip(overlap.min(-1), 0.0, None)


def pairs(n: int) -> np.ndarray:
    """(n(n-1)/2, 2) index pairs i < j."""
    return np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64
                    ).reshape(-1, 2)


def check(problem: TriangleProblem, poses: np.ndarray) -> list[CheckResult]:
    """The exact verdict of every ``in`` and ``cfree`` constraint at ``poses`` (n, 3)."""
    poses = np.asarray(poses, dtype=np.float64)
    if poses.shape != (problem.n, 3):
        raise ValueError(f"poses: expected ({problem.n}, 3) [x, y, yaw], got {poses.shape}")
    world = world_vertices(problem.vertices, poses)
    ids = problem.ids
    out = []
    for i, v in enumerate(in_violation(world, problem.tray)):
        out.append(CheckResult(("in", ids[i]), bool(v <= TOLERANCE), float(v)))
    pr = pairs(problem.n)
    if len(pr):
        for (i, j), v in zip(pr, penetration(world[pr[:, 0]], world[pr[:, 1]])):
            out.append(CheckResult(("cfree", ids[i], ids[j]), bool(v <= TOLERANCE), float(v)))
    return out


def all_satisfied(results: list[CheckResult]) -> bool:
    return all(r.satisfied for r in results)


def infeasibility(problem: TriangleProblem) -> str | None:
    """Why no placement can exist (a triangle fits the tray at no yaw; total area above the
    tray's), or None when these necessary conditions pass."""
    yaws = np.linspace(0.0, math.pi / 2, FIT_YAWS, endpoint=False)
    rot = rotation(yaws)                                            # (Y, 2, 2)
    for item in problem.items:
        w = np.einsum("yij,kj->yki", rot, item.vertices)            # (Y, 3, 2)
        extent = (w.max(1) - w.min(1)).max(-1)                       # (Y,) larger bbox side
        diameter = float(np.linalg.norm(item.vertices[:, None] - item.vertices[None], axis=-1)
                         .max())
        slack = TOLERANCE * 2 + diameter * (math.pi / 2 / FIT_YAWS)  # grid resolution
        if extent.min() > problem.tray + slack:
            return (f"object {item.id!r} fits the {problem.tray:g} m tray at no yaw "
                    f"(smallest bounding square {extent.min():.4f} m)")
    area = sum(t.area for t in problem.items)
    if area > problem.tray ** 2 * (1 + 1e-9):
        return f"total triangle area {area:.4g} m^2 exceeds the tray's {problem.tray ** 2:.4g} m^2"
    return None


# ---------------------------------------------------------------- scene files

def problem_from_dict(data: Any) -> TriangleProblem:
    """A validated TriangleProblem from a scene mapping; SceneError naming the bad field."""
    data = _check_keys(data, SCENE_KEYS, "scene")
    if data.get("domain") != DOMAIN:
        raise SceneError(f"scene.domain: must be {DOMAIN!r}, got {data.get('domain')!r}")
    if "tray" not in data:
        raise SceneError("scene.tray: missing")
    tray = _number(data["tray"], "tray", positive=True)
    objs = data.get("objects")
    if not isinstance(objs, list) or not objs:
        raise SceneError("objects: must be a non-empty list")
    items = []
    for i, obj in enumerate(objs):
        obj = _check_keys(obj, ("id", "vertices"), f"objects[{i}]")
        for key in ("id", "vertices"):
            if key not in obj:
                raise SceneError(f"objects[{i}].{key}: missing")
        if not isinstance(obj["id"], str) or not ID_PATTERN.fullmatch(obj["id"]):
            raise SceneError(f"objects[{i}].id: must match [A-Za-z0-9_-]+, got {obj['id']!r}")
        items.append(Triangle(obj["id"], _vertices(obj["vertices"], f"objects[{i}].vertices")))
    return TriangleProblem(tray, tuple(items))


def _vertices(value: Any, name: str) -> np.ndarray:
    """(3, 2) float64 from a list of 3 [x, y] number pairs, or SceneError naming ``name``."""
    what = f"{name}: must be 3 [x, y] pairs of finite numbers"
    if not isinstance(value, list) or len(value) != 3:
        raise SceneError(what)
    rows = []
    for v in value:
        if not isinstance(v, list) or len(v) != 2:
            raise SceneError(what)
        try:
            rows.append([_number(c, name) for c in v])
        except SceneError:
            raise SceneError(what) from None
    return np.array(rows, dtype=np.float64)


def problem_to_dict(problem: TriangleProblem) -> dict:
    return {"domain": DOMAIN, "tray": problem.tray,
            "objects": [{"id": t.id, "vertices": [[float(c) for c in v] for v in t.vertices]}
                        for t in problem.items]}


def _parse(path: Path) -> Any:
    text = _read_text(path)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        return json.loads(text) if path.suffix == ".json" else parse_yaml(text)
    except (ValueError, RecursionError) as exc:
        raise SceneError(f"{path}: not valid {kind}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError and friends: same user error
        raise SceneError(f"{path}: not valid {kind}: {str(exc).splitlines()[0]}") from None


def load_scene(path: str | Path) -> TriangleProblem:
    """Read a triangles2d scene file (.json, or .yaml/.yml) into a validated problem."""
    return problem_from_dict(_parse(Path(path)))


def is_triangles_scene(path: str | Path) -> bool:
    """Whether ``path`` parses to a mapping with ``domain: triangles2d`` (False when it does not
    parse: the caller's own loader then reports the error)."""
    try:
        data = _parse(Path(path))
    except SceneError:
        return False
    return isinstance(data, dict) and data.get("domain") == DOMAIN


def save_scene(problem: TriangleProblem, path: str | Path) -> None:
    """Write the scene atomically (JSON for .json, otherwise YAML-compatible JSON text)."""
    from robot_packer.problem import atomic_write

    atomic_write(path, json.dumps(problem_to_dict(problem), indent=1) + "\n")


# ---------------------------------------------------------------- generator

@dataclass(frozen=True)
class GenConfig:
    """Generator knobs: tray side (m), shrink range toward each centroid, minimum angle."""

    tray: float = 0.30
    shrink: tuple[float, float] = (0.90, 0.95)
    min_angle_deg: float = 15.0
    split_range: tuple[float, float] = (0.3, 0.7)   # where on the longest edge a split falls
    tries: int = 200


def min_angle(v: np.ndarray) -> float:
    """Smallest interior angle (degrees) of a (3, 2) triangle."""
    angles = []
    for k in range(3):
        a, b = v[(k + 1) % 3] - v[k], v[(k + 2) % 3] - v[k]
        cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
        angles.append(math.degrees(math.acos(float(np.clip(cos, -1.0, 1.0)))))
    return min(angles)


def triangulate(n: int, rng: np.random.Generator, cfg: GenConfig) -> list[np.ndarray]:
    """``max(n, 2)`` triangles (each (3, 2), tray frame) tiling the square: a diagonal split,
    then repeated splits of a large triangle through a point on its longest edge, keeping every
    angle >= ``cfg.min_angle_deg``. RuntimeError when the tries run out."""
    h = cfg.tray / 2
    corners = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    d = rng.integers(2)
    tris = [corners[[d, d + 1, d + 2]], corners[[d + 2, (d + 3) % 4, d]]]
    tries = 0
    while len(tris) < max(n, 2):
        tries += 1
        if tries > cfg.tries:
            raise RuntimeError(f"triangulate: no valid split found for n={n}")
        areas = np.array([abs(signed_area(t)) for t in tris])
        k = int(rng.choice(len(tris), p=areas ** 2 / (areas ** 2).sum()))
        t = tris[k]
        lengths = [np.linalg.norm(t[(i + 1) % 3] - t[i]) for i in range(3)]
        i = int(np.argmax(lengths))
        a, b, c = t[i], t[(i + 1) % 3], t[(i + 2) % 3]
        p = a + rng.uniform(*cfg.split_range) * (b - a)
        kids = [np.array([a, p, c]), np.array([p, b, c])]
        if all(min_angle(kid) >= cfg.min_angle_deg for kid in kids):
            tris[k:k + 1] = kids
    return tris


def generate(n: int, rng: np.random.Generator, cfg: GenConfig = GenConfig()
             ) -> tuple[TriangleProblem, np.ndarray]:
    """A solvable problem with ``n`` triangles and its known solution (n, 3) [x, y, yaw].

    The pieces of a random triangulation of the tray (one piece of two for n = 1), each shrunk
    toward its centroid by a factor drawn from ``cfg.shrink`` and given a random local rotation
    (the solution's yaw undoes it), in random order with random vertex rotation.
    """
    if n < 1:
        raise ValueError(f"n: must be >= 1, got {n}")
    tris = triangulate(n, rng, cfg)
    order = rng.permutation(len(tris))[:n]
    factor = rng.uniform(*cfg.shrink)
    items, solution = [], []
    for k, idx in enumerate(order):
        t = tris[idx]
        centroid = t.mean(0)
        local = (t - centroid) * factor
        local = np.roll(local, int(rng.integers(3)), axis=0)
        theta = rng.uniform(-math.pi, math.pi)
        local = local @ rotation(np.array(theta)).T                  # R(theta) v
        items.append(Triangle(f"t{k}", local))
        solution.append([centroid[0], centroid[1], -theta])
    problem = TriangleProblem(cfg.tray, tuple(items))
    solution = np.array(solution)
    assert all_satisfied(check(problem, solution)), "generator: known solution fails the checker"
    return problem, solution
