"""Training data: procedurally generated solved pack3d problems, cached as plain records.

Generation (``datagen.generate``) is the slow part (~20-80 ms per problem), so it runs once,
optionally in several processes, and the records are cached as a JSON file (scene mappings and
solutions; not in git, and never unpickled).
A record keeps what the factor graph needs: the problem and one known solution.
"""
from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import replace
from pathlib import Path

import numpy as np

from robot_packer.datagen import HARD, GenConfig, generate, label_relations
from robot_packer.problem import PackingProblem, atomic_write, problem_from_dict, problem_to_dict

DENSE = GenConfig(fill_xy=(0.75, 0.97), fill_z=(0.7, 1.0), clearance=(0.002, 0.008),
                  stack_prob=0.35, relations=(1, 6))
# (config, probability) mixture used for training problems.
MIXTURE: tuple[tuple[GenConfig, float], ...] = ((GenConfig(), 0.5), (DENSE, 0.35),
                                                (replace(HARD, relations=(1, 6)), 0.15))
TRAIN_SEED_LIMIT = 1_000_000    # training seeds are below this; evaluation seeds >= 10_000_000


def make_record(seed: int, n_range: tuple[int, int] = (2, 5)) -> tuple[PackingProblem, np.ndarray]:
    """One solved problem from ``seed``: n objects, a mixture config, a random subset of the
    relations that hold in the solution kept as the problem's constraints."""
    if seed >= TRAIN_SEED_LIMIT:
        raise ValueError(f"seed: training seeds must be < {TRAIN_SEED_LIMIT}, got {seed}")
    rng = np.random.default_rng(seed)
    n = int(rng.integers(n_range[0], n_range[1] + 1))
    cfgs, probs = zip(*MIXTURE)
    cfg = cfgs[int(rng.choice(len(cfgs), p=np.array(probs)))]
    problem, poses = generate(n, rng, cfg)
    held = label_relations(problem, poses)
    k = int(rng.integers(0, min(len(held), 3 * n) + 1)) if held else 0
    keep = sorted(rng.choice(len(held), size=k, replace=False).tolist()) if k else []
    return replace(problem, constraints=tuple(held[i] for i in keep)), poses


def _worker(seed: int):
    try:
        return make_record(seed)
    except RuntimeError:
        return None


def build_dataset(seeds: range | list[int], processes: int = 1, cache: str | Path | None = None,
                  progress: bool = True) -> list[tuple[PackingProblem, np.ndarray]]:
    """Records for ``seeds`` (loaded from ``cache`` when it already holds them)."""
    seeds = list(seeds)
    if cache is not None and Path(cache).exists():
        data = _load_cache(cache)
        if len(data) >= len(seeds) * 0.95:
            return data
    if processes > 1:
        with mp.get_context("spawn").Pool(processes) as pool:
            it = pool.imap(_worker, seeds, chunksize=64)
            data = [r for r in _progress(it, len(seeds), progress) if r is not None]
    else:
        data = [r for r in _progress(map(_worker, seeds), len(seeds), progress) if r is not None]
    if cache is not None:
        atomic_write(cache, json.dumps([{"scene": problem_to_dict(p), "solution": x.tolist()}
                                        for p, x in data]))
    return data


def _load_cache(cache: str | Path) -> list[tuple[PackingProblem, np.ndarray]]:
    """Records from a JSON cache written by :func:`build_dataset` (validated like scenes)."""
    rows = json.loads(Path(cache).read_text())
    return [(problem_from_dict(r["scene"]), np.asarray(r["solution"], dtype=np.float64))
            for r in rows]


def _progress(it, total, enabled):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc="generating problems", mininterval=5.0)
