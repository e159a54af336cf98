#!/usr/bin/env python3
"""Verify, then execute with the simulated Panda, the generator's known solutions.

Usage: .venv/bin/python scripts/execute_known.py [--tier standard|hard] [--objects 6,8,10]
           [--problems 20] [--seed 0] [--out results.json]

The problems are the benchmark's candidates (``robot-packer bench --tier T --seed S``: the same
seeds, the same generator), before the benchmark keeps only those whose known solution verifies
(:func:`robot_packer.bench.robot_solvable`), so case ``nN_K`` is the K-th candidate. Each known
solution becomes a plan (:func:`pipeline.plan_of`), is verified as a solver's plan is
(:func:`pipeline.verify`: settling, the exact checks, the arm at every pick and place and above
them) and, where that passes, executed (:func:`robot_packer.sim.execute.execute_plan`: the arm
picks every object from the table and places it; success when every object ends within 1.5 cm /
5 deg of its planned pose). It measures what the robot side does with plans known to be packable:
how many verify, and how many of the verified ones the arm carries out. One JSON line per case on
stdout, then a count per N; ``--out`` writes every row and the command as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from robot_packer.bench import candidate_generator, generate_cases, git_commit
from robot_packer.problem import atomic_write
from robot_packer.sim.execute import execute_plan
from robot_packer.solver import pipeline


def known_problems(tier: str, n: int, count: int, seed: int) -> list:
    """The benchmark's first ``count`` candidate problems with ``n`` objects and their known
    solutions."""
    generate = candidate_generator("pack3d", tier)
    solutions: dict[int, object] = {}

    def keep(k, rng):
        problem, poses = generate(k, rng)
        solutions[id(problem)] = poses
        return problem, poses

    problems, _ = generate_cases(n, count, seed, keep, lambda problem, k: None)
    return [(problem, solutions[id(problem)]) for problem in problems]


def run_case(name: str, problem, poses) -> dict:
    """Verify the known solution's plan; execute it where verification passed."""
    plan = pipeline.plan_of(problem, poses, {"name": "known solution"})
    start = time.monotonic()
    verification = pipeline.verify(problem, plan)
    row = {"case": name, "exact": plan.status == "solved", "verified": verification["passed"],
           "verify_s": round(time.monotonic() - start, 2)}
    if not verification["passed"]:
        return {**row, "why": "; ".join(verification["reasons"])}
    start = time.monotonic()
    report = execute_plan(problem, plan, record=False)
    return {**row, "executed": report.success, "steps_done": report.steps_done,
            "message": report.message, "execute_s": round(time.monotonic() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", choices=("standard", "hard"), default="standard")
    parser.add_argument("--objects", default="6,8,10", help="comma-separated object counts")
    parser.add_argument("--problems", type=int, default=20, help="problems per object count")
    parser.add_argument("--seed", type=int, default=0, help="benchmark seed")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    counts = [int(v) for v in args.objects.split(",")]
    rows = []
    for n in counts:
        for k, (problem, poses) in enumerate(known_problems(args.tier, n, args.problems,
                                                            args.seed)):
            row = run_case(f"n{n}_{k:03d}", problem, poses)
            print(json.dumps(row), flush=True)
            rows.append({"n": n, **row})
    summary = {}
    for n in counts:
        mine = [r for r in rows if r["n"] == n]
        summary[n] = {"problems": len(mine), "verified": sum(r["verified"] for r in mine),
                      "executed": sum(bool(r.get("executed")) for r in mine)}
        print(f"N = {n}: {summary[n]['verified']} of {len(mine)} verified, "
              f"{summary[n]['executed']} of those executed", flush=True)
    if args.out:
        meta = {"command": " ".join(sys.argv), "commit": git_commit(), "tier": args.tier,
                "seed": args.seed, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write(args.out, json.dumps({"meta": meta, "summary": summary, "rows": rows},
                                          indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
