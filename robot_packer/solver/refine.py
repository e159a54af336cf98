"""Gradient refinement of candidate placements on the exact differentiable violations.

Shared by the diffusion solver and the ``cem`` baseline::

    from robot_packer.solver.refine import refine
    poses = refine(poses, compile_problem(problem), steps=100, lr=0.004,
                   box_size=problem.container.size)

Adam (written out) descends ``CompiledProblem.total`` (metres) for every candidate of the batch at
once (the candidates do not interact: the loss is their sum and Adam is elementwise), with a
cosine-decayed step size, positions kept inside the container and the lowest-violation iterate of
each candidate returned (not merely the last one). ``project`` drops candidates onto their
supports (cem's projection, and the diffusion solver's settled exact check).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from robot_packer import constraints as C
from robot_packer.constraints import CompiledProblem
from robot_packer.deadline import Deadline


ADAM_BETAS = (0.9, 0.999)
DROP_LEVEL_STRIDE = 100.0  # m: larger than any container, so a drop level outranks a height


@dataclass(frozen=True)
class RefineConfig:
    """Defaults of :func:`refine` (lr in metres per step; yaw moves ``yaw_lr_scale`` x faster)."""

    steps: int = 100
    lr: float = 0.004
    yaw_lr_scale: float = 5.0
    final_lr_fraction: float = 0.05
    noise: float = 0.0            # std (m) of Gaussian jitter added once before descending
    cheap_fraction: float = 0.5   # first part of the steps skips the costly gripper_clear terms


def refine(poses: torch.Tensor, compiled: CompiledProblem, steps: int = RefineConfig.steps,
           lr: float = RefineConfig.lr, box_size=None, generator: torch.Generator | None = None,
           noise: float = RefineConfig.noise, yaw_lr_scale: float = RefineConfig.yaw_lr_scale,
           deadline: Deadline | None = None,
           cheap_fraction: float = RefineConfig.cheap_fraction,
           stop_at_first: bool = False) -> torch.Tensor:
    """Descend the total exact violation from ``poses``; return the best iterate per candidate.

    Args:
        poses: (B, n, 4) ``[x, y, z, yaw]`` container frame, any device (float32 or float64).
        compiled: the problem from ``constraints.compile_problem`` (same device as ``poses``).
        steps: Adam iterations (0 returns the input, detached).
        lr: initial step size in metres (yaw uses ``lr * yaw_lr_scale`` radians).
        box_size: (3,) container inner size; when given, centres are clamped into the box.
        generator: torch generator for the optional initial ``noise`` jitter (no global RNG).
        noise: std in metres of the jitter added to x, y before descending (0: none).
        yaw_lr_scale: ratio of the yaw step size to the position step size.
        deadline: optional; descent stops early once it has passed (or was stopped).
        cheap_fraction: share of the steps that descend the violations without the pairwise
            ``gripper_clear`` terms (finger boxes vs objects: ~2/3 of a step; the finger-wall
            terms stay); the rest descends the full total, and
            only full-total iterates count as "best".
        stop_at_first: stop as soon as one candidate reaches zero violation (default: when all
            have, or after ``steps``).

    Returns:
        (B, n, 4) detached poses, yaw wrapped to (-pi, pi], same dtype/device as ``poses``.
    """
    x = poses.detach().clone()
    if noise > 0:
        dev = generator.device if generator is not None else x.device
        x[..., :2] += noise * torch.randn(x[..., :2].shape, generator=generator, device=dev,
                                          dtype=x.dtype).to(x.device)
    lo, hi = _bounds(box_size, x)
    scale = torch.tensor([lr, lr, lr, lr * yaw_lr_scale], dtype=x.dtype, device=x.device)
    m, s = torch.zeros_like(x), torch.zeros_like(x)     # Adam moments (written out: no lazy
    cur = x.clone()                                     # optimizer imports on the first call)
    best = x.clone()
    best_v = torch.full(x.shape[:1], float("inf"), dtype=x.dtype, device=x.device)
    cheap = replace(compiled, edges={k: (v[:0] if k == "gripper_clear" else v)   # walls stay
                                     for k, v in compiled.edges.items()})
    switch = int(cheap_fraction * steps) if "gripper_clear" in compiled.edges else 0
    for k in range(steps + 1):
        cur.requires_grad_(True)
        late = k >= switch or (deadline is not None and deadline.passed())
        v = (compiled if late else cheap).total(cur)
        if late:
            with torch.no_grad():                   # keep each candidate's best full iterate
                better = v < best_v
                best_v = torch.where(better, v, best_v)
                best[better] = cur.detach()[better]
        done = (best_v <= 0).any() if stop_at_first else (best_v <= 0).all()
        if k == steps or (late and bool(done)) or (deadline is not None and deadline.passed()):
            break
        (grad,) = torch.autograd.grad(v.sum(), cur)
        cur = cur.detach()
        frac = 0.5 * (1 + math.cos(math.pi * k / max(steps, 1)))      # cosine decay
        low = RefineConfig.final_lr_fraction
        step = scale * (low + (1 - low) * frac)
        m.mul_(ADAM_BETAS[0]).add_(grad, alpha=1 - ADAM_BETAS[0])      # Adam (Kingma & Ba, alg. 1)
        s.mul_(ADAM_BETAS[1]).addcmul_(grad, grad, value=1 - ADAM_BETAS[1])
        m_hat = m / (1 - ADAM_BETAS[0] ** (k + 1))
        s_hat = s / (1 - ADAM_BETAS[1] ** (k + 1))
        cur = cur - step * m_hat / (s_hat.sqrt() + 1e-8)
        if lo is not None:
            cur[..., :3] = torch.maximum(torch.minimum(cur[..., :3], hi), lo)
    best[..., 3] = torch.atan2(torch.sin(best[..., 3]), torch.cos(best[..., 3]))
    return best.detach()


def _bounds(box_size, x: torch.Tensor):
    """Clamp bounds for centres: the container's inner box (None without a box size)."""
    if box_size is None:
        return None, None
    b = torch.tensor(np.array(box_size, dtype=np.float64), dtype=x.dtype, device=x.device)
    lo = torch.stack([-b[0] / 2, -b[1] / 2, torch.zeros_like(b[0])])
    hi = torch.stack([b[0] / 2, b[1] / 2, b[2]])
    return lo, hi


@torch.no_grad()
def project(poses: torch.Tensor, sizes: torch.Tensor, snap_deg: float,
            levels: torch.Tensor | None = None) -> torch.Tensor:
    """Snap near-right-angle yaws, then drop every object to its resting height.

    Objects drop by ``levels`` (e.g. ``cem.drop_levels``; none: all equal), lowest bottom first
    within a level.
    """
    p = poses.clone()
    quarter = torch.round(p[..., 3] / (math.pi / 2)) * (math.pi / 2)
    near = (p[..., 3] - quarter).abs() <= math.radians(snap_deg)
    p[..., 3] = torch.where(near, quarter, p[..., 3])
    b, n = p.shape[:2]
    rows = torch.arange(b, device=p.device)
    key = p[..., 2] - 0.5 * sizes[:, 2]
    if levels is not None:
        key = key + DROP_LEVEL_STRIDE * levels
    order = torch.argsort(key, dim=1)
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
