"""Slicing decode: pack a layout's arrangement exactly as a slicing (guillotine) tree.

A dense container is mostly filled by boxes whose arrangement planes can cut apart: one plane
splits the boxes in two groups, each group is split again, and so on (a *slicing tree*;
stacking is a cut along z). A diffusion sample gets the arrangement — who is left of, behind,
on top of whom — roughly right long before its coordinates are millimetre-exact, and the
extreme-point decoder (:mod:`robot_packer.solver.decode`), which places one box at a time,
loses it as soon as an early box lands a few millimetres off. This decoder keeps the
arrangement and recomputes the coordinates.

Which trees: a group is only cut between objects in the sample's order along the cut axis
(its first k objects by centre against the rest), and only where the sample's boxes overlap
across the cut by at most ``overlap`` — the sample decides the arrangement, within its error.
Among those trees a dynamic programme over groups finds the ones that fit: each group's *shape
front* holds the extents (x, y, z) it can be packed in over the choices of quarter turns (the
sample's own, or a quarter turn more) and of cuts, Pareto-minimal together with the number of
turns away from the sample (Stockmeyer's shape curves, in 3D). Side by side along the cut axis
extents add up, the other axes take the larger.

:func:`slicing_decode` packs the fitting root shapes with the fewest turns top-down: each cut
where the sample had it, within the room both sides need; each box where the sample put it,
clamped into its cell, resting on the cell's floor (the upper side of a z cut on the lower
side's highest top). No overlap and containment hold by construction; relations, support and
the rules are left to the exact checker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GAP = 0.0005          # m added to every box's footprint side (a gap below TOL.slack between faces)
FRONT_CAP = 32        # shapes kept per group (the most compact first)
OVERLAP = 0.06        # m: a cut may pass through the sample's boxes by at most this much
MAX_GROUPS = 4000     # groups the programme may visit per layout before it gives up


@dataclass(frozen=True)
class Shape:
    """One way to pack a group: ``dims`` (3,) it needs, ``turns`` quarter turns away from the
    sample; a leaf's ``quarter`` turn, or the cut (``axis``, sample position ``at``) and the
    two sides' groups (bit masks) and shape indices."""

    dims: tuple[float, float, float]
    turns: int
    quarter: int = 0
    axis: int = -1
    at: float = 0.0
    low: tuple[int, int] = (0, 0)
    high: tuple[int, int] = (0, 0)


