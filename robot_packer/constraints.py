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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from robot_packer.problem import REGIONS, PackingProblem, Rules

Tensor = torch.Tensor


@dataclass(frozen=True)
class Tolerances:
    """Every tolerance of the constraint vocabulary, in one place (metres unless noted)."""

    slack: float = 0.001          # touching allowed: sides, containment, overlap
    on_gap: float = 0.005         # "bottom within 5 mm of the top"
    close: float = 0.03           # close_to: footprint gap at most
    away: float = 0.10            # away_from: footprint gap at least
    aligned: float = 0.01         # aligned_x / aligned_y: centre difference at most
    grip_margin: float = 0.005    # finger clearance beyond the object's side when opening
    finger_clearance: float = 0.02  # added to a finger's thickness: the Franka finger's convex
    #                                 collision hull is 2.64 cm thick, the pad (``finger``) 1 cm,
    #                                 and the simulator's contact margin is 1 mm
    finger_side_clearance: float = 0.002  # added on both sides of a finger's width: the hull
    #                                       is 2.1 cm wide, plus the 1 mm contact margin
    settle_time_s: float = 2.0    # stable: simulated settling time
    settle_drift: float = 0.01    # stable: max centre motion while settling
    settle_yaw_deg: float = 5.0   # stable: max yaw change while settling
    settle_slack: float = 0.002   # constraints re-checked on the settled state may be off by this
    friction: float = 0.6


TOL = Tolerances()
_EPS = 1e-12


