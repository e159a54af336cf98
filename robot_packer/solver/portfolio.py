"""``portfolio``: several solvers race within one time budget; the first verified plan wins.

Members (``config.options["members"]``, default diffusion + heuristic, + cpsat when installed)
each run in a **worker process of their own**, started once when the portfolio is built (the
models load there) and reused by every solve. A process per member, not a thread: the members'
proposals, exact checks and PyBullet verifications are mostly Python, and in threads they
queued for one interpreter lock (measured on the thread design this replaced: the diffusion
member's first proposal 3-5x slower than alone while the others verified, and CP-SAT — alone
1.5 s on a dense N = 12 problem — missing a 2 s budget in the race).

:meth:`PortfolioSolver.race` (what :func:`robot_packer.solver.pipeline.solve` runs) has every
worker run the pipeline's whole search (:func:`~robot_packer.solver.pipeline.search`: propose,
exact check, PyBullet verification, a new proposal round with another seed when the plan fails
verification) and returns the first plan that verifies (without verification: the first exact
one). It then stops the other workers' searches (their :class:`~robot_packer.deadline.Deadline`
is stopped through a shared counter; CP-SAT is interrupted with ``stop_search``), so that none
goes on taking CPU from the next solve. When no plan verifies, the best answer wins: an exact
plan first, then the lowest total violation, ties in the members' order.

With more members than cores, the ``FIRST_CLASS`` members (cpsat: a complete search, fast when
it answers) keep a core and the other workers run at niceness ``NICE``.

:meth:`PortfolioSolver.propose` (the :class:`~robot_packer.solver.base.Solver` protocol: no
verification) runs every member's proposal to its end and merges their candidates (in the
members' order, so equal violations rank the same way whichever member answered first).

Members honour the deadline themselves, up to one of their steps late; the race waits for a late
one at most ``MEMBER_GRACE_SHARE`` of the budget (and at most ``MEMBER_GRACE_S``), then goes on
without its answer (the worker finishes that search, stopped, before it takes the next job; one
still busy ``HUNG_S`` after its job's deadline is killed and started again). While no member has
answered at all, the race waits up to ``MEMBER_GRACE_S`` for the first one: a best answer
slightly late beats none (with a 0.5 s budget on a loaded 2-core machine both members answered
0.06 s after the deadline, past the 0.05 s share, and the race had returned no plan). A member that
raises ends the race with its error; a worker that dies (a crash in native code) is started
again for the next solve, and the race goes on with the others.

Workers are forked where the start method exists and nothing has put the members on CUDA (a
forked child inherits the registry, e.g. a solver registered by a script, and starts in
milliseconds); with CUDA they are spawned (CUDA cannot be used in a forked child).
``options["start_method"]`` overrides this: the ROS node, whose process runs DDS threads, asks
for ``forkserver`` (a fork of a multi-threaded process may deadlock in the child). Jobs and
replies cross a private pipe between the portfolio's own processes (``multiprocessing``
serializes them); nothing from outside is read from it.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
import weakref
from dataclasses import replace
from multiprocessing.connection import wait as wait_for_replies

import numpy as np

from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem, Plan
from robot_packer.solver.base import (SOLVERS, Candidates, SolverConfig, ranked, register_solver,
                                      resolve_device)

DEFAULT_MEMBERS = ("diffusion", "heuristic", "cpsat")
MEMBER_GRACE_S = 0.5      # members honour the deadline themselves, up to one step late; the race
MEMBER_GRACE_SHARE = 0.1  # waits that long for them, but never more than this share of the budget
FIRST_CLASS = ("cpsat",)  # with fewer cores than members these keep their core; the other
NICE = 10                 # workers run at this niceness
START_TIMEOUT_S = 300.0   # a worker builds its member (loads its model) within this
HUNG_S = 10.0             # a worker still busy this long after its job's deadline is restarted
STOP_POLL_S = 0.01        # how often a worker looks whether its job was stopped
CLOSE_WAIT_S = 1.0        # a closed worker ends within this (its job stopped), else is killed

log = logging.getLogger(__name__)


@register_solver("portfolio")
class PortfolioSolver:
    """Starts one worker process per member (each builds its solver once, there): :meth:`race`
    for the pipeline, :meth:`propose` for merged candidates; :meth:`close` ends the workers
    (also done when the portfolio is garbage-collected and at interpreter exit)."""

    def __init__(self, config: SolverConfig) -> None:
        names = config.options.get("members")
        explicit = names is not None
        names = list(names) if explicit else list(DEFAULT_MEMBERS)
        unknown = [n for n in names if n not in SOLVERS or n == "portfolio"]
        if unknown or not names:
            raise ValueError(f"portfolio members: unknown {unknown or names!r} "
                             f"(allowed: {', '.join(sorted(set(SOLVERS) - {'portfolio'}))})")
        shared = {k: v for k, v in config.options.items()      # e.g. domain
                  if k not in ("members", "start_method")}
        method = start_method(config)
        workers = {n: _Worker(n, replace(config, solver=n, options=shared), method)
                   for n in names}
        self.workers: dict[str, _Worker] = {}
        self._finalizer = weakref.finalize(self, _close_all, list(workers.values()))
        for n, worker in workers.items():
            try:
                worker.wait_ready()
            except ValueError:
                worker.close()
                if explicit or n != "cpsat":   # only the optional extra may be missing silently
                    self.close()
                    raise
            else:
                self.workers[n] = worker
        crowded = (len(self.workers) > (os.cpu_count() or 1)
                   and any(n in FIRST_CLASS for n in self.workers))
        for n, worker in self.workers.items():
            worker.nice = NICE if crowded and n not in FIRST_CLASS else 0
            worker.send_nice()

    @property
    def members(self) -> list[str]:
        """The members that run, in the members' order (cpsat left out when not installed)."""
        return list(self.workers)

    def race(self, problem: PackingProblem, config: SolverConfig, deadline: Deadline,
             info: dict) -> tuple[str, Plan] | None:
        """Every member's whole search at once; the first verified plan (without verification:
        the first exact one) stops the others and wins, else the best answer (module docstring).
        ``info``: the plan's solver block. Returns (member, plan), or None when no member
        answered in time."""
        answers = self._run("search", problem, config, deadline,
                            lambda plan: _wins(plan, config.verify), info)
        winners = [n for n, plan in answers.items() if _wins(plan, config.verify)]
        if winners:
            return winners[0], answers[winners[0]]
        ranked_names = sorted((n for n in self.workers if n in answers),
                              key=lambda n: _shortfall(answers[n]))   # stable: members' order
        return (ranked_names[0], answers[ranked_names[0]]) if ranked_names else None

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        answers = self._run("propose", problem, config, deadline, lambda _: False, None)
        # late members are dropped; the others in the members' order, not the race's: equal
        # violations rank the same way in every run
        ordered = [answers[n] for n in self.workers if n in answers]
        return _merge(ordered, len(problem.items), timed_out=deadline.passed())

    def close(self) -> None:
        """End every worker process (idempotent)."""
        self._finalizer()

    def _run(self, kind: str, problem: PackingProblem, config: SolverConfig, deadline: Deadline,
             wins, info: dict | None) -> dict[str, object]:
        """Give every worker the job; collect answers until one ``wins`` (the others are then
        stopped and dropped), every worker has answered, or the deadline and its grace have
        passed. A member's error stops the others and is raised here."""
        grace = min(MEMBER_GRACE_S, MEMBER_GRACE_SHARE * config.time_budget_s)
        jobs = {}
        for n, worker in self.workers.items():
            worker.ensure_alive()
            jobs[n] = worker.start(kind, problem, replace(config, solver=n), deadline.at, info)
        answers: dict[str, object] = {}
        pending = dict(jobs)

        def stop_all() -> None:
            for n, job in jobs.items():
                self.workers[n].stop(job)

        try:
            with deadline.on_stop(stop_all):
                while pending:
                    # once stopped: only the stopped members' short replies are awaited
                    late = grace if answers or deadline.stopped else MEMBER_GRACE_S
                    left = deadline.left() + late           # left() is 0 once stopped
                    ready = wait_for_replies([self.workers[n].conn for n in pending],
                                             timeout=max(left, 0.0))
                    if not ready:                # late members: go on without them
                        break
                    for n in [n for n in pending if self.workers[n].conn in ready]:
                        done, answer = self.workers[n].reply(pending[n])
                        if not done:
                            continue
                        del pending[n]
                        if answer is not None:
                            answers[n] = answer
                            if wins(answer):
                                return {n: answer}
        finally:
            stop_all()                           # whatever still runs
        return answers


