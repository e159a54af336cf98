"""The optional OR-Tools CP-SAT baseline (``solver="cpsat"``, extra ``pip install .[cpsat]``)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import robot_packer.solver.cpsat as cpsat  # imports without OR-Tools (lazy import in __init__)
from robot_packer import constraints as C
from robot_packer import datagen
from robot_packer.problem import Constraint, Container, Gripper, Item, PackingProblem
from robot_packer.solver import SolverConfig, make_solver, pipeline, solve

_ORTOOLS = ("ortools", "ortools.sat", "ortools.sat.python", "ortools.sat.python.cp_model")


def _problem(n: int, j: int, cfg=datagen.GenConfig()):
    problem, _ = datagen.generate(n, np.random.default_rng(10_000_000 + 10_000 * n + j), cfg)
    return problem


def test_missing_ortools_gives_a_clear_error(monkeypatch):
    for name in _ORTOOLS:             # an import of any of these now raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ValueError, match=r"needs OR-Tools: pip install \.\[cpsat\]"):
        make_solver(SolverConfig(solver="cpsat"))


def test_module_imports_without_ortools():
    code = ("import sys\n"
            + "".join(f"sys.modules[{m!r}] = None\n" for m in _ORTOOLS)
            + "import robot_packer.solver.cpsat as m\n"
            "from robot_packer.solver.base import SOLVERS\n"
            "assert SOLVERS['cpsat'] is m.CPSATSolver\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("n,j", [(3, 0), (3, 1), (5, 0), (5, 1)])
def test_solves_easy_generated_problems_exactly(n, j):
    pytest.importorskip("ortools")
    problem = _problem(n, j)
    plan = solve(problem, SolverConfig(solver="cpsat", verify=False, time_budget_s=10, threads=1))
    assert plan.status == "solved", plan.message
    poses = plan.poses(problem.ids)
    assert C.all_satisfied(C.check(problem, poses, [problem.index(s["object"])
                                                    for s in plan.steps] or None))
    assert np.allclose(np.sin(2 * poses[:, 3]), 0.0, atol=1e-5)   # 0° / 90° (rounded to 1e-6)


def test_dense_hard_tier_problem_solved_within_budget():
    pytest.importorskip("ortools")
    problem = _problem(8, 0, datagen.HARD)
    plan = solve(problem, SolverConfig(solver="cpsat", verify=False, time_budget_s=2, threads=1))
    assert plan.solver["time_s"] < 3.5                  # 2 s budget, loosely (loaded CI)
    assert plan.status in ("solved", "timeout")


def test_budget_is_respected_when_a_coarse_grid_cannot_fit():
    """A 1 cm grid only (no refinement) on a dense problem: gives up on time, not later."""
    pytest.importorskip("ortools")
    problem = _problem(8, 1, datagen.HARD)
    config = SolverConfig(solver="cpsat", verify=False, time_budget_s=2, threads=1,
                          options={"grid_m": 0.02, "min_grid_m": 0.02})
    plan = solve(problem, config)
    assert plan.solver["time_s"] < 3.5


def test_infeasible_relation_cycle_is_not_solved():
    pytest.importorskip("ortools")
    problem = _problem(3, 0)
    a, b, c = problem.ids
    cycle = (Constraint("left_of", (a, b)), Constraint("left_of", (b, c)),
             Constraint("left_of", (c, a)))
    plan = solve(dataclasses.replace(problem, constraints=cycle),
                 SolverConfig(solver="cpsat", verify=False, time_budget_s=3, threads=1))
    assert plan.status in ("failed", "timeout")
    assert plan.solver["time_s"] < 4.5


def test_listed_relations_hold():
    pytest.importorskip("ortools")
    problem = _problem(4, 2)
    a, b, c, d = problem.ids
    rels = (Constraint("in_front_of", (a, b)), Constraint("close_to", (c, d)),
            Constraint("region", (c, "left")), Constraint("aligned_y", (a, b)))
    problem = dataclasses.replace(problem, constraints=rels)
    plan = solve(problem, SolverConfig(solver="cpsat", verify=False, time_budget_s=10, threads=1))
    assert plan.status == "solved", plan.message
    listed = [r for r in plan.constraints if r["constraint"][0] in
              ("in_front_of", "close_to", "region", "aligned_y")]
    assert len(listed) == 4 and all(r["satisfied"] for r in listed)


def test_bad_options_are_rejected():
    pytest.importorskip("ortools")
    with pytest.raises(ValueError, match="support"):
        cpsat.CPSATSolver(SolverConfig(solver="cpsat", options={"support": "hover"}))
    solver = cpsat.CPSATSolver(SolverConfig(solver="cpsat", options={"grid_m": 0.01}))
    grids = solver.grids()
    assert grids[0] == 0.01 and grids[-1] == pytest.approx(0.001) and grids == sorted(grids)[::-1]


def test_another_seed_gives_another_exact_plan():
    """After a plan fails verification the pipeline proposes again with the next seed: cpsat must
    then return another plan, not the same first solution (it used to, for every seed)."""
    pytest.importorskip("ortools")
    problem = _problem(6, 0, datagen.HARD)
    stride = pipeline.RETRY_SEED_STRIDE                  # the seeds of the pipeline's retries
    plans = [solve(problem, SolverConfig(solver="cpsat", verify=False, time_budget_s=10,
                                         threads=1, seed=k * stride)) for k in range(3)]
    assert all(p.status == "solved" for p in plans), [p.message for p in plans]
    poses = [p.poses(problem.ids) for p in plans]
    assert not np.allclose(poses[0], poses[1]) or not np.allclose(poses[0], poses[2])
    for p, q in zip(plans, poses):
        order = [problem.index(s["object"]) for s in p.steps] or None
        assert C.all_satisfied(C.check(problem, q, order))


def test_suction_wrist_is_kept_off_the_walls_of_a_deep_container():
    """The grid model itself (before any exact check) forbids a low box in the corner of a deep
    container under suction, where the wrist would reach below the rim into the walls, and
    allows it in a shallow one."""
    cp_model = pytest.importorskip("ortools.sat.python.cp_model")
    low = Item("low", [0.15, 0.06, 0.05], mass=0.3)
    for height, feasible in ((0.25, False), (0.15, True)):
        box = Container([0.30, 0.24, height], [0.55, 0.0, 0.0, 0.0], 0.01)
        problem = PackingProblem(box, (low,), gripper=Gripper(type="suction"))
        model = cpsat._Model(cp_model, problem, 0.01, 0.001, "overlap")
        model.m.Add(model.x[0] == 0)
        model.m.Add(model.y[0] == 0)                     # the cell in the corner
        status = cp_model.CpSolver().Solve(model.m)
        assert (status in (cp_model.OPTIMAL, cp_model.FEASIBLE)) is feasible, (height, status)
