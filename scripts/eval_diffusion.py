#!/usr/bin/env python3
"""Measure the diffusion solver on fresh generated pack3d problems (seeds >= 10_000_000).

Reports, per object count N: success of the full solver (exact checker, no PyBullet) within the
time budget, pass@1 / pass@10 of raw samples (no refinement, exact checker), and the ablation
(same budget): samples decoded along their layout then refined (the solver), samples refined
only (the paper's pipeline + our refinement), raw samples alone, uniform-random layouts decoded,
refinement from random starts.

    .venv/bin/python scripts/eval_diffusion.py --n 3 4 5 6 8 10 --problems 30 --budget 2.0
    .venv/bin/python scripts/eval_diffusion.py --n --tier hard --ablation-n 6 8
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from robot_packer.datagen import HARD, GenConfig, generate
from robot_packer.solver.base import SolverConfig
from robot_packer.solver.diffusion.evaluate import pass_at_k
from robot_packer.solver.diffusion.solver import DiffusionSolver
from robot_packer.solver.pipeline import solve

TEST_SEED_BASE = 10_000_000
VARIANTS = {"diffusion, decode + refine": {},
            "diffusion + refine (no decode)": {"decode": 0},
            "diffusion alone": {"decode": 0, "refine_steps": 0},
            "random layouts, decode + refine": {"init": "random"},
            "refine from random": {"init": "random", "decode": 0}}


def problems(n: int, count: int, cfg: GenConfig = GenConfig()) -> list:
    """``count`` fresh problems with ``n`` objects, disjoint from training."""
    out, k = [], 0
    while len(out) < count:           # a seed whose generation fails is skipped
        rng = np.random.default_rng(TEST_SEED_BASE + 1000 * n + k)
        k += 1
        try:
            out.append(generate(n, rng, cfg)[0])
        except RuntimeError:
            continue
    return out


def success(probs, budget: float, candidates: int, model_dir, options: dict) -> tuple[float, float]:
    """(fraction solved exactly, mean seconds) through ``pipeline.solve`` with verify=False."""
    cfg = SolverConfig(solver="diffusion", verify=False, time_budget_s=budget,
                       candidates=candidates, model_dir=model_dir, options=options)
    solver = DiffusionSolver(cfg)
    ok, secs = 0, []
    for k, p in enumerate(probs):
        t0 = time.monotonic()
        plan = solve(p, replace(cfg, seed=k), solver=solver)
        secs.append(time.monotonic() - t0)
        ok += plan.status == "solved"
    return ok / len(probs), float(np.mean(secs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", default=[3, 4, 5, 6, 8, 10])
    ap.add_argument("--tier", default="standard", choices=["standard", "hard"])
    ap.add_argument("--problems", type=int, default=30)
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--candidates", type=int, default=64)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--ablation-n", type=int, nargs="*", default=[4, 8])
    ap.add_argument("--ablation-problems", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = HARD if args.tier == "hard" else GenConfig()
    results = {"budget_s": args.budget, "candidates": args.candidates, "tier": args.tier,
               "rows": [], "ablation": []}
    for n in args.n:
        probs = problems(n, args.problems, gen)
        rate, secs = success(probs, args.budget, args.candidates, args.model_dir, {})
        raw = DiffusionSolver(SolverConfig(solver="diffusion", model_dir=args.model_dir))
        p1, p10 = pass_at_k(raw, probs, 10, torch.Generator().manual_seed(0))
        row = {"n": n, "problems": len(probs), "success": rate, "mean_s": secs,
               "pass@1": p1, "pass@10": p10}
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
    for n in args.ablation_n:
        probs = problems(n, args.ablation_problems, gen)
        for name, opts in VARIANTS.items():
            rate, secs = success(probs, args.budget, args.candidates, args.model_dir, opts)
            row = {"n": n, "variant": name, "problems": len(probs), "success": rate, "mean_s": secs}
            results["ablation"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