def start_method(config: SolverConfig) -> str:
    """``config.options["start_method"]`` when given (``forkserver``: what a process running
    other threads, e.g. the ROS node's DDS threads, should ask for: a fork of a multi-threaded
    process may deadlock in the child); else ``fork`` (the child inherits the solver registry and
    starts at once) unless the members may use CUDA, which a forked child cannot; then ``spawn``.

    Raises:
        ValueError: an unknown start method, or ``fork`` with CUDA.
    """
    cuda = resolve_device(config.device).type == "cuda"
    asked = config.options.get("start_method")
    if asked is not None:
        allowed = [m for m in mp.get_all_start_methods() if not (cuda and m == "fork")]
        if asked not in allowed:
            raise ValueError(f"portfolio start_method: {asked!r} is not one of "
                             f"{', '.join(allowed)}{' (CUDA cannot run in a forked child)' * cuda}")
        return asked
    if "fork" not in mp.get_all_start_methods():
        return "spawn"
    return "spawn" if cuda else "fork"


class _Worker:
    """One member's worker process and the parent's end of its pipe. Jobs are numbered; the
    worker stops job ``k`` once the shared ``stop_upto`` reaches ``k``; replies to older jobs
    (a late member's stopped search) are dropped."""

    def __init__(self, name: str, config: SolverConfig, method: str) -> None:
        self.name, self.config, self.method = name, config, method
        self.nice = 0
        self._spawn()

    def _spawn(self) -> None:
        ctx = mp.get_context(self.method)
        self.conn, child = ctx.Pipe()
        self.stop_upto = ctx.RawValue("q", 0)
        self.proc = ctx.Process(target=_serve, name=f"portfolio-{self.name}",
                                args=(self.name, self.config, child, self.stop_upto),
                                daemon=True)
        self.proc.start()
        child.close()
        self.jobs = 0
        self.open: dict[int, float] = {}    # jobs without a reply yet -> their deadlines

    def wait_ready(self) -> None:
        """Block until the member is built; its construction error (e.g. cpsat without OR-Tools:
        ``ValueError``) is raised here."""
        if not self.conn.poll(START_TIMEOUT_S):
            raise RuntimeError(f"portfolio member {self.name}: its worker did not start within "
                               f"{START_TIMEOUT_S:.0f} s")
        status, payload = self.conn.recv()
        if status == "error":
            raise payload

    def send_nice(self) -> None:
        self.conn.send(("nice", self.nice))

    def ensure_alive(self) -> None:
        """Before a job: read the replies to earlier jobs (a race that had its winner did not
        wait for them), then start the worker again if it died, or if it is still busy with a
        job ``HUNG_S`` after that job's deadline."""
        try:
            while self.conn.poll(0):
                _, (answered, _) = self.conn.recv()
                self._answered(answered)
        except (EOFError, OSError):
            pass                            # died: started again below
        hung = bool(self.open) and time.monotonic() > min(self.open.values()) + HUNG_S
        if self.proc.is_alive() and not hung:
            return
        log.warning("portfolio member %s: worker %s; starting it again", self.name,
                    "hung" if self.proc.is_alive() else f"died (exit {self.proc.exitcode})")
        self._kill()
        self._spawn()
        self.wait_ready()
        self.send_nice()

    def start(self, kind: str, problem: PackingProblem, config: SolverConfig, at: float,
              info: dict | None) -> int:
        self.jobs += 1
        self.conn.send(("job", self.jobs, kind, problem, config, at, info))
        self.open[self.jobs] = at
        return self.jobs

    def stop(self, job: int) -> None:
        self.stop_upto.value = max(self.stop_upto.value, job)

    def reply(self, job: int) -> tuple[bool, object]:
        """Read one reply: (whether it answers ``job``, its answer). A reply to another job is
        dropped, as is the answer to a stopped one; a dead worker answers nothing; a member's
        error is raised."""
        try:
            status, (answered, payload) = self.conn.recv()
        except (EOFError, OSError):
            log.warning("portfolio member %s: worker died (exit %s)", self.name,
                        self.proc.exitcode)
            return True, None
        self._answered(answered)
        if answered != job:
            return False, None
        if status == "error":
            raise payload
        return True, payload if status == "ok" else None

    def _answered(self, job: int) -> None:
        """A reply to ``job`` came: it and every earlier job are closed (replies come in
        order)."""
        self.open = {k: at for k, at in self.open.items() if k > job}

    def _kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5.0)
        self.conn.close()

    def close(self) -> None:
        """Stop its job, ask it to end, kill it if it has not within ``CLOSE_WAIT_S``."""
        self.stop(self.jobs)
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=CLOSE_WAIT_S)
        self._kill()


