"""Every registered solver through one sweep (shapes, finiteness, determinism, time budget, an easy
problem solved) on CPU and CUDA when present; infeasible problems report why."""
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_packer import constraints as C
from robot_packer import datagen
from robot_packer.deadline import Deadline
from robot_packer.planning import step_order
from robot_packer.problem import Constraint, Container, Item, PackingProblem, load_scene
from robot_packer.solver import SOLVERS, SolverConfig, make_solver, register_solver, solve
from robot_packer.solver import axis_aligned, cem, heuristic, rejection  # noqa: F401  (register)

try:
    import robot_packer.solver.diffusion  # noqa: F401
except ImportError:
    pass

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
EASY_SEED = 10_000_003   # benchmark-range seed: never a training problem
ROOT = Path(__file__).resolve().parents[1]


def build(name, device, **kw):
    config = SolverConfig(solver=name, device=device, verify=False, candidates=32, seed=7, **kw)
    try:
        return config, make_solver(config)
    except (OSError, ValueError) as exc:    # e.g. a learned solver whose checkpoint is absent
        pytest.skip(f"{name} cannot be built here: {exc}")


@pytest.fixture(scope="module")
def easy():
    problem, _ = datagen.generate(3, np.random.default_rng(EASY_SEED))
    return problem


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_solves_an_easy_problem(name, device, easy):
    config, solver = build(name, device, time_budget_s=10.0)
    t0 = time.monotonic()
    cands = solver.propose(easy, config, Deadline(time.monotonic() + config.time_budget_s))
    assert time.monotonic() - t0 < config.time_budget_s + 2.0
    k = cands.poses.shape[0]
    assert k >= 1 and cands.poses.shape == (k, 3, 4) and cands.violations.shape == (k,)
    assert np.isfinite(cands.poses).all() and np.isfinite(cands.violations).all()
    assert np.all(np.diff(cands.violations) >= 0), "candidates must be ranked best first"
    assert cands.samples >= 1
    plan = solve(easy, config, solver)
    assert plan.status == "solved", plan.message
    poses = plan.poses(easy.ids)
    assert C.all_satisfied(C.check(easy, poses))
    assert len(plan.steps) == 3 and plan.solver["name"] == name


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_same_seed_same_answer(name, easy):
    config, solver = build(name, "cpu", time_budget_s=10.0)
    first = solve(easy, config, solver)
    again = solve(easy, config, make_solver(config))
    assert first.status == again.status == "solved"
    if name == "portfolio":      # a race: the member that answers first wins, and its plan is
        for plan in (first, again):     # the one that member gives alone with the same seed
            member = plan.solver["member"]
            alone = solve(easy, replace(config, solver=member), make_solver(
                replace(config, solver=member)))
            np.testing.assert_allclose(plan.poses(easy.ids), alone.poses(easy.ids), atol=1e-6)
        return
    np.testing.assert_allclose(first.poses(easy.ids), again.poses(easy.ids), atol=1e-6)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_time_budget_is_respected(name):
    """A dense 8-object problem with a 0.5 s budget: the solver hands back in time."""
    problem, _ = datagen.generate(8, np.random.default_rng(EASY_SEED + 1), datagen.HARD)
    config, solver = build(name, "cpu", time_budget_s=0.5)
    solver.propose(problem, replace(config, time_budget_s=0.2),
                   Deadline(time.monotonic() + 0.2))  # warm
    t0 = time.monotonic()
    plan = solve(problem, config, solver)
    wall = time.monotonic() - t0
    assert wall < config.time_budget_s + 3.0, f"{name} took {wall:.2f} s for a 0.5 s budget"
    assert plan.status in ("solved", "timeout", "failed")
    if plan.status != "solved":
        assert "violates" in plan.message or "candidate" in plan.message


def _problem(sizes, constraints=(), box=(0.4, 0.3, 0.2)):
    items = [Item(f"o{i}", s, pose=[0.3, 0.3, s[2] / 2, 0.0]) for i, s in enumerate(sizes)]
    return PackingProblem(Container(box), items,
                          [Constraint(c[0], tuple(c[1:])) for c in constraints])


