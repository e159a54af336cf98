"""``portfolio``: several solvers race within one time budget; the first verified plan wins.

Members (``config.options["members"]``, default diffusion + heuristic, + cpsat when installed)
run in threads — torch kernels and OR-Tools release the GIL, so on two cores the diffusion
sampler and a Python heuristic genuinely overlap. With more members than cores, the
``FIRST_CLASS`` member (cpsat: a complete search, fast when it answers) keeps a core: the other
members' threads run at niceness ``NICE`` and share the rest (dense tier, N = 12, 30 problems,
2 cores: the portfolio 21/30 -> 24/30, level with cpsat alone).

:meth:`PortfolioSolver.race` (what :func:`robot_packer.solver.pipeline.solve` runs) gives every
member the pipeline's whole search — propose, exact check, PyBullet verification, and a new
proposal round with another seed when its exact plan fails verification — and returns the first
plan that verifies (without verification: the first exact one). That plan stops the other
members through their shared :class:`~robot_packer.deadline.Deadline` (they end within one
of their steps; the race waits for them at most the grace below, so that no member goes on
taking CPU from the next solve). So a member that answers early (cpsat) but whose plan the arm
cannot reach proposes again while the others search, instead of waiting for them to use the
budget. When no plan verifies, the best answer wins: an exact plan first, then the lowest total
violation, ties in the members' order.

The members share one interpreter, and a PyBullet verification or a proposal round holds the
GIL that a member still on its first proposal needs (measured on the standard tier: the
diffusion member's first proposal 3-5x slower than alone while the others verified and
re-proposed; the race lost 4 of 50 problems at N = 10 that diffusion alone solves). So, with
verification on, an answer is held until every member has answered once or the patience
(``PATIENCE_SHARE`` of the budget, at most ``PATIENCE_MAX_S``) is spent; first answers are then
verified one at a time in the members' order, and later proposal rounds run one member at a
time, on a crowded machine at niceness ``RETRY_NICE`` (:class:`_Turns`).

:meth:`PortfolioSolver.propose` (the :class:`~robot_packer.solver.base.Solver` protocol: no
verification) runs every member's proposal to its end and merges their candidates (in the
members' order, so equal violations rank the same way whichever member answered first).

Members honour the deadline themselves, up to one of their steps late; the race waits for a late
one at most ``MEMBER_GRACE_SHARE`` of the budget (and at most ``MEMBER_GRACE_S``), then goes on
without its answer (its thread finishes in the background).
"""
from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, wait
from dataclasses import replace
from typing import Callable

import numpy as np

from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem, Plan
from robot_packer.solver.base import SOLVERS, Candidates, SolverConfig, ranked, register_solver

# one member's whole search: (member solver, its config, deadline) -> plan (pipeline.search)
Search = Callable[[object, SolverConfig, Deadline], Plan]

DEFAULT_MEMBERS = ("diffusion", "heuristic", "cpsat")
MEMBER_GRACE_S = 0.5      # members honour the deadline themselves, up to one step late; the race
MEMBER_GRACE_SHARE = 0.1  # waits that long for them, but never more than this share of the budget
FIRST_CLASS = ("cpsat",)  # with fewer cores than members these keep their core; the others
NICE = 10                 # share the rest at this niceness (their threads only, for the race)
RETRY_NICE = 19           # a crowded race's later proposal rounds (after a failed verification)
PATIENCE_SHARE = 0.3      # a member's first answer waits for the others' at most this share of
PATIENCE_MAX_S = 0.6      # the budget from the race's start, and at most this long


