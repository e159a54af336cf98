"""``rejection``: the sequential sampling baseline of the seed paper, plus the partial checker.

One attempt places the objects one at a time in a random order. For each object up to
``tries`` poses are drawn: x, y uniform over the positions that keep the footprint inside the
container, yaw from {0°, 90°} plus a uniform jitter of ±``yaw_jitter_deg`` (default 2°), and z the
resting height (the floor, or the top of the highest placed box under the footprint). The first
draw that passes the exact checks on the partial placement is kept (in, cfree, stable support,
heavy_below/fragile, gripper fingers against walls and placed objects, and every listed relation
whose arguments are all placed); when none does, the attempt is abandoned. Complete placements are
checked in full; attempts repeat until one passes, the deadline passes, or ``keep`` complete
(but failing) placements were collected.

The draws of one object are evaluated as one batch, which is equivalent to trying them one by one
and keeping the first that passes.

Options (``SolverConfig.options``): ``tries`` (50), ``yaw_jitter_deg`` (2.0), ``keep`` (64).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from robot_packer import constraints as C
from robot_packer.deadline import Deadline
from robot_packer.geometry import half_extents_xy_np
from robot_packer.problem import PackingProblem
from robot_packer.solver.axis_aligned import (FORMULAS, AxisAlignedBoxes, AxisAlignedCheck,
                                              quarter_turns)
from robot_packer.solver.base import Candidates, SolverConfig, ranked, register_solver

FAR = 1.0e3  # where not-yet-placed objects wait (metres): far from everything
FAILED_KEEP = 4  # failing placements returned when none passed (each costs the pipeline a check)


class PartialChecker:
    """Exact (float64) checks of one object's candidate poses against a partial placement.

    ``poses`` (n, 4) holds the placed objects; unplaced ones wait far away. Violations are the
    registry's own functions, so "passes" here means exactly what the full checker means for
    the constraints whose arguments are all placed. ``support_margin`` > 0 asks more than the
    full checker: a stacked centre that far inside its support (physically robust stacks).

    When the candidates and every placed object are at quarter turns (the heuristic's and the
    decoder's extreme points) the geometric checks run on the numpy fast path of
    :mod:`robot_packer.solver.axis_aligned` (the same formulas, ~2.5x faster per decoded
    object; ``fast=False``: the registry's kernels for everything).
    """

    def __init__(self, problem: PackingProblem, support_margin: float = 0.0, fast: bool = True):
        self.problem = problem
        self.cp = C.compile_problem(problem, dtype=torch.float64, support_margin=support_margin)
        self.geom = self.cp.geom
        self.n = len(problem.items)
        self.grasp_excess = torch.as_tensor(C.grasp_excess(problem))
        self.relations = [(name, rows) for name, rows in self.cp.edges.items()
                          if name not in ("in", "cfree", "stable", "gripper_clear") and len(rows)]
        self.aligned = AxisAlignedBoxes(self.geom) if fast else None
        self._memo: dict = {}
        self.reset()

    def memo(self, key, compute):
        """``compute()``, evaluated once per ``key`` for this problem: for callers' values that
        depend on the problem alone (e.g. an object's gripper envelope at a yaw)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def reset(self) -> None:
        k = torch.arange(self.n, dtype=torch.float64)
        self.poses = torch.stack([FAR * (2 + k), torch.full_like(k, FAR), torch.full_like(k, -FAR),
                                  torch.zeros_like(k)], -1)
        self.placed: list[int] = []
        self._quarter = True          # every placed object at a quarter turn
        self._check: tuple[tuple[int, ...], AxisAlignedCheck] | None = None  # fast path tables

    def place(self, i: int, pose) -> None:
        self.poses[i] = torch.as_tensor(np.asarray(pose, dtype=np.float64))
        self.placed.append(i)
        self._quarter = self._quarter and quarter_turns(self.poses[i, 3].item())
        self._check = None

    def _fast(self, yaw: torch.Tensor) -> AxisAlignedCheck | None:
        """The numpy fast path when the candidates' ``yaw`` and every placed yaw are quarter
        turns, else None."""
        if self.aligned is None or not (self._quarter and quarter_turns(yaw.numpy())):
            return None
        key = tuple(self.placed)     # also rebuilt when a caller edited ``placed`` itself
        if self._check is None or self._check[0] != key:
            self._check = key, AxisAlignedCheck(self.aligned, self.placed, self.poses.numpy())
        return self._check[1]

    def resting_z(self, i: int, xy_yaw: torch.Tensor) -> torch.Tensor:
        """(B,) centre z of object i resting at (x, y, yaw) rows of ``xy_yaw`` (B, 3)."""
        fast = self._fast(xy_yaw[:, 2])
        if fast is not None:
            return torch.from_numpy(fast.resting_z(i, xy_yaw.numpy()))
        s = self.geom.sizes
        b = xy_yaw.shape[0]
        floor = torch.zeros(b, dtype=torch.float64)
        if self.placed:
            j = torch.tensor(self.placed)
            cand = torch.cat([xy_yaw[:, :2], torch.zeros(b, 1, dtype=torch.float64),
                              xy_yaw[:, 2:]], -1)
            k = len(self.placed)
            sep = C.sat_separation(cand[:, None].expand(b, k, 4), s[i].expand(b, k, 3),
                                   self.poses[j][None].expand(b, k, 4), s[j].expand(b, k, 3))
            tops = (self.poses[j, 2] + 0.5 * s[j, 2])[None].expand(b, -1)
            tops = torch.where(sep < -C.TOL.slack, tops, torch.zeros_like(tops))
            floor = tops.max(-1).values
        return floor + 0.5 * s[i, 2]

    def violation(self, i: int, cand: torch.Tensor) -> torch.Tensor:
        """(B,) violation (m) of placing object i at ``cand`` (B, 4) after ``placed``: 0 exactly
        where every applicable check passes. Candidates failing the cheap ``in``/``cfree`` checks
        skip the rest (their value is then a lower bound), unless no candidate passes those."""
        fast = self._fast(cand[:, 3])
        if fast is None:
            in_cfree, rest = self._in_cfree, self._rest
        else:
            def in_cfree(i, c):
                return torch.from_numpy(fast.in_cfree(i, c.numpy()))

            def rest(i, c):
                return torch.from_numpy(self._rest_fast(fast, i, c))
        v = in_cfree(i, cand)
        ok = v <= 0.0
        if bool(ok.any()) and not bool(ok.all()):
            v[ok] = rest(i, cand[ok])
            return v
        return v + rest(i, cand)

    def _applicable(self, i: int):
        """(name, rows) of every relation type with rows that involve object i and objects
        placed already (the rows that apply when i is placed next)."""
        done = set(self.placed) | {i}
        for name, rows in self.memo(("relations of", i), lambda: self._relations_of(i)):
            keep = [r for r, objects in rows if objects <= done]
            if keep:
                yield name, keep

    def _relations_of(self, i: int) -> list[tuple[str, list[tuple[list[int], set[int]]]]]:
        """Per relation type, its rows that involve object i, with their objects."""
        out = []
        for name, rows in self.relations:
            mine = [(r, _objects(name, r)) for r in rows.tolist() if i in _objects(name, r)]
            if mine:
                out.append((name, mine))
        return out

    def _rest_fast(self, fast: AxisAlignedCheck, i: int, cand: torch.Tensor) -> np.ndarray:
        """:meth:`_rest` on the quarter-turn fast path (the same checks, (B,) numpy)."""
        c = cand.numpy()
        v = np.zeros(len(c))
        if "stable" in self.cp.edges:
            v = v + fast.stable(i, c)
        full = None
        for name, keep in self._applicable(i):
            if name in FORMULAS:
                v = v + fast.relation(name, i, c, keep)
                continue
            full = self._full(i, cand) if full is None else full
            v = v + C.REGISTRY[name].violation(full, self.geom, torch.tensor(keep)).sum(-1).numpy()
        if "gripper_clear" in self.cp.edges:
            v = v + float(self.grasp_excess[i]) + fast.gripper(i, c)
        return v

    def _full(self, i: int, cand: torch.Tensor) -> torch.Tensor:
        full = self.poses[None].repeat(cand.shape[0], 1, 1)
        full[:, i] = cand
        return full

    def _in_cfree(self, i: int, cand: torch.Tensor) -> torch.Tensor:
        full = self._full(i, cand)
        v = C.REGISTRY["in"].violation(full, self.geom, torch.tensor([[i]]))[:, 0]
        if self.placed:
            placed = torch.tensor(self.placed, dtype=torch.long)
            pairs = torch.stack([torch.full_like(placed, i), placed], -1)
            v = v + C.REGISTRY["cfree"].violation(full, self.geom, pairs).sum(-1)
        return v

    def _rest(self, i: int, cand: torch.Tensor) -> torch.Tensor:
        """Support, heavy_below/fragile, listed relations and the gripper, (B,)."""
        g, s = self.geom, self.geom.sizes
        b = cand.shape[0]
        full = self._full(i, cand)
        v = torch.zeros(b, dtype=cand.dtype)
        if "stable" in self.cp.edges:
            v = v + C.REGISTRY["stable"].violation(full, g, torch.tensor([[i]]))[:, 0]
        for name, keep in self._applicable(i):
            v = v + C.REGISTRY[name].violation(full, g, torch.tensor(keep)).sum(-1)
        if "gripper_clear" in self.cp.edges:
            v = v + self.grasp_excess[i] + C.finger_wall_violation(cand, s[i].expand(b, 3), g)
            if self.placed:                # every placed box at once: (b, k) pairs
                j, k = torch.tensor(self.placed), len(self.placed)
                v = v + C.finger_object_violation(
                    cand[:, None].expand(b, k, 4), s[i].expand(b, k, 3),
                    self.poses[j][None].expand(b, k, 4), s[j][None].expand(b, k, 3), g).sum(-1)
        return v


def _objects(name: str, row: list[int]) -> set[int]:
    """Object indices of an edge row (a region's second column is not an object)."""
    return {row[0]} if name == "region" else set(row)


@register_solver("rejection")
class RejectionSolver:
    """Sequential rejection sampling (see the module docstring)."""

    def __init__(self, config: SolverConfig):
        self.tries = int(config.options.get("tries", 50))
        self.jitter = math.radians(float(config.options.get("yaw_jitter_deg", 2.0)))
        self.keep = int(config.options.get("keep", 64))

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        rng = np.random.default_rng(config.seed)
        checker = PartialChecker(problem)
        found, viol, orders, samples, timed_out = [], [], [], 0, False
        while not any(v <= 0.0 for v in viol) and len(found) < self.keep:
            if deadline.passed():
                timed_out = True
                break
            poses, drawn = self._attempt(problem, checker, rng)
            samples += drawn
            if poses is not None:
                found.append(poses)
                orders.append(list(checker.placed))
                viol.append(C.total(C.check(problem, poses, orders[-1])))
        if not found:
            n = len(problem.items)
            return Candidates(np.zeros((0, n, 4)), np.zeros(0), samples, timed_out)
        # every candidate was checked already: hand the pipeline only the best few failures
        return ranked(np.stack(found), np.array(viol), samples, timed_out,
                      keep=16 if min(viol) <= 0.0 else FAILED_KEEP, orders=np.array(orders))

    def _attempt(self, problem, checker, rng):
        """One sequential attempt: (n, 4) placement or None, and the number of draws used."""
        checker.reset()
        L, W, _ = problem.container.size
        drawn = 0
        for i in rng.permutation(len(problem.items)):
            size = problem.sizes[i]
            yaw = rng.integers(0, 2, self.tries) * (math.pi / 2) + rng.uniform(
                -self.jitter, self.jitter, self.tries)
            hx, hy = half_extents_xy_np(yaw, size)
            x = rng.uniform(-1, 1, self.tries) * np.maximum(L / 2 - hx, 0.0)
            y = rng.uniform(-1, 1, self.tries) * np.maximum(W / 2 - hy, 0.0)
            xyy = torch.as_tensor(np.stack([x, y, yaw], -1))
            z = checker.resting_z(int(i), xyy)
            cand = torch.stack([xyy[:, 0], xyy[:, 1], z, xyy[:, 2]], -1)
            ok = torch.nonzero(checker.violation(int(i), cand) <= 0.0).flatten()
            if len(ok) == 0:
                return None, drawn + self.tries
            drawn += int(ok[0]) + 1
            checker.place(int(i), cand[int(ok[0])])
        return checker.poses.numpy().copy(), drawn