class SlicingPacker:
    """Shape fronts of the groups of one layout (n, 4), container frame; ``room`` (3,) is the
    container's inner size. ``fronts`` memoizes per group (bit mask)."""

    def __init__(self, sizes: np.ndarray, room: np.ndarray, layout: np.ndarray,
                 overlap: float = OVERLAP):
        self.sizes, self.room, self.layout, self.overlap = sizes, np.asarray(room), layout, overlap
        self.quarter = np.round(layout[:, 3] / (math.pi / 2)).astype(int) % 4
        ext = np.where((self.quarter % 2 == 1)[:, None], sizes[:, [1, 0, 2]], sizes)
        self.lo, self.hi = layout[:, :3] - ext / 2, layout[:, :3] + ext / 2
        self.fronts: dict[int, list[Shape]] = {}

    def front(self, mask: int) -> list[Shape]:
        """The shape front of the group ``mask`` (empty: it fits no way); raises
        ``TimeoutError`` past ``MAX_GROUPS`` groups."""
        if mask in self.fronts:
            return self.fronts[mask]
        if len(self.fronts) >= MAX_GROUPS:
            raise TimeoutError("slicing decode: too many groups")
        items = [i for i in range(len(self.sizes)) if mask >> i & 1]
        shapes = self._leaf(items[0]) if len(items) == 1 else self._cuts(items)
        self.fronts[mask] = _pareto(shapes, self.room)
        return self.fronts[mask]

    def _leaf(self, i: int) -> list[Shape]:
        out = []
        for turn in (0, 1):
            if turn and self.sizes[i, 0] == self.sizes[i, 1]:
                break
            q = self.quarter[i] + turn
            ext = self.sizes[i, [1, 0, 2]] if q % 2 else self.sizes[i]
            out.append(Shape((ext[0] + GAP, ext[1] + GAP, ext[2]), turn, quarter=q))
        return out

    def _cuts(self, items: list[int]) -> list[Shape]:
        out = []
        for axis in range(3):
            ranked = [items[k] for k in np.argsort((self.lo[items, axis] + self.hi[items, axis]),
                                                   kind="stable")]
            top = np.maximum.accumulate(self.hi[ranked, axis])
            bottom = np.minimum.accumulate(self.lo[ranked[::-1], axis])[::-1]
            low = 0
            for k in range(1, len(ranked)):
                low |= 1 << ranked[k - 1]
                if top[k - 1] - bottom[k] > self.overlap:
                    continue
                high = sum(1 << i for i in ranked[k:])
                fa, fb = self.front(low), self.front(high)
                at = float(top[k - 1] + bottom[k]) / 2
                for a, sa in enumerate(fa):
                    for b, sb in enumerate(fb):
                        dims = [max(u, v) for u, v in zip(sa.dims, sb.dims)]
                        dims[axis] = sa.dims[axis] + sb.dims[axis]
                        out.append(Shape(tuple(dims), sa.turns + sb.turns, axis=axis, at=at,
                                         low=(low, a), high=(high, b)))
        return out

    def place(self, mask: int, k: int, cell_lo: np.ndarray, cell_hi: np.ndarray,
              poses: np.ndarray) -> None:
        """Write the packing of group ``mask`` with shape ``k`` inside the cell into ``poses``."""
        s = self.fronts[mask][k]
        if s.axis < 0:
            i = mask.bit_length() - 1
            half = (np.asarray(s.dims) - [GAP, GAP, 0.0]) / 2
            xy = np.clip(self.layout[i, :2], cell_lo[:2] + half[:2], cell_hi[:2] - half[:2])
            yaw = math.remainder((s.quarter % 4) * math.pi / 2, 2 * math.pi)
            poses[i] = [xy[0], xy[1], cell_lo[2] + half[2], yaw]
            return
        a, low_dims = s.axis, self.fronts[s.low[0]][s.low[1]].dims
        high_dims = self.fronts[s.high[0]][s.high[1]].dims
        if a == 2:                          # stacked: the upper side rests on the lower one
            cut = cell_lo[2] + low_dims[2]
        else:
            cut = float(np.clip(s.at, cell_lo[a] + low_dims[a], cell_hi[a] - high_dims[a]))
        low_hi, high_lo = cell_hi.copy(), cell_lo.copy()
        low_hi[a] = high_lo[a] = cut
        self.place(*s.low, cell_lo, low_hi, poses)
        self.place(*s.high, high_lo, cell_hi, poses)


def _pareto(shapes: list[Shape], room: np.ndarray) -> list[Shape]:
    """The shapes that fit ``room`` and that no other beats on every count, most compact
    first, at most ``FRONT_CAP``."""
    fit = [s for s in shapes if s.dims[0] <= room[0] and s.dims[1] <= room[1]
           and s.dims[2] <= room[2]]
    fit.sort(key=lambda s: (max(d / r for d, r in zip(s.dims, room)), s.turns))
    kept: list[Shape] = []
    for s in fit:
        if not any(f.turns <= s.turns and all(u <= v for u, v in zip(f.dims, s.dims))
                   for f in kept):
            kept.append(s)
            if len(kept) == FRONT_CAP:
                break
    return kept


def slicing_decode(sizes: np.ndarray, room: np.ndarray, layout: np.ndarray,
                   shapes: int = 2, overlap: float = OVERLAP) -> list[np.ndarray]:
    """Packings (n, 4) of ``layout``'s arrangement in a container of inner size ``room`` (3,)
    (container frame: x, y centred, floor at z = 0): the ``shapes`` fitting root shapes with
    the fewest quarter turns (none when no tree within ``overlap`` fits)."""
    packer = SlicingPacker(sizes, room, layout, overlap)
    root = (1 << len(sizes)) - 1
    try:
        front = packer.front(root)
    except TimeoutError:
        return []
    cell_lo = np.array([-room[0] / 2, -room[1] / 2, 0.0])
    cell_hi = np.array([room[0] / 2, room[1] / 2, room[2]])
    out = []
    for k in sorted(range(len(front)), key=lambda k: front[k].turns)[:shapes]:
        poses = np.zeros((len(sizes), 4))
        packer.place(root, k, cell_lo, cell_hi, poses)
        out.append(poses)
    return out
