"""The portfolio race: members in worker processes of their own, the first verified plan wins,
the others are stopped; errors, dead, late and hung workers; niceness on a crowded machine.

Fake members are registered in the test process before the portfolio is built, so the forked
workers have them; what they do there is written to a :class:`Journal` file, which the test
reads back (a list in the test process would stay empty: the members run elsewhere)."""
import json
import os
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import pytest

from robot_packer import datagen
from robot_packer.deadline import Deadline
from robot_packer.solver import SOLVERS, Candidates, SolverConfig, portfolio, solve

EASY_SEED = 10_000_003   # benchmark-range seed: never a training problem


class Journal:
    """Lines that members append from their worker processes (JSON arrays)."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def add(self, *fields) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(fields) + "\n")

    def entries(self) -> list[list]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[list]:
        end = time.monotonic() + timeout
        while len(self.entries()) < count and time.monotonic() < end:
            time.sleep(0.01)
        return self.entries()


@pytest.fixture
def easy():
    return datagen.generate(3, np.random.default_rng(EASY_SEED))


@pytest.fixture
def journal(tmp_path):
    return Journal(tmp_path / "journal.jsonl")


def register(monkeypatch, name: str, propose) -> None:
    """A member ``name`` whose ``propose`` is ``propose(member, problem, config, deadline)``; the
    member keeps ``rounds`` (its proposals so far in its worker)."""
    class Member:
        def __init__(self, config):
            self.rounds = 0

        def propose(self, problem, config, deadline):
            self.rounds += 1
            return propose(self, problem, config, deadline)

    monkeypatch.setitem(SOLVERS, name, Member)


def nothing(problem) -> Candidates:
    return Candidates(np.zeros((0, len(problem.items), 4)), np.zeros(0), 1, True)


def answering(solution, after_s: float = 0.0):
    """A member's propose that answers ``solution`` (exact) after ``after_s``."""
    def propose(member, problem, config, deadline):
        time.sleep(after_s)
        return Candidates(solution[None], np.zeros(1), 1, False)
    return propose


@contextmanager
def running(members: list[str], **config):
    """A portfolio of ``members`` (verification off unless given), closed afterwards; yields
    (its config, the portfolio)."""
    config = SolverConfig(solver="portfolio", device="cpu", **{"verify": False, **config},
                          options={"members": members})
    solver = portfolio.PortfolioSolver(config)
    try:
        yield config, solver
    finally:
        solver.close()


def race_members(monkeypatch, journal, solution, answers_after_s):
    """Members ``fast`` (answers ``solution`` after ``answers_after_s``, raised by 10 µm more in
    each round: another plan, still exact) and ``slow`` (searches until its deadline passes or
    is stopped, then answers nothing); each journals (its name, the seed, when it returned)."""
    def fast(member, problem, config, deadline):
        time.sleep(answers_after_s)
        journal.add("fast", config.seed, time.monotonic())
        lift = 1e-5 * (member.rounds - 1)
        return Candidates(solution[None] + np.array([0, 0, lift, 0]), np.zeros(1), 1, False)

    def slow(member, problem, config, deadline):
        while not deadline.passed():
            time.sleep(0.005)
        journal.add("slow", config.seed, time.monotonic())
        return nothing(problem)

    register(monkeypatch, "fast", fast)
    register(monkeypatch, "slow", slow)
    return SolverConfig(solver="portfolio", device="cpu", time_budget_s=20.0, seed=5,
                        options={"members": ["slow", "fast"]})


def test_members_run_in_worker_processes_of_their_own_until_closed(monkeypatch, journal, easy):
    """Each member proposes in its own process (not the caller's: Python work of one member does
    not wait for another's), the same process solve after solve; ``close`` ends them."""
    problem, _ = easy

    def pid(member, problem, config, deadline):
        journal.add(config.solver, os.getpid())
        return nothing(problem)

    register(monkeypatch, "pid_a", pid)
    register(monkeypatch, "pid_b", pid)
    with running(["pid_a", "pid_b"], time_budget_s=2.0) as (config, solver):
        for _ in range(2):
            solver.propose(problem, config, Deadline(time.monotonic() + 2.0))
        seen = journal.entries()
        pids = {name: {p for n, p in seen if n == name} for name in ("pid_a", "pid_b")}
        assert len(seen) == 4 and all(len(p) == 1 for p in pids.values())
        assert len(pids["pid_a"] | pids["pid_b"]) == 2 and os.getpid() not in pids["pid_a"]
        processes = [w.proc for w in solver.workers.values()]
        assert all(p.is_alive() for p in processes)
    assert not any(p.is_alive() for p in processes)


