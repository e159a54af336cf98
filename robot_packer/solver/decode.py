"""Guided decoding: turn an approximate layout (a diffusion sample) into an exact placement.

A sample of the composed model says roughly where each object goes, but in a dense container
its boxes overlap or float by millimetres that gradient refinement struggles to remove. The
decoder keeps the sample's *layout* and makes it exact with the heuristic's machinery: objects
are placed bottom-up in the sample's order (bottom height, then from the back-left corner), each
at the extreme point (:func:`~robot_packer.solver.heuristic.extreme_points`) that passes the
partial exact check (:class:`~robot_packer.solver.rejection.PartialChecker`) and lies nearest
to where the sample put it: horizontal distance, plus ``Z_WEIGHT`` times the height difference,
plus ``YAW_PENALTY`` when it turns the object by a quarter. An object's candidates are checked
in two batches, the ``NEAREST`` nearest first and the rest only when none of those passes
(smaller chunks were slower: near a dense layout most nearest points fail, and each batch has a
fixed cost). An object with no passing candidate ends the decode (a
complete but infeasible placement would only be discarded); :func:`decode_exact` then tries the
same layout again with that object placed first.

:func:`legalize` prepares a layout for decoding: a sample's boxes overlap by centimetres at
N >= 8, and nearest-point decoding of such a layout drifts; pushed apart along the axes the
sample itself separates them on (a constraint graph per axis, longest paths, overflowing chains
moved to another axis) the layout keeps its arrangement and becomes one the decoder can follow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from robot_packer import constraints as C
from robot_packer.deadline import Deadline
from robot_packer.geometry import half_extents_xy_np
from robot_packer.problem import PackingProblem
from robot_packer.solver.heuristic import extreme_points, respect_on, with_resting_z
from robot_packer.solver.rejection import PartialChecker

Z_WEIGHT = 2.0       # metres of horizontal distance one metre of height difference costs
YAW_PENALTY = 0.05   # metres a quarter turn away from the sample's yaw costs
NEAREST = 128        # candidates checked first (nearest); the rest only if none passes
LEVEL = 0.01         # bottom heights within this (m) count as one level when ordering
BUMPS = 16           # re-decodes with the stuck object moved to the front (2 -> 16: dense
#                      N = 8 / 10 22 -> 31 / 2 -> 11 of 50 verified; standard N = 10 unchanged)


def legalize(problem: PackingProblem, layout: np.ndarray,
             gap: float = 0.001) -> tuple[np.ndarray, float]:
    """The layout (n, 4; yaws multiples of 90°) with its boxes pushed apart along the axes the
    layout separates them on, each as near to where the layout put it as that allows.

    Every pair of boxes is kept apart along one axis: at first the one on which the layout
    overlaps them least, in the layout's order along it (a constraint graph, acyclic per axis).
    Along x and y a box moves to its layout coordinate clipped to the room its neighbours leave
    it (``gap`` between faces); along z every box drops onto what it must be above, or the
    floor. When a chain of boxes overflows the container along an axis, the pair on that chain
    the layout overlaps least along another axis is moved to that axis (at most 2 n times).
    Returns the layout and how far (m) its longest chain still overflows the container (0: every
    chain fits). The layout is a target for :func:`decode`, not a placement: support and
    relations are not looked at.
    """
    n = len(layout)
    half = np.stack([*half_extents_xy_np(layout[:, 3], problem.sizes),
                     problem.sizes[:, 2] / 2], 1)
    centre = layout[:, :3]
    overlap = half[:, None] + half[None] - np.abs(centre[:, None] - centre[None])  # (n, n, 3)
    axis = np.argmin(overlap, -1)
    room = np.asarray(problem.container.size, dtype=np.float64) / 2
    room[2] = problem.container.size[2]      # z: from the floor to the rim
    flipped: set[tuple[int, int, int]] = set()
    for _ in range(2 * n):
        pos, chain, excess = _pushed(centre, half, room, axis, gap)
        a = int(np.argmax(excess))
        if excess[a] <= 1e-9:
            break
        moves = [(overlap[i, j, b], i, j, b) for i, j in chain[a] for b in range(3)
                 if b != a and (i, j, b) not in flipped]
        if not moves:
            break
        _, i, j, b = min(moves)
        axis[i, j] = axis[j, i] = b
        flipped.add((i, j, b))
    else:
        pos, _, excess = _pushed(centre, half, room, axis, gap)
    out = layout.copy()
    out[:, :3] = pos
    return out, max(float(excess.max()), 0.0)


def _pushed(centre, half, room, axis, gap):
    """Positions (n, 3) of :func:`legalize` for one choice of separating ``axis`` (n, n), the
    pairs (i, j) on each axis' longest chain, and how far that chain overflows (3,)."""
    n = len(centre)
    index = np.arange(n)
    pos = np.empty((n, 3))
    chains, excess = [], np.zeros(3)
    for a in range(3):
        # i before j along a: apart along a and lower there (ties by index)
        before = (axis == a) & ((centre[:, None, a] < centre[None, :, a])
                                | (centre[:, None, a] == centre[None, :, a])
                                & (index[:, None] < index[None]))
        rank = np.argsort(centre[:, a], kind="stable")
        lowest = -room[a] if a < 2 else 0.0
        step = gap if a < 2 else 0.0
        low, prev = np.empty(n), np.full(n, -1)
        for j in rank:                       # the longest chain from the low wall / the floor
            low[j] = lowest + half[j, a]
            for i in np.flatnonzero(before[:, j]):
                if low[i] + half[i, a] + half[j, a] + step > low[j]:
                    low[j], prev[j] = low[i] + half[i, a] + half[j, a] + step, i
        top = low + half[:, a]
        worst = int(np.argmax(top))
        excess[a] = top[worst] - room[a]
        chain, j = [], worst
        while prev[j] >= 0:
            chain.append((int(prev[j]), j))
            j = prev[j]
        chains.append(chain)
        if a == 2:                           # drop: onto what it must be above, or the floor
            pos[:, 2] = low
            continue
        high = np.empty(n)                   # the room the boxes after it leave
        for j in rank[::-1]:
            high[j] = min([room[a] - half[j, a]] + [high[k] - half[k, a] - half[j, a] - gap
                                                    for k in np.flatnonzero(before[j])])
        for j in rank:
            lo = max([-room[a] + half[j, a]] + [pos[i, a] + half[i, a] + half[j, a] + gap
                                                for i in np.flatnonzero(before[:, j])])
            pos[j, a] = max(lo, min(centre[j, a], high[j]))
    return pos, chains, excess


