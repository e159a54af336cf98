"""``solve(problem, config) -> Plan``: precheck, propose, exact check, plan steps, verify."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from robot_packer import constraints as C
from robot_packer import planning
from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem, Plan, unverified
from robot_packer.solver.base import Solver, SolverConfig, make_solver, resolve_device
from robot_packer.solver.feasibility import infeasibility_reason

VERIFY_RESERVE = 0.2  # share of the time budget kept for the exact check and PyBullet verification
VERIFY_SKIP_SHARE = 0.5  # no later verification starts with less time left than this share of
#                          the previous one's duration (it would be stopped at the deadline)
RETRY_MIN_SHARE = 0.1    # after a failed verification the solver proposes again (a new seed)
#                          while at least this share of the budget is left for proposing
RETRY_SEED_STRIDE = 7919  # seed offset of each new proposal round (a prime: no overlaps)
REPEAT_TOL = 1e-6        # a candidate this close (m, rad) to a refused plan is that plan again


def solve(problem: PackingProblem, config: SolverConfig = SolverConfig(),
          solver: Solver | None = None) -> Plan:
    """Solve ``problem`` within ``config.time_budget_s``; never raises for an unsolvable problem.

    Pass a ready ``solver`` (from :func:`make_solver`) to reuse loaded models across solves. A
    solver with a ``race`` method (the portfolio) runs :func:`search` once per member, at once
    (a worker process each), and returns the first verified plan.
    """
    start = time.monotonic()
    deadline = Deadline(start + config.time_budget_s, time.monotonic)  # this module's clock
    info = {"name": config.solver, "device": str(resolve_device(config.device)),
            "candidates": config.candidates, "time_s": 0.0, "seed": config.seed}
    reason = infeasibility_reason(problem)
    if reason:
        return _finish(Plan("infeasible", reason, solver=info), problem, start)
    solver = solver or make_solver(config)
    race = getattr(solver, "race", None)
    if race is None:
        plan = search(problem, config, solver, deadline, info)
    else:
        answer = race(problem, config, deadline, info)
        if answer is None:
            plan = Plan("timeout", "no member of the portfolio answered within the time budget",
                        solver=info)
        else:
            member, plan = answer
            plan.solver["member"] = member
    return _finish(plan, problem, start)


def search(problem: PackingProblem, config: SolverConfig, solver: Solver, deadline: Deadline,
           info: dict) -> Plan:
    """Propose, exact-check and verify until a plan verifies or ``deadline`` passes: after an
    exact plan fails verification, the solver proposes again with a new seed while the budget
    allows (the exact but unverified plan is kept meanwhile). A plan that failed verification is
    not verified again: a round that offers only such plans ends the search (the solver repeats
    itself). ``info``: the plan's solver block (copied)."""
    info = dict(info)
    reserve = VERIFY_RESERVE * config.time_budget_s if config.verify else 0.0
    exact_unverified, attempt, samples, refused = None, 0, 0, []
    while True:
        seed = config.seed + RETRY_SEED_STRIDE * attempt
        cands = solver.propose(problem, replace(config, seed=seed),
                               deadline.sooner(deadline.at - reserve))
        samples += cands.samples
        info["samples"] = samples
        plan = _best_plan(problem, config, cands, info, deadline, refused)
        if not (plan.status == "solved" and config.verify and not plan.verified):
            break
        # Exact, but PyBullet said no (e.g. the arm cannot reach, or it slid while settling):
        # search again with new noise while the budget allows, keeping this plan meanwhile.
        exact_unverified = plan
        if deadline.left() - reserve < RETRY_MIN_SHARE * config.time_budget_s:
            break
        attempt += 1
    if exact_unverified is not None and not plan.verified:
        plan = exact_unverified
        if attempt:
            plan.message += f" ({attempt + 1} proposal rounds, each verified)"
    return plan


