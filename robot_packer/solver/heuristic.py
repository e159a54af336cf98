"""``heuristic``: deepest-bottom-left fill over extreme points, with randomized restarts.

Objects are placed one at a time at yaw 0° or 90°. The candidate positions of an object are the
extreme points of the partial packing: every combination of an x and a y that puts the object,
its fingers or its whole gripper (when ``gripper_clear`` applies) against a container wall or a
face of a placed box (touching, or at the ``away_from`` distance), plus the centres of placed
boxes (``on``, ``aligned_x/y``, ``close_to``) and the edges of its ``region``. z is the resting
height. Every candidate is checked exactly against the partial placement
(:class:`~robot_packer.solver.rejection.PartialChecker`: in, cfree, support, heavy_below/fragile,
gripper fingers and hand, relations whose arguments are placed); among those that
pass, the deepest one is taken, ties broken towards the attempt's corner and towards the sides
that the object's still-pending side relations ask for.

Orders tried: heavy first (fragile last), largest volume first, largest footprint first, then
random permutations; every order respects listed ``on`` relations (the base first). The first
restarts use the bottom-left corner, then with noisy scores; later ones random orders towards
random corners. Complete
placements are checked with the full exact checker; the first that passes ends the search.

Options: ``keep`` (16) failing placements kept for ranking when nothing passes.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from robot_packer import constraints as C
from robot_packer.deadline import Deadline
from robot_packer.geometry import half_extents_xy_np
from robot_packer.problem import REGIONS, PackingProblem
from robot_packer.solver.base import Candidates, SolverConfig, ranked, register_solver
from robot_packer.solver.rejection import FAILED_KEEP, PartialChecker

TOUCH = 0.0005          # gap left between touching faces (m), below TOL.slack
_DIRECTIONS = {"left_of": (0.0, 1.0), "right_of": (0.0, -1.0), "behind": (1.0, 0.0),
               "in_front_of": (-1.0, 0.0)}
_CENTRED = ("on", "aligned_x", "aligned_y", "close_to")   # relations suggesting a partner's centre


def envelopes(problem: PackingProblem, geom: C.Geometry, i: int,
              yaw: float) -> list[tuple[float, ...]]:
    """Footprint extents (x below, x above, y below, y above the centre) of object i at ``yaw``:
    the box itself, plus the fingers and the whole gripper when ``gripper_clear`` applies."""
    size = problem.sizes[i]
    hx, hy = (size[0] / 2, size[1] / 2) if yaw == 0.0 else (size[1] / 2, size[0] / 2)
    out = [(hx, hx, hy, hy)]
    if not problem.rules.gripper_clear:
        return out
    fp, fs = C.finger_boxes(torch.tensor([0.0, 0.0, 0.0, yaw], dtype=torch.float64),
                            geom.sizes[i], geom)
    ex, ey = C.half_extents_xy(fp[..., 3], fs)
    for k in (slice(0, 2), slice(None)):            # fingers only, then the whole gripper
        lo_x, hi_x = -float((fp[k, 0] - ex[k]).min()), float((fp[k, 0] + ex[k]).max())
        lo_y, hi_y = -float((fp[k, 1] - ey[k]).min()), float((fp[k, 1] + ey[k]).max())
        out.append((max(hx, lo_x), max(hx, hi_x), max(hy, lo_y), max(hy, hi_y)))
    return out


def base_orders(problem: PackingProblem) -> list[list[int]]:
    """Deterministic orders: heavy first (fragile last), by volume, by footprint area."""
    sizes, masses, fragile = problem.sizes, problem.masses, problem.fragile
    vol, area = np.prod(sizes, 1), sizes[:, 0] * sizes[:, 1]
    idx = range(len(sizes))
    return [sorted(idx, key=lambda i: (fragile[i], -masses[i], -vol[i])),
            sorted(idx, key=lambda i: (fragile[i], -vol[i])),
            sorted(idx, key=lambda i: (fragile[i], -area[i], -sizes[i, 2]))]


def respect_on(problem: PackingProblem, order: list[int]) -> list[int]:
    """Move each object after the base it must rest ``on`` (stable topological fix-up)."""
    base = {problem.index(c.args[0]): problem.index(c.args[1])
            for c in problem.constraints if c.name == "on"}
    out: list[int] = []
    pending = list(order)
    while pending:
        for k, i in enumerate(pending):
            if base.get(i) is None or base[i] in out or base[i] not in pending:
                out.append(pending.pop(k))
                break
        else:  # a cycle: infeasible anyway, keep the order
            out.extend(pending)
            break
    return out


def _restart_plan(restart: int, orders: list[list[int]], n: int, rng: np.random.Generator,
                  offset: int = 0):
    """Order, corner and score noise of one restart: the base orders towards the bottom-left
    corner, then again with noisy scores, then random orders towards random corners. ``offset``
    rotates the first ``2 k`` (k base orders) restarts: another seed starts elsewhere in them,
    so that a new proposal round after a failed verification is not the same plan again."""
    k = len(orders)
    if restart < 2 * k:
        restart = (restart + offset) % (2 * k)
    if restart < k:
        return orders[restart], (-1.0, -1.0), 0.0
    order = list(rng.permutation(n))
    corner = (-1.0, -1.0) if restart < 2 * k else tuple(rng.choice([-1.0, 1.0], 2))
    noise = 0.3 * rng.random() ** 2
    return (orders[restart - k] if restart < 2 * k else order), corner, noise


def extreme_points(problem: PackingProblem, checker: PartialChecker, i: int) -> torch.Tensor:
    """(K, 3) candidate (x, y, yaw) of object i after ``checker.placed``, yaw 0 and 90°: every
    combination of an x and a y that puts the object, its fingers or its whole gripper against a
    wall or a placed box's face (touching, or at the ``away_from`` distance), or at a coordinate
    a relation suggests, inside the container."""
    L, W, _ = problem.container.size
    gaps = np.array([TOUCH, C.TOL.away + TOUCH])
    placed = checker.poses[checker.placed].numpy()
    half = half_extents_xy_np(placed[:, 3], problem.sizes[checker.placed])
    rows = []
    for yaw in (0.0, math.pi / 2):
        env = checker.memo(("envelopes", i, yaw),
                           lambda: np.array(envelopes(problem, checker.geom, i, yaw)))
        hx, hy = env[0, 0], env[0, 2]
        xs = np.concatenate([_face_coords(placed[:, 0], half[0], L, env[:, :2], gaps),
                             _relation_coords(problem, checker, i, 0, hx)])
        ys = np.concatenate([_face_coords(placed[:, 1], half[1], W, env[:, 2:], gaps),
                             _relation_coords(problem, checker, i, 1, hy)])
        xs = np.unique(np.round(xs[np.abs(xs) <= L / 2 - hx + 1e-9], 6))
        ys = np.unique(np.round(ys[np.abs(ys) <= W / 2 - hy + 1e-9], 6))
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        rows.append(np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, yaw)], -1))
    return torch.as_tensor(np.concatenate(rows))


def with_resting_z(checker: PartialChecker, i: int, xyy: torch.Tensor) -> torch.Tensor:
    """(K, 4) poses of object i at the (x, y, yaw) rows of ``xyy``, resting on what is under it."""
    z = checker.resting_z(i, xyy)
    return torch.stack([xyy[:, 0], xyy[:, 1], z, xyy[:, 2]], -1)


def _face_coords(centre, half, extent, reach, gaps) -> np.ndarray:
    """Centre coordinates along one axis that put the object, its fingers or its gripper
    (``reach``: (m, 2) below / above extents) against a wall or a face of the placed boxes
    (``centre``, ``half``: their centres and half extents along the axis)."""
    below, above = reach[:, 0, None, None], reach[:, 1, None, None]
    return np.concatenate([
        -extent / 2 + reach[:, 0], extent / 2 - reach[:, 1],
        ((centre + half)[None, None] + below + gaps[None, :, None]).ravel(),
        ((centre - half)[None, None] - above - gaps[None, :, None]).ravel(),
        centre - half + reach[0, 0], centre + half - reach[0, 1]])      # flush with its faces


def _relation_coords(problem, checker, i, axis, h) -> list[float]:
    """Coordinates suggested by relations: a placed partner's centre, region edges."""
    out = []
    bounds = checker.memo("region_bounds", lambda: C.region_bounds(
        torch.tensor(np.array(problem.container.size))).numpy())
    for name, other in checker.memo(("relation partners", i), lambda: _partners(problem, i)):
        if name == "region":
            lo, hi = bounds[REGIONS.index(other), 2 * axis: 2 * axis + 2]
            out += [lo + h + TOUCH, hi - h - TOUCH]
        elif other in checker.placed and name in _CENTRED:
            c = float(checker.poses[other, axis])
            out += [c, c - 0.9 * C.TOL.aligned, c + 0.9 * C.TOL.aligned]
    return out


