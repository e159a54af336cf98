"""``robot-packer verify SCENE PLAN [--out REPORT]`` (DESIGN.md §9).

Exit codes: 0 passed, 2 invalid input (one ``error: ...`` line on stderr), 3 failed. The
verification JSON is printed on stdout; with ``--out`` it is also written atomically, with
``<stem>_before.png`` (the scene as given) and ``<stem>_after.png`` (the plan's placements after
settling) next to it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from robot_packer.problem import PackingProblem, SceneError, atomic_write, load_plan, load_scene

EXIT_PASSED, EXIT_INVALID, EXIT_FAILED = 0, 2, 3


def run_verify(scene_path: str | Path, plan_path: str | Path,
               out_path: str | Path | None = None, reach: bool = True) -> int:
    """Verify a plan file against a scene file; returns the process exit code. ``reach=False``
    leaves the robot out (``--domain stack2d``: physics only)."""
    from robot_packer.sim.verify import verify_plan

    try:
        problem = load_scene(scene_path)
        plan = load_plan(plan_path)
        extra = sorted(set(plan.placements) - set(problem.ids))
        if extra:
            raise SceneError(f"plan.placements.{extra[0]}: not an object of the scene")
        result = verify_plan(problem, plan, reach=reach)
    except SceneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    text = json.dumps(result, indent=2)
    print(text)
    if out_path is not None:
        out = Path(out_path)
        atomic_write(out, text + "\n")
        write_pictures(problem, plan.poses(problem.ids), out)
    return EXIT_PASSED if result["passed"] else EXIT_FAILED


def write_pictures(problem: PackingProblem, poses: np.ndarray, out: Path) -> tuple[Path, Path]:
    """Render the cell before (items where they are) and after (placed, settled) as PNGs."""
    from robot_packer.constraints import TOL
    from robot_packer.sim.render import render_cell, save_png
    from robot_packer.sim.world import SimWorld

    before_path = out.with_name(out.stem + "_before.png")
    after_path = out.with_name(out.stem + "_after.png")
    has_poses = all(it.pose is not None for it in problem.items)
    if has_poses:
        with SimWorld(problem, robot=True, visuals=True) as world:
            save_png(before_path, render_cell(world))
    with SimWorld(problem, poses, frame="container", robot=True, visuals=True) as world:
        if not has_poses:
            save_png(before_path, render_cell(world))
        world.step(TOL.settle_time_s)
        save_png(after_path, render_cell(world))
    return before_path, after_path
