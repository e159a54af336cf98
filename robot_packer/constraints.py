"""The constraint registry: exact checkers and differentiable, batched violations (DESIGN.md §5).

Every constraint type is one entry in ``REGISTRY``: a torch function
``violation(poses, geom, args) -> (B, E)`` over a batch of candidate placements, where
``poses`` is (B, n, 4) ``[x, y, z, yaw]`` in the container frame, ``geom`` the problem's
:class:`Geometry` and ``args`` a (E, arity) long tensor of argument indices (for ``region`` the
second column is an index into ``REGIONS``). Violations are metres, zero exactly where the
constraint holds (tolerances from :data:`TOL` are already subtracted) and positive elsewhere.

The exact checker (:func:`check`) evaluates the same geometry in float64 on one placement and adds
the order-dependent part of ``gripper_clear``; ``stable`` and ``gripper_clear`` get their physical
part from the PyBullet verifier in ``robot_packer.sim``.

The batched box geometry (footprints, separations, gaps, gripper boxes), :data:`TOL` and
:class:`Geometry` live in :mod:`robot_packer.geometry`; they are re-exported here, so
``constraints.TOL``, ``constraints.sat_separation`` etc. keep working.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch

from robot_packer.geometry import (TOL, Geometry, _bottom, _top, box_separation,
                                   finger_object_violation, finger_wall_violation,
                                   half_extents_xy, point_outside, sat_separation, signed_gap)
from robot_packer.geometry import (HAND_ABOVE_TCP, HAND_SIZE, SUCTION_WRIST_ABOVE_TCP,  # noqa
                                   SUCTION_WRIST_SIZE, Tolerances, corners, finger_boxes,
                                   finger_room)  # re-exported
from robot_packer.problem import REGIONS, PackingProblem, Rules

Tensor = torch.Tensor


@dataclass(frozen=True)
class ConstraintType:
    """A registry entry. ``kind``: 'relation' (listed in scenes), 'implied' or 'rule'."""

    name: str
    arity: int
    kind: str
    violation: Callable[[Tensor, Geometry, Tensor], Tensor]


REGISTRY: dict[str, ConstraintType] = {}


def register(name: str, arity: int, kind: str = "relation"):
    """Decorator adding a violation function to ``REGISTRY``; a duplicate name raises."""
    def deco(fn):
        if name in REGISTRY:
            raise ValueError(f"constraint {name!r} is already registered")
        REGISTRY[name] = ConstraintType(name, arity, kind, fn)
        return fn
    return deco


def _gather(poses: Tensor, geom: Geometry, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Poses (B, E, 4) and sizes (E, 3) of the objects in one argument column."""
    return poses[:, idx], geom.sizes[idx]


def _pair(poses, geom, args):
    pa, sa = _gather(poses, geom, args[:, 0])
    pb, sb = _gather(poses, geom, args[:, 1])
    return pa, sa, pb, sb


# ---------------------------------------------------------------- the registry

@register("in", 1, "implied")
def _in(poses, geom, args):
    p, s = _gather(poses, geom, args[:, 0])
    hx, hy = half_extents_xy(p[..., 3], s)
    L, W, H = geom.box / 2
    over = (torch.relu(p[..., 0].abs() + hx - L - TOL.slack)
            + torch.relu(p[..., 1].abs() + hy - W - TOL.slack)
            + torch.relu(-_bottom(p, s) - TOL.slack) + torch.relu(_top(p, s) - 2 * H - TOL.slack))
    return over


@register("cfree", 2, "implied")
def _cfree(poses, geom, args):
    return torch.relu(-box_separation(*_pair(poses, geom, args)) - TOL.slack)


def _side(axis: int, a_positive: bool):
    def fn(poses, geom, args):
        pa, sa, pb, sb = _pair(poses, geom, args)
        ha = half_extents_xy(pa[..., 3], sa)[axis]
        hb = half_extents_xy(pb[..., 3], sb)[axis]
        if a_positive:   # min(a) >= max(b)
            raw = (pb[..., axis] + hb) - (pa[..., axis] - ha)
        else:            # max(a) <= min(b)
            raw = (pa[..., axis] + ha) - (pb[..., axis] - hb)
        return torch.relu(raw - TOL.slack)
    return fn


