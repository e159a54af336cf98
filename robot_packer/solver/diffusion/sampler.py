"""The reverse-diffusion sampling loop with Langevin corrections (Diffusion-CCSP §4.2)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robot_packer.solver.diffusion.graph import POSE_DIM, ProblemGraph
from robot_packer.solver.diffusion.schedule import CosineSchedule, noise_like

Tensor = torch.Tensor


@dataclass(frozen=True)
class SamplerConfig:
    """Reverse-process knobs: DDIM steps, DDIM eta, ULA corrections per step and their size."""

    steps: int = 25
    eta: float = 0.5
    langevin_steps: int = 1
    langevin_size: float = 0.01   # ULA step = langevin_size * sigma_t^2
    langevin_until: float = 0.0   # corrections only at t/T >= this (0: at every level)


@torch.no_grad()
def sample(model: torch.nn.Module, schedule: CosineSchedule, graph: ProblemGraph, num: int,
           config: SamplerConfig, generator: torch.Generator) -> Tensor:
    """``num`` samples (num, N, 5) of normalised poses for ``graph``, all in one batch.

    ``generator`` may live on the CPU while the model runs on CUDA (same samples on both).
    """
    dev = graph.nodes.device
    x = noise_like(torch.empty((num, graph.n, POSE_DIM), device=dev), generator)  # 1. x_T ~ N(0, I)
    T = schedule.config.train_steps
    for t in schedule.set_timesteps(config.steps).tolist():
        tt = torch.full((num, graph.n), t, dtype=torch.long, device=dev)
        eps = model(x, tt, graph)               # 2. composed eps: sum_k eps_k / sqrt(deg) (eq. 4)
        if t / T >= config.langevin_until:
            sig = schedule.sigma(t)
            for _ in range(config.langevin_steps):
                # 3. ULA on p_t with score = -eps / sigma_t and step c*sigma_t^2:
                #    x <- x - c*sigma_t*eps + sqrt(2c)*sigma_t*z  (Langevin, Song & Ermon eq. 4)
                c = config.langevin_size
                x = x - c * sig * eps + (2 * c) ** 0.5 * sig * noise_like(x, generator)
                eps = model(x, tt, graph)       # 4. re-evaluate the composed eps at the new x
        x = schedule.step(eps, t, x, generator, config.eta)   # 5. DDIM step x_t -> x_prev (eq. 12)
    return x                                    # 6. x_0: normalised poses (decode with graph)