def test_portfolio_proposal_merges_every_members_answer(monkeypatch, easy):
    """``propose`` (no verification) waits for every member and merges their answers in the
    members' order, whichever answered first."""
    problem, _ = easy

    def answering(delay, shift):
        def propose(member, problem, config, deadline):
            time.sleep(delay)
            return Candidates(np.zeros((1, len(problem.items), 4)) + shift, np.zeros(1), 1, False)
        return propose

    register(monkeypatch, "stub_fast", answering(0.0, 1.0))
    register(monkeypatch, "stub_slow", answering(0.3, 2.0))
    with running(["stub_slow", "stub_fast"], time_budget_s=5.0) as (config, solver):
        cands = solver.propose(problem, config, Deadline(time.monotonic() + 4.0))
    assert [float(p[0, 0]) for p in cands.poses] == [2.0, 1.0]


def test_the_race_returns_the_first_verified_plan_and_stops_the_other_members(
        monkeypatch, journal, easy):
    """The member that verifies first wins at once: the one still searching is stopped (it
    returns within a step, long before the 20 s budget) and the plan names the winner."""
    problem, solution = easy
    config = race_members(monkeypatch, journal, solution, 0.1)
    t0 = time.monotonic()
    plan = solve(problem, config)
    took = time.monotonic() - t0
    assert plan.status == "solved" and plan.verified, plan.message
    assert plan.solver["name"] == "portfolio" and plan.solver["member"] == "fast"
    assert took < 10.0, f"the race took {took:.1f} s of a 20 s budget"
    seen = journal.wait_for(2)
    assert [e[0] for e in seen] == ["fast", "slow"]       # slow was stopped, not abandoned
    assert seen[1][2] - t0 < took + 1.0


def test_in_the_race_a_member_whose_plan_fails_verification_proposes_again(
        monkeypatch, journal, easy):
    """The early member's exact plan fails verification (say the arm cannot reach it) while
    another member is still searching: it proposes again with a new seed at once — it does not
    wait for the others to use the budget — and its next plan wins."""
    from robot_packer.solver import pipeline

    problem, solution = easy
    config = race_members(monkeypatch, journal, solution, 0.05)
    real_verify, verified = pipeline.verify, []      # ``verified``: the worker's own copy

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
    assert time.monotonic() - t0 < 10.0
    fast = [e for e in journal.entries() if e[0] == "fast"]
    assert [e[1] for e in fast] == [5, 5 + pipeline.RETRY_SEED_STRIDE]


def test_a_member_error_stops_the_race_and_reaches_the_caller(monkeypatch, journal, easy):
    """A member that raises (a bug, a broken model) ends the race with its error, naming the
    member — no plan is made up — and the member still searching is stopped, not left running."""
    problem, solution = easy
    config = race_members(monkeypatch, journal, solution, 0.0)

    def broken(member, problem, config, deadline):
        raise RuntimeError("broken member")

    register(monkeypatch, "broken", broken)
    config = replace(config, options={"members": ["slow", "broken"]})
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="broken member") as raised:
        solve(problem, config)
    assert any("portfolio member broken" in note for note in raised.value.__notes__)
    seen = journal.wait_for(1)                # the slow member ends within a step of the stop
    assert [e[0] for e in seen] == ["slow"] and seen[0][2] - t0 < 5.0


def test_when_no_member_verifies_the_race_keeps_the_exact_plan(monkeypatch, journal, easy):
    """Every verification refused: the race ends at the budget with the exact plan (not
    verified, saying why), ahead of the member that found nothing."""
    from robot_packer.solver import pipeline

    problem, solution = easy
    config = replace(race_members(monkeypatch, journal, solution, 0.0), time_budget_s=1.0)
    monkeypatch.setattr(pipeline, "verify", lambda *a, **k: {
        "simulator": "pybullet", "passed": False, "reasons": ["stable: refused by the test"]})
    plan = solve(problem, config)
    assert plan.status == "solved" and not plan.verified and plan.solver["member"] == "fast"
    assert "simulation verification failed" in plan.message
    rounds = sum(e[0] == "fast" for e in journal.entries())     # each round 10 µm higher
    np.testing.assert_allclose(plan.poses(problem.ids), solution, atol=1e-5 * rounds + 1e-6)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="process niceness is POSIX-only")