register("left_of", 2)(_side(1, True))
register("right_of", 2)(_side(1, False))
register("behind", 2)(_side(0, True))
register("in_front_of", 2)(_side(0, False))


@register("on", 2)
def _on(poses, geom, args):
    pa, sa, pb, sb = _pair(poses, geom, args)
    gap = _bottom(pa, sa) - _top(pb, sb)
    return torch.relu(gap.abs() - TOL.on_gap) + point_outside(pa[..., :2], pb, sb)


@register("close_to", 2)
def _close(poses, geom, args):
    return torch.relu(signed_gap(*_pair(poses, geom, args)) - TOL.close)


@register("away_from", 2)
def _away(poses, geom, args):
    return torch.relu(TOL.away - signed_gap(*_pair(poses, geom, args)))


def _aligned(axis: int):
    def fn(poses, geom, args):
        pa, _, pb, _ = _pair(poses, geom, args)
        return torch.relu((pa[..., axis] - pb[..., axis]).abs() - TOL.aligned)
    return fn


register("aligned_x", 2)(_aligned(0))
register("aligned_y", 2)(_aligned(1))


def region_bounds(box: Tensor) -> Tensor:
    """(5, 4) [x_lo, x_hi, y_lo, y_hi] of each region in REGIONS order."""
    L, W = float(box[0]) / 2, float(box[1]) / 2
    table = {"left": (-L, L, 0.0, W), "right": (-L, L, -W, 0.0), "front": (-L, 0.0, -W, W),
             "back": (0.0, L, -W, W), "center": (-L / 2, L / 2, -W / 2, W / 2)}
    return torch.tensor([table[r] for r in REGIONS], dtype=box.dtype, device=box.device)


@register("region", 2)
def _region(poses, geom, args):
    p, s = _gather(poses, geom, args[:, 0])
    b = region_bounds(geom.box)[args[:, 1]]  # (E, 4)
    hx, hy = half_extents_xy(p[..., 3], s)
    t = TOL.slack
    return (torch.relu(b[:, 0] - (p[..., 0] - hx) - t) + torch.relu(p[..., 0] + hx - b[:, 1] - t)
            + torch.relu(b[:, 2] - (p[..., 1] - hy) - t) + torch.relu(p[..., 1] + hy - b[:, 3] - t))


def _rests_on(pa, sa, pb, sb) -> Tensor:
    """Zero when a does not rest on b; else how deeply it does (footprint overlap, contact)."""
    overlap = torch.relu(-sat_separation(pa, sa, pb, sb) - TOL.slack)
    contact = torch.relu(TOL.on_gap - (_bottom(pa, sa) - _top(pb, sb)).abs())
    return torch.minimum(overlap, contact)


@register("heavy_below", 2, "rule")
def _heavy_below(poses, geom, args):
    """Over ordered pairs (a, b) where a must not rest on b (a heavier, or b fragile)."""
    return _rests_on(*_pair(poses, geom, args))


@register("stable", 1, "rule")
def _stable(poses, geom, args):
    """Geometric support: on the floor, or the centre over some object touching from below."""
    p, s = _gather(poses, geom, args[:, 0])                       # (B, E, 4)
    floor = torch.relu(_bottom(p, s).abs() - TOL.on_gap)
    gap = (_bottom(p, s)[..., :, None] - _top(poses, geom.sizes)[..., None, :]).abs()  # (B, E, n)
    inner = geom.sizes
    if geom.support_margin > 0:                       # shrink the supports' footprints
        inner = geom.sizes.clone()
        inner[:, :2] = (inner[:, :2] - 2 * geom.support_margin).clamp_min(1e-3)
    out = point_outside(p[..., :, None, :2], poses[:, None], inner)
    on_obj = torch.relu(gap - TOL.on_gap) + out
    self_mask = args[:, 0][:, None] == torch.arange(poses.shape[1], device=poses.device)[None]
    on_obj = on_obj.masked_fill(self_mask, float("inf"))
    return torch.minimum(floor, on_obj.min(-1).values)


