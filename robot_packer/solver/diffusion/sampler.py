"""The reverse-diffusion sampling loop with Langevin corrections (Diffusion-CCSP §4.2)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robot_packer.deadline import Deadline
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


@dataclass(frozen=True)
class Inpaint:
    """Objects held at known poses while the others are sampled (RePaint-style conditioning).

    ``known``: (num, N, 5) normalised poses; ``mask``: (num, N) bool, True where held.
    """

    known: Tensor
    mask: Tensor


@torch.no_grad()
def sample(model: torch.nn.Module, schedule: CosineSchedule, graph: ProblemGraph, num: int,
           config: SamplerConfig, generator: torch.Generator, deadline: Deadline | None = None,
           inpaint: Inpaint | None = None) -> Tensor:
    """``num`` samples (num, N, P) of normalised poses for ``graph``, all in one batch
    (P = the model's ``config.pose_dim``, 5 for pack3d).

    ``generator`` may live on the CPU while the model runs on CUDA (same samples on both).
    ``deadline``: when it passes (or is stopped), the loop stops and returns the current
    prediction of x_0 instead of finishing the grid. ``inpaint`` holds some objects at known
    poses: before every denoiser call they are set to their known pose noised to the current
    level, so the free objects are sampled conditioned on them.
    """
    dev = graph.nodes.device
    pose_dim = int(getattr(getattr(model, "config", None), "pose_dim", POSE_DIM))
    x = noise_like(torch.empty((num, graph.n, pose_dim), device=dev), generator)  # 1. x_T ~ N(0, I)
    T = schedule.config.train_steps
    hold = _holder(schedule, inpaint, generator)
    for t in schedule.set_timesteps(config.steps).tolist():
        tt = torch.full((num, graph.n), t, dtype=torch.long, device=dev)
        x = hold(x, t)
        eps = model(x, tt, graph)               # 2. composed eps: sum_k eps_k / sqrt(deg) (eq. 4)
        if deadline is not None and deadline.passed():
            return hold(schedule.predict_x0(eps, t, x), -1)   # out of time: x_0 estimate now
        if t / T >= config.langevin_until:
            sig = schedule.sigma(t)
            for _ in range(config.langevin_steps):
                # 3. ULA on p_t with score = -eps / sigma_t and step c*sigma_t^2:
                #    x <- x - c*sigma_t*eps + sqrt(2c)*sigma_t*z  (Langevin, Song & Ermon eq. 4)
                c = config.langevin_size
                x = x - c * sig * eps + (2 * c) ** 0.5 * sig * noise_like(x, generator)
                x = hold(x, t)
                eps = model(x, tt, graph)       # 4. re-evaluate the composed eps at the new x
        x = schedule.step(eps, t, x, generator, config.eta)   # 5. DDIM step x_t -> x_prev (eq. 12)
    return hold(x, -1)                          # 6. x_0: normalised poses (decode with graph)


def _holder(schedule: CosineSchedule, inpaint: Inpaint | None, generator: torch.Generator):
    """``hold(x, t)``: x with the held objects replaced by their known poses noised to level t
    (t = -1: the clean poses). The identity without ``inpaint``."""
    if inpaint is None:
        return lambda x, t: x

    def hold(x: Tensor, t: int) -> Tensor:
        if t < 0:
            target = inpaint.known
        else:
            level = torch.full(inpaint.mask.shape, t, dtype=torch.long, device=x.device)
            target = schedule.add_noise(inpaint.known, noise_like(x, generator), level)
        return torch.where(inpaint.mask[..., None], target, x)

    return hold
