"""triangles2d benchmark cases for ``robot-packer bench --domain triangles2d``.

:func:`run_triangles_cases` generates the test problems (seeds ``TEST_SEED_BASE + 1_000_000 *
seed + 10_000 * n + j``, disjoint from the training seeds < 1_000_000), saves each as
``<out>/scenes/n{n}_{k:03d}.json`` (re-run one with ``robot-packer solve``), runs every solver on
it with the same budget and exact checker, and measures pass@1/pass@10 of raw diffusion samples.
The records have the keys of :func:`robot_packer.bench.run_one` so the shared summary, tables
and plots apply unchanged.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from robot_packer.bench import case_name, generate_cases
from robot_packer.solver.base import SolverConfig
from robot_packer.solver.triangles.solve import make_triangle_solver, solve_triangles
from robot_packer.triangles2d import all_satisfied, check, generate, save_scene

PASSK_SAMPLES = 10
WARM_UP_S = 0.5


def make_problems(n: int, problems: int, seed: int, out: str) -> tuple[list, list[int]]:
    """``problems`` generated problems with ``n`` triangles (saved as scenes) and their seeds,
    drawn like every domain's (:func:`robot_packer.bench.generate_cases`)."""
    scenes = Path(out) / "scenes"

    def save(problem, k: int) -> None:
        save_scene(problem, scenes / f"{case_name(n, k)}.json")

    return generate_cases(n, problems, seed, generate, save)


def run_one(problem, config: SolverConfig, solver, n: int, k: int, seed: int) -> dict:
    """Solve one case; the record of robot_packer.bench.run_one (+ the problem seed)."""
    t0, c0 = time.monotonic(), time.process_time()
    plan = solve_triangles(problem, config, solver)
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    success = plan.status == "solved"
    reasons: list[str] = []
    if not success:
        reasons = sorted({c["constraint"][0] for c in plan.constraints if not c["satisfied"]})
        reasons = reasons or [f"{plan.status}: {plan.message[:80]}"]
    return {"solver": config.solver, "n": n, "case": case_name(n, k), "status": plan.status,
            "success": success, "time_s": round(wall, 4), "cpu_s": round(cpu, 4),
            "verified": None, "reasons": reasons, "samples": plan.solver.get("samples"),
            "seed": seed}


def raw_passk(solver, problem, seed: int) -> tuple[bool, bool]:
    """(pass@1, pass@10) of one batch of raw samples (noise seeded by the problem seed)."""
    poses = solver.samples(problem, PASSK_SAMPLES, torch.Generator().manual_seed(seed))
    oks = [all_satisfied(check(problem, q)) for q in poses.double().cpu().numpy()]
    return bool(oks[0]), bool(any(oks))


def run_triangles_cases(objects: tuple[int, ...], problems: int, solvers: tuple[str, ...],
                        budget: float, seed: int, out: str, candidates: int, device: str,
                        passk: bool, progress_update: Callable[[], None] = lambda: None
                        ) -> tuple[list[dict], list[dict]]:
    """Every solver on every case; returns (run records, pass@k records).

    Raises:
        ValueError: naming a solver without a triangles2d version or a missing model.
    """
    base = SolverConfig(seed=seed, device=device, candidates=candidates, time_budget_s=budget,
                        verify=False)
    configs = {name: replace(base, solver=name) for name in solvers}
    instances = {name: make_triangle_solver(c) for name, c in configs.items()}
    runs: list[dict] = []
    passk_records: list[dict] = []
    for n in objects:
        cases, seeds = make_problems(n, problems, seed, out)
        for name, c in configs.items():                   # untimed warm-up per solver
            solve_triangles(cases[0], replace(c, time_budget_s=min(budget, WARM_UP_S)),
                            instances[name])
        for k, (problem, s) in enumerate(zip(cases, seeds)):
            for name in solvers:
                runs.append(run_one(problem, configs[name], instances[name], n, k, s))
                progress_update()
            if passk and "diffusion" in instances:
                p1, p10 = raw_passk(instances["diffusion"], problem, s)
                passk_records.append({"n": n, "case": case_name(n, k), "seed": s,
                                      "pass@1": p1, "pass@10": p10})
    return runs, passk_records