@register("gripper_clear", 2, "rule")
def _gripper_clear(poses, geom, args):
    """Over unordered pairs: the pair can be placed in some order with clear fingers, plus walls.

    A relaxation of the order-dependent check: a box strictly below must come first, boxes on
    the same level may come in either order. Wall hits are charged to the pair's first argument
    once per object (see :func:`compile_problem`, which lists each object first exactly once).
    """
    pa, sa, pb, sb = _pair(poses, geom, args)
    a_hits_b = finger_object_violation(pa, sa, pb, sb, geom)
    b_hits_a = finger_object_violation(pb, sb, pa, sa, geom)
    da, db = _bottom(pa, sa), _bottom(pb, sb)
    v = torch.where(db < da - TOL.on_gap, a_hits_b,
                    torch.where(da < db - TOL.on_gap, b_hits_a, torch.minimum(a_hits_b, b_hits_a)))
    return v


# ---------------------------------------------------------------- compiled problems

def relation_names() -> list[str]:
    """Constraint names a scene may list."""
    return sorted(n for n, c in REGISTRY.items() if c.kind == "relation")


RELATIONS = {n: c for n, c in REGISTRY.items() if c.kind in ("relation", "implied")}


@dataclass(frozen=True)
class CompiledProblem:
    """A problem as tensors: geometry plus, per constraint type, its argument index table."""

    geom: Geometry
    edges: dict[str, Tensor]
    n: int

    def violations(self, poses: Tensor) -> dict[str, Tensor]:
        """Per type, (B, E) violations of a batch of placements (B, n, 4)."""
        out = {name: REGISTRY[name].violation(poses, self.geom, args)
               for name, args in self.edges.items() if args.shape[0]}
        if "gripper_clear" in self.edges:
            idx = torch.arange(self.n, device=poses.device)
            out["gripper_walls"] = finger_wall_violation(poses, self.geom.sizes[idx], self.geom)
        return out

    def total(self, poses: Tensor) -> Tensor:
        """(B,) sum of every violation, metres."""
        return sum(v.sum(-1) for v in self.violations(poses).values())

    def per_object(self, poses: Tensor) -> Tensor:
        """(B, n) violation charged to each object: every edge's violation added to each of its
        object arguments (a region's second argument is a region, not an object)."""
        out = torch.zeros(poses.shape[:2], dtype=poses.dtype, device=poses.device)
        for name, v in self.violations(poses).items():
            if name == "gripper_walls":
                out = out + v
                continue
            args = self.edges[name]
            for col in range(1 if name == "region" else args.shape[1]):
                out = out.index_add(1, args[:, col], v)
        return out


def compile_problem(problem: PackingProblem, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32,
                    support_margin: float = 0.0) -> CompiledProblem:
    """Listed relations, implied in/cfree, and the enabled rules as index tables.

    ``support_margin`` > 0 makes ``stable`` stricter (the centre that far inside its support):
    a refinement target for physically robust stacks; exact checks use 0."""
    ids = {item.id: i for i, item in enumerate(problem.items)}
    n = len(ids)
    pairs = [[i, j] for i in range(n) for j in range(i + 1, n)]
    rows: dict[str, list[list[int]]] = {"in": [[i] for i in range(n)], "cfree": pairs}
    for con in problem.constraints:
        if con.name == "region":
            rows.setdefault("region", []).append([ids[con.args[0]], REGIONS.index(con.args[1])])
        else:
            rows.setdefault(con.name, []).append([ids[a] for a in con.args])
    rules: Rules = problem.rules
    masses, fragile = problem.masses, problem.fragile
    rows["heavy_below"] = [[a, b] for a in range(n) for b in range(n) if a != b
                           and ((rules.heavy_below and masses[a] > masses[b]) or fragile[b])]
    if rules.stable:
        rows["stable"] = [[i] for i in range(n)]
    if rules.gripper_clear:
        rows["gripper_clear"] = rows["cfree"]
    edges = {k: torch.tensor(v, dtype=torch.long, device=device).reshape(len(v), REGISTRY[k].arity)
             for k, v in rows.items()}
    geom = replace(Geometry.from_problem(problem, device, dtype), support_margin=support_margin)
    return CompiledProblem(geom, edges, n)