@pytest.mark.parametrize("problem,reason", [
    (_problem([(0.5, 0.05, 0.05)]), "fits the container"),
    (_problem([(0.39, 0.29, 0.19)] * 2), "exceeds the container volume"),
    (_problem([(0.1, 0.1, 0.05)]), "wider than the gripper opening"),
    (_problem([(0.05, 0.05, 0.05)] * 2, [("left_of", "o0", "o1"), ("left_of", "o1", "o0")]),
     "contradictory relations"),
])
@pytest.mark.parametrize("name", ["rejection", "cem", "heuristic"])
def test_infeasible_problems_report_the_reason(problem, reason, name):
    plan = solve(problem, SolverConfig(solver=name, device="cpu", verify=False, time_budget_s=1.0))
    assert plan.status == "infeasible"
    assert reason in plan.message


def test_solver_registry():
    assert {"rejection", "cem", "heuristic"} <= set(SOLVERS)
    with pytest.raises(ValueError, match="already registered"):
        register_solver("heuristic")(type("Again", (), {}))
    with pytest.raises(ValueError, match="allowed: .*heuristic"):
        make_solver(SolverConfig(solver="simulated_annealing"))


def test_heuristic_packs_a_dense_problem():
    """The heuristic must pack what rejection sampling rarely can: a hard-tier 6-object case."""
    problem, _ = datagen.generate(6, np.random.default_rng(EASY_SEED + 2), datagen.HARD)
    plan = solve(problem, SolverConfig(solver="heuristic", device="cpu", verify=False,
                                       time_budget_s=5.0))
    assert plan.status == "solved", plan.message


def test_partial_checker_matches_the_full_checker(easy):
    """The rejection/heuristic partial checker on a complete placement agrees with ``check``."""
    _, sol = datagen.generate(3, np.random.default_rng(EASY_SEED))
    checker = rejection.PartialChecker(easy)
    order = C.placement_order(easy, sol)
    for i in order:
        v = checker.violation(i, torch.as_tensor(sol[i])[None])
        assert float(v[0]) <= 0.0
        checker.place(i, sol[i])
    moved = torch.as_tensor(sol[order[-1]]).clone()
    moved[0] += 1.0                               # outside the container
    checker.placed.pop()
    assert float(checker.violation(order[-1], moved[None])[0]) > 0.5


@pytest.mark.parametrize("config", ["HARD", "standard"])
def test_the_quarter_turn_fast_path_gives_the_registry_verdicts(config):
    """The partial checker's numpy path for boxes at yaw 0 / 90° (what the heuristic and the
    decoder place) returns the registry kernels' resting heights and violations: dense suction
    problems with relations and fragile items, and standard parallel-gripper ones, placed one
    object at a time at passing extreme points, every candidate also shifted by a few mm."""
    rng = np.random.default_rng(EASY_SEED + 7)
    gen = datagen.HARD if config == "HARD" else datagen.GenConfig()
    verdicts, compared, names = set(), 0, set()
    for _ in range(10 if config == "HARD" else 3):
        problem, _ = datagen.generate(int(rng.integers(5, 9)), rng, gen)
        names |= {c.name for c in problem.constraints}
        for margin in (0.0, 0.01):
            fast = rejection.PartialChecker(problem, margin)
            slow = rejection.PartialChecker(problem, margin, fast=False)
            for i in map(int, rng.permutation(len(problem.items))):
                xyy = heuristic.extreme_points(problem, fast, i)
                assert fast._fast(xyy[:, 2]) is not None and slow._fast(xyy[:, 2]) is None
                z = fast.resting_z(i, xyy)
                assert torch.allclose(z, slow.resting_z(i, xyy), rtol=0, atol=1e-12)
                cand = torch.stack([xyy[:, 0], xyy[:, 1], z, xyy[:, 2]], -1)
                shift = torch.as_tensor(rng.uniform(-0.004, 0.004, (len(cand), 4)))
                shift[:, 3] = 0.0
                cand = torch.cat([cand, cand + shift])
                v_fast, v_slow = fast.violation(i, cand), slow.violation(i, cand)
                assert torch.allclose(v_fast, v_slow, rtol=0, atol=1e-12)
                verdicts |= set((v_fast <= 0).tolist())
                compared += len(cand)
                ok = torch.nonzero(v_fast <= 0).flatten()
                pick = int(ok[rng.integers(len(ok))]) if len(ok) else int(torch.argmin(v_fast))
                fast.place(i, cand[pick])
                slow.place(i, cand[pick])
    assert verdicts == {True, False} and compared > 5_000
    if config == "HARD":                          # every relation formula was compared
        assert names | {"heavy_below"} == axis_aligned.FORMULAS
    jittered = torch.tensor([[0.0, 0.0, 0.05]], dtype=torch.float64)
    assert fast._fast(jittered[:, 2]) is None     # a turned box takes the registry's kernels


