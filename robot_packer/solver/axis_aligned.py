"""The partial checker's fast path for quarter-turn boxes (yaw 0 or 90°), in numpy.

The placement searches (the heuristic, the diffusion decoder) only ever place objects at yaw
0 or 90°. Their boxes, and the gripper boxes placing them, are then axis-aligned: separations
are interval arithmetic, and the constraint registry's general torch kernels (separating axes
of rotated footprints, many small tensor operations per call) spend most of a decode's time on
what numpy does in a few vectorised lines. This module evaluates the same formulas as the
registry for that case — ``in``, ``cfree``, ``stable``, ``heavy_below`` / fragile, every listed
relation type and the gripper's walls and fingers — with the same tolerances, so a verdict here
is the registry's verdict (a test compares them on random
partial placements). Any placement the searches complete is still checked by the full exact
checker.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from robot_packer.constraints import region_bounds
from robot_packer.geometry import TOL, Geometry, finger_boxes, half_extents_xy_np

QUARTER_TOL = 1e-9   # |sin 2ψ| below this counts as a quarter turn
SIDES = {"left_of": (1, True), "right_of": (1, False), "behind": (0, True),
         "in_front_of": (0, False)}     # axis, whether a lies on the positive side of b
FORMULAS = {"region", "heavy_below", "on", "aligned_x", "aligned_y", "close_to", "away_from",
            *SIDES}                     # the relation types :meth:`AxisAlignedCheck.relation` knows
_EPS = 1e-12         # point_outside's smoothing, as in robot_packer.geometry


def quarter_turns(yaw: np.ndarray) -> bool:
    """Whether every yaw (rad) is a multiple of 90°."""
    return bool(np.all(np.abs(np.sin(2.0 * np.asarray(yaw))) < QUARTER_TOL))


class AxisAlignedBoxes:
    """Per-problem tables for the numpy checks: sizes, container, gripper boxes per yaw."""

    def __init__(self, geom: Geometry):
        self.geom = geom
        self.sizes = geom.sizes.double().numpy()
        self.half_room = geom.box.double().numpy() / 2          # L/2, W/2, H/2
        self.inner = self.sizes[:, :2].copy()                    # supports' footprints
        if geom.support_margin > 0:
            self.inner = np.maximum(self.inner - 2 * geom.support_margin, 1e-3)
        self.regions = region_bounds(geom.box.double()).numpy()             # (5, 4)
        self._grip: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def half(self, idx: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """(..., 3) world half extents of objects ``idx`` at ``yaw``."""
        s = self.sizes[idx]
        hx, hy = half_extents_xy_np(yaw, s)
        return np.stack([hx, hy, 0.5 * s[..., 2]], -1)

    def gripper(self, i: int, yaw: float) -> tuple[np.ndarray, np.ndarray]:
        """(k, 3) offsets from object i's centre and (k, 3) world half extents of the boxes the
        gripper sweeps placing it at ``yaw`` (the registry's :func:`finger_boxes`: they move
        with the object, so they are computed once per object and quarter turn)."""
        key = (i, int(round(yaw / (math.pi / 2))) % 4)
        if key not in self._grip:
            pose = torch.tensor([[0.0, 0.0, 0.0, yaw]], dtype=torch.float64)
            fp, fs = finger_boxes(pose, self.geom.sizes[i:i + 1].double(), self.geom)
            fp, fs = fp[0].numpy(), fs[0].numpy()
            hx, hy = half_extents_xy_np(fp[:, 3], fs)
            self._grip[key] = fp[:, :3].copy(), np.stack([hx, hy, 0.5 * fs[:, 2]], -1)
        return self._grip[key]


def footprint_separation(ca, ha, cb, hb) -> np.ndarray:
    """Separation of axis-aligned footprints (centres, half extents broadcast): > 0 apart."""
    d = np.abs(ca[..., :2] - cb[..., :2]) - ha[..., :2] - hb[..., :2]
    return d.max(-1)


def box_separation(ca, ha, cb, hb) -> np.ndarray:
    """3D separation of axis-aligned boxes (the registry's footprint test, or apart in z)."""
    z = np.abs(ca[..., 2] - cb[..., 2]) - ha[..., 2] - hb[..., 2]
    return np.maximum(footprint_separation(ca, ha, cb, hb), z)


def point_outside(p, centre, half) -> np.ndarray:
    """Distance from xy points to axis-aligned footprints (the registry's smoothing)."""
    q = np.maximum(np.abs(p - centre) - half, 0.0)
    return np.sqrt((q * q).sum(-1) + _EPS) - math.sqrt(_EPS)


def rests_on(ca, ha, cb, hb) -> np.ndarray:
    """How deeply boxes a rest on boxes b (0: they do not), the registry's ``heavy_below``."""
    overlap = relu(-footprint_separation(ca, ha, cb, hb) - TOL.slack)
    gap = (ca[..., 2] - ha[..., 2]) - (cb[..., 2] + hb[..., 2])
    return np.minimum(overlap, relu(TOL.on_gap - np.abs(gap)))


def relu(x):
    return np.maximum(x, 0.0)


class AxisAlignedCheck:
    """The quarter-turn checks of object ``i`` at ``cand`` (B, 4) against placed boxes."""

    def __init__(self, boxes: AxisAlignedBoxes, placed: list[int], poses: np.ndarray):
        self.boxes = boxes
        self.idx = np.asarray(placed, dtype=np.int64)
        self.centre = poses[self.idx, :3]                                    # (k, 3)
        self.yaw = poses[self.idx, 3]
        self.halfs = boxes.half(self.idx, self.yaw)                         # (k, 3)
        self.top = self.centre[:, 2] + self.halfs[:, 2]                     # (k,)
        # a gripper box with its bottom at or above this height touches no wall and no box
        self.ceiling = max(2 * boxes.half_room[2], float(self.top.max(initial=0.0)))
        self.slot = np.full(len(boxes.sizes), -1)                           # object -> row
        self.slot[self.idx] = np.arange(len(self.idx))

    def resting_z(self, i: int, xy_yaw: np.ndarray) -> np.ndarray:
        """(B,) centre z of object i resting at the (x, y, yaw) rows."""
        hi = self.boxes.half(np.full(len(xy_yaw), i), xy_yaw[:, 2])
        floor = np.zeros(len(xy_yaw))
        if len(self.idx):
            sep = footprint_separation(xy_yaw[:, None, :2], hi[:, None], self.centre[None],
                                       self.halfs[None])
            tops = np.where(sep < -TOL.slack, self.top[None], 0.0)
            floor = tops.max(-1)
        return floor + self.boxes.sizes[i, 2] / 2

    def in_cfree(self, i: int, cand: np.ndarray) -> np.ndarray:
        """(B,) the ``in`` violation plus ``cfree`` against every placed box."""
        h = self.boxes.half(np.full(len(cand), i), cand[:, 3])
        L, W, H = self.boxes.half_room
        v = (relu(np.abs(cand[:, 0]) + h[:, 0] - L - TOL.slack)
             + relu(np.abs(cand[:, 1]) + h[:, 1] - W - TOL.slack)
             + relu(h[:, 2] - cand[:, 2] - TOL.slack)
             + relu(cand[:, 2] + h[:, 2] - 2 * H - TOL.slack))
        if len(self.idx):
            sep = box_separation(cand[:, None, :3], h[:, None], self.centre[None], self.halfs[None])
            v = v + relu(-sep - TOL.slack).sum(-1)
        return v

    def stable(self, i: int, cand: np.ndarray) -> np.ndarray:
        """(B,) on the floor, or the centre over a box touching from below (support margin)."""
        bottom = cand[:, 2] - self.boxes.sizes[i, 2] / 2
        v = relu(np.abs(bottom) - TOL.on_gap)
        if len(self.idx):
            inner = np.stack(half_extents_xy_np(self.yaw, self.boxes.inner[self.idx]), -1)
            on = (relu(np.abs(bottom[:, None] - self.top[None]) - TOL.on_gap)
                  + point_outside(cand[:, None, :2], self.centre[None, :, :2], inner[None]))
            v = np.minimum(v, on.min(-1))
        return v

    def _pairs(self, i: int, cand: np.ndarray, rows: list[list[int]]):
        """Centres and half extents (B, E, 3) of both arguments of pair ``rows`` between
        object i (at ``cand``) and placed boxes."""
        h = self.boxes.half(np.full(len(cand), i), cand[:, 3])[:, None]
        rows = np.asarray(rows)
        out = []
        for col in (0, 1):
            mine = (rows[:, col] == i)[None, :, None]
            k = np.maximum(self.slot[rows[:, col]], 0)
            out += [np.where(mine, cand[:, None, :3], self.centre[k][None]),
                    np.where(mine, h, self.halfs[k][None])]
        return out

    def relation(self, name: str, i: int, cand: np.ndarray, rows: list[list[int]]) -> np.ndarray:
        """(B,) the summed violation of listed relation rows of type ``name`` whose objects are
        object i (at ``cand``) and placed boxes: the registry's formulas."""
        if name == "region":
            h = self.boxes.half(np.full(len(cand), i), cand[:, 3])
            b = self.boxes.regions[[r[1] for r in rows]]                       # (E, 4)
            x, y, t = cand[:, 0, None], cand[:, 1, None], TOL.slack
            hx, hy = h[:, 0, None], h[:, 1, None]
            return (relu(b[:, 0] - (x - hx) - t) + relu(x + hx - b[:, 1] - t)
                    + relu(b[:, 2] - (y - hy) - t) + relu(y + hy - b[:, 3] - t)).sum(-1)
        ca, ha, cb, hb = self._pairs(i, cand, rows)
        if name == "heavy_below":
            v = rests_on(ca, ha, cb, hb)
        elif name in SIDES:
            axis, a_positive = SIDES[name]
            raw = ((cb[..., axis] + hb[..., axis]) - (ca[..., axis] - ha[..., axis]) if a_positive
                   else (ca[..., axis] + ha[..., axis]) - (cb[..., axis] - hb[..., axis]))
            v = relu(raw - TOL.slack)
        elif name == "on":
            gap = (ca[..., 2] - ha[..., 2]) - (cb[..., 2] + hb[..., 2])
            v = relu(np.abs(gap) - TOL.on_gap) + point_outside(ca[..., :2], cb[..., :2],
                                                               hb[..., :2])
        elif name in ("aligned_x", "aligned_y"):
            axis = 0 if name == "aligned_x" else 1
            v = relu(np.abs(ca[..., axis] - cb[..., axis]) - TOL.aligned)
        elif name in ("close_to", "away_from"):
            d = np.abs(ca[..., :2] - cb[..., :2]) - ha[..., :2] - hb[..., :2]
            sep = d.max(-1)
            q = relu(d)
            dist = np.sqrt((q * q).sum(-1) + _EPS) - math.sqrt(_EPS)
            gap = np.where(sep > 0, np.maximum(dist, sep), sep)   # the registry's signed gap
            v = relu(gap - TOL.close) if name == "close_to" else relu(TOL.away - gap)
        else:
            raise KeyError(f"no quarter-turn formula for relation {name!r}")
        return v.sum(-1)

    def gripper(self, i: int, cand: np.ndarray) -> np.ndarray:
        """(B,) the gripper boxes placing i into the walls (below the rim) and placed boxes.

        A gripper box whose bottom is at or above the rim and every placed top for every
        candidate adds exactly 0 and is left out (the hand, a suction tool's wrist, usually).
        """
        L, W, H = self.boxes.half_room
        v = np.zeros(len(cand))
        for yaw in np.unique(cand[:, 3]):
            rows = cand[:, 3] == yaw
            off, fh = self.boxes.gripper(i, float(yaw))
            low = (cand[rows, 2].min() + off[:, 2] - fh[:, 2]) < self.ceiling      # (f,)
            if not low.any():
                continue
            off, fh = off[low], fh[low]
            fc = cand[rows, None, :3] + off[None]                              # (b, f, 3)
            out = (relu(np.abs(fc[..., 0]) + fh[:, 0] - L - TOL.slack)
                   + relu(np.abs(fc[..., 1]) + fh[:, 1] - W - TOL.slack))
            below_rim = relu(2 * H - (fc[..., 2] - fh[:, 2]))
            vy = np.minimum(out, below_rim).sum(-1)
            if len(self.idx):
                sep = box_separation(fc[:, :, None], fh[None, :, None], self.centre[None, None],
                                     self.halfs[None, None])                  # (b, f, k)
                vy = vy + relu(-sep - TOL.slack).sum((-1, -2))
            v[rows] = vy
        return v
