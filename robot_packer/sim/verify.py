"""PyBullet verification of a plan: the DESIGN.md §6 ``verification`` block.

``verify_plan`` places every object at its planned pose, measures the initial interpenetration,
lets the packing settle (friction 0.6, ``TOL.settle_time_s``), re-checks the exact constraints on
the settled state, checks gripper clearance in plan order, and checks that a Franka Panda reaches
every pick and place pose, and holds each object straight above them where it clears the
container's wall and the step's straight approach line ends (IK within 1 cm / 5 deg, joint
limits), without the arm hitting the container, the objects already placed or those still on
the table. The Panda carries the problem's gripper: its hand and fingers
for ``parallel``, a suction tool on the flange (no hand) for ``suction``
(:class:`robot_packer.sim.robot.SuctionTool`); the collision check uses the links it carries.
Physics trouble never escapes as an exception: it fails the verification with a reason. Given a
``deadline`` it stops when that passes (checked every 60 settling steps and before each object's
reach check and each tool turn) and fails with a reason saying how far it got.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from robot_packer import constraints as C
from robot_packer.constraints import TOL
from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem, Plan, SceneError
from robot_packer.sim.reach import OutOfTime, on_time, reach_in_some_order
from robot_packer.sim.robot import IKSettings, quat_angle
from robot_packer.sim.world import SimSettings, SimWorld


@dataclass(frozen=True)
class VerifySettings:
    """Verification thresholds and the (coarse, fast) physics used for settling."""

    penetration_tol: float = 0.002   # m of initial overlap tolerated (1 mm slack + contact noise)
    flyoff: float = 0.5              # m: a centre moving further than this means the sim diverged
    sim: SimSettings = field(default_factory=lambda: SimSettings(solver_iterations=10))
    ik: IKSettings = IKSettings()
    arm_collisions: bool = True      # reachable also needs the arm clear of walls and objects


def verify_plan(problem: PackingProblem, plan_or_poses: Plan | np.ndarray,
                order: Sequence[int | str] | None = None, settle_s: float = TOL.settle_time_s,
                settings: VerifySettings = VerifySettings(), deadline: Deadline | None = None,
                reach: bool = True, turn_tool: bool = False, reorder: bool = False) -> dict:
    """Verify placements in PyBullet.

    Args:
        problem: the packing problem.
        plan_or_poses: a :class:`Plan` (placements and, if present, steps) or an (n, 4)
            array of container-frame placements in problem item order.
        order: placing order (indices or ids); default: the plan's steps, else
            :func:`robot_packer.constraints.placement_order`.
        settle_s: simulated settling time (s).
        settings: thresholds and physics settings.
        deadline: once it passes (or is stopped), the simulation stops (its client
            closed) and the verification fails with the reason "verification stopped at the
            time budget (...)". None: no limit.
        reach: check that the Panda reaches every pose; False (research domains without a
            robot, e.g. ``stack2d``): physics and exact checks only, ``reachable`` stays None.
        turn_tool: where the arm cannot place an object clear of the walls with the planned
            grasp, try the tool turned about its axis (a half turn; a quarter turn for a suction
            cup) and write the turn that passes into the plan's steps (pick and place), so that
            they hold the grasps that were verified. False: the steps are checked as given.
        reorder: (a :class:`Plan` only) where the arm hits an object still waiting on the table,
            try orders that pick that object first (supports and ``gripper_clear`` still
            holding; :func:`robot_packer.sim.reach.reach_in_some_order`) and write the order
            that passes into the plan's steps. False: the plan's order is checked as given.

    Returns:
        ``{"simulator": "pybullet", "passed", "max_drift_m", "max_penetration_m", "reachable",
        "gripper_clear", "reasons": [str, ...]}``; values not reached before the deadline stay
        None.

    Raises:
        SceneError: the plan lacks a placement for some object, has a malformed step, or the
            placements array has the wrong shape (non-finite placements fail instead).
    """
    reasons: list[str] = []
    out = {"simulator": "pybullet", "passed": False, "max_drift_m": None,
           "max_penetration_m": None, "reachable": None, "gripper_clear": None}
    if not isinstance(plan_or_poses, Plan) and not np.all(np.isfinite(plan_or_poses)):
        return {**out, "reasons": ["placements: not finite (NaN or inf)"]}
    poses, steps, order = plan_inputs(problem, plan_or_poses, order)
    exact_ok = _exact(problem, poses, order, "planned", reasons)
    grip = C.gripper_violation(problem, poses, order)
    out["gripper_clear"] = bool(grip <= 0.0)
    if grip > 0.0 and problem.rules.gripper_clear:
        tool = ("the suction cup or the wrist" if problem.gripper.type == "suction"
                else "fingers")
        reasons.append(f"gripper_clear: {tool} hit walls or placed objects by "
                       f"{grip * 1000:.1f} mm in plan order")
    physics_ok = stopped = False
    try:
        on_time(deadline, "before the simulation started")
        with SimWorld(problem, poses, frame="container", robot=False, visuals=False,
                      settings=settings.sim) as world:
            pen = max_penetration(world)
            out["max_penetration_m"] = round(pen, 6)
            if pen > settings.penetration_tol:
                reasons.append(f"penetration: objects interpenetrate by {pen * 1000:.1f} mm "
                               f"before settling (limit {settings.penetration_tol * 1000:.1f} mm)")
            settled, still = _settle(world, settle_s, settings, out, reasons, deadline)
            if settled is not None:
                after_ok = _exact(problem, settled, order, "after settling", reasons,
                                  slack=TOL.settle_slack)
                physics_ok = (after_ok and pen <= settings.penetration_tol
                              and (still or not problem.rules.stable))
            if reach:
                on_time(deadline, f"settling done, reach checked for 0 of {len(steps)} objects")
                world.set_object_poses(poses, "container")
                world.add_robot()
                out["reachable"], reached = reach_in_some_order(
                    world, poses, steps, settings.ik, reasons, settings.arm_collisions,
                    deadline, turn_tool, reorder and isinstance(plan_or_poses, Plan)
                    and bool(plan_or_poses.steps))
                if reached is not steps:     # a table neighbour picked first: the plan's order
                    plan_or_poses.steps = reached
                    out["gripper_clear"] = True      # reach_in_some_order required it
    except OutOfTime as exc:  # the with block has closed the client
        stopped = True
        reasons.append(f"verification stopped at the time budget ({exc})")
    except Exception as exc:  # pybullet.error and numerical failures: report, never raise
        reasons.append(f"simulation error: {type(exc).__name__}: {exc}")
    grip_ok = out["gripper_clear"] or not problem.rules.gripper_clear
    out["passed"] = bool(not stopped and exact_ok and physics_ok and grip_ok
                         and (out["reachable"] or not reach))
    out["reasons"] = reasons
    return out


def settles(problem: PackingProblem, poses: np.ndarray, settle_s: float = TOL.settle_time_s,
            settings: VerifySettings = VerifySettings()) -> bool:
    """Whether ``poses`` (n, 4, container frame) start without interpenetration and stay put
    through ``settle_s`` of simulated settling (the physics half of :func:`verify_plan`, no
    robot). Used to keep only physically stable generated problems."""
    out: dict = {}
    reasons: list[str] = []
    try:
        with SimWorld(problem, poses, frame="container", robot=False, visuals=False,
                      settings=settings.sim) as world:
            if max_penetration(world) > settings.penetration_tol:
                return False
            settled, still = _settle(world, settle_s, settings, out, reasons)
    except Exception:  # noqa: BLE001 - a physics failure means "not stable", never a crash
        return False
    return settled is not None and still


def plan_inputs(problem: PackingProblem, plan_or_poses, order=None
                ) -> tuple[np.ndarray, list[dict], list[int]]:
    """(placements (n, 4) container frame, steps in execution order, order as indices)."""
    ids = problem.ids
    plan = plan_or_poses if isinstance(plan_or_poses, Plan) else None
    poses = plan.poses(ids) if plan else np.asarray(plan_or_poses, dtype=np.float64)
    if poses.shape != (len(ids), 4) or not np.all(np.isfinite(poses)):
        raise SceneError(f"placements: expected finite ({len(ids)}, 4), got {poses.shape}")
    if order is not None:
        order = [problem.index(o) if isinstance(o, str) else int(o) for o in order]
    steps = list(plan.steps) if plan and plan.steps else []
    if steps:
        for k, st in enumerate(steps):
            _check_step(st, k, ids)
        order = order or [ids.index(st["object"]) for st in steps]
    order = order if order is not None else C.placement_order(problem, poses)
    if sorted(order) != list(range(len(ids))):
        raise SceneError(f"order: must list every object once, got {order}")
    if not steps:
        steps = make_steps(problem, poses, order)
    by_obj = {st["object"]: st for st in steps}
    missing = [ids[i] for i in order if ids[i] not in by_obj]
    if missing:
        raise SceneError(f"plan.steps: no step for object {missing[0]!r}")
    return poses, [by_obj[ids[i]] for i in order], order


def make_steps(problem: PackingProblem, poses: np.ndarray, order: Sequence[int]) -> list[dict]:
    """Steps from ``robot_packer.planning`` (DESIGN §6 convention); place-only if no pick pose."""
    from robot_packer import planning

    if all(it.pose is not None for it in problem.items):
        return planning.make_steps(problem, poses, order)
    steps = []
    for i in order:
        item = problem.items[i]
        st = {"object": item.id,
              "place": planning.tcp_pose(problem.container.to_world(poses[i]), item.size)}
        if item.pose is not None:
            st["pick"] = planning.tcp_pose(item.pose, item.size)
        steps.append(st)
    return steps


def _check_step(st, k: int, ids: Sequence[str]) -> None:
    if not isinstance(st, dict) or st.get("object") not in ids:
        raise SceneError(f"plan.steps[{k}].object: must be one of the scene's object ids")
    for key in ("pick", "place"):
        pose = st.get(key)
        if pose is None and key == "pick":
            continue
        try:
            if any(isinstance(x, bool) for x in [*pose["position"], *pose["orientation"]]):
                raise TypeError("booleans are not coordinates")
            pos = np.asarray(pose["position"], float)
            quat = np.asarray(pose["orientation"], float)
        except (TypeError, KeyError, ValueError, OverflowError):
            raise SceneError(f"plan.steps[{k}].{key}: needs position [x,y,z] and "
                             f"orientation [qx,qy,qz,qw]") from None
        if (pos.shape != (3,) or quat.shape != (4,) or not np.all(np.isfinite(pos))
                or not np.all(np.isfinite(quat)) or np.linalg.norm(quat) < 1e-6):
            raise SceneError(f"plan.steps[{k}].{key}: position must be 3 finite numbers and "
                             f"orientation a non-zero quaternion of 4")
    for key in ("approach_distance", "retreat_distance"):
        value = st.get(key, 0.0)
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or not 0.0 <= value <= 1.0):
            raise SceneError(f"plan.steps[{k}].{key}: must be a number of metres in [0, 1]")
    approach = st.get("approach", (0.0, 0.0, -1.0))
    try:
        down = np.asarray(approach, float)
        ok = down.shape == (3,) and bool(np.all(np.isfinite(down))) and not any(
            isinstance(v, bool) for v in approach) and np.linalg.norm(down) > 1e-6
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise SceneError(f"plan.steps[{k}].approach: must be a non-zero vector of 3 finite numbers")


def _exact(problem, poses, order, when: str, reasons: list[str], slack: float = 0.0) -> bool:
    """Exact constraints (listed, in, cfree, heavy_below/fragile, stable) on one placement.

    ``gripper_clear`` is left out here (checked once, in plan order, by the caller). ``slack``
    (m) forgives violations that small: on the settled state, contact resolution moves boxes by
    fractions of a millimetre, and a plan touching a boundary must not fail for that.
    """
    no_grip = replace(problem, rules=replace(problem.rules, gripper_clear=False))
    results = C.check(no_grip, poses, order)
    bad = [r for r in results if not r.satisfied and r.violation > slack]
    if bad:
        reasons.append(f"{when}: {C.describe_failures(bad, limit=4)}")
    return not bad


def max_penetration(world: SimWorld) -> float:
    """Largest interpenetration (m, >= 0) between an object and anything, before stepping."""
    c = world.client
    c.performCollisionDetection()
    objs = set(world.object_ids)
    worst = 0.0
    for cp in c.getContactPoints():
        if cp[1] in objs or cp[2] in objs:
            worst = max(worst, -float(cp[8]))
    return worst


def _settle(world: SimWorld, settle_s: float, settings: VerifySettings, out: dict,
            reasons: list[str], deadline: Deadline | None = None) -> tuple[np.ndarray | None, bool]:
    """Step ``settle_s`` and fill max_drift_m.

    Returns the settled container-frame poses (None if the simulation diverged) and whether
    every object stayed within the drift and rotation limits. Raises :class:`OutOfTime` once
    ``deadline`` passes, checked every 60 steps.
    """
    start = world.object_poses()
    q0 = world.object_quaternions()
    n = int(round(settle_s / settings.sim.timestep))
    for k in range(n):
        world.client.stepSimulation()
        if k % 60 == 59 or k == n - 1:
            now = world.object_poses()
            moved = np.linalg.norm(now[:, :3] - start[:, :3], axis=1) if np.all(
                np.isfinite(now)) else np.array([np.inf])
            if not np.all(np.isfinite(moved)) or moved.max() > settings.flyoff:
                reasons.append(f"stable: the simulation diverged (an object moved more than "
                               f"{settings.flyoff} m or became NaN)")
                out["max_drift_m"] = None if not np.all(np.isfinite(moved)) else float(moved.max())
                return None, False
            on_time(deadline, f"{(k + 1) * settings.sim.timestep:.2f} of {settle_s:.2f} s "
                              f"of settling simulated")
    end, q1 = world.object_poses(), world.object_quaternions()
    drift = np.linalg.norm(end[:, :3] - start[:, :3], axis=1)
    rot = np.degrees([quat_angle(a, b) for a, b in zip(q0, q1)])
    out["max_drift_m"] = round(float(drift.max(initial=0.0)), 6)
    ids = world.problem.ids
    ok = True
    for k in np.argsort(-drift):
        if drift[k] > TOL.settle_drift:
            reasons.append(f"stable: {ids[k]} moved {drift[k] * 1000:.1f} mm while settling "
                           f"(limit {TOL.settle_drift * 1000:.0f} mm)")
            ok = False
    for k in np.argsort(-rot):
        if rot[k] > TOL.settle_yaw_deg:
            reasons.append(f"stable: {ids[k]} turned {rot[k]:.1f} deg while settling "
                           f"(limit {TOL.settle_yaw_deg:.0f} deg)")
            ok = False
    return world.problem.container.from_world(end), ok