def test_cem_solves_the_stacking_scene():
    """cem packs mixed8_stacking (8 boxes, 6 stacked in the known solution) exactly: it needs
    stacking the legal way round and a placing order found by topological sort."""
    problem = load_scene(ROOT / "sim/scenes/mixed8_stacking.yaml")
    plan = solve(problem, SolverConfig(solver="cem", device="cpu", verify=False, seed=0,
                                       time_budget_s=20.0))
    assert plan.status == "solved", plan.message
    order = step_order(problem, plan.steps)
    assert C.all_satisfied(C.check(problem, plan.poses(problem.ids), order))


def test_a_failed_verification_sends_the_solver_back_with_new_noise(monkeypatch, easy):
    """Exact but not verified (say the arm cannot reach): the pipeline proposes again with a new
    seed while the budget allows, and returns the first plan that verifies."""
    from robot_packer.solver import pipeline

    real_verify, calls, seeds = pipeline.verify, [], []
    config = SolverConfig(solver="heuristic", device="cpu", time_budget_s=10.0, seed=3)
    solver = make_solver(config)
    propose = solver.propose
    monkeypatch.setattr(solver, "propose",
                        lambda p, c, d: seeds.append(c.seed) or propose(p, c, d))

    def verify_refusing_the_first_round(problem, plan, deadline=None, reach=True):
        calls.append(len(seeds))
        report = real_verify(problem, plan, deadline, reach)
        if len(seeds) == 1:
            return {**report, "passed": False, "reasons": ["reachable: refused by the test"]}
        return report

    monkeypatch.setattr(pipeline, "verify", verify_refusing_the_first_round)
    plan = solve(easy, config, solver)
    assert plan.status == "solved" and plan.verified
    assert seeds[0] == 3 and len(seeds) == 2 and seeds[1] != seeds[0]
    assert calls[-1] == 2


def test_a_plan_that_failed_verification_is_not_verified_again(monkeypatch, easy):
    """A solver that offers the refused plan again in its next round (its seed does not change
    it): the plan is not verified twice, and the search ends there with it, unverified."""
    from robot_packer.solver import Candidates, pipeline

    problem, solution = datagen.generate(3, np.random.default_rng(EASY_SEED))
    rounds, verified = [], []

    class Repeating:
        def propose(self, problem, config, deadline):
            rounds.append(config.seed)
            return Candidates(solution[None], np.zeros(1), 1, False)

    monkeypatch.setattr(pipeline, "verify", lambda *a, **k: verified.append(1) or {
        "simulator": "pybullet", "passed": False, "reasons": ["reachable: refused by the test"]})
    plan = solve(problem, SolverConfig(solver="heuristic", device="cpu", time_budget_s=20.0),
                 Repeating())
    assert len(rounds) == 2 and len(verified) == 1
    assert plan.status == "solved" and not plan.verified and "refused by the test" in plan.message


def test_with_no_time_to_retry_the_exact_unverified_plan_is_kept(monkeypatch, easy):
    from robot_packer.solver import pipeline

    monkeypatch.setattr(pipeline, "RETRY_MIN_SHARE", 2.0)      # never enough time left
    monkeypatch.setattr(pipeline, "verify", lambda *a, **k: {
        "simulator": "pybullet", "passed": False, "reasons": ["stable: refused by the test"]})
    plan = solve(easy, SolverConfig(solver="heuristic", device="cpu", time_budget_s=5.0))
    assert plan.status == "solved" and not plan.verified
    assert "simulation verification failed" in plan.message
