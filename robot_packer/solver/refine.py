"""Gradient refinement of candidate placements on the exact differentiable violations.

Shared by the diffusion solver and the ``cem`` baseline::

    from robot_packer.solver.refine import refine
    poses = refine(poses, compile_problem(problem), steps=100, lr=0.004,
                   box_size=problem.container.size)

Adam descends ``CompiledProblem.total`` (metres) for every candidate of the batch at once (the
candidates do not interact: the loss is their sum and Adam is elementwise), with a cosine-decayed
step size, positions kept inside the container and the lowest-violation iterate of each
candidate returned (not merely the last one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from robot_packer.constraints import CompiledProblem


@dataclass(frozen=True)
class RefineConfig:
    """Defaults of :func:`refine` (lr in metres per step; yaw moves ``yaw_lr_scale`` x faster)."""

    steps: int = 100
    lr: float = 0.004
    yaw_lr_scale: float = 5.0
    final_lr_fraction: float = 0.05
    noise: float = 0.0            # std (m) of Gaussian jitter added once before descending


def refine(poses: torch.Tensor, compiled: CompiledProblem, steps: int = RefineConfig.steps,
           lr: float = RefineConfig.lr, box_size=None, generator: torch.Generator | None = None,
           noise: float = RefineConfig.noise, yaw_lr_scale: float = RefineConfig.yaw_lr_scale,
           deadline: float | None = None) -> torch.Tensor:
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
        deadline: optional ``time.monotonic()`` value; descent stops early once it is passed.

    Returns:
        (B, n, 4) detached poses, yaw wrapped to (-pi, pi], same dtype/device as ``poses``.
    """
    import time

    x = poses.detach().clone()
    if noise > 0:
        dev = generator.device if generator is not None else x.device
        x[..., :2] += noise * torch.randn(x[..., :2].shape, generator=generator, device=dev,
                                          dtype=x.dtype).to(x.device)
    lo, hi = _bounds(box_size, x)
    pos = x[..., :3].clone().requires_grad_(True)
    yaw = x[..., 3:].clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [pos], "lr": lr},
                            {"params": [yaw], "lr": lr * yaw_lr_scale}])
    best = x.clone()
    best_v = torch.full(x.shape[:1], float("inf"), dtype=x.dtype, device=x.device)
    for k in range(steps + 1):
        cur = torch.cat([pos, yaw], -1)
        v = compiled.total(cur)
        with torch.no_grad():                       # keep each candidate's best iterate
            better = v < best_v
            best_v = torch.where(better, v, best_v)
            best[better] = cur[better]
        if k == steps or bool((best_v <= 0).all()) or (deadline and time.monotonic() > deadline):
            break
        frac = 0.5 * (1 + math.cos(math.pi * k / max(steps, 1)))      # cosine decay
        for g, base in zip(opt.param_groups, (lr, lr * yaw_lr_scale)):
            g["lr"] = base * (RefineConfig.final_lr_fraction + (1 - RefineConfig.final_lr_fraction) * frac)
        opt.zero_grad(set_to_none=True)
        v.sum().backward()
        opt.step()
        if lo is not None:
            with torch.no_grad():
                pos.copy_(torch.maximum(torch.minimum(pos, hi), lo))
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