@dataclass(frozen=True)
class Geometry:
    """Static per-problem tensors. sizes (n, 3) m; masses (n,) kg; fragile (n,) bool; box (3,)."""

    sizes: Tensor
    masses: Tensor
    fragile: Tensor
    box: Tensor
    gripper_type: str = "parallel"
    max_opening: float = 0.08
    finger: tuple[float, float, float] = (0.02, 0.01, 0.05)
    cup_radius: float = 0.02

    @classmethod
    def from_problem(cls, problem: PackingProblem, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> "Geometry":
        kw = dict(device=device, dtype=dtype)
        g = problem.gripper
        return cls(torch.tensor(problem.sizes, **kw), torch.tensor(problem.masses, **kw),
                   torch.tensor(problem.fragile, device=device),
                   torch.tensor(np.array(problem.container.size), **kw), g.type, g.max_opening,
                   tuple(g.finger), g.cup_radius)


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


# ---------------------------------------------------------------- geometry kernels (batched)

def _axes(yaw: Tensor) -> tuple[Tensor, Tensor]:
    """Unit local x and y axes (..., 2) of a footprint rotated by ``yaw``."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    return torch.stack([c, s], -1), torch.stack([-s, c], -1)


def half_extents_xy(yaw: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    """Half extents along world x and y of a yaw-rotated footprint."""
    c, s = torch.cos(yaw).abs(), torch.sin(yaw).abs()
    return 0.5 * (c * size[..., 0] + s * size[..., 1]), 0.5 * (s * size[..., 0] + c * size[..., 1])


def corners(pose: Tensor, size: Tensor) -> Tensor:
    """Footprint corners (..., 4, 2), counter-clockwise."""
    ex, ey = _axes(pose[..., 3])
    hx, hy = (0.5 * size[..., 0])[..., None], (0.5 * size[..., 1])[..., None]
    signs = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=pose.dtype, device=pose.device)
    offs = signs[:, 0:1] * (hx * ex)[..., None, :] + signs[:, 1:2] * (hy * ey)[..., None, :]
    return pose[..., None, :2] + offs


def sat_separation(pa: Tensor, sa: Tensor, pb: Tensor, sb: Tensor) -> Tensor:
    """Largest separation of two footprints over their 4 edge normals (separating-axis test).

    Positive: separated at least by that much; negative: overlapping, minus the penetration depth.
    """
    axes = torch.stack([*_axes(pa[..., 3]), *_axes(pb[..., 3])], -2)  # (..., 4, 2)
    d = (pb[..., :2] - pa[..., :2])[..., None, :]

    def radius(pose, size):
        ex, ey = _axes(pose[..., 3])
        return (0.5 * size[..., 0:1] * (axes * ex[..., None, :]).sum(-1).abs()
                + 0.5 * size[..., 1:2] * (axes * ey[..., None, :]).sum(-1).abs())

    sep = (axes * d).sum(-1).abs() - radius(pa, sa) - radius(pb, sb)
    return sep.max(-1).values


def _point_segment_dist2(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(_EPS)).clamp(0.0, 1.0)
    q = a + t[..., None] * ab
    return ((p - q) ** 2).sum(-1)


def _poly_dist(ca: Tensor, cb: Tensor) -> Tensor:
    """Distance between two disjoint convex quads (..., 4, 2): min vertex-to-edge distance."""
    def one_way(pts, poly):
        a, b = poly, poly.roll(-1, dims=-2)
        d2 = _point_segment_dist2(pts[..., :, None, :], a[..., None, :, :], b[..., None, :, :])
        return d2.flatten(-2).min(-1).values
    d2 = torch.minimum(one_way(ca, cb), one_way(cb, ca))
    return torch.sqrt(d2 + _EPS) - math.sqrt(_EPS)


def signed_gap(pa: Tensor, sa: Tensor, pb: Tensor, sb: Tensor) -> Tensor:
    """Footprint gap: the distance when apart, minus the penetration depth when overlapping."""
    sep = sat_separation(pa, sa, pb, sb)
    dist = _poly_dist(corners(pa, sa), corners(pb, sb))
    return torch.where(sep > 0, torch.maximum(dist, sep), sep)


def point_outside(p: Tensor, pose: Tensor, size: Tensor) -> Tensor:
    """Distance from xy point(s) ``p`` (..., 2) to a footprint; 0 inside."""
    ex, ey = _axes(pose[..., 3])
    d = p - pose[..., :2]
    local = torch.stack([(d * ex).sum(-1), (d * ey).sum(-1)], -1)
    q = torch.relu(local.abs() - 0.5 * size[..., :2])
    return torch.sqrt((q * q).sum(-1) + _EPS) - math.sqrt(_EPS)


def _bottom(pose: Tensor, size: Tensor) -> Tensor:
    return pose[..., 2] - 0.5 * size[..., 2]


def _top(pose: Tensor, size: Tensor) -> Tensor:
    return pose[..., 2] + 0.5 * size[..., 2]


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


def box_separation(pa, sa, pb, sb) -> Tensor:
    """3D separation of two yaw-rotated boxes: >0 apart, <0 minus the penetration depth."""
    z_sep = (pa[..., 2] - pb[..., 2]).abs() - 0.5 * (sa[..., 2] + sb[..., 2])
    return torch.maximum(sat_separation(pa, sa, pb, sb), z_sep)


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
    out = point_outside(p[..., :, None, :2], poses[:, None], geom.sizes)
    on_obj = torch.relu(gap - TOL.on_gap) + out
    self_mask = args[:, 0][:, None] == torch.arange(poses.shape[1], device=poses.device)[None]
    on_obj = on_obj.masked_fill(self_mask, float("inf"))
    return torch.minimum(floor, on_obj.min(-1).values)


# The parallel gripper's hand body (Franka hand): its length along the closing axis, its width,
# the height kept clear above its underside (hand + flange), and how far the underside sits above
# the TCP at the object's top. The DESIGN's finger boxes alone miss the hand hitting walls.
HAND_SIZE = (0.21, 0.07, 0.12)
HAND_ABOVE_TCP = 0.036


def finger_boxes(pose: Tensor, size: Tensor, geom: Geometry) -> tuple[Tensor, Tensor]:
    """Poses (..., k, 4) and sizes (..., k, 3) of the boxes the gripper sweeps while placing.

    Parallel: the two fingers (``finger`` depth below the object's top, across its narrower
    side) and the hand above them (k = 3). Suction: the cup and arm column above the top (k = 1).
    """
    if geom.gripper_type == "suction":
        h = 2.0 * float(geom.box[2])
        fp = torch.cat([pose[..., :2], (_top(pose, size) + h / 2)[..., None], pose[..., 3:]], -1)
        r = 2 * geom.cup_radius
        fs = torch.tensor([r, r, h], dtype=pose.dtype, device=pose.device)
        fs = fs.expand(*size.shape[:-1], 3)
        return fp[..., None, :], fs[..., None, :]
    width, thick, depth = geom.finger
    narrow_x = size[..., 0] <= size[..., 1]                       # grasp across the narrower side
    yaw = torch.where(narrow_x, pose[..., 3], pose[..., 3] + math.pi / 2)
    w = torch.where(narrow_x, size[..., 0], size[..., 1])
    grasp = torch.minimum(torch.full_like(size[..., 2], depth), size[..., 2] - TOL.grip_margin)
    grasp = torch.maximum(grasp, 0.5 * size[..., 2])
    thick = thick + TOL.finger_clearance
    off = 0.5 * w + TOL.grip_margin + 0.5 * thick
    ex, _ = _axes(yaw)
    top = _top(pose, size)
    zc = top - 0.5 * grasp
    boxes = [torch.cat([pose[..., :2] + sgn * off[..., None] * ex, zc[..., None],
                        yaw[..., None]], -1) for sgn in (1.0, -1.0)]
    hand_z = top + HAND_ABOVE_TCP + 0.5 * HAND_SIZE[2]
    boxes.append(torch.cat([pose[..., :2], hand_z[..., None], yaw[..., None]], -1))
    width = width + 2 * TOL.finger_side_clearance
    fsz = torch.stack([torch.full_like(w, thick), torch.full_like(w, width), grasp], -1)
    hand = torch.tensor(HAND_SIZE, dtype=pose.dtype, device=pose.device).expand_as(fsz)
    return torch.stack(boxes, -2), torch.stack([fsz, fsz, hand], -2)


def finger_room(gripper) -> float:
    """Footprint room (m) the two fingers need beyond the object's narrower side."""
    return 2 * (TOL.grip_margin + gripper.finger[1] + TOL.finger_clearance)


def finger_wall_violation(pose: Tensor, size: Tensor, geom: Geometry) -> Tensor:
    """How far the fingers and hand reach into the walls (0 when clear or above the rim)."""
    fp, fs = finger_boxes(pose, size, geom)
    hx, hy = half_extents_xy(fp[..., 3], fs)
    L, W, H = geom.box / 2
    out = (torch.relu(fp[..., 0].abs() + hx - L - TOL.slack)
           + torch.relu(fp[..., 1].abs() + hy - W - TOL.slack))
    below_rim = torch.relu(2 * H - _bottom(fp, fs))
    return torch.minimum(out, below_rim).sum(-1)


def finger_object_violation(pa: Tensor, sa: Tensor, pb: Tensor, sb: Tensor,
                            geom: Geometry) -> Tensor:
    """How deeply the fingers placing a hit box b (0 when clear)."""
    fp, fs = finger_boxes(pa, sa, geom)
    sep = box_separation(fp, fs, pb[..., None, :].expand_as(fp), sb[..., None, :].expand_as(fs))
    return torch.relu(-sep - TOL.slack).sum(-1)


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
                    dtype: torch.dtype = torch.float32) -> CompiledProblem:
    """Listed relations, implied in/cfree, and the enabled rules as index tables."""
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
    return CompiledProblem(Geometry.from_problem(problem, device, dtype), edges, n)


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