def test_with_more_members_than_cores_the_first_class_member_keeps_its_core(
        monkeypatch, journal, easy):
    """Three members on two cores: the others' workers yield (niceness +NICE), so CP-SAT's
    search runs as fast as alone; with a core per member nobody yields."""
    problem, _ = easy

    def recorder(member, problem, config, deadline):
        journal.add(config.solver, os.getpriority(os.PRIO_PROCESS, 0))
        return Candidates(np.zeros((1, len(problem.items), 4)), np.zeros(1), 1, False)

    for name in ("rec_first", "rec_a", "rec_b"):
        register(monkeypatch, name, recorder)
    monkeypatch.setattr(portfolio, "FIRST_CLASS", ("rec_first",))
    base = os.getpriority(os.PRIO_PROCESS, 0)
    for cores, lowered in ((2, max(base, portfolio.NICE)), (3, base)):
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        if os.path.exists(journal.path):
            os.remove(journal.path)
        with running(["rec_a", "rec_first", "rec_b"], time_budget_s=5.0) as (config, solver):
            solver.propose(problem, config, Deadline(time.monotonic() + 5.0))
        assert dict(journal.entries()) == {"rec_first": base, "rec_a": lowered,
                                           "rec_b": lowered}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base     # the caller's own process untouched


def test_a_worker_that_dies_is_started_again_and_the_race_goes_on(monkeypatch, journal, easy):
    """A member whose worker dies mid-search (a crash in native code) costs the race its answer,
    not the race: another member's plan wins, and the next solve has the member back."""
    problem, solution = easy

    def crashing_once(member, problem, config, deadline):
        journal.add("crashing", os.getpid())
        if len(journal.entries()) == 1:
            os._exit(3)
        return Candidates(solution[None], np.zeros(1), 1, False)

    register(monkeypatch, "crashing", crashing_once)
    register(monkeypatch, "steady", answering(solution, after_s=0.3))
    with running(["crashing", "steady"], time_budget_s=10.0) as (config, solver):
        first = solve(problem, config, solver)
        again = solve(problem, config, solver)
    assert first.status == "solved" and first.solver["member"] == "steady"
    assert again.status == "solved" and again.solver["member"] == "crashing"
    pids = [e[1] for e in journal.entries()]
    assert len(pids) == 2 and pids[0] != pids[1]          # a new worker


def test_a_late_members_stale_answer_is_dropped_and_the_next_solve_gets_its_own(
        monkeypatch, easy):
    """A member still searching past the deadline and its grace is left behind; its answer to
    that solve, arriving later, must not be taken for its answer to the next solve."""
    problem, solution = easy

    def late_first(member, problem, config, deadline):
        if member.rounds == 1:
            time.sleep(2.0)                           # far past a 0.3 s budget and its grace
            return Candidates(solution[None] + np.array([0, 0, 0.5, 0]), np.zeros(1), 1, False)
        return Candidates(solution[None], np.zeros(1), 1, False)

    register(monkeypatch, "late_first", late_first)
    with running(["late_first"], time_budget_s=0.3) as (config, solver):
        t0 = time.monotonic()
        first = solve(problem, config, solver)
        assert time.monotonic() - t0 < 0.3 + portfolio.MEMBER_GRACE_S + 0.5   # not its 2 s
        assert first.status == "timeout" and not first.placements
        second = solve(problem, replace(config, time_budget_s=5.0), solver)
    assert second.status == "solved"
    np.testing.assert_allclose(second.poses(problem.ids), solution, atol=1e-6)


