"""Every registered solver through one sweep (shapes, finiteness, determinism, time budget, an easy
problem solved) on CPU and CUDA when present; infeasible problems report why."""
import os
import threading
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


def test_portfolio_proposal_merges_every_members_answer(monkeypatch, easy):
    """``propose`` (no verification) waits for every member and merges their answers in the
    members' order, whichever answered first."""
    from robot_packer.solver import Candidates, portfolio

    def stub(delay, shift):
        class Stub:
            def __init__(self, config):
                pass

            def propose(self, problem, config, deadline):
                time.sleep(delay)
                poses = np.zeros((1, len(problem.items), 4)) + shift
                return Candidates(poses, np.zeros(1), 1, False)
        return Stub

    monkeypatch.setitem(SOLVERS, "stub_fast", stub(0.0, 1.0))
    monkeypatch.setitem(SOLVERS, "stub_slow", stub(0.3, 2.0))
    config = SolverConfig(solver="portfolio", device="cpu", time_budget_s=5.0,
                          options={"members": ["stub_fast", "stub_slow"]})
    deadline = Deadline(time.monotonic() + 4.0)
    cands = portfolio.PortfolioSolver(config).propose(easy, config, deadline)
    assert [float(p[0, 0]) for p in cands.poses] == [1.0, 2.0]


def race_members(monkeypatch, solution, answers_after_s, proposals):
    """Register portfolio members ``fast`` (answers ``solution`` after ``answers_after_s``, raised
    by 10 µm more in each round: another plan, still exact) and ``slow`` (searches until its
    deadline passes or is stopped, then answers nothing); each records (its name, the seed, when
    it returned) in ``proposals``."""
    from robot_packer.solver import Candidates

    class Fast:
        def __init__(self, config):
            pass

        def propose(self, problem, config, deadline):
            time.sleep(answers_after_s)
            lift = 1e-5 * sum(p[0] == "fast" for p in proposals)
            proposals.append(("fast", config.seed, time.monotonic()))
            return Candidates(solution[None] + np.array([0, 0, lift, 0]), np.zeros(1), 1, False)

    class Slow:
        def __init__(self, config):
            pass

        def propose(self, problem, config, deadline):
            while not deadline.passed():
                time.sleep(0.005)
            proposals.append(("slow", config.seed, time.monotonic()))
            return Candidates(np.zeros((0, len(problem.items), 4)), np.zeros(0), 1, True)

    monkeypatch.setitem(SOLVERS, "fast", Fast)
    monkeypatch.setitem(SOLVERS, "slow", Slow)
    return SolverConfig(solver="portfolio", device="cpu", time_budget_s=20.0, seed=5,
                        options={"members": ["slow", "fast"]})


def test_the_race_returns_the_first_verified_plan_and_stops_the_other_members(monkeypatch):
    """The member that verifies first wins at once: the one still searching is stopped (it
    returns within a step, long before the 20 s budget) and the plan names the winner."""
    problem, solution = datagen.generate(3, np.random.default_rng(EASY_SEED))
    proposals = []
    config = race_members(monkeypatch, solution, 0.1, proposals)
    t0 = time.monotonic()
    plan = solve(problem, config)
    took = time.monotonic() - t0
    assert plan.status == "solved" and plan.verified, plan.message
    assert plan.solver["name"] == "portfolio" and plan.solver["member"] == "fast"
    assert took < 10.0, f"the race took {took:.1f} s of a 20 s budget"
    assert [p[0] for p in proposals] == ["fast", "slow"]       # slow was stopped, not abandoned
    assert proposals[1][2] - t0 < took


def test_in_the_race_a_member_whose_plan_fails_verification_proposes_again(monkeypatch):
    """The early member's exact plan fails verification (say the arm cannot reach it) while
    another member is still searching: it proposes again with a new seed at once — it does not
    wait for the others to use the budget — and its next plan wins."""
    from robot_packer.solver import pipeline

    problem, solution = datagen.generate(3, np.random.default_rng(EASY_SEED))
    proposals, verified = [], []
    config = race_members(monkeypatch, solution, 0.05, proposals)
    real_verify = pipeline.verify

    def refusing_the_first(problem, plan, deadline=None, reach=True):
        report = real_verify(problem, plan, deadline, reach)
        verified.append(report["passed"])
        if len(verified) == 1:
            return {**report, "passed": False, "reasons": ["reachable: refused by the test"]}
        return report

    monkeypatch.setattr(pipeline, "verify", refusing_the_first)
    t0 = time.monotonic()
    plan = solve(problem, config)
    assert plan.verified and plan.solver["member"] == "fast", plan.message
    fast = [p for p in proposals if p[0] == "fast"]
    assert [p[1] for p in fast] == [5, 5 + pipeline.RETRY_SEED_STRIDE]
    assert time.monotonic() - t0 < 10.0