def _close_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.close()


# ----------------------------------------------------------------------------- the worker


def _serve(name: str, config: SolverConfig, conn, stop_upto) -> None:
    """A worker process: build the member, say so, then answer jobs until told to end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent ends us (Ctrl-C goes to the group)
    from robot_packer.solver import pipeline
    from robot_packer.solver.base import make_solver

    try:
        member = make_solver(config)
    except BaseException as exc:
        conn.send(("error", _portable(exc, name)))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        if message[0] == "nice":
            if message[1] and hasattr(os, "setpriority"):
                os.setpriority(os.PRIO_PROCESS, 0, max(message[1], os.getpriority(
                    os.PRIO_PROCESS, 0)))
            continue
        _, job, kind, problem, job_config, at, info = message
        deadline = Deadline(at, time.monotonic)   # CLOCK_MONOTONIC: the parent's clock too
        finished = threading.Event()
        threading.Thread(target=_watch_stop, args=(stop_upto, job, deadline, finished),
                         daemon=True).start()
        try:
            if kind == "search":
                answer = pipeline.search(problem, job_config, member, deadline, info)
            else:
                answer = member.propose(problem, job_config, deadline)
            # stopped: the race is over and nobody reads the answer (a short reply keeps the
            # pipe from filling up while the parent does not read)
            reply = ("stopped", (job, None)) if stop_upto.value >= job else ("ok", (job, answer))
        except BaseException as exc:
            reply = ("error", (job, _portable(exc, name)))
        finally:
            finished.set()
        try:
            conn.send(reply)
        except Exception as exc:    # an error whose arguments cannot cross the pipe
            conn.send(("error", (job, _portable(RuntimeError(str(reply[1][1])), name))))
            log.debug("portfolio member %s: reply not sendable (%s)", name, exc)


def _watch_stop(stop_upto, job: int, deadline: Deadline, finished: threading.Event) -> None:
    """Stop ``deadline`` once the parent stops ``job`` (until the job is finished)."""
    while not finished.wait(STOP_POLL_S):
        if stop_upto.value >= job:
            deadline.stop()
            return


def _portable(exc: BaseException, name: str) -> BaseException:
    """``exc`` as it can cross to the parent: the same type when it can be rebuilt from its
    arguments, else a RuntimeError with its text; with a note naming the member and the
    worker's traceback."""
    note = f"in portfolio member {name}'s worker:\n" + "".join(traceback.format_exception(exc))
    try:
        portable = type(exc)(*exc.args)
    except Exception:
        portable = RuntimeError(f"{type(exc).__name__}: {exc}")
    portable.add_note(note)
    return portable


# ----------------------------------------------------------------------------- ranking


def _wins(plan: Plan, verify: bool) -> bool:
    """Whether ``plan`` ends the race: verified, or exact when nothing is verified."""
    return plan.verified if verify else plan.status == "solved"


def _shortfall(plan: Plan) -> tuple[bool, float]:
    """How far a plan is from winning, for ranking answers when none won: not exact first,
    then its total violation (no placements: infinite)."""
    total = sum(c["violation"] for c in plan.constraints) if plan.constraints else math.inf
    return plan.status != "solved", total


def _merge(results: list[Candidates], n: int, timed_out: bool) -> Candidates:
    samples = sum(r.samples for r in results)
    usable = [r for r in results if r.poses.shape[0]]
    if not usable:
        return Candidates(np.zeros((0, n, 4)), np.zeros(0), samples, timed_out)
    poses = np.concatenate([r.poses for r in usable])
    violations = np.concatenate([r.violations for r in usable])
    orders = np.concatenate([r.orders if r.orders is not None   # -1: the member gave no order
                             else np.full(r.poses.shape[:2], -1) for r in usable])
    return ranked(poses, violations, samples, timed_out or any(r.timed_out for r in results),
                  orders=orders)