@register_solver("portfolio")
class PortfolioSolver:
    """Runs member solvers (each loaded once, here) together: :meth:`race` for the pipeline,
    :meth:`propose` for merged candidates."""

    def __init__(self, config: SolverConfig) -> None:
        names = config.options.get("members")
        explicit = names is not None
        names = list(names) if explicit else list(DEFAULT_MEMBERS)
        unknown = [n for n in names if n not in SOLVERS or n == "portfolio"]
        if unknown or not names:
            raise ValueError(f"portfolio members: unknown {unknown or names!r} "
                             f"(allowed: {', '.join(sorted(set(SOLVERS) - {'portfolio'}))})")
        self.members = {}
        shared = {k: v for k, v in config.options.items() if k != "members"}  # e.g. domain
        for n in names:
            try:
                self.members[n] = SOLVERS[n](replace(config, solver=n, options=shared))
            except ValueError:
                if explicit or n != "cpsat":   # only the optional extra may be missing silently
                    raise
        # members that yield their CPU to the first-class ones (more members than cores)
        self.crowded = (len(self.members) > (os.cpu_count() or 1)
                        and any(n in FIRST_CLASS for n in self.members))
        self.yields = {n: self.crowded and n not in FIRST_CLASS for n in self.members}

    def race(self, config: SolverConfig, deadline: Deadline,
             search: Search) -> tuple[str, Plan] | None:
        """Every member's ``search`` at once; the first verified plan (without verification: the
        first exact one) stops the others and wins, else the best answer (module docstring).
        Returns (member, plan), or None when no member answered in time."""
        grace = min(MEMBER_GRACE_S, MEMBER_GRACE_SHARE * config.time_budget_s)
        members_end = Deadline(deadline.at, deadline.clock)   # stopped by the winner or caller
        patience = (min(PATIENCE_SHARE * config.time_budget_s, PATIENCE_MAX_S)
                    if config.verify else 0.0)          # nothing to verify: no reason to wait
        turns = _Turns(len(self.members), time.monotonic() + patience)
        futures = {self._start(n, _member_search, search, _Member(m, k, turns, self.crowded),
                               replace(config, solver=n), members_end): n
                   for k, (n, m) in enumerate(self.members.items())}
        answers: dict[str, Plan] = {}
        pending, winner = set(futures), None
        try:
            with deadline.on_stop(members_end.stop):
                while pending and winner is None:
                    done, pending = wait(pending, timeout=max(deadline.left() + grace, 0.0),
                                         return_when=FIRST_COMPLETED)
                    if not done:                # late members: go on without them
                        break
                    for fut in done:
                        answers[futures[fut]] = plan = fut.result()   # a member's error raises
                        if winner is None and _wins(plan, config.verify):
                            winner = futures[fut]
        finally:
            members_end.stop()
        if winner is not None:
            wait(pending, timeout=grace)        # stopped members end within one of their steps
            return winner, answers[winner]
        ranked_names = sorted((n for n in self.members if n in answers),
                              key=lambda n: _shortfall(answers[n]))   # stable: members' order
        return (ranked_names[0], answers[ranked_names[0]]) if ranked_names else None

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        grace = min(MEMBER_GRACE_S, MEMBER_GRACE_SHARE * config.time_budget_s)
        futures = [self._start(n, m.propose, problem, replace(config, solver=n), deadline)
                   for n, m in self.members.items()]
        done, _ = wait(futures, timeout=max(deadline.at - time.monotonic() + grace, 0.0),
                       return_when=ALL_COMPLETED)
        # late members finish in the background, their answers dropped; the others in the
        # members' order, not the race's: equal violations rank the same way in every run
        ordered = [fut.result() for fut in futures if fut in done]
        return _merge(ordered, timed_out=deadline.passed())

    def _start(self, name: str, fn: Callable, *args) -> Future:
        """``fn(*args)`` in a fresh thread for member ``name`` (a fresh thread each: niceness
        stays with it); its result or error lands in the returned future."""
        fut: Future = Future()
        threading.Thread(target=_run, name=f"portfolio-{name}",
                         args=(fut, fn, args, self.yields[name])).start()
        return fut


