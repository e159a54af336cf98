"""Solver configuration, the solver registry and the candidate container shared by all solvers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem


@dataclass(frozen=True)
class SolverConfig:
    """What every solver accepts. ``options`` holds solver-specific knobs (see each solver)."""

    solver: str = "diffusion"
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda
    candidates: int = 64            # samples per batch
    time_budget_s: float = 5.0
    verify: bool = True             # PyBullet verification of the best candidates
    verify_top_k: int = 4           # at most this many candidates verified per solve
    verify_reach: bool = True       # verification includes the Panda reach check (False: the
    #                                 physics only, for research domains without a robot)
    model_dir: str | None = None    # diffusion checkpoints (default: the package's models/)
    threads: int | None = 1         # torch CPU threads (None: torch's default). One is fastest
    #                                 for these small tensors: under load, 2+ threads made a
    #                                 2 s solve take 8 s on the 2-core reference machine
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device: must be auto, cpu or cuda, got {self.device!r}")
        if not (isinstance(self.candidates, int) and 1 <= self.candidates <= 65536):
            raise ValueError(f"candidates: must be an integer in [1, 65536], "
                             f"got {self.candidates!r}")
        if not (0 < self.time_budget_s <= 3600):
            raise ValueError(f"time_budget_s: must be in (0, 3600], got {self.time_budget_s!r}")
        if not (1 <= self.verify_top_k <= 64):
            raise ValueError(f"verify_top_k: must be in [1, 64], got {self.verify_top_k!r}")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but no CUDA device is available")
    return torch.device(device)


@dataclass(frozen=True)
class Candidates:
    """Proposed placements, best first. ``poses`` (K, n, 4) container frame; ``violations`` (K,) m.

    ``samples`` counts every candidate drawn; ``timed_out`` says the deadline cut it short;
    ``orders`` lets a sequential solver hand over the placing order it checked the gripper with.
    """

    poses: np.ndarray
    violations: np.ndarray
    samples: int
    timed_out: bool = False
    orders: np.ndarray | None = None   # (K, n) placing order a sequential solver used, if any

    def __post_init__(self) -> None:
        if self.poses.ndim != 3 or self.poses.shape[-1] != 4:
            raise ValueError(f"Candidates.poses: expected (K, n, 4), got {self.poses.shape}")
        if self.violations.shape != self.poses.shape[:1]:
            raise ValueError(f"Candidates.violations: expected ({self.poses.shape[0]},), "
                             f"got {self.violations.shape}")


def ranked(poses: np.ndarray, violations: np.ndarray, samples: int, timed_out: bool,
           keep: int = 16, orders: np.ndarray | None = None) -> Candidates:
    """The ``keep`` lowest-violation candidates, best first (non-finite ones dropped)."""
    poses = np.asarray(poses, dtype=np.float64)
    violations = np.asarray(violations, dtype=np.float64)
    ok = np.isfinite(violations) & np.all(np.isfinite(poses), axis=(1, 2))
    best = np.argsort(violations[ok], kind="stable")[:keep]
    kept = None if orders is None else np.asarray(orders, dtype=np.int64)[ok][best]
    return Candidates(poses[ok][best], violations[ok][best], samples, timed_out, kept)


class Solver(Protocol):
    """A solver proposes ranked candidates; the pipeline checks, verifies and plans them."""

    name: str

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        """Candidates for ``problem`` before ``deadline`` passes (or is stopped)."""
        ...


SOLVERS: dict[str, type] = {}


def registrar(registry: dict[str, type], kind: str):
    """``register(name)``: a class decorator adding the class to ``registry`` under ``name``
    (and setting its ``name``); a duplicate name raises ``ValueError`` naming the ``kind``."""
    def register(name: str):
        def deco(cls):
            if name in registry:
                raise ValueError(f"{kind} {name!r} is already registered")
            cls.name = name
            registry[name] = cls
            return cls
        return deco
    return register


# Class decorator: add a solver to ``SOLVERS``; a duplicate name raises ``ValueError``.
register_solver = registrar(SOLVERS, "solver")


def make_solver(config: SolverConfig) -> Solver:
    """Instantiate the configured solver once (model loading happens here, not per solve)."""
    from robot_packer import solver as _all  # noqa: F401  (registers every solver)

    if config.solver not in SOLVERS:
        raise ValueError(f"solver: unknown {config.solver!r} "
                         f"(allowed: {', '.join(sorted(SOLVERS))})")
    if config.threads:
        torch.set_num_threads(int(config.threads))   # process-wide: set where solving is set up
    return SOLVERS[config.solver](config)


def seeded_generators(config: SolverConfig, device: torch.device) -> tuple[np.random.Generator,
                                                                           torch.Generator]:
    """The numpy and torch generators every solver draws from (no global RNG state)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(config.seed))
    return np.random.default_rng(config.seed), gen
