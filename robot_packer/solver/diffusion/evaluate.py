"""Quality of raw diffusion samples: pass@k, the metric of the Diffusion-CCSP paper.

pass@k of a problem is 1 when one of ``k`` raw samples (one batch, the solver's configured
sampler, no refinement, no ranking) satisfies every constraint under the exact checker, and
pass@1 is the verdict of the first sample. Used by ``robot-packer bench`` and
``scripts/eval_diffusion.py``.
"""
from __future__ import annotations

import numpy as np
import torch

from robot_packer import constraints as C
from robot_packer.problem import PackingProblem
from robot_packer.solver.diffusion.graph import build_graph, denormalise
from robot_packer.solver.diffusion.sampler import sample
from robot_packer.solver.diffusion.solver import DiffusionSolver

PASSK_SAMPLES = 10   # samples per problem for pass@10 (and pass@1 from the first of them)


def raw_sample_checks(solver: DiffusionSolver, problem: PackingProblem, num: int,
                      generator: torch.Generator) -> np.ndarray:
    """(num,) bool: whether each of ``num`` raw samples passes the exact checker.

    ``generator`` lives on the CPU (the sampler draws CPU noise, so CPU and CUDA agree).
    """
    graph = build_graph(problem, solver.device)
    x = sample(solver.model, solver.schedule, graph, num, solver.options.sampler(), generator)
    poses = denormalise(x, graph.box).double().cpu().numpy()   # (num, N, 4) metres, rad
    return np.array([C.all_satisfied(C.check(problem, q)) for q in poses], dtype=bool)


def pass_at_k(solver: DiffusionSolver, problems: list[PackingProblem], k: int = PASSK_SAMPLES,
              generator: torch.Generator | None = None) -> tuple[float, float]:
    """(pass@1, pass@k) over ``problems``; one batch of ``k`` samples per problem."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    oks = [raw_sample_checks(solver, p, k, gen) for p in problems]
    return (float(np.mean([o[0] for o in oks])), float(np.mean([o.any() for o in oks])))
