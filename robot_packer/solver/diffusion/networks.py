"""Denoisers: one small network per constraint type on shared encoders, composed by summation.

``ComposedDenoiser.forward(x, t, graph) -> eps`` follows the diffusers/DiT convention
(``forward(x, t, cond)``): ``x`` (B, N, P) noisy normalised poses (P = ``config.pose_dim``, 5
for pack3d), ``t`` (B, N) integer timesteps, ``graph`` the problem's
:class:`~.graph.ProblemGraph`. Every edge of type k predicts a noise vector for each of its
arguments with ``heads[k]``; per-edge predictions are added onto their objects and divided
by sqrt(degree) (the composition of Diffusion-CCSP, eq. 4).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from robot_packer.solver.diffusion.graph import EDGE_TYPES, NODE_DIM, POSE_DIM, ProblemGraph

Tensor = torch.Tensor


DEFAULT_EDGE_TYPES: tuple[tuple[str, int], ...] = tuple(EDGE_TYPES.items())


@dataclass(frozen=True)
class DenoiserConfig:
    """Sizes of the composed denoiser (saved in checkpoints as a plain dict).

    ``node_dim``, ``pose_dim`` and ``edge_types`` ((name, arity) pairs) default to the pack3d
    graph (:mod:`.graph`), so checkpoints saved before these fields existed load unchanged;
    other domains (e.g. triangles2d) pass their own.
    """

    hidden: int = 64          # encoder width (geometry, pose, time)
    head_hidden: int = 128    # hidden width of each per-type head
    train_steps: int = 1000   # diffusion timesteps T the time embedding is scaled by
    node_dim: int = NODE_DIM  # geometry features per node
    pose_dim: int = POSE_DIM  # normalised pose variables per node
    edge_types: tuple[tuple[str, int], ...] = DEFAULT_EDGE_TYPES

    def __post_init__(self) -> None:
        # Checkpoints store edge_types as a list of [name, arity] lists (weights_only-safe).
        pairs = tuple((str(name), int(arity)) for name, arity in self.edge_types)
        if not pairs or any(a < 1 for _, a in pairs):
            raise ValueError(f"edge_types: need (name, arity >= 1) pairs, got {self.edge_types!r}")
        object.__setattr__(self, "edge_types", pairs)
        if self.node_dim < 1 or self.pose_dim < 1:
            raise ValueError(f"node_dim/pose_dim: must be >= 1, "
                             f"got {self.node_dim}/{self.pose_dim}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["edge_types"] = [[name, arity] for name, arity in self.edge_types]
        return out


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
        h, node_dim, pose_dim = config.hidden, config.node_dim, config.pose_dim
        self.geom_enc = mlp([node_dim, h, h])
        self.pose_enc = mlp([pose_dim, h, h])
        self.time_enc = mlp([h, h, h])
        self.arg_dim = 2 * h + node_dim + pose_dim
        self.heads = nn.ModuleDict({
            head_key(k): mlp([arity * self.arg_dim + h, config.head_hidden, config.head_hidden,
                              arity * h]) for k, arity in config.edge_types})
        self.decoder = mlp([h, h, pose_dim])

    def encode(self, x: Tensor, t: Tensor, graph: ProblemGraph) -> tuple[Tensor, Tensor]:
        """Per-node argument encodings (B, N, arg_dim) and time encodings (B, N, hidden)."""
        geom = self.geom_enc(graph.nodes).expand(x.shape[0], -1, -1)
        nodes = graph.nodes.expand(x.shape[0], -1, -1)
        enc = torch.cat([geom, self.pose_enc(x), x, nodes], -1)
        temb = self.time_enc(timestep_embedding(t, self.config.hidden, self.config.train_steps))
        return enc, temb

    def edge_eps(self, edge_type: str, enc: Tensor, temb: Tensor, args: Tensor) -> Tensor:
        """Noise predictions (B, E, arity, pose_dim) of every edge of one type, in one forward.

        The head's first layer is linear in the concatenation (argument encodings, the first
        argument's time encoding); when the type has more edges than there are nodes (``cfree``,
        ``heavy_below``) it is applied per node, once for each argument slot, and gathered per
        edge: the same function with E × arity rows of the widest layer replaced by N × (arity
        + 1).
        """
        b, e, arity = enc.shape[0], args.shape[0], args.shape[1]
        head = self.heads[head_key(edge_type)]
        if e <= enc.shape[1]:
            feats = enc[:, args].reshape(b, e, arity * self.arg_dim)
            out = head(torch.cat([feats, temb[:, args[:, 0]]], -1))
        else:
            first, d = head[0], self.arg_dim
            z = first.bias + (temb @ first.weight[:, arity * d:].T)[:, args[:, 0]]
            for k in range(arity):
                z = z + (enc @ first.weight[:, k * d:(k + 1) * d].T)[:, args[:, k]]
            out = head[1:](z)
        return self.decoder(out.reshape(b, e, arity, -1))

    def forward(self, x: Tensor, t: Tensor, graph: ProblemGraph) -> Tensor:
        """Composed noise prediction (B, N, P): per-edge outputs summed per object / sqrt(deg)."""
        enc, temb = self.encode(x, t, graph)
        total = torch.zeros_like(x)
        degree = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        for edge_type, args in graph.edges.items():
            eps = self.edge_eps(edge_type, enc, temb, args)   # (B, E, arity, P)
            flat = args.reshape(-1)
            total.index_add_(1, flat, eps.reshape(x.shape[0], -1, self.config.pose_dim))
            degree.index_add_(0, flat, torch.ones_like(flat, dtype=x.dtype))
        return total / degree.clamp_min(1.0).sqrt()[:, None]


# Denoiser architectures by name; checkpoints record theirs under config["arch"].
DENOISERS: dict[str, type[nn.Module]] = {"composed": ComposedDenoiser}
