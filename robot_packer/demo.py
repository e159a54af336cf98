"""``robot-packer demo``: the main job in a simulated cell, end to end, with a report.

simulated depth cameras -> labelled cloud -> perception -> problem -> solver -> PyBullet
verification -> the Panda executes the plan in simulation -> report (plan.json, report.md,
before.png, after.png, placements.png).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from robot_packer.problem import (Item, PackingProblem, SceneError, atomic_write, load_scene,
                                  resource_path, save_plan)

DEFAULT_SCENE = "sim/scenes/demo_tote.yaml"
REPORT_FILES = ("plan.json", "report.md", "before.png", "after.png", "placements.png")


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scene", default=None, help=f"scene file (default: {DEFAULT_SCENE})")
    p.add_argument("--out", default="demo_out", help="report folder")
    p.add_argument("--solver", default="portfolio",
                   help="solver name (default: portfolio = diffusion and heuristic racing)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget", type=float, default=10.0, help="solver seconds")
    p.add_argument("--noise", type=float, default=0.001, help="camera depth noise std (m)")


class _Stages:
    """Prints progress per stage and records wall times."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        print(f"[{len(self.times) + 1}] {name} ...", flush=True)
        t0 = time.monotonic()
        yield
        self.times[name] = time.monotonic() - t0
        print(f"    done in {self.times[name]:.2f} s", flush=True)


def perceived_problem(truth: PackingProblem, points: np.ndarray, labels: np.ndarray
                      ) -> tuple[PackingProblem, list[str]]:
    """Items from the cloud; ids, masses and flags come from the scene by label (item k = k+1)."""
    from robot_packer.perception import perceive

    result = perceive(points, labels)
    items = []
    for obj in result.objects:
        if not 1 <= obj.label <= len(truth.items):
            continue
        ref = truth.items[obj.label - 1]
        items.append(Item(ref.id, obj.size, obj.pose, ref.mass, ref.fragile, obj.points, ref.mesh))
    found = {it.id for it in items}
    missing = [it.id for it in truth.items if it.id not in found]
    if missing:
        raise SceneError(f"perception did not find: {', '.join(missing)}")
    return replace(truth, items=tuple(items)), list(result.skipped)


def run_demo(args: argparse.Namespace) -> int:
    from robot_packer.sim.camera import default_cameras, render_scene_cloud
    from robot_packer.sim.execute import execute_plan
    from robot_packer.sim.render import placements_png, save_png
    from robot_packer.solver import SolverConfig, make_solver, solve

    t_start = time.monotonic()
    out = Path(args.out)
    for name in REPORT_FILES:   # never leave a previous run's files beside this run's report
        (out / name).unlink(missing_ok=True)
    stage = _Stages()
    try:
        truth = load_scene(args.scene or resource_path(DEFAULT_SCENE))
        config = SolverConfig(solver=args.solver, seed=args.seed, device=args.device,
                              time_budget_s=args.time_budget)
        with stage("load solver"):
            solver = make_solver(config)
    except (SceneError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    with stage("simulated depth cameras"):
        cams = default_cameras(truth, noise_std=args.noise, outlier_frac=0.005)
        points, labels = render_scene_cloud(truth, cams, rng)
    with stage(f"perception ({len(points)} points)"):
        problem, warnings = perceived_problem(truth, points, labels)
    with stage(f"solve ({config.solver}) + PyBullet verification"):
        plan = solve(problem, config, solver)
    save_plan(plan, out / "plan.json")
    report = None
    if plan.verified:
        with stage("Panda executes the plan in simulation"):
            report = execute_plan(problem, plan)
    else:
        print("    the plan is not verified: the robot does not execute it")
    poses = plan.poses(problem.ids) if plan.placements else None
    if report is not None:
        save_png(out / "before.png", report.before)
        save_png(out / "after.png", report.after)
    if poses is not None:
        placements_png(problem, poses, out / "placements.png",
                       title=f"{plan.status}, verified={plan.verification['passed']}")
    wall = time.monotonic() - t_start
    text = report_markdown(truth, problem, plan, report, stage.times, warnings, wall)
    atomic_write(out / "report.md", text)
    ok = plan.verified and report is not None and report.success
    _print_summary(problem, plan, report, out, wall)
    return 0 if ok else 3


def _fmt(v, nd=3) -> str:
    return ", ".join(f"{x:.{nd}f}" for x in v)


def report_markdown(truth, problem, plan, report, times, warnings, wall) -> str:
    lines = ["# robot_packer demo report", "",
             f"Status: **{plan.status}**, verified in simulation: **{plan.verification['passed']}**"
             + (f" — {plan.message}" if plan.message else ""), "",
             "## Objects found by perception", "",
             "| id | size (m) | true size (m) | pose (world) | mass (kg) | fragile |",
             "|---|---|---|---|---|---|"]
    for item, ref in zip(problem.items, truth.items):
        lines.append(f"| {item.id} | {_fmt(item.size)} | {_fmt(ref.size)} | {_fmt(item.pose)} | "
                     f"{item.mass:.2f} | {item.fragile} |")
    if warnings:
        lines += ["", "Perception warnings: " + "; ".join(warnings)]
    lines += ["", "## Constraints", "", "| constraint | holds | violation (m) |", "|---|---|---|"]
    for c in plan.constraints:
        if c["constraint"][0] in ("in", "cfree") and c["satisfied"]:
            continue
        lines.append(f"| {' '.join(c['constraint'])} | {c['satisfied']} | {c['violation']:.4f} |")
    lines.append("\n(implied `in` and `cfree` entries are listed only when violated)")
    lines += ["", "## Solver and stages", "", f"Solver: `{json.dumps(plan.solver)}`", "",
              "| stage | time (s) |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in times.items()]
    lines += [f"| total wall time | {wall:.2f} |", "", "## Verification", "",
              "```json", json.dumps(plan.verification, indent=2), "```", ""]
    if report is not None:
        lines += ["## Execution (Panda in PyBullet)", "", f"{report.message}", "",
                  "| object | position error (mm) | yaw error (deg) |", "|---|---|---|"]
        for k, item in enumerate(problem.items):
            lines.append(f"| {item.id} | {report.position_error[k] * 1000:.1f} | "
                         f"{report.yaw_error_deg[k]:.1f} |")
    lines += ["", "![before](before.png) ![after](after.png) ![placements](placements.png)", ""]
    return "\n".join(lines)


def _print_summary(problem, plan, report, out: Path, wall: float) -> None:
    print()
    print(f"{'object':<10} {'size (cm)':<20} {'placed at (cm, container)':<28} "
          f"{'exec err (mm)':>13}")
    for k, item in enumerate(problem.items):
        place = plan.placements.get(item.id)
        err = f"{report.position_error[k] * 1000:.1f}" if report is not None else "-"
        size = " x ".join(f"{v * 100:.1f}" for v in item.size)
        at = ", ".join(f"{v * 100:.1f}" for v in place[:3]) if place else "-"
        print(f"{item.id:<10} {size:<20} {at:<28} {err:>13}")
    print(f"\nplan: {plan.status}, verified: {plan.verification['passed']}, solver "
          f"{plan.solver.get('name')} {plan.solver.get('time_s', 0):.2f} s"
          + (f", execution: {report.message}" if report is not None else ""))
    if plan.message:
        print(f"note: {plan.message}")
    for name in REPORT_FILES:
        if (out / name).exists():
            print(f"  {out / name}")
    print(f"total wall time {wall:.1f} s")
