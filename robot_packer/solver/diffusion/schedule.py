"""Cosine noise schedule with DDPM/DDIM reverse steps (Nichol & Dhariwal 2021; Song et al. 2021).

The scheduler owns the timestep grid (``set_timesteps``) and one reverse step
(``step(eps, t, x, generator)``), as in diffusers' ``scheduling_ddim.py``; the sampling loop
itself lives in :mod:`.sampler`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class ScheduleConfig:
    train_steps: int = 1000   # T
    cosine_s: float = 0.008   # offset s of the cosine schedule
    clip_x0: float = 1.5      # predicted x0 is clipped to [-clip, clip] (normalised poses)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device then moved.

    Solvers pass a CPU generator, so CPU and CUDA runs with one seed see the same noise.
    """
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)


class CosineSchedule:
    """alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2) / alpha_bar(0)
    (Nichol & Dhariwal eq. 17)."""

    def __init__(self, config: ScheduleConfig = ScheduleConfig(),
                 device: torch.device | str = "cpu"):
        self.config = config
        T = config.train_steps
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + config.cosine_s) / (1 + config.cosine_s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        self.alphas_cumprod = torch.cumprod(1 - betas, 0).float().to(device)
        self.timesteps = torch.arange(T - 1, -1, -1, device=device)

    def set_timesteps(self, num_steps: int) -> Tensor:
        """Evenly spaced descending grid of ``num_steps`` timesteps in [0, T-1] (DDIM)."""
        T = self.config.train_steps
        if not 1 <= num_steps <= T:
            raise ValueError(f"num_steps: must be in [1, {T}], got {num_steps}")
        grid = torch.linspace(T - 1, 0, num_steps).round().long()
        self.timesteps = grid.to(self.alphas_cumprod.device)
        return self.timesteps

    def sigma(self, t: int) -> float:
        """Noise std sqrt(1 - alpha_bar_t) of x_t."""
        return float((1 - self.alphas_cumprod[t]).sqrt())

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """q(x_t | x_0): sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (DDPM eq. 4); ``t`` broadcasts to
        x0[..., 0]."""
        ab = self.alphas_cumprod[t][..., None]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def predict_x0(self, eps: Tensor, t: int, x: Tensor) -> Tensor:
        """x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t), clipped (DDPM eq. 15)."""
        ab = self.alphas_cumprod[t]
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        return x0.clamp(-self.config.clip_x0, self.config.clip_x0)

    def previous(self, t: int) -> int:
        """The timestep after ``t`` on the current grid (-1 after the last)."""
        idx = (self.timesteps == t).nonzero()
        k = int(idx[0, 0]) + 1 if idx.numel() else len(self.timesteps)
        return int(self.timesteps[k]) if k < len(self.timesteps) else -1

    def step(self, eps: Tensor, t: int, x: Tensor, generator: torch.Generator | None = None,
             eta: float = 0.0) -> Tensor:
        """One reverse step x_t -> x_prev (DDIM eq. 12; eta = 1 is ancestral DDPM sampling)."""
        prev = self.previous(t)
        x0 = self.predict_x0(eps, t, x)
        ab = self.alphas_cumprod[t]
        ab_prev = self.alphas_cumprod[prev] if prev >= 0 else torch.ones_like(ab)
        var = eta ** 2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()         # eps consistent with the clipped x0
        out = ab_prev.sqrt() * x0 + (1 - ab_prev - var).clamp_min(0).sqrt() * eps
        if eta > 0 and prev >= 0:
            out = out + var.sqrt() * noise_like(x, generator)
        return out