class _Turns:
    """Who may do GIL-heavy work in the race after answering. A member that has answered holds
    its answer until every member has answered once or ``patience_at`` has passed; then the
    first answers are verified one at a time, the lowest-ranked (members' order) waiting member
    first; later proposal rounds also run one member at a time."""

    def __init__(self, members: int, patience_at: float) -> None:
        self.left, self.patience_at = members, patience_at
        self.all_answered = threading.Event()
        self.cond = threading.Condition()
        self.waiting: set[int] = set()
        self.holder: int | None = None
        self.retrying = threading.Lock()

    def first_answer(self, rank: int, deadline: Deadline) -> None:
        """Member ``rank`` has answered: returns when it may verify its answer (or when
        ``deadline`` has passed or was stopped; polled)."""
        with self.cond:
            self.left -= 1
            self.waiting.add(rank)
            if self.left <= 0:
                self.all_answered.set()
        while not self.all_answered.is_set() and not deadline.passed():
            left = min(self.patience_at, deadline.at) - time.monotonic()
            if left <= 0:
                break
            self.all_answered.wait(min(left, 0.01))
        with self.cond:
            while not deadline.passed() and (self.holder is not None
                                             or min(self.waiting) != rank):
                self.cond.wait(0.01)
            self.waiting.discard(rank)
            if self.holder is None:
                self.holder = rank
            self.cond.notify_all()

    def verified(self, rank: int) -> None:
        """Member ``rank`` is done verifying its first answer (it proposes again or ends)."""
        with self.cond:
            if self.holder == rank:
                self.holder = None
                self.cond.notify_all()


class _Member:
    """A member as the race's search sees it (see :class:`_Turns`): its first answer is handed
    to the search (which verifies it) when its turn comes; its later rounds (a new seed after a
    failed verification) run one member at a time, at niceness ``RETRY_NICE`` when
    ``crowded``."""

    def __init__(self, member, rank: int, turns: _Turns, crowded: bool) -> None:
        self.member, self.rank, self.turns, self.crowded = member, rank, turns, crowded
        self.rounds = 0

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        self.rounds += 1
        if self.rounds == 1:
            out = self.member.propose(problem, config, deadline)
            self.turns.first_answer(self.rank, deadline)
            return out
        self.turns.verified(self.rank)
        if self.rounds == 2 and self.crowded:
            _lower_priority(RETRY_NICE)
        with self.turns.retrying:
            return self.member.propose(problem, config, deadline)


def _member_search(search: Search, member: _Member, config: SolverConfig,
                   deadline: Deadline) -> Plan:
    """One member's whole search; a winning plan stops the race's other members at once (before
    this member gives up its turn, so that no other answer starts verifying), and the turn is
    given up however the search ends."""
    try:
        plan = search(member, config, deadline)
        if _wins(plan, config.verify):
            deadline.stop()
        return plan
    finally:
        member.turns.verified(member.rank)


def _lower_priority(nice: int) -> None:
    """This thread's niceness to ``nice``, unless it already is nicer (Linux schedules threads by
    their own niceness; a process started with ``nice -n 15`` stays at 15)."""
    if hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
        except OSError:
            pass


def _wins(plan: Plan, verify: bool) -> bool:
    """Whether ``plan`` ends the race: verified, or exact when nothing is verified."""
    return plan.verified if verify else plan.status == "solved"


def _shortfall(plan: Plan) -> tuple[bool, float]:
    """How far a plan is from winning, for ranking answers when none won: not exact first,
    then its total violation (no placements: infinite)."""
    total = sum(c["violation"] for c in plan.constraints) if plan.constraints else math.inf
    return plan.status != "solved", total


def _run(future: Future, fn: Callable, args: tuple, yield_cpu: bool) -> None:
    """``fn(*args)`` into ``future``, in its own thread; ``yield_cpu`` lowers that thread's
    priority (Linux schedules threads by their own niceness)."""
    if yield_cpu:
        _lower_priority(NICE)
    try:
        future.set_result(fn(*args))
    except BaseException as exc:      # re-raised in the caller by future.result()
        future.set_exception(exc)


def _merge(results: list[Candidates], timed_out: bool) -> Candidates:
    samples = sum(r.samples for r in results)
    usable = [r for r in results if r.poses.shape[0]]
    if not usable:
        n = results[0].poses.shape[1] if results else 0
        return Candidates(np.zeros((0, n, 4)), np.zeros(0), samples, timed_out)
    poses = np.concatenate([r.poses for r in usable])
    violations = np.concatenate([r.violations for r in usable])
    orders = np.concatenate([r.orders if r.orders is not None   # -1: the member gave no order
                             else np.full(r.poses.shape[:2], -1) for r in usable])
    return ranked(poses, violations, samples, timed_out or any(r.timed_out for r in results),
                  orders=orders)
