"""``cem``: random restarts + gradient descent on the exact violations + CEM-style resampling.

One generation, for a batch of ``config.candidates`` placements at once:

1. descend ``CompiledProblem.total`` with Adam (:func:`robot_packer.solver.refine.refine`);
2. project: yaw snapped to the nearest multiple of 90° when within ``snap_deg``, then every object
   dropped to its resting height (floor, or the top of the highest box under its footprint),
   lowest first — the descent then never fights gravity;
3. rank by violation; candidates at (numerically) zero go to the exact checker, and the first
   that passes ends the search;
4. resample (cross-entropy method): the elite fraction survives; the rest of the batch is drawn
   around random elites — Gaussian moves of shrinking width, or one object re-drawn uniformly —
   plus a share of fresh random starts.

Options: ``steps`` (25) Adam steps per generation, ``elite`` (0.125) elite fraction, ``fresh``
(0.25) share of fresh starts, ``sigma`` (0.02 m) initial resampling width, ``snap_deg`` (8.0).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from robot_packer import constraints as C
from robot_packer.problem import PackingProblem
from robot_packer.solver.base import (Candidates, SolverConfig, ranked, register_solver,
                                      resolve_device, seeded_generators)
from robot_packer.solver.refine import refine

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


@torch.no_grad()
def project(poses: torch.Tensor, sizes: torch.Tensor, snap_deg: float) -> torch.Tensor:
    """Snap near-right-angle yaws, then drop every object to its resting height, lowest first."""
    p = poses.clone()
    quarter = torch.round(p[..., 3] / (math.pi / 2)) * (math.pi / 2)
    near = (p[..., 3] - quarter).abs() <= math.radians(snap_deg)
    p[..., 3] = torch.where(near, quarter, p[..., 3])
    b, n = p.shape[:2]
    rows = torch.arange(b, device=p.device)
    order = torch.argsort(p[..., 2] - 0.5 * sizes[:, 2], dim=1)
    placed = torch.zeros(b, n, dtype=torch.bool, device=p.device)
    s_all = sizes.expand(b, n, 3)
    for k in range(n):
        i = order[:, k]
        pi = p[rows, i]
        sep = C.sat_separation(pi[:, None].expand(b, n, 4), sizes[i][:, None].expand(b, n, 3),
                               p, s_all)
        tops = p[..., 2] + 0.5 * sizes[:, 2]
        under = placed & (sep < -C.TOL.slack)
        floor = torch.where(under, tops, torch.zeros_like(tops)).max(-1).values
        p[rows, i, 2] = floor + 0.5 * sizes[i, 2]
        placed[rows, i] = True
    return p


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

    def propose(self, problem: PackingProblem, config: SolverConfig, deadline: float) -> Candidates:
        device = resolve_device(config.device)
        _, gen = seeded_generators(config, device)
        dtype = torch.float32
        cp = C.compile_problem(problem, device, dtype)
        sizes = cp.geom.sizes
        batch = config.candidates
        poses = project(random_poses(problem, batch, gen, device, dtype), sizes, self.snap_deg)
        samples, generation, sigma = batch, 0, self.sigma
        best_p, best_v = poses, cp.total(poses)
        while True:
            if time.monotonic() >= deadline:
                return self._result(problem, best_p, best_v, samples, timed_out=True)
            poses = refine(poses, cp, steps=self.steps, box_size=problem.container.size,
                           deadline=deadline)
            poses = project(poses, sizes, self.snap_deg)
            v = cp.total(poses)
            best_p, best_v = _merge(best_p, best_v, poses, v, batch)
            if self._exact_hit(problem, best_p, best_v):
                return self._result(problem, best_p, best_v, samples, timed_out=False)
            poses = self._resample(problem, best_p, best_v, sigma, gen)
            samples += batch
            generation += 1
            sigma = max(0.002, sigma * 0.8)

    def _exact_hit(self, problem, poses, v) -> bool:
        """Exact-check the few near-zero candidates; True when one passes."""
        idx = torch.nonzero(v <= NEAR_ZERO).flatten()[:EXACT_CHECKS_PER_GENERATION]
        for i in idx.tolist():
            if C.all_satisfied(C.check(problem, poses[i].double().cpu().numpy())):
                v[i] = -1.0  # mark as exactly satisfied so it ranks first
                return True
        return False

    def _resample(self, problem, best_p, best_v, sigma, gen) -> torch.Tensor:
        """Elite survivors + Gaussian moves / one-object redraws around elites + fresh starts."""
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
        redraw = random_poses(problem, n_child - half, gen, dev, dt)
        which = torch.randint(0, n, (n_child - half,), generator=gen, device=dev)
        rows = torch.arange(n_child - half, device=dev)
        child[half:][rows, which] = redraw[rows, which]
        fresh = random_poses(problem, n_fresh, gen, dev, dt)
        out = torch.cat([elite, child, fresh])
        return project(out, torch.as_tensor(problem.sizes, device=dev, dtype=dt), self.snap_deg)

    def _result(self, problem, poses, v, samples, timed_out) -> Candidates:
        keep = 4 if timed_out else 16  # each failing candidate costs the pipeline an exact check
        return ranked(poses.double().cpu().numpy(), v.double().cpu().numpy(), samples, timed_out,
                      keep=keep)


def _merge(best_p, best_v, poses, v, keep):
    """The ``keep`` lowest-violation placements of the union of two batches."""
    all_p, all_v = torch.cat([best_p, poses]), torch.cat([best_v, v])
    idx = torch.argsort(all_v)[:keep]
    return all_p[idx], all_v[idx]