def test_an_early_answer_is_verified_once_every_member_has_answered_or_the_patience_is_spent(
        monkeypatch):
    """The members share one interpreter: an early answer's verification waits for the other
    members' first answers (here the slow one never answers, so the wait is the patience,
    ``PATIENCE_MAX_S`` of a 20 s budget), then goes ahead."""
    from robot_packer.solver import pipeline, portfolio

    problem, solution = datagen.generate(3, np.random.default_rng(EASY_SEED))
    proposals, verified_at = [], []
    config = race_members(monkeypatch, solution, 0.0, proposals)
    real_verify = pipeline.verify
    monkeypatch.setattr(pipeline, "verify", lambda *a, **k: verified_at.append(
        time.monotonic()) or real_verify(*a, **k))
    t0 = time.monotonic()
    plan = solve(problem, config)
    assert plan.verified and plan.solver["member"] == "fast"
    assert len(verified_at) == 1
    assert portfolio.PATIENCE_MAX_S - 0.05 <= verified_at[0] - t0 <= portfolio.PATIENCE_MAX_S + 1.0


def test_first_answers_are_verified_one_at_a_time_in_the_members_order(monkeypatch):
    """Both members answer exact plans (``second`` first); once both have answered, ``first``
    — ahead in the members' order — is verified first, and as its plan verifies it wins without
    the other plan being verified at all."""
    from robot_packer.solver import Candidates, pipeline

    problem, solution = datagen.generate(3, np.random.default_rng(EASY_SEED))

    def answering(after_s):
        class Answering:
            def __init__(self, config):
                pass

            def propose(self, problem, config, deadline):
                time.sleep(after_s)
                return Candidates(solution[None], np.zeros(1), 1, False)
        return Answering

    monkeypatch.setitem(SOLVERS, "first", answering(0.3))
    monkeypatch.setitem(SOLVERS, "second", answering(0.0))
    real_verify, verifying = pipeline.verify, []
    monkeypatch.setattr(pipeline, "verify", lambda *a, **k: verifying.append(
        threading.current_thread().name) or real_verify(*a, **k))
    plan = solve(problem, SolverConfig(solver="portfolio", device="cpu", time_budget_s=20.0,
                                       options={"members": ["first", "second"]}))
    assert plan.verified and plan.solver["member"] == "first"
    assert verifying == ["portfolio-first"]


def test_a_member_error_stops_the_race_and_reaches_the_caller(monkeypatch):
    """A member that raises (a bug, a broken model) ends the race with its error — no plan is
    made up — and the member still searching is stopped, not left running."""
    problem, solution = datagen.generate(3, np.random.default_rng(EASY_SEED))
    proposals = []
    config = race_members(monkeypatch, solution, 0.0, proposals)

    class Broken:
        def __init__(self, config):
            pass

        def propose(self, problem, config, deadline):
            raise RuntimeError("broken member")

    monkeypatch.setitem(SOLVERS, "broken", Broken)
    config = replace(config, options={"members": ["slow", "broken"]})
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="broken member"):
        solve(problem, config)
    for _ in range(200):                  # the slow member ends within a step of the stop
        if proposals:
            break
        time.sleep(0.01)
    assert [p[0] for p in proposals] == ["slow"] and proposals[0][2] - t0 < 5.0


def test_when_no_member_verifies_the_race_keeps_the_exact_plan(monkeypatch):
    """Every verification refused: the race ends at the budget with the exact plan (not
    verified, saying why), ahead of the member that found nothing."""
    from robot_packer.solver import pipeline

    problem, solution = datagen.generate(3, np.random.default_rng(EASY_SEED))
    proposals = []
    config = race_members(monkeypatch, solution, 0.0, proposals)
    config = replace(config, time_budget_s=1.0)
    monkeypatch.setattr(pipeline, "verify", lambda *a, **k: {
        "simulator": "pybullet", "passed": False, "reasons": ["stable: refused by the test"]})
    plan = solve(problem, config)
    assert plan.status == "solved" and not plan.verified and plan.solver["member"] == "fast"
    assert "simulation verification failed" in plan.message
    rounds = sum(p[0] == "fast" for p in proposals)         # each round 10 µm higher
    np.testing.assert_allclose(plan.poses(problem.ids), solution, atol=1e-5 * rounds + 1e-6)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread niceness is POSIX-only")
def test_with_more_members_than_cores_the_first_class_member_keeps_its_core(monkeypatch, easy):
    """Three members on two cores: the others' threads yield (niceness +NICE), so CP-SAT's search
    runs as fast as alone; with a core per member nobody yields."""
    from robot_packer.solver import Candidates, portfolio

    seen = {}

    def recorder(name):
        class Recorder:
            def __init__(self, config):
                pass

            def propose(self, problem, config, deadline):
                seen[name] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
                return Candidates(np.zeros((1, len(problem.items), 4)), np.zeros(1), 1, False)
        return Recorder

    for name in ("rec_first", "rec_a", "rec_b"):
        monkeypatch.setitem(SOLVERS, name, recorder(name))
    monkeypatch.setattr(portfolio, "FIRST_CLASS", ("rec_first",))
    config = SolverConfig(solver="portfolio", device="cpu", time_budget_s=5.0, verify=False,
                          options={"members": ["rec_a", "rec_first", "rec_b"]})
    base = os.getpriority(os.PRIO_PROCESS, 0)
    for cores, lowered in ((2, max(base, portfolio.NICE)), (3, base)):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        seen.clear()
        solve(easy, config, portfolio.PortfolioSolver(config))        # the race
        assert seen == {"rec_first": base, "rec_a": lowered, "rec_b": lowered}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base     # the caller's own thread untouched


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