def placement_order(problem: PackingProblem, poses: np.ndarray) -> list[int]:
    """Placing order: a topological sort of the precedences "j before i when i rests on j" and
    "i before j when the fingers placing i would hit j", lowest top first (then the larger
    footprint) among the ready. When the finger precedences form a cycle (no order keeps every
    finger clear) the rest follows the supports only, lowest top first."""
    poses = np.asarray(poses, dtype=np.float64)
    rest = support_matrix(problem, poses)
    _, hits = _finger_tables(problem, poses)
    before = (hits > 0.0) | rest.T                      # [a, b]: a must be placed before b
    tops = np.round(poses[:, 2] + problem.sizes[:, 2] / 2, 3)
    area = problem.sizes[:, 0] * problem.sizes[:, 1]
    key = {i: (tops[i], -area[i], i) for i in range(len(poses))}
    order: list[int] = []
    left = list(range(len(poses)))
    while left:
        ready = [i for i in left if not before[left, i].any()]
        ready = ready or [i for i in left if not rest.T[left, i].any()] or left
        order.append(min(ready, key=key.__getitem__))
        left.remove(order[-1])
    return order


def describe_failures(results: Sequence[CheckResult], limit: int = 3) -> str:
    """A short human-readable list of the worst violated constraints."""
    bad = sorted((r for r in results if not r.satisfied), key=lambda r: -r.violation)
    return "; ".join(f"{' '.join(r.constraint)} violated by {r.violation * 1000:.1f} mm"
                     for r in bad[:limit])
