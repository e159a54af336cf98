"""``portfolio``: several solvers run at once within one time budget; the best answers win.

Members (``config.options["members"]``, default diffusion + heuristic, + cpsat when installed)
run in threads — torch kernels and OR-Tools release the GIL, so on two cores the diffusion
sampler and a Python heuristic genuinely overlap. With more members than cores, the
``FIRST_CLASS`` member (cpsat: a complete search, fast when it answers) keeps a core: the other
members' threads run at niceness ``NICE`` and share the rest (dense tier, N = 12, 30 problems,
2 cores: the portfolio 21/30 -> 24/30, level with cpsat alone).

The race ends when every member has answered, not at the first exact answer: an exact solution
can still fail PyBullet verification (the arm cannot reach it), and the pipeline then verifies
the next member's instead of returning a failure; and a member left running would go on taking
CPU from the next proposal round and the next solve (it cannot be stopped, only its deadline
honoured; ending at the second exact answer left up to four such threads behind). Every
member's candidates are merged (in the members' order, so equal violations rank the same way
whichever member answered first) and re-ranked, so the portfolio is never worse than its best
member that answers in time. Members honour the deadline themselves, up to one of their steps
late; the race waits for a late one at most ``MEMBER_GRACE_SHARE`` of the budget (and at most
``MEMBER_GRACE_S``), then goes on without its candidates (its thread finishes in the
background).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ALL_COMPLETED, Future, wait
from dataclasses import replace

import numpy as np

from robot_packer.problem import PackingProblem
from robot_packer.solver.base import (SOLVERS, Candidates, SolverConfig, ranked,
                                      register_solver)

DEFAULT_MEMBERS = ("diffusion", "heuristic", "cpsat")
MEMBER_GRACE_S = 0.5      # members honour the deadline themselves, up to one step late; the race
MEMBER_GRACE_SHARE = 0.1  # waits that long for them, but never more than this share of the budget
FIRST_CLASS = ("cpsat",)  # with fewer cores than members these keep their core; the others
NICE = 10                 # share the rest at this niceness (their threads only, for the race)


@register_solver("portfolio")
class PortfolioSolver:
    """Runs member solvers (each loaded once, here) together and merges their answers."""

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
        crowded = (len(self.members) > (os.cpu_count() or 1)
                   and any(n in FIRST_CLASS for n in self.members))
        self.yields = {n: crowded and n not in FIRST_CLASS for n in self.members}

    def propose(self, problem: PackingProblem, config: SolverConfig, deadline: float) -> Candidates:
        grace = min(MEMBER_GRACE_S, MEMBER_GRACE_SHARE * config.time_budget_s)
        futures = []
        for n, m in self.members.items():     # a fresh thread each: niceness stays with it
            fut: Future = Future()
            threading.Thread(target=_run, name=f"portfolio-{n}",
                             args=(fut, m, problem, replace(config, solver=n), deadline,
                                   self.yields[n])).start()
            futures.append(fut)
        done, _ = wait(futures, timeout=max(deadline - time.monotonic() + grace, 0.0),
                       return_when=ALL_COMPLETED)
        # late members finish in the background, their answers dropped; the others in the
        # members' order, not the race's: equal violations rank the same way in every run
        ordered = [fut.result() for fut in futures if fut in done]
        return _merge(ordered, timed_out=time.monotonic() > deadline)


def _run(future: Future, member, problem: PackingProblem, config: SolverConfig,
         deadline: float, yield_cpu: bool) -> None:
    """One member's proposal into ``future``, in its own thread; ``yield_cpu`` lowers that
    thread's priority (Linux schedules threads by their own niceness)."""
    if yield_cpu and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except OSError:
            pass
    try:
        future.set_result(member.propose(problem, config, deadline))
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
