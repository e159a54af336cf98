"""Denoisers: one small network per constraint type on shared encoders, composed by summation.

``ComposedDenoiser.forward(x, t, graph) -> eps`` follows the diffusers/DiT convention
(``forward(x, t, cond)``): ``x`` (B, N, 5) noisy normalised poses, ``t`` (B, N) integer
timesteps, ``graph`` the problem's :class:`~.graph.ProblemGraph`. Every edge of type k predicts
a noise vector for each of its arguments with ``heads[k]``; per-edge predictions are added onto
their objects and divided by sqrt(degree) (the composition of Diffusion-CCSP, eq. 4).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from robot_packer.solver.diffusion.graph import EDGE_TYPES, NODE_DIM, POSE_DIM, ProblemGraph

Tensor = torch.Tensor


@dataclass(frozen=True)
class DenoiserConfig:
    """Sizes of the composed denoiser (saved in checkpoints as a plain dict)."""

    hidden: int = 64          # encoder width (geometry, pose, time)
    head_hidden: int = 128    # hidden width of each per-type head
    train_steps: int = 1000   # diffusion timesteps T the time embedding is scaled by

    def to_dict(self) -> dict:
        return asdict(self)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers[:-1])


def timestep_embedding(t: Tensor, dim: int, train_steps: int) -> Tensor:
    """Sinusoidal embedding (..., dim) of integer timesteps (Vaswani et al. / DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
    arg = (t.float() / train_steps * 1000.0)[..., None] * freqs
    return torch.cat([torch.cos(arg), torch.sin(arg)], -1)


def head_key(edge_type: str) -> str:
    """ModuleDict-safe key of an edge type (``region:left`` -> ``region_left``)."""
    return edge_type.replace(":", "_")


class ComposedDenoiser(nn.Module):
    """Shared geometry/pose/time encoders, a head per edge type, a shared pose decoder."""

    def __init__(self, config: DenoiserConfig = DenoiserConfig()):
        super().__init__()
        self.config = config
        h = config.hidden
        self.geom_enc = mlp([NODE_DIM, h, h])
        self.pose_enc = mlp([POSE_DIM, h, h])
        self.time_enc = mlp([h, h, h])
        self.arg_dim = 2 * h + NODE_DIM + POSE_DIM
        self.heads = nn.ModuleDict({
            head_key(k): mlp([arity * self.arg_dim + h, config.head_hidden, config.head_hidden,
                              arity * h]) for k, arity in EDGE_TYPES.items()})
        self.decoder = mlp([h, h, POSE_DIM])

    def encode(self, x: Tensor, t: Tensor, graph: ProblemGraph) -> tuple[Tensor, Tensor]:
        """Per-node argument encodings (B, N, arg_dim) and time encodings (B, N, hidden)."""
        geom = self.geom_enc(graph.nodes).expand(x.shape[0], -1, -1)
        nodes = graph.nodes.expand(x.shape[0], -1, -1)
        enc = torch.cat([geom, self.pose_enc(x), x, nodes], -1)
        temb = self.time_enc(timestep_embedding(t, self.config.hidden, self.config.train_steps))
        return enc, temb

    def edge_eps(self, edge_type: str, enc: Tensor, temb: Tensor, args: Tensor) -> Tensor:
        """Noise predictions (B, E, arity, 5) of every edge of one type, in one forward."""
        b, e, arity = enc.shape[0], args.shape[0], args.shape[1]
        feats = enc[:, args].reshape(b, e, arity * self.arg_dim)
        out = self.heads[head_key(edge_type)](torch.cat([feats, temb[:, args[:, 0]]], -1))
        return self.decoder(out.reshape(b, e, arity, -1))

    def forward(self, x: Tensor, t: Tensor, graph: ProblemGraph) -> Tensor:
        """Composed noise prediction (B, N, 5): per-edge outputs summed per object / sqrt(deg)."""
        enc, temb = self.encode(x, t, graph)
        total = torch.zeros_like(x)
        degree = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        for edge_type, args in graph.edges.items():
            eps = self.edge_eps(edge_type, enc, temb, args)           # (B, E, arity, 5)
            flat = args.reshape(-1)
            total.index_add_(1, flat, eps.reshape(x.shape[0], -1, POSE_DIM))
            degree.index_add_(0, flat, torch.ones_like(flat, dtype=x.dtype))
        return total / degree.clamp_min(1.0).sqrt()[:, None]


# Denoiser architectures by name; checkpoints record theirs under config["arch"].
DENOISERS: dict[str, type[nn.Module]] = {"composed": ComposedDenoiser}
