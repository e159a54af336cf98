"""``cem``: random restarts + gradient descent on the exact violations + CEM-style resampling.

One generation, for a batch of ``config.candidates`` placements at once:

1. descend ``CompiledProblem.total`` with Adam (:func:`robot_packer.solver.refine.refine`);
2. project: yaw snapped to the nearest multiple of 90° when within ``snap_deg``, then every object
   dropped to its resting height (floor, or the top of the highest box under its footprint) —
   the descent then never fights gravity. Heavier objects drop first where two boxes can stack
   at all (:func:`drop_levels`), so overlapping boxes stack the way ``heavy_below`` allows;
3. rank by violation. The batched ``gripper_clear`` only asks that each *pair* can be placed in
   some order; near-zero candidates get a whole placing order by topological sort
   (:func:`placing_orders`), and those whose precedences form a cycle are penalised. The few
   left at (numerically) zero go to the exact checker in that order; the first that passes ends
   the search, and the order travels with the candidates to the pipeline;
4. resample (cross-entropy method): the elite fraction survives; the rest of the batch is drawn
   around random elites — Gaussian moves of shrinking width, or one object re-drawn, on the
   floor or on top of a box it may rest on — plus a share of fresh random starts.

Options: ``steps`` (25) Adam steps per generation, ``elite`` (0.125) elite fraction, ``fresh``
(0.25) share of fresh starts, ``sigma`` (0.02 m) initial resampling width, ``snap_deg`` (8.0),
``stack`` (0.5) share of one-object redraws that go on top of another box.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from robot_packer import constraints as C
from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem
from robot_packer.solver.base import (Candidates, SolverConfig, ranked, register_solver,
                                      resolve_device, seeded_generators)
from robot_packer.solver.refine import project, refine

EXACT_CHECKS_PER_GENERATION = 4
NEAR_ZERO = 1e-5  # float32 total (m) under which a candidate is worth an exact check


def random_poses(problem: PackingProblem, batch: int, gen: torch.Generator,
                 device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(batch, n, 4) uniform footprints inside the container, yaw 0 or 90°, z on the floor."""
    sizes = torch.as_tensor(problem.sizes, device=device, dtype=dtype)
    box = torch.as_tensor(np.array(problem.container.size), device=device, dtype=dtype)
    n = len(problem.items)
    quarter = torch.randint(0, 2, (batch, n), generator=gen, device=device).to(dtype)
    yaw = quarter * (math.pi / 2)
    hx, hy = C.half_extents_xy(yaw, sizes)
    u = torch.rand((batch, n, 2), generator=gen, device=device, dtype=dtype) * 2 - 1
    x = u[..., 0] * (box[0] / 2 - hx).clamp_min(0)
    y = u[..., 1] * (box[1] / 2 - hy).clamp_min(0)
    z = (0.5 * sizes[:, 2]).expand(batch, n)
    return torch.stack([x, y, z, yaw], -1)


def may_rest_on(problem: PackingProblem) -> np.ndarray:
    """(n, n) bool: [i, j] when object i may rest on object j: j is not fragile, not lighter
    (with ``heavy_below``), and the two fit one on the other under the rim."""
    masses, fragile, h = problem.masses, problem.fragile, problem.sizes[:, 2]
    ok = ~fragile[None, :] & ~np.eye(len(masses), dtype=bool)
    ok &= h[:, None] + h[None, :] <= problem.container.size[2] + C.TOL.slack
    if problem.rules.heavy_below:
        ok &= masses[:, None] <= masses[None, :]
    return ok


def drop_levels(problem: PackingProblem) -> np.ndarray | None:
    """(n,) drop rank: heavier objects first, fragile ones last (ties keep the height order).

    Dropping in this order lets a box land only on boxes it may rest on, so the projection
    never turns two overlapping footprints into a ``heavy_below`` violation: it stacks them the
    legal way round instead of the way the descent happened to leave them. None where no box
    may rest on another (:func:`may_rest_on`, e.g. a shallow tray): there the plain lowest-first
    drop is kept, whose ``heavy_below`` violations help push overlapping boxes apart.
    """
    if not may_rest_on(problem).any():
        return None
    masses = problem.masses if problem.rules.heavy_below else np.zeros(len(problem.items))
    rank = np.unique(-masses, return_inverse=True)[1].reshape(-1)
    return rank + (rank.max() + 1) * problem.fragile