# ---------------------------------------------------------------- exact checking

@dataclass(frozen=True)
class CheckResult:
    constraint: list[str]
    satisfied: bool
    violation: float

    def to_dict(self) -> dict:
        return {"constraint": self.constraint, "satisfied": self.satisfied,
                "violation": round(self.violation, 6)}


def check(problem: PackingProblem, poses: np.ndarray,
          order: Sequence[int] | None = None) -> list[CheckResult]:
    """Exact check of one placement (n, 4), container frame: listed, implied, then rules.

    ``order`` is the placing order for ``gripper_clear`` (default: :func:`placement_order`).
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.shape != (len(problem.items), 4) or not np.all(np.isfinite(poses)):
        raise ValueError(f"poses: expected finite ({len(problem.items)}, 4), got {poses.shape}")
    cp = compile_problem(problem, dtype=torch.float64)
    p = torch.as_tensor(poses)[None]
    ids = problem.ids
    results: list[CheckResult] = []

    def add(name, table_rows, label):
        v = REGISTRY[name].violation(p, cp.geom, table_rows)[0]
        for row, val in zip(table_rows.tolist(), v.tolist()):
            results.append(CheckResult(label(row), val <= 0.0, float(val)))

    for i, con in enumerate(problem.constraints):
        row = ([ids.index(con.args[0]), REGIONS.index(con.args[1])] if con.name == "region"
               else [ids.index(a) for a in con.args])
        add(con.name, torch.tensor([row]), lambda _r, c=con: c.to_list())
    add("in", cp.edges["in"], lambda r: ["in", ids[r[0]]])
    add("cfree", cp.edges["cfree"], lambda r: ["cfree", ids[r[0]], ids[r[1]]])
    for rule in ("heavy_below", "stable"):
        if rule in cp.edges and cp.edges[rule].shape[0]:
            v = REGISTRY[rule].violation(p, cp.geom, cp.edges[rule])[0]
            results.append(CheckResult([rule], bool((v <= 0).all()), float(v.sum())))
        elif rule == "heavy_below" or problem.rules.stable:
            results.append(CheckResult([rule], True, 0.0))
    if problem.rules.gripper_clear:
        v = gripper_violation(problem, poses, order)
        results.append(CheckResult(["gripper_clear"], v <= 0.0, v))
    return results


def all_satisfied(results: Sequence[CheckResult]) -> bool:
    return all(r.satisfied for r in results)


def total(results: Sequence[CheckResult]) -> float:
    return float(sum(r.violation for r in results))


def gripper_violation(problem: PackingProblem, poses: np.ndarray,
                      order: Sequence[int] | None = None) -> float:
    """Finger hits (m) when placing in ``order``: walls and objects already placed."""
    walls, hits = _finger_tables(problem, poses)
    if order is None:
        order = placement_order(problem, poses)
    total_v = float(grasp_excess(problem).sum()) + float(walls.sum())
    for k, i in enumerate(order):
        total_v += float(hits[i, list(order[:k])].sum())
    return total_v


def _finger_tables(problem: PackingProblem, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per object wall hits (n,) and pairwise finger hits (n, n): fingers placing i vs box j."""
    g = Geometry.from_problem(problem, dtype=torch.float64)
    p = torch.as_tensor(np.asarray(poses, dtype=np.float64))
    n = p.shape[0]
    walls = finger_wall_violation(p, g.sizes, g).numpy()
    pa, sa = p[:, None].expand(n, n, 4), g.sizes[:, None].expand(n, n, 3)
    pb, sb = p[None].expand(n, n, 4), g.sizes[None].expand(n, n, 3)
    hits = finger_object_violation(pa, sa, pb, sb, g).numpy().copy()
    np.fill_diagonal(hits, 0.0)
    return walls, hits


