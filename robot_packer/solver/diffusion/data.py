"""Training data: procedurally generated solved problems of one domain, cached as plain records.

Generation (``Domain.training_problem``) is the slow part (~20-80 ms per pack3d problem, more
for stack2d whose known solutions are settled in PyBullet), so it runs once, optionally in
several processes, and the records are cached as a JSON file (scene mappings and solutions; not
in git, and never unpickled).
A record keeps what the factor graph needs: the problem and one known solution.
"""
from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from robot_packer.datagen import label_relations
from robot_packer.domains import get_domain
from robot_packer.problem import PackingProblem, atomic_write, problem_from_dict, problem_to_dict

TRAIN_SEED_LIMIT = 1_000_000    # training seeds are below this; evaluation seeds >= 10_000_000


def make_record(seed: int, domain: str = "pack3d") -> tuple[PackingProblem, np.ndarray]:
    """One solved problem of ``domain`` from ``seed``: n objects (the domain's training range),
    a random subset of the relations that hold in the solution kept as the problem's
    constraints."""
    if seed >= TRAIN_SEED_LIMIT:
        raise ValueError(f"seed: training seeds must be < {TRAIN_SEED_LIMIT}, got {seed}")
    dom = get_domain(domain)
    rng = np.random.default_rng(seed)
    n = int(rng.integers(dom.train_objects[0], dom.train_objects[1] + 1))
    problem, poses = dom.training_problem(n, rng)
    held = label_relations(problem, poses, dom.relation_types)
    k = int(rng.integers(0, min(len(held), 3 * n) + 1)) if held else 0
    keep = sorted(rng.choice(len(held), size=k, replace=False).tolist()) if k else []
    return replace(problem, constraints=tuple(held[i] for i in keep)), poses


def _worker(seed: int, domain: str = "pack3d"):
    try:
        return make_record(seed, domain)
    except RuntimeError:
        return None


def build_dataset(seeds: range | list[int], processes: int = 1, cache: str | Path | None = None,
                  progress: bool = True, domain: str = "pack3d"
                  ) -> list[tuple[PackingProblem, np.ndarray]]:
    """Records of ``domain`` for ``seeds`` (loaded from ``cache`` when it already holds them)."""
    seeds = list(seeds)
    work = partial(_worker, domain=domain)
    if cache is not None and Path(cache).exists():
        data = _load_cache(cache)
        if len(data) >= len(seeds) * 0.95:
            return data
    if processes > 1:
        with mp.get_context("spawn").Pool(processes) as pool:
            it = pool.imap(work, seeds, chunksize=64)
            data = [r for r in _progress(it, len(seeds), progress) if r is not None]
    else:
        data = [r for r in _progress(map(work, seeds), len(seeds), progress) if r is not None]
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