def test_portfolio_waits_for_late_members_at_most_a_share_of_the_budget(monkeypatch, easy):
    """Once a member has answered, one still running at the deadline is waited for at most
    ``MEMBER_GRACE_SHARE`` of the budget (capped at ``MEMBER_GRACE_S``): a 0.5 s budget is not
    stretched by 0.5 s for a member that is late."""
    problem, _ = easy

    def late(member, problem, config, deadline):
        time.sleep(3.0)
        raise RuntimeError("late member: its result must not be waited for")

    register(monkeypatch, "late", late)
    register(monkeypatch, "quick", lambda member, problem, config, deadline: nothing(problem))
    waited = []
    real_wait = portfolio.wait_for_replies

    def recording_wait(conns, timeout=None):
        waited.append(timeout)
        return real_wait(conns, timeout=timeout)

    monkeypatch.setattr(portfolio, "wait_for_replies", recording_wait)
    for budget, grace in ((0.5, 0.05), (20.0, portfolio.MEMBER_GRACE_S)):
        waited.clear()
        with running(["quick", "late"], time_budget_s=budget) as (config, solver):
            t0 = time.monotonic()
            cands = solver.propose(problem, config, Deadline(time.monotonic()))
            took = time.monotonic() - t0
        assert cands.poses.shape[0] == 0 and cands.timed_out
        assert len(waited) == 2 and 0.0 <= waited[1] <= grace   # the second: after quick's answer
        assert took < 2.5                                       # late's 3 s were not waited for


def test_while_no_member_has_answered_the_first_answer_is_waited_for(monkeypatch, easy):
    """A slightly late answer beats none: a member answering 0.2 s after the deadline of a
    0.5 s budget (past the budget's share of grace) is still waited for when it is the first."""
    problem, solution = easy
    register(monkeypatch, "tardy", answering(solution, after_s=0.2))
    with running(["tardy"], time_budget_s=0.5) as (config, solver):
        cands = solver.propose(problem, config, Deadline(time.monotonic() + 0.05))
    assert cands.poses.shape[0] == 1
    np.testing.assert_allclose(cands.poses[0], solution)


def test_a_start_method_can_be_asked_for_and_a_wrong_one_is_refused():
    """The node asks for ``forkserver`` (its process runs DDS threads); an unknown method is
    refused with the allowed ones named."""
    def ask(method):
        return SolverConfig(solver="portfolio", device="cpu", options={"start_method": method})

    assert portfolio.start_method(ask("forkserver")) == "forkserver"
    with pytest.raises(ValueError, match="'threads' is not one of fork, .*forkserver"):
        portfolio.start_method(ask("threads"))
    with pytest.raises(ValueError, match="start_method"):
        portfolio.PortfolioSolver(replace(ask("threads"), options={
            "start_method": "threads", "members": ["heuristic"]}))


def test_spawned_workers_solve_too(monkeypatch, easy):
    """Where the members may use CUDA the workers are spawned, not forked (a forked child cannot
    use CUDA): a spawned worker imports the registry itself and solves as a forked one does."""
    problem, _ = easy
    assert portfolio.start_method(SolverConfig(device="cpu")) == "fork"
    monkeypatch.setattr(portfolio, "start_method", lambda config: "spawn")
    with running(["heuristic"], time_budget_s=10.0, verify=True) as (config, solver):
        assert {w.method for w in solver.workers.values()} == {"spawn"}
        plan = solve(problem, config, solver)
    assert plan.status == "solved" and plan.verified and plan.solver["member"] == "heuristic"


def test_a_member_that_loses_race_after_race_keeps_its_worker(monkeypatch, easy):
    """Races another member wins at once end without reading the loser's answer. Those answers
    must not pile up in its pipe or make its worker look hung: after races spaced wider than
    ``HUNG_S``, the loser's worker is the same process and answers the next proposal."""
    problem, solution = easy
    monkeypatch.setattr(portfolio, "HUNG_S", 0.3)

    def bulky(member, problem, config, deadline):
        while not deadline.passed():
            time.sleep(0.005)
        many = np.repeat(solution[None] + [0.0, 0.0, 0.3, 0.0], 5000, axis=0)  # ~0.5 MB
        return Candidates(many, np.ones(5000), 5000, True)

    register(monkeypatch, "bulky", bulky)
    register(monkeypatch, "fast", answering(solution))
    with running(["bulky", "fast"], time_budget_s=5.0) as (config, solver):
        pid = solver.workers["bulky"].proc.pid
        for _ in range(5):             # each race's deadline long past (+ HUNG_S) at the next
            plan = solve(problem, replace(config, time_budget_s=0.2), solver)
            assert plan.status == "solved" and plan.solver["member"] == "fast"
            time.sleep(0.6)
        cands = solver.propose(problem, config, Deadline(time.monotonic() + 0.5))
        assert solver.workers["bulky"].proc.pid == pid
    assert cands.samples == 5001            # both members answered