def _best_plan(problem, config, cands, info, deadline, refused) -> Plan:
    """First candidate (in rank order) passing the exact check and, if asked, verification.

    Verification stops at the deadline; a plan whose verification was stopped is not verified.
    Candidates equal to one in ``refused`` (poses that failed verification before) are skipped;
    the ones failing verification here are added to it.
    """
    best = None
    verified_tries, took, late = 0, 0.0, False
    for k, poses in enumerate(cands.poses):
        if k and deadline.passed():
            break
        given = None if cands.orders is None else cands.orders[k]
        order, results = _checked(problem, poses, given)
        if best is None or C.total(results) < C.total(best[1]):
            best = (poses, results, order)
        repeat = any(np.abs(poses - r).max() <= REPEAT_TOL for r in refused)
        if repeat or not C.all_satisfied(results):
            continue
        plan = _plan(problem, "solved", "", info, poses, results, order)
        if not config.verify:
            return plan
        started = time.monotonic()
        if deadline.passed():
            if not verified_tries:
                plan.message = "time budget spent before simulation verification: not verified"
                return plan
            break
        if verified_tries and deadline.left() < VERIFY_SKIP_SHARE * took:
            break
        plan.verification = verify(problem, plan, deadline, config.verify_reach)
        verified_tries += 1
        if plan.verification["passed"]:
            return plan
        last_failed, took = plan, time.monotonic() - started
        late = deadline.passed()  # stopped at the deadline, or failed just after it
        if not late:
            refused.append(poses)
        if late or verified_tries >= config.verify_top_k:
            break
    if verified_tries:
        reasons = "; ".join(last_failed.verification.get("reasons", [])) or "see verification"
        last_failed.message = (
            f"exact constraints hold but simulation verification did not pass before the time "
            f"budget ran out ({verified_tries} candidate(s) tried): not verified: {reasons}"
            if late else
            f"exact constraints hold but simulation verification failed for {verified_tries} "
            f"candidate(s): {reasons}")
        return last_failed
    if best is None:
        status = "timeout" if cands.timed_out else "failed"
        return Plan(status, "the solver produced no finite candidate", solver=info)
    poses, results, order = best
    status = "timeout" if cands.timed_out else "failed"
    return _plan(problem, status, "best candidate violates: " + C.describe_failures(results),
                 info, poses, results, order)


def _checked(problem, poses, given_order):
    """Exact check in the solver's own placing order when it gave one, else (or if that order
    fails) in :func:`constraints.placement_order`."""
    given = None if given_order is None or min(given_order) < 0 else list(map(int, given_order))
    tries = [] if given is None else [given]
    tries.append(C.placement_order(problem, poses))
    for order in tries:
        results = C.check(problem, poses, order)
        if C.all_satisfied(results):
            break
    return order, results


def plan_of(problem: PackingProblem, poses: np.ndarray, info: dict | None = None) -> Plan:
    """The unverified plan that places the objects at ``poses`` (n, 4, container frame, item
    order): status ``solved`` when every exact constraint holds in
    :func:`constraints.placement_order`, else ``failed`` naming what is violated (e.g. a
    generator's known solution, to verify and execute it)."""
    poses = np.asarray(poses, dtype=np.float64)
    order, results = _checked(problem, poses, None)
    info = {"name": "given"} if info is None else info
    if C.all_satisfied(results):
        return _plan(problem, "solved", "", info, poses, results, order)
    return _plan(problem, "failed", "violates: " + C.describe_failures(results), info, poses,
                 results, order)


def _plan(problem, status, message, info, poses, results, order) -> Plan:
    ids = problem.ids
    listed = [r.to_dict() for r in results]
    has_poses = all(item.pose is not None for item in problem.items)
    steps = planning.make_steps(problem, poses, order) if has_poses else []
    return Plan(status, message, "world", dict(info),
                placements={i: [round(float(v), 6) for v in p] for i, p in zip(ids, poses)},
                sizes=_sizes(problem),
                steps=steps, constraints=listed, verification=unverified())


def verify(problem: PackingProblem, plan: Plan, deadline: Deadline | None = None,
           reach: bool = True) -> dict:
    """PyBullet verification block of a plan, stopped when ``deadline`` passes;
    ``reach=False`` leaves out the robot (imported lazily: only sim/ imports pybullet). A grasp
    the arm can only place with the tool turned about its axis is turned in ``plan.steps``; where
    the arm hits an object still on the table, an order that picks that object first is tried
    and, when it passes, becomes the order of ``plan.steps``."""
    from robot_packer.sim.verify import verify_plan

    return verify_plan(problem, plan, deadline=deadline, reach=reach, turn_tool=True,
                       reorder=True)


def _finish(plan: Plan, problem: PackingProblem, start: float) -> Plan:
    plan.solver["time_s"] = round(time.monotonic() - start, 4)
    if not plan.sizes:
        plan.sizes = _sizes(problem)
    return plan


def _sizes(problem: PackingProblem) -> dict[str, list[float]]:
    """The plan's ``sizes`` block: the box extents the plan used."""
    return {it.id: [round(float(v), 6) for v in it.size] for it in problem.items}
