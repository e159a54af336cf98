"""Batched box geometry shared by the constraint registry (DESIGN.md §5): footprints, separations,
gaps, and the boxes the gripper sweeps while placing.

Poses are (..., 4) ``[x, y, z, yaw]`` in the container frame and sizes (..., 3) box extents, metres;
every kernel is a torch function that broadcasts over leading batch dimensions. The tolerances of
the constraint vocabulary (:data:`TOL`) and the per-problem tensors (:class:`Geometry`) live here
so that :mod:`robot_packer.constraints` builds on this module and not the other way round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from robot_packer.problem import PackingProblem

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
    support_margin: float = 0.0   # stable: the centre at least this far inside its support's
    #                               footprint (refinement targets; the exact checker uses 0)

    @classmethod
    def from_problem(cls, problem: PackingProblem, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> "Geometry":
        kw = dict(device=device, dtype=dtype)
        g = problem.gripper
        return cls(torch.tensor(problem.sizes, **kw), torch.tensor(problem.masses, **kw),
                   torch.tensor(problem.fragile, device=device),
                   torch.tensor(np.array(problem.container.size), **kw), g.type, g.max_opening,
                   tuple(g.finger), g.cup_radius)


# ---------------------------------------------------------------- geometry kernels (batched)

def _axes(yaw: Tensor) -> tuple[Tensor, Tensor]:
    """Unit local x and y axes (..., 2) of a footprint rotated by ``yaw``."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    return torch.stack([c, s], -1), torch.stack([-s, c], -1)


def half_extents_xy(yaw: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    """Half extents along world x and y of a yaw-rotated footprint."""
    c, s = torch.cos(yaw).abs(), torch.sin(yaw).abs()
    return 0.5 * (c * size[..., 0] + s * size[..., 1]), 0.5 * (s * size[..., 0] + c * size[..., 1])


def half_extents_xy_np(yaw: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`half_extents_xy` in numpy, for the placement searches that need no gradients."""
    c, s = np.abs(np.cos(yaw)), np.abs(np.sin(yaw))
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
    A footprint's radius on its own normals is its half size; on the other's normals it follows
    from the relative yaw alone, so the test needs three angles' cosines and sines (it runs in
    the decoder's and the refinement's inner loops).
    """
    ca, sn_a = torch.cos(pa[..., 3]), torch.sin(pa[..., 3])
    cb, sn_b = torch.cos(pb[..., 3]), torch.sin(pb[..., 3])
    rel = pb[..., 3] - pa[..., 3]
    c, s = torch.cos(rel).abs(), torch.sin(rel).abs()
    dx, dy = pb[..., 0] - pa[..., 0], pb[..., 1] - pa[..., 1]
    hax, hay = 0.5 * sa[..., 0], 0.5 * sa[..., 1]
    hbx, hby = 0.5 * sb[..., 0], 0.5 * sb[..., 1]
    sep = torch.stack([
        (dx * ca + dy * sn_a).abs() - hax - (hbx * c + hby * s),     # a's local x
        (dy * ca - dx * sn_a).abs() - hay - (hbx * s + hby * c),     # a's local y
        (dx * cb + dy * sn_b).abs() - hbx - (hax * c + hay * s),     # b's local x
        (dy * cb - dx * sn_b).abs() - hby - (hax * s + hay * c),     # b's local y
    ], -1)
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


def box_separation(pa, sa, pb, sb) -> Tensor:
    """3D separation of two yaw-rotated boxes: >0 apart, <0 minus the penetration depth."""
    z_sep = (pa[..., 2] - pb[..., 2]).abs() - 0.5 * (sa[..., 2] + sb[..., 2])
    return torch.maximum(sat_separation(pa, sa, pb, sb), z_sep)


# The parallel gripper's hand body (Franka hand): its length along the closing axis, its width,
# the height kept clear above its underside (hand + flange), and how far the underside sits above
# the TCP at the object's top. The DESIGN's finger boxes alone miss the hand hitting walls.
HAND_SIZE = (0.21, 0.07, 0.12)
HAND_ABOVE_TCP = 0.036
# The arm above a suction tool: the Panda's wrist (panda_link7) starts 0.146 m above the cup on the
# 0.15 m tool (``sim.robot.SUCTION_TOOL_LENGTH``) and is about 0.09 m across around the tool axis
# (measured in PyBullet: link AABBs over tool yaws), plus a bulge on one side that verification
# turns away from the walls (``sim.reach.TOOL_TURNS``). Kept clear: a square of that side,
# from this height above the TCP up. The DESIGN's cup column alone misses the wrist hitting the
# wall of a deep container beside a low box.
SUCTION_WRIST_SIZE = 0.09
SUCTION_WRIST_ABOVE_TCP = 0.145


def finger_boxes(pose: Tensor, size: Tensor, geom: Geometry) -> tuple[Tensor, Tensor]:
    """Poses (..., k, 4) and sizes (..., k, 3) of the boxes the gripper sweeps while placing.

    Parallel: the two fingers (``finger`` depth below the object's top, across its narrower
    side) and the hand above them (k = 3). Suction: the cup and tool column above the top and
    the wrist above the tool (k = 2).
    """
    if geom.gripper_type == "suction":
        h = 2.0 * float(geom.box[2])
        top = _top(pose, size)[..., None]
        boxes, sizes = [], []
        for above, side in ((0.0, 2 * geom.cup_radius),
                            (SUCTION_WRIST_ABOVE_TCP, SUCTION_WRIST_SIZE)):
            boxes.append(torch.cat([pose[..., :2], top + above + h / 2, pose[..., 3:]], -1))
            sizes.append(torch.tensor([side, side, h], dtype=pose.dtype, device=pose.device)
                         .expand(*size.shape[:-1], 3))
        return torch.stack(boxes, -2), torch.stack(sizes, -2)
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