@torch.no_grad()
def stack_poses(parent: torch.Tensor, which: torch.Tensor, sizes: torch.Tensor, box: torch.Tensor,
                rest_ok: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Poses (m, 4) putting object ``which[r]`` of ``parent[r]`` on top of a box it may rest on.

    The partner is drawn uniformly among the boxes allowed by ``rest_ok`` (n, n) whose top
    leaves room for the object under the rim. The object's long side is turned along the
    partner's, its centre drawn where its footprint stays on the partner's top (the partner's
    centre when it is the larger one). Rows whose object may rest on no box get ``False`` in
    the returned mask (the caller redraws those on the floor).
    """
    m = which.shape[0]
    rows = torch.arange(m, device=parent.device)
    tops = parent[..., 2] + 0.5 * sizes[:, 2]                       # (m, n)
    fits = tops + sizes[which, 2][:, None] <= box[2] + C.TOL.slack   # stays under the rim
    weights = (rest_ok[which] & fits).to(parent.dtype)
    has = weights.sum(-1) > 0
    weights[~has, 0] = 1.0
    partner = torch.multinomial(weights, 1, generator=gen).squeeze(-1)
    pj, sj, si = parent[rows, partner], sizes[partner], sizes[which]
    turn = (si[:, 0] >= si[:, 1]) != (sj[:, 0] >= sj[:, 1])
    ext = torch.where(turn[:, None], si[:, [1, 0]], si[:, :2])
    u = torch.rand((m, 2), generator=gen, device=parent.device, dtype=parent.dtype) * 2 - 1
    local = u * 0.5 * (sj[:, :2] - ext).clamp_min(0)
    c, sn = torch.cos(pj[:, 3:]), torch.sin(pj[:, 3:])
    xy = pj[:, :2] + torch.cat([c * local[:, :1] - sn * local[:, 1:],
                                sn * local[:, :1] + c * local[:, 1:]], -1)
    yaw = pj[:, 3] + turn.to(parent.dtype) * (math.pi / 2)
    hx, hy = C.half_extents_xy(yaw, si)
    lim = torch.stack([(box[0] / 2 - hx).clamp_min(0), (box[1] / 2 - hy).clamp_min(0)], -1)
    xy = torch.maximum(torch.minimum(xy, lim), -lim)
    z = pj[:, 2] + 0.5 * (sj[:, 2] + si[:, 2])
    return torch.cat([xy, z[:, None], yaw[:, None]], -1), has


@torch.no_grad()
def placing_orders(geom: C.Geometry, poses: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate a placing order with clear fingers, and a penalty (m) where none exists.

    Box j must be placed before box i when i rests on j, and box i before box j when the
    fingers placing i would hit j. ``gripper_clear`` in the batched total only asks that each
    *pair* has a good order; a topological sort of these precedences finds a whole order, or a
    cycle (the candidate is not feasible in any order although its batched total is zero).

    Args:
        geom: the problem's geometry in float64.
        poses: (B, n, 4) candidate placements, container frame.

    Returns:
        orders (B, n) int64, -1 rows where the precedences have a cycle; penalty (B,) float64,
        0 with an order, else ``NEAR_ZERO`` plus the finger hits among the boxes on the cycle.
    """
    p = poses.to(geom.sizes.dtype)
    b, n = p.shape[:2]
    pa, pb = p[:, :, None].expand(b, n, n, 4), p[:, None].expand(b, n, n, 4)
    sa, sb = geom.sizes[:, None].expand(b, n, n, 3), geom.sizes[None, None].expand(b, n, n, 3)
    hits = C.finger_object_violation(pa, sa, pb, sb, geom)            # placing i hits j
    gap = (pa[..., 2] - 0.5 * sa[..., 2]) - (pb[..., 2] + 0.5 * sb[..., 2])
    rests = (-C.sat_separation(pa, sa, pb, sb) > C.TOL.slack) & (gap.abs() < C.TOL.on_gap)
    eye = torch.eye(n, dtype=torch.bool, device=p.device)
    before = (((hits > 0) | rests.transpose(1, 2)) & ~eye).cpu().numpy()
    hits = hits.masked_fill(eye, 0.0).cpu().numpy()
    tops = (p[..., 2] + 0.5 * geom.sizes[:, 2]).cpu().numpy()
    area = (geom.sizes[:, 0] * geom.sizes[:, 1]).cpu().numpy()
    orders = np.full((b, n), -1, dtype=np.int64)
    penalty = np.zeros(b)
    for k in range(b):
        order, left = C.topological_order(before[k], np.round(tops[k], 3) - 1e-6 * area)
        if left:
            penalty[k] = NEAR_ZERO + hits[k][np.ix_(left, left)].sum()
        else:
            orders[k] = order
    return orders, penalty


@register_solver("cem")
class CEMSolver:
    """Random restarts, Adam on the exact violations, CEM resampling (see the module docstring)."""

    def __init__(self, config: SolverConfig):
        o = config.options
        self.steps = int(o.get("steps", 25))
        self.elite = float(o.get("elite", 0.125))
        self.fresh = float(o.get("fresh", 0.25))
        self.sigma = float(o.get("sigma", 0.02))
        self.snap_deg = float(o.get("snap_deg", 8.0))
        self.stack = float(o.get("stack", 0.5))

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        device = resolve_device(config.device)
        _, gen = seeded_generators(config, device)
        dtype = torch.float32
        cp = C.compile_problem(problem, device, dtype)
        geom64 = C.Geometry.from_problem(problem, device, torch.float64)
        sizes = cp.geom.sizes
        levels = drop_levels(problem)
        levels = None if levels is None else torch.as_tensor(levels, device=device, dtype=dtype)
        rest_ok = torch.as_tensor(may_rest_on(problem), device=device)
        batch = config.candidates
        poses = project(random_poses(problem, batch, gen, device, dtype), sizes, self.snap_deg,
                        levels)
        samples, sigma = batch, self.sigma
        best_p, best_v = poses, _with_order_penalty(geom64, poses, cp.total(poses))
        while True:
            if deadline.passed():
                return self._result(geom64, best_p, best_v, samples, timed_out=True)
            poses = refine(poses, cp, steps=self.steps, box_size=problem.container.size,
                           deadline=deadline)
            poses = project(poses, sizes, self.snap_deg, levels)
            v = _with_order_penalty(geom64, poses, cp.total(poses))
            best_p, best_v = _merge(best_p, best_v, poses, v, batch)
            if self._exact_hit(problem, geom64, best_p, best_v):
                return self._result(geom64, best_p, best_v, samples, timed_out=False)
            poses = self._resample(problem, cp, best_p, best_v, sigma, gen, levels, rest_ok)
            samples += batch
            sigma = max(0.002, sigma * 0.8)

    def _exact_hit(self, problem, geom64, poses, v) -> bool:
        """Exact-check the few near-zero candidates in their placing order; True when one
        passes. One that fails gets its exact total, so it stops ranking among the best."""
        idx = torch.nonzero(v <= NEAR_ZERO).flatten()[:EXACT_CHECKS_PER_GENERATION]
        if not idx.numel():
            return False
        orders, _ = placing_orders(geom64, poses[idx])
        for i, order in zip(idx.tolist(), orders):
            results = C.check(problem, poses[i].double().cpu().numpy(),
                              order.tolist() if order[0] >= 0 else None)
            if C.all_satisfied(results):
                v[i] = -1.0  # mark as exactly satisfied so it ranks first
                return True
            v[i] = max(C.total(results), 2 * NEAR_ZERO)
        return False

    def _resample(self, problem, cp, best_p, best_v, sigma, gen, levels, rest_ok) -> torch.Tensor:
        """Elite survivors + Gaussian moves / one-object redraws around elites + fresh starts.

        A redrawn object lands on the floor, or (share ``stack``) on top of a box it may rest on.
        """
        batch, n = best_p.shape[:2]
        dev, dt = best_p.device, best_p.dtype
        n_elite = max(1, int(self.elite * batch))
        n_fresh = int(self.fresh * batch)
        n_child = batch - n_elite - n_fresh
        elite = best_p[torch.argsort(best_v)[:n_elite]]
        parent = elite[torch.randint(0, n_elite, (n_child,), generator=gen, device=dev)]
        child = parent.clone()
        half = n_child // 2
        step = torch.randn((half, n, 2), generator=gen, device=dev, dtype=dt)
        child[:half, :, :2] += sigma * step
        m = n_child - half
        which = torch.randint(0, n, (m,), generator=gen, device=dev)
        rows = torch.arange(m, device=dev)
        redraw = random_poses(problem, m, gen, dev, dt)[rows, which]
        stacked, has = stack_poses(parent[half:], which, cp.geom.sizes, cp.geom.box, rest_ok, gen)
        use = has & (torch.rand(m, generator=gen, device=dev) < self.stack)
        child[half:][rows, which] = torch.where(use[:, None], stacked, redraw)
        fresh = random_poses(problem, n_fresh, gen, dev, dt)
        out = torch.cat([elite, child, fresh])
        return project(out, cp.geom.sizes, self.snap_deg, levels)

    def _result(self, geom64, poses, v, samples, timed_out) -> Candidates:
        """The best candidates, each with the placing order its gripper check used."""
        keep = 4 if timed_out else 16  # each failing candidate costs the pipeline an exact check
        orders, _ = placing_orders(geom64, poses)
        return ranked(poses.double().cpu().numpy(), v.double().cpu().numpy(), samples, timed_out,
                      keep=keep, orders=orders)


def _with_order_penalty(geom64: C.Geometry, poses: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v`` plus the :func:`placing_orders` penalty of the near-zero candidates."""
    near = torch.nonzero(v <= NEAR_ZERO).flatten()
    if near.numel():
        _, penalty = placing_orders(geom64, poses[near])
        v = v.clone()
        v[near] += torch.as_tensor(penalty, dtype=v.dtype, device=v.device)
    return v


def _merge(best_p, best_v, poses, v, keep):
    """The ``keep`` lowest-violation placements of the union of two batches."""
    all_p, all_v = torch.cat([best_p, poses]), torch.cat([best_v, v])
    idx = torch.argsort(all_v)[:keep]
    return all_p[idx], all_v[idx]