def layout_order(problem: PackingProblem, layout: np.ndarray) -> list[int]:
    """Placing order of a layout (n, 4): by bottom level, then from the -x -y corner; every
    object after the base it must rest ``on``."""
    L, W, _ = problem.container.size
    bottom = np.round((layout[:, 2] - problem.sizes[:, 2] / 2) / LEVEL)
    corner = (layout[:, 0] + L / 2) + (layout[:, 1] + W / 2)
    order = sorted(range(len(layout)), key=lambda i: (bottom[i], corner[i]))
    return respect_on(problem, order)


@dataclass(frozen=True)
class Decoded:
    """One decode: the placing order tried and the poses (n, 4) of its first ``placed`` objects
    (the others' rows are zero); ``exact`` when every object was placed and the full exact
    checker accepts the placement."""

    order: list[int]
    poses: np.ndarray
    placed: int
    exact: bool = False

    @property
    def complete(self) -> bool:
        return self.placed == len(self.order)

    @property
    def prefix(self) -> list[int]:
        """The objects placed, in placing order."""
        return self.order[:self.placed]

    @property
    def stuck(self) -> int | None:
        """The first object that found no passing place (None when complete)."""
        return None if self.complete else self.order[self.placed]


def decode(problem: PackingProblem, checker: PartialChecker, layout: np.ndarray,
           order: list[int] | None = None) -> Decoded:
    """Place every object in ``order`` (default :func:`layout_order`) at its passing extreme
    point nearest to ``layout`` (n, 4); stops at the first object with none (``checker`` is
    reset and reused). Not checked by the full exact checker (see :func:`decode_exact`)."""
    order = layout_order(problem, layout) if order is None else order
    checker.reset()
    for i in order:
        pose = _nearest_passing(problem, checker, i, layout[i])
        if pose is None:
            break
        checker.place(i, pose)
    return Decoded(order, checker.poses.numpy().copy(), len(checker.placed))


def decode_exact(problem: PackingProblem, checker: PartialChecker, layout: np.ndarray,
                 first: Sequence[int] = (), bumps: int = BUMPS,
                 deadline: Deadline | None = None) -> Decoded | None:
    """The exact decode of ``layout`` if one is found, else the attempt that placed the most
    objects (None: the deadline passed before the first).

    The placing order is ``first`` (objects placed before, e.g. held while the rest was
    re-sampled), then the other objects in :func:`layout_order`. A decode that gets stuck is
    tried again with the stuck object moved to the front (at most ``bumps`` times, "squeaky
    wheel": a large box left for last finds no room, a box placed first always does); a
    complete placement must pass the full exact checker.
    """
    order = respect_on(problem, list(first) + [i for i in layout_order(problem, layout)
                                               if i not in first])
    best = None
    for _ in range(1 + bumps):
        if deadline is not None and deadline.passed():
            break
        out = decode(problem, checker, layout, order)
        if out.complete and C.all_satisfied(C.check(problem, out.poses, out.order)):
            return replace(out, exact=True)
        if best is None or out.placed > best.placed:
            best = out
        if out.complete:
            break
        order = respect_on(problem, [out.stuck] + [i for i in out.order if i != out.stuck])
        if order[0] != out.stuck:      # it must wait for its base: bumping cannot help
            break
    return best


def _nearest_passing(problem, checker, i, target) -> torch.Tensor | None:
    """The passing extreme-point pose of object i nearest to ``target`` (4,), or None."""
    xyy = extreme_points(problem, checker, i).numpy()
    quarter = np.abs(np.sin(xyy[:, 2] - target[3])) > math.sin(math.pi / 4)
    flat = np.linalg.norm(xyy[:, :2] - target[:2], axis=1) + YAW_PENALTY * quarter
    rank = np.argsort(flat, kind="stable")
    for idx in (rank[:NEAREST], rank[NEAREST:]):
        if not len(idx):
            break
        cand = with_resting_z(checker, i, torch.as_tensor(xyy[idx]))
        ok = (checker.violation(i, cand) <= 0.0).numpy()
        if ok.any():
            score = flat[idx] + Z_WEIGHT * np.abs(cand[:, 2].numpy() - target[2])
            return cand[int(np.flatnonzero(ok)[np.argmin(score[ok])])]
    return None