def _partners(problem: PackingProblem, i: int) -> list[tuple[str, int | str]]:
    """The listed relations of object i: (name, the other object's index) or, for a region,
    ("region", its name)."""
    out = []
    for con in problem.constraints:
        args = [problem.index(a) for a in con.args[:1 if con.name == "region" else 2]]
        if i not in args:
            continue
        if con.name == "region":
            out.append(("region", con.args[1]))
        else:
            out.append((con.name, args[1] if args[0] == i else args[0]))
    return out


@register_solver("heuristic")
class HeuristicSolver:
    """Deepest-bottom-left fill over extreme points (see the module docstring)."""

    def __init__(self, config: SolverConfig):
        self.keep = int(config.options.get("keep", 16))

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        rng = np.random.default_rng(config.seed)
        checker = PartialChecker(problem)
        found, viol, used, timed_out = [], [], [], False
        restart = 0
        orders = base_orders(problem)
        while not any(v <= 0.0 for v in viol):
            if deadline.passed():
                timed_out = True
                break
            order, corner, noise = _restart_plan(restart, orders, len(problem.items), rng,
                                                 offset=config.seed % (2 * len(orders)))
            order = respect_on(problem, [int(i) for i in order])
            poses = self._attempt(problem, checker, order, corner, noise, rng)
            restart += 1
            found.append(poses)
            used.append(order)
            viol.append(C.total(C.check(problem, poses, order)))
            if len(found) > self.keep:
                worst = int(np.argmax(viol))
                for kept in (found, used, viol):
                    kept.pop(worst)
        if not found:
            n = len(problem.items)
            return Candidates(np.zeros((0, n, 4)), np.zeros(0), restart, timed_out)
        # every candidate was checked already: hand the pipeline only the best few failures
        return ranked(np.stack(found), np.array(viol), restart, timed_out,
                      keep=16 if min(viol) <= 0.0 else FAILED_KEEP, orders=np.array(used))

    def _attempt(self, problem, checker, order, corner, noise, rng) -> np.ndarray:
        """Place every object in ``order``; an object with no passing candidate takes its least
        violating one, so the attempt still yields a complete (rankable) placement."""
        checker.reset()
        for i in order:
            cand = with_resting_z(checker, i, extreme_points(problem, checker, i))
            v = checker.violation(i, cand).numpy()
            ok = v <= 0.0
            if ok.any():
                score = self._score(problem, checker, i, cand.numpy(), corner)
                score = score + noise * rng.standard_normal(len(score))
                pick = int(np.flatnonzero(ok)[np.argmin(score[ok])])
            else:
                pick = int(np.argmin(v))
            checker.place(i, cand[pick])
        return checker.poses.numpy().copy()

    @staticmethod
    def _score(problem, checker, i, cand, corner) -> np.ndarray:
        """Lower is better: bottom height first, then towards the corner and pending sides."""
        size = problem.sizes[i]
        bottom = cand[:, 2] - size[2] / 2
        pref = np.array(corner, dtype=np.float64)
        for con in problem.constraints:
            if con.name in _DIRECTIONS and problem.index(con.args[0]) == i:
                other, sign = problem.index(con.args[1]), 1.0
            elif con.name in _DIRECTIONS and problem.index(con.args[1]) == i:
                other, sign = problem.index(con.args[0]), -1.0
            else:
                continue
            if other not in checker.placed:
                pref = pref + 4.0 * sign * np.array(_DIRECTIONS[con.name])
        span = problem.container.size[:2]
        return 10.0 * np.round(bottom, 4) - (cand[:, :2] / span) @ pref
