"""Factor graphs of packing problems and the pose/feature normalisation (DESIGN.md §8).

Nodes are the objects (the fixed container's geometry is part of every node's features, and the
unary edges ``in``/``region:*`` attach an object to it). Edge types are the constraint types:

* ``in`` for every object (implied containment, also carries ``stable``),
* ``cfree`` for every unordered pair (implied, also carries ``gripper_clear``),
* ``heavy_below`` for ordered pairs (a, b) where a must not rest on b (heavier, or b fragile),
* every listed relation; ``region`` is split into one unary type per region (``region:left`` ...).

Pose variables live in a normalised 5-D space ``(x/(L/2), y/(W/2), 2 z/H - 1, cos 2yaw, sin 2yaw)``.
A box is symmetric under a half turn, so the doubled angle removes that trivial ambiguity; the
decoded yaw is ``atan2(sin, cos) / 2`` in (-pi/2, pi/2].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robot_packer.datagen import PAIR_RELATIONS
from robot_packer.problem import REGIONS, PackingProblem

Tensor = torch.Tensor
POSE_DIM = 5
NODE_DIM = 10
EDGE_TYPES: dict[str, int] = {"in": 1, "cfree": 2, "heavy_below": 2,
                              **{name: 2 for name in PAIR_RELATIONS},
                              **{f"region:{r}": 1 for r in REGIONS}}
CONTAINER_SCALE = 0.4   # metres: container extents are divided by this in node features


@dataclass(frozen=True)
class ProblemGraph:
    """Tensors of one problem (or a disjoint union of several).

    Attributes:
        nodes: (N, NODE_DIM) float geometry features.
        edges: type name -> (E, arity) long node indices (only types with edges present).
        box: (N, 3) float container inner size (m) of each node's problem (for pose mapping).
    """

    nodes: Tensor
    edges: dict[str, Tensor]
    box: Tensor

    def to(self, device: torch.device | str) -> "ProblemGraph":
        return ProblemGraph(self.nodes.to(device), {k: v.to(device) for k, v in self.edges.items()},
                            self.box.to(device))

    @property
    def n(self) -> int:
        return int(self.nodes.shape[0])


def node_features(problem: PackingProblem) -> np.ndarray:
    """(n, NODE_DIM): size / container (3), log mass ratio to the heaviest, mass / heaviest,
    fragile, container size / CONTAINER_SCALE (3), suction flag."""
    box = np.asarray(problem.container.size, dtype=np.float64)
    sizes, masses = problem.sizes, problem.masses
    n = len(sizes)
    rel = masses / masses.max()
    return np.concatenate([sizes / box, np.log(rel)[:, None] / 3.0, rel[:, None],
                           problem.fragile[:, None].astype(np.float64),
                           np.tile(box / CONTAINER_SCALE, (n, 1)),
                           np.full((n, 1), float(problem.gripper.type == "suction"))], 1)


def edge_rows(problem: PackingProblem) -> dict[str, list[list[int]]]:
    """Argument index rows of every edge type present in ``problem``."""
    n = len(problem.items)
    ids = {item.id: i for i, item in enumerate(problem.items)}
    pairs = [[i, j] for i in range(n) for j in range(i + 1, n)]
    rows: dict[str, list[list[int]]] = {"in": [[i] for i in range(n)], "cfree": pairs}
    masses, fragile = problem.masses, problem.fragile
    heavy = problem.rules.heavy_below
    rows["heavy_below"] = [[a, b] for a in range(n) for b in range(n)
                           if a != b and ((heavy and masses[a] > masses[b]) or fragile[b])]
    for con in problem.constraints:
        if con.name == "region":
            rows.setdefault(f"region:{con.args[1]}", []).append([ids[con.args[0]]])
        else:
            rows.setdefault(con.name, []).append([ids[a] for a in con.args])
    return {k: v for k, v in rows.items() if v}


def build_graph(problem: PackingProblem, device: torch.device | str = "cpu") -> ProblemGraph:
    """The factor graph of one problem on ``device``."""
    unknown = [k for k in edge_rows(problem) if k not in EDGE_TYPES]
    if unknown:
        raise ValueError(f"constraints: no trained denoiser for {unknown[0]!r} "
                         f"(known: {', '.join(sorted(EDGE_TYPES))})")
    n = len(problem.items)
    edges = {k: torch.tensor(v, dtype=torch.long, device=device).reshape(-1, EDGE_TYPES[k])
             for k, v in edge_rows(problem).items()}
    box = torch.tensor(np.array(problem.container.size), dtype=torch.float32, device=device)
    return ProblemGraph(torch.tensor(node_features(problem), dtype=torch.float32, device=device),
                        edges, box.expand(n, 3).contiguous())


def union(graphs: list[ProblemGraph]) -> ProblemGraph:
    """Disjoint union: node indices of each graph offset by the nodes before it."""
    offsets = np.cumsum([0] + [g.n for g in graphs[:-1]])
    edges: dict[str, list[Tensor]] = {}
    for off, g in zip(offsets, graphs):
        for k, v in g.edges.items():
            edges.setdefault(k, []).append(v + int(off))
    return ProblemGraph(torch.cat([g.nodes for g in graphs]),
                        {k: torch.cat(v) for k, v in edges.items()},
                        torch.cat([g.box for g in graphs]))


def normalise(poses: Tensor, box: Tensor) -> Tensor:
    """[x, y, z, yaw] (..., N, 4) metres/rad -> normalised (..., N, 5); ``box`` (N, 3)."""
    half = box / 2
    return torch.stack([poses[..., 0] / half[:, 0], poses[..., 1] / half[:, 1],
                        poses[..., 2] / half[:, 2] - 1.0,
                        torch.cos(2 * poses[..., 3]), torch.sin(2 * poses[..., 3])], -1)


def denormalise(x: Tensor, box: Tensor) -> Tensor:
    """Normalised (..., N, 5) -> [x, y, z, yaw] (..., N, 4); yaw = atan2(sin, cos) / 2."""
    half = box / 2
    yaw = 0.5 * torch.atan2(x[..., 4], x[..., 3])
    return torch.stack([x[..., 0] * half[:, 0], x[..., 1] * half[:, 1],
                        (x[..., 2] + 1.0) * half[:, 2], yaw], -1)
