#!/usr/bin/env python3
"""Time ``verify_plan`` on generated solved packings; write docs/verify_timing.md.

Usage: .venv/bin/python scripts/bench_verify.py [--plans 100] [--seed 0]
           [--source grid,pack3d,solvers] [--out docs/verify_timing.md]

``pack3d`` problems come from ``robot_packer.datagen.generate`` (3-6 objects, stacking, masses,
fragile flags, listed relations; every solution passes the exact checker). ``grid`` packings are
simple: 2-6 random boxes, one per cell of a grid in a 40 x 30 x 12 cm container, upright.
``solvers``: plans (placements and step order) the baseline solvers return on pack3d problems.
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from robot_packer.bench import git_commit
from robot_packer.problem import Container, Item, PackingProblem, Plan, atomic_write
from robot_packer.sim.verify import verify_plan


def grid_packing(rng: np.random.Generator) -> tuple[PackingProblem, np.ndarray]:
    """2-6 boxes, one per grid cell, >= 4 cm gaps, upright; on the table in two rows."""
    box = np.array([0.40, 0.30, 0.12])
    nx, ny = int(rng.integers(1, 4)), 2
    cell = box[:2] / [nx, ny]
    items, poses = [], []
    for k in range(nx * ny):
        ix, iy = divmod(k, ny)
        sx = rng.uniform(0.04, min(cell[0] - 0.04, 0.14))
        sy = rng.uniform(0.04, min(cell[1] - 0.04, 0.065))
        sz = rng.uniform(0.09, 0.12)
        centre = -box[:2] / 2 + cell * [ix + 0.5, iy + 0.5]
        poses.append([centre[0], centre[1], sz / 2, 0.0])
        table = [0.30 + 0.14 * (k // 2), -0.34 - 0.16 * (k % 2), sz / 2, np.pi / 2]
        items.append(Item(f"o{k}", [sx, sy, sz], table, mass=float(rng.uniform(0.1, 0.5))))
    prob = PackingProblem(Container(box, [0.55, 0.0, 0.0, 0.0], 0.01), tuple(items))
    return prob, np.array(poses)


def pack3d_packing(rng: np.random.Generator) -> tuple[PackingProblem, np.ndarray]:
    from robot_packer.datagen import generate

    return generate(int(rng.integers(3, 7)), rng)


def solver_packing(rng: np.random.Generator) -> tuple[PackingProblem, Plan]:
    """A pack3d problem solved by a baseline solver (rejection, cem, heuristic in turn; 2 s,
    no verification): the plans `verify` sees in practice. Unsolved problems are redrawn."""
    from robot_packer.datagen import generate
    from robot_packer.solver import SolverConfig, solve

    while True:
        problem, _ = generate(int(rng.integers(3, 7)), rng)
        name = ("rejection", "cem", "heuristic")[int(rng.integers(0, 3))]
        plan = solve(problem, SolverConfig(solver=name, seed=int(rng.integers(1 << 30)),
                                           time_budget_s=2.0, verify=False))
        if plan.status == "solved":
            return problem, plan


def reason_kind(reason: str) -> str:
    """Short category of a reason string ('reachable', 'stable', 'planned: in', ...)."""
    head = reason.split(":")[0]
    if head in ("planned", "after settling"):
        m = re.match(r"[^:]+: (\w+)", reason)
        return f"{head}: {m.group(1) if m else '?'}"
    return head


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plans", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", default="grid,pack3d",
                    help="comma-separated packing sources: grid, pack3d, solvers")
    ap.add_argument("--out", default="docs/verify_timing.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    sources = args.source.split(",")
    if not set(sources) <= set(SOURCES):
        ap.error(f"--source: choose from {', '.join(SOURCES)}")
    sections = [bench_source(src, args.plans, args.seed) for src in sources]
    cmd = (f".venv/bin/python scripts/bench_verify.py --plans {args.plans} --seed {args.seed} "
           f"--source {args.source} --out {args.out}")
    text = "\n".join([
        "# verify_plan timing", "", f"Command: `{cmd}`", "",
        f"Machine: {platform.machine()}, Python {sys.version.split()[0]}, torch threads 1, a "
        "shared 2-core CPU with other jobs running (load average "
        f"{os.getloadavg()[0]:.1f} at the end), so the numbers are upper bounds.", "",
        "Each call builds a fresh DIRECT world, measures penetration, settles 2 s at 240 Hz "
        "(10 solver iterations), re-checks the exact constraints before and after settling, "
        "checks gripper clearance in plan order, and solves Panda IK at every pick and place "
        "pose and straight above it (where the object clears the container's wall), the arm "
        "clear of the container, the objects placed before and those still on the table.", "",
        f"Commit `{git_commit()}`.", "", *sections])
    atomic_write(Path(args.out), text)
    print(text)
    return 0


def bench_source(source: str, plans: int, seed: int) -> str:
    """Verify ``plans`` packings of one source; a markdown section with the numbers."""
    rng = np.random.default_rng(seed)
    make = SOURCES[source]
    cases = [make(rng) for _ in range(plans)]
    verify_plan(*cases[0])  # warm-up: imports, URDF parse cache
    times, passed, kinds = [], 0, collections.Counter()
    for prob, poses in cases:
        t0 = time.perf_counter()
        result = verify_plan(prob, poses)
        times.append(time.perf_counter() - t0)
        passed += bool(result["passed"])
        kinds.update({reason_kind(r) for r in result["reasons"]})
    t = np.array(times)
    sizes = [len(prob.items) for prob, _ in cases]
    return "\n".join([
        f"## `{source}` packings", "",
        f"{plans} plans with {min(sizes)}-{max(sizes)} objects "
        f"(mean {statistics.mean(sizes):.1f}).",
        "", "| metric | value |", "|---|---|",
        f"| median | {np.median(t) * 1000:.0f} ms |",
        f"| p95 | {np.percentile(t, 95) * 1000:.0f} ms |",
        f"| min / max | {t.min() * 1000:.0f} / {t.max() * 1000:.0f} ms |",
        f"| passed | {passed} / {plans} |", "",
        "Plans failing with a reason of each kind:", "", "| kind | plans |", "|---|---|",
        *([f"| {k} | {v} |" for k, v in kinds.most_common()] or ["| (none) | 0 |"]), "", ""])


SOURCES = {"grid": grid_packing, "pack3d": pack3d_packing, "solvers": solver_packing}

if __name__ == "__main__":
    sys.exit(main())
