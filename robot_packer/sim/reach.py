"""The Panda's reach over a plan's steps (part of :func:`robot_packer.sim.verify.verify_plan`).

For every step, in the plan's order, the arm must reach the pick and the place pose and hold the
object straight above each (the end of the step's straight approach line, high enough to carry
the object over the container's wall), clear of the container, of the objects placed before
(at their planned poses) and of the objects still waiting on the table (at their current poses).
The solvers' verification may also turn the tool about its axis (:data:`TOOL_TURNS`) and pick a
table neighbour that is in the hand's way first (:func:`reach_in_some_order`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from robot_packer import constraints as C
from robot_packer.constraints import TOL
from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem
from robot_packer.sim.robot import FINGER_MAX, IKSettings, Panda, turn_about_z
from robot_packer.sim.world import SimWorld


class OutOfTime(Exception):
    """The deadline passed during verification; the message says how far it got."""


def on_time(deadline: Deadline | None, progress: str) -> None:
    """Raise :class:`OutOfTime` (message ``progress``) once ``deadline`` has passed."""
    if deadline is not None and deadline.passed():
        raise OutOfTime(progress)


CARRY_CLEARANCE = 0.01   # m between a carried object's bottom and the container's rim
WIDE_OPEN = 2 * FINGER_MAX  # m, the Panda's finger gap fully open

# Turns of the tool about its own axis that grasp an object equivalently (the box looks the same):
# a half turn for the parallel gripper, any quarter turn for a suction cup. Tried in this order.
TOOL_TURNS = {"parallel": (0.0, math.pi), "suction": (0.0, math.pi, math.pi / 2, -math.pi / 2)}

REORDER_TRIES = 3   # orders tried after the planned one, each picking more table neighbours first


def reach_in_some_order(world: SimWorld, poses: np.ndarray, steps: list[dict], ik: IKSettings,
                        reasons: list[str], arm_collisions: bool = True,
                        deadline: Deadline | None = None, turn_tool: bool = False,
                        reorder: bool = False) -> tuple[bool, list[dict]]:
    """:func:`check_reach` over ``steps`` (the plan's order); with ``reorder``, where the arm
    hits an object still waiting on the table, the steps again in an order that picks that
    object earlier — :func:`robot_packer.constraints.placement_order` with it placed first
    (supports before what rests on them; ``gripper_clear`` must hold in the new order too) — up
    to :data:`REORDER_TRIES` orders, each keeping the neighbours found before.

    Returns (whether the arm reaches every step, the steps in the order that passed, or
    ``steps`` when none did). ``reasons`` gets the planned order's reasons when no order
    passes, none when one does. ``poses``: (n, 4) placements, container frame.
    """
    problem = world.problem
    originals = {st["object"]: dict(st) for st in steps}     # before any tool turn is written
    blocked: dict[int, set[int]] = {}
    planned_reasons: list[str] = []
    if check_reach(world, steps, ik, planned_reasons, arm_collisions, deadline, turn_tool,
                   blocked):
        return True, steps
    n = len(problem.items)
    first = np.zeros((n, n), dtype=bool)
    tried = [[problem.index(st["object"]) for st in steps]]
    for _ in range(REORDER_TRIES if reorder else 0):
        if not blocked:
            break
        for i, neighbours in blocked.items():
            first[sorted(neighbours), i] = True
        order = C.placement_order(problem, poses, first=first)
        if order in tried or (problem.rules.gripper_clear
                              and C.gripper_violation(problem, poses, order) > 0.0):
            break
        tried.append(order)
        trial = [dict(originals[problem.ids[i]]) for i in order]
        blocked = {}
        if check_reach(world, trial, ik, [], arm_collisions, deadline, turn_tool, blocked):
            return True, trial
    reasons.extend(planned_reasons)
    return False, steps


def check_reach(world: SimWorld, steps: Sequence[dict], ik: IKSettings, reasons: list[str],
                arm_collisions: bool = True, deadline: Deadline | None = None,
                turn_tool: bool = False, blocked: dict[int, set[int]] | None = None) -> bool:
    """IK at every pick and place pose and straight above it (:func:`_reach_step`), with the arm
    clear of the container and of every object where it is at that step: the objects placed
    before at their planned poses, the objects still to be picked at their current (table) poses.

    ``turn_tool``: a step whose planned grasp the arm cannot reach clear of the walls is tried
    with the tool turned (:data:`TOOL_TURNS`: the Panda's wrist, 0.15 m above a suction cup, is
    not symmetric about the tool axis); the first turn that reaches both poses clear is written
    into the step's pick and place orientations, so the steps hold the grasp that was verified.
    Without it the planned orientation (or its half turn where that has no IK solution) is
    checked as given. ``blocked`` (filled in when given): for each step that fails, the objects
    waiting on the table that the arm hit (object index -> indices). Raises :class:`OutOfTime`
    when ``deadline`` has passed before an object or a turn.
    """
    panda = Panda(world.client, world.robot_id)
    problem = world.problem
    turns = TOOL_TURNS[panda.tool] if turn_tool else (None,)
    planned = world.object_poses()
    # An object is on the table until its step, then at its planned pose; one without a current
    # pose is nowhere before its step (its body stays at the planned pose, never an obstacle).
    waiting = {j for j, item in enumerate(problem.items) if item.pose is not None}
    for j in waiting:
        world.set_object_pose(world.object_ids[j], problem.items[j].pose)
    ok = True
    placed: list[int] = []
    try:
        for k, st in enumerate(steps):
            i = problem.index(st["object"])
            waiting.discard(i)
            first_failure = ""
            for turn in turns:      # the deadline is checked before every object and every turn
                on_time(deadline, f"settling done, reach checked for {k} of {len(steps)} objects")
                failure, neighbours = _reach_step(world, panda, st, i, placed, sorted(waiting),
                                                  ik, arm_collisions, turn)
                if neighbours and blocked is not None:
                    blocked.setdefault(i, set()).update(neighbours)
                if not failure:
                    if turn:
                        _turn_step(st, turn)
                    break
                first_failure = first_failure or failure
            else:
                reasons.append(first_failure)
                ok = False
            placed.append(i)
            world.set_object_pose(world.object_ids[i], planned[i])
    finally:
        world.set_object_poses(planned)
    return ok


def _reach_step(world: SimWorld, panda: Panda, st: dict, i: int, placed: Sequence[int],
                waiting: Sequence[int], ik: IKSettings, arm_collisions: bool,
                turn: float | None) -> tuple[str, list[int]]:
    """Why the arm cannot do step ``st`` with the tool turned by ``turn`` rad ('' when it can),
    and the objects ``waiting`` on the table that the arm hit where it could not stay clear.

    At the pick and at the place the arm must reach the pose, and hold the object straight above
    it (:func:`_above`: the end of the step's straight approach line, and high enough to carry
    the object over the container's wall), clear of the obstacles: the container, the objects
    ``placed`` before and the objects ``waiting`` on the table.

    ``turn=None``: the planned orientation, or its half turn where that has no IK solution. With
    ``arm_collisions`` an IK solution counts only with the arm clear (the next seed, then the
    half turn, is tried otherwise: the elbow may bend the other way).

    Straight above a pose the IK starts from the joints at the pose, in the orientation the arm
    holds there, as the executor tracks that line: the arm keeps the pose's branch, and the IK
    converges in a call or two of Bullet's instead of six from the default seeds (which follow
    where it does not). At the pose itself the default seeds are used, as in the executor.
    """
    problem = world.problem
    for key in ("pick", "place"):
        if key not in st:
            continue
        pos, quat = st[key]["position"], _unit(st[key]["orientation"])
        flip = turn is None
        quat = quat if flip else turn_about_z(quat, turn)

        def hits() -> tuple[str, list[int]]:
            return _arm_hits(world, panda, i, placed, waiting, ik.collision_margin)

        accept = (lambda: not hits()[0]) if arm_collisions else None
        tool = " (suction tool)" if panda.tool == "suction" else ""
        verb = "placing" if key == "place" else "picking"
        q = panda.solve_ik(pos, quat, ik, flip=flip, accept=accept)
        if q is None:
            if accept is None or panda.solve_ik(pos, quat, ik, flip=flip) is None:
                return (f"reachable: no Panda IK solution{tool} to {key} {problem.ids[i]} at "
                        f"({pos[0]:.3f}, {pos[1]:.3f}, {pos[2]:.3f})"), []
            what, neighbours = hits()
            return f"reachable: {verb} {problem.ids[i]} the arm {what}", neighbours
        quat = panda.held_turn(quat)         # the half turn the arm holds at the pose, if so
        above = _above(problem, st, i, pos)
        if panda.solve_ik(above, quat, ik, flip=flip, accept=accept, start=q) is None:
            neighbours = ([] if accept is None or panda.solve_ik(above, quat, ik, flip=flip) is None
                          else hits()[1])
            return (f"reachable: {verb} {problem.ids[i]}, no Panda IK solution{tool} with the "
                    f"arm clear straight above the {key} at ({above[0]:.3f}, {above[1]:.3f}, "
                    f"{above[2]:.3f}), where the object clears the container's wall and the "
                    f"straight approach line ends"), neighbours
    return "", []


def _above(problem: PackingProblem, st: dict, i: int, pos: Sequence[float]) -> np.ndarray:
    """Where the TCP holds object i straight above a pick or place pose ``pos`` (its top centre):
    the end of the step's straight line (:func:`_line_above`), raised to where the object's
    bottom is ``CARRY_CLEARANCE`` above the container's rim if that is higher."""
    above = np.asarray(pos, float) + _line_above(st)
    rim = float(problem.container.pose[2] + problem.container.size[2])
    above[2] = max(above[2], rim + CARRY_CLEARANCE + float(problem.items[i].size[2]))
    return above


def _line_above(st: dict) -> np.ndarray:
    """The straight line above a step's pick and place poses, as a vector: against its
    ``approach`` (default straight down), as long as the longer of ``approach_distance`` and
    ``retreat_distance`` (0 where the step gives neither)."""
    length = max(float(st.get("approach_distance", 0.0)), float(st.get("retreat_distance", 0.0)))
    down = np.asarray(st.get("approach", (0.0, 0.0, -1.0)), float)
    return -length * down / np.linalg.norm(down)


def _turn_step(st: dict, turn: float) -> None:
    """Turn the tool of step ``st`` by ``turn`` rad about its axis at pick and at place."""
    for key in ("pick", "place"):
        if key in st:
            quat = turn_about_z(_unit(st[key]["orientation"]), turn)
            st[key] = {**st[key], "orientation": [round(float(v), 9) for v in quat]}


def _arm_hits(world: SimWorld, panda: Panda, i: int, placed: Sequence[int],
              waiting: Sequence[int], margin: float) -> tuple[str, list[int]]:
    """Describe what the arm hits while picking or placing object i ('' when clear), and which
    of the objects ``waiting`` on the table it hits.

    The arm is at its current joints with the fingers open around object i (a suction Panda has
    no fingers: its tool cylinder and arm links are checked); obstacles are the container, the
    objects in ``placed`` and those ``waiting`` on the table. Example: ``'(panda_hand) hits
    container (4.1 mm)'``, or ``'(panda_leftfinger) hits o3 on the table (2.0 mm)'``.
    """
    problem = world.problem
    panda.set_fingers(finger_opening(problem, i))
    others = [*placed, *waiting]
    hits = panda.contacts([world.container_id] + [world.object_ids[j] for j in others], margin)
    panda.set_fingers(WIDE_OPEN)
    if not hits:
        return "", []
    names = {world.container_id: "container"}
    names.update({world.object_ids[j]: problem.ids[j] for j in placed})
    names.update({world.object_ids[j]: f"{problem.ids[j]} on the table" for j in waiting})
    what = sorted({names[b] for b, _, _ in hits})
    links = sorted({panda.link_name(link) for _, link, _ in hits})
    depth = max(-d for _, _, d in hits)
    bodies = {b for b, _, _ in hits}
    return (f"({', '.join(links)}) hits {', '.join(what)} ({depth * 1000:.1f} mm)",
            [j for j in waiting if world.object_ids[j] in bodies])


def finger_opening(problem: PackingProblem, i: int) -> float:
    """Finger gap (m) around object i at its pick and place: its narrower side plus the
    gripper's clearance on both sides, at most ``WIDE_OPEN`` (0 for a suction gripper).
    Verification checks the arm with this gap and the executor opens the fingers to it."""
    if problem.gripper.type == "suction":
        return 0.0
    return float(min(WIDE_OPEN, problem.items[i].size[:2].min() + 2 * TOL.grip_margin))


def _unit(q: Sequence[float]) -> list[float]:
    q = np.asarray(q, float)
    return (q / np.linalg.norm(q)).tolist()
