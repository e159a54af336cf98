"""Problem domains of the box solvers (DESIGN.md §8): one generator and one checkpoint each.

A domain says what its problems look like (a generator of solvable problems with a known
solution), which object counts its model is trained on and benchmarked at, and whether success
also needs the PyBullet check. The three box domains share :class:`PackingProblem`, the exact
checker and every solver:

* ``pack3d`` — the product: boxes into a tote with stacking, gripper clearance and all rules.
* ``qualitative2d`` — flat rectangles in a tray (one layer, no robot rules) with many
  qualitative relations (sides, close/away, aligned, regions) from random guillotine splits.
* ``stack2d`` — rectangles stacked in a vertical plane: boxes of one depth in a slot only a
  little deeper, yaw 0/180°, the container tight in width and height, so most of them must
  stand on others; kept only when PyBullet says the known solution stays put.

``triangles2d`` (triangles, not boxes) lives in :mod:`robot_packer.triangles2d`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from robot_packer.datagen import HARD, GenConfig, generate
from robot_packer.problem import PackingProblem, Rules

Generator = Callable[[int, np.random.Generator], tuple[PackingProblem, np.ndarray]]

# pack3d training mixture: (config, probability).
DENSE = GenConfig(fill_xy=(0.75, 0.97), fill_z=(0.7, 1.0), clearance=(0.002, 0.008),
                  stack_prob=0.35, relations=(1, 6))
PACK3D_MIXTURE: tuple[tuple[GenConfig, float], ...] = ((GenConfig(), 0.5), (DENSE, 0.35),
                                                       (replace(HARD, relations=(1, 6)), 0.15))
# Relations that mean something in the x-z plane of stack2d (y is the slot's depth).
PLANAR_RELATIONS = ("on", "in_front_of", "behind", "close_to", "away_from", "aligned_x")
PLANAR_RULES = Rules(heavy_below=False, gripper_clear=False, stable=True)
QUALITATIVE2D = GenConfig(container_min=(0.30, 0.30, 0.03), container_max=(0.46, 0.40, 0.03),
                          fill_xy=(0.55, 0.95), fill_z=(1.0, 1.0), clearance=(0.004, 0.015),
                          min_side=0.03, stack_prob=0.0, yaw_jitter_deg=0.0, relations=(2, 6),
                          fragile_prob=0.0, gripper="none", headroom=(0.0, 0.0),
                          rules=PLANAR_RULES)
STACK2D = GenConfig(container_min=(0.20, 0.06, 0.16), container_max=(0.32, 0.06, 0.26),
                    fill_xy=(0.85, 0.97), fill_z=(0.8, 1.0), clearance=(0.002, 0.008),
                    min_side=0.03, stack_prob=0.6, yaw_jitter_deg=0.0, relations=(0, 3),
                    fragile_prob=0.0, gripper="none", headroom=(0.0, 0.01), rules=PLANAR_RULES,
                    quarter_turns=False, relation_types=PLANAR_RELATIONS)
STABLE_TRIES = 200


@dataclass(frozen=True)
class Domain:
    """One problem domain.

    Attributes:
        name: registry key, also the checkpoint's file name (``models/<name>.pt``).
        generate: benchmark problems ``(n, rng) -> (problem, known solution (n, 4))``.
        train_generate: training problems (default: ``generate``).
        train_objects: (min, max) object counts of training problems.
        bench_objects: the object counts the benchmark reports by default.
        physics: whether success also needs the PyBullet check (verification).
        reach: whether that check includes the Panda's reach (robot domains only).
        relation_types: the relations its problems may list (None: every type).
    """

    name: str
    generate: Generator
    train_objects: tuple[int, int]
    bench_objects: tuple[int, ...]
    physics: bool
    reach: bool = False
    relation_types: tuple[str, ...] | None = None
    train_generate: Generator | None = None

    def training_problem(self, n: int, rng: np.random.Generator
                         ) -> tuple[PackingProblem, np.ndarray]:
        return (self.train_generate or self.generate)(n, rng)


def pack3d_training(n: int, rng: np.random.Generator) -> tuple[PackingProblem, np.ndarray]:
    """A pack3d training problem from the mixture of loose, dense and hard configurations."""
    cfgs, probs = zip(*PACK3D_MIXTURE)
    return generate(n, rng, cfgs[int(rng.choice(len(cfgs), p=np.array(probs)))])


def qualitative2d(n: int, rng: np.random.Generator) -> tuple[PackingProblem, np.ndarray]:
    """Flat rectangles in a tray with 2-6 qualitative relations that hold in the solution."""
    return generate(n, rng, QUALITATIVE2D)


def stack2d(n: int, rng: np.random.Generator) -> tuple[PackingProblem, np.ndarray]:
    """A stack of rectangles in a vertical plane whose known solution PyBullet finds stable.

    Raises:
        RuntimeError: no stable arrangement in ``STABLE_TRIES`` generated ones.
    """
    from robot_packer.sim.verify import settles

    for _ in range(STABLE_TRIES):
        problem, poses = generate(n, rng, STACK2D)
        if settles(problem, poses):
            return problem, poses
    raise RuntimeError(f"no stable {n}-object stack in {STABLE_TRIES} tries")


DOMAINS: dict[str, Domain] = {
    "pack3d": Domain("pack3d", generate, (2, 5), (3, 4, 5, 6, 8, 10),
                     physics=True, reach=True, train_generate=pack3d_training),
    "qualitative2d": Domain("qualitative2d", qualitative2d, (2, 4), (2, 3, 4, 5), physics=False),
    "stack2d": Domain("stack2d", stack2d, (2, 4), (4, 5, 6, 7), physics=True,
                      relation_types=PLANAR_RELATIONS),
}


def get_domain(name: str) -> Domain:
    """The registered box domain ``name``; ValueError naming the known ones otherwise."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise ValueError(f"domain: unknown {name!r} (known: {', '.join(DOMAINS)})") from None