def grasp_excess(problem: PackingProblem) -> np.ndarray:
    """(n,) how much wider than the gripper's opening each object is across its narrower side."""
    if problem.gripper.type != "parallel":
        return np.zeros(len(problem.items))
    narrow = problem.sizes[:, :2].min(1) + 2 * TOL.grip_margin
    return np.maximum(narrow - problem.gripper.max_opening, 0.0)


def support_matrix(problem: PackingProblem, poses: np.ndarray) -> np.ndarray:
    """(n, n) bool: [i, j] when object i rests directly on object j."""
    g = Geometry.from_problem(problem, dtype=torch.float64)
    p = torch.as_tensor(np.asarray(poses, dtype=np.float64))
    n = p.shape[0]
    rest = _rests_on(p[:, None].expand(n, n, 4), g.sizes[:, None].expand(n, n, 3),
                     p[None].expand(n, n, 4), g.sizes[None].expand(n, n, 3)).numpy() > 0
    np.fill_diagonal(rest, False)
    return rest


def supporters(problem: PackingProblem, poses: np.ndarray, i: int) -> list[int]:
    """Objects that object i rests on directly (touching from below with overlapping footprints)."""
    return [int(j) for j in np.flatnonzero(support_matrix(problem, poses)[i])]


def placement_order(problem: PackingProblem, poses: np.ndarray,
                    first: np.ndarray | None = None) -> list[int]:
    """Placing order: a topological sort of the precedences "j before i when i rests on j" and
    "i before j when the fingers placing i would hit j", lowest top first (then the larger
    footprint) among the ready. When the finger precedences form a cycle (no order keeps every
    finger clear) the rest follows the supports only, lowest top first.

    ``first`` (n, n) bool adds precedences (``[a, b]``: a before b), kept like the finger ones
    (e.g. a table neighbour the hand hits while picking b is picked first)."""
    poses = np.asarray(poses, dtype=np.float64)
    rest = support_matrix(problem, poses)
    _, hits = _finger_tables(problem, poses)
    tops = np.round(poses[:, 2] + problem.sizes[:, 2] / 2, 3)
    area = problem.sizes[:, 0] * problem.sizes[:, 1]
    key = [(tops[i], -area[i], i) for i in range(len(poses))]
    before = (hits > 0.0) | rest.T
    if first is not None:
        before = before | np.asarray(first, dtype=bool)
    order, _ = topological_order(before, key, fallback=rest.T)
    return order


def topological_order(before: np.ndarray, key: Sequence, fallback: np.ndarray | None = None
                      ) -> tuple[list[int], list[int]]:
    """Kahn's sort of the precedences ``before`` (n, n) (``[a, b]``: a is placed before b),
    the lowest ``key[i]`` first among the ready (ties: lower index).

    When the precedences have a cycle, the sort goes on with the ``fallback`` precedences
    (or, failing those too, any object); without a fallback it stops there. Returns the order
    and the objects left unsorted (empty unless it stopped at a cycle)."""
    left, order = list(range(len(key))), []
    while left:
        ready = [i for i in left if not before[left, i].any()]
        if not ready and fallback is None:
            break
        ready = ready or [i for i in left if not fallback[left, i].any()] or left
        order.append(min(ready, key=key.__getitem__))
        left.remove(order[-1])
    return order, left


def describe_failures(results: Sequence[CheckResult], limit: int = 3) -> str:
    """A short human-readable list of the worst violated constraints."""
    bad = sorted((r for r in results if not r.satisfied), key=lambda r: -r.violation)
    return "; ".join(f"{' '.join(r.constraint)} violated by {r.violation * 1000:.1f} mm"
                     for r in bad[:limit])
