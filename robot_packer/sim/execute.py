"""Execute a plan with the simulated Franka Panda: pick each object from the table, place it.

Per step (in plan order): joint-space move to a transit pose above the pick, straight-line descent,
grasp (fixed constraint between the TCP link and the object, made only at an IK-valid arm
configuration), straight lift to the transit height, joint-space move above the place pose,
straight descent, release, straight retreat. Each vertical line is tracked from the pick or place
pose upward (IK there from several seeds, polished, then from waypoint to waypoint; from the top
down where that ends early) and followed down in reverse, so the arm arrives in the configuration
found at the pose itself. The transit
height clears the rim and every other object's top; where the arm cannot reach it above the pick
or the place, the box is carried as high as both lines reach, if the joint-space moves there are
checked clear (:meth:`_Arm.clears`), else the step stops with a message. Physics runs while the
arm moves, so objects that get bumped move. A suction problem's Panda carries the suction tool (no
fingers): the same fixed constraint, made at the cup's tip, stands for the vacuum seal. The arm
follows its joint waypoints kinematically (reset per physics step, with position targets holding
it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from robot_packer.geometry import half_extents_xy_np
from robot_packer.problem import PackingProblem, Plan
from robot_packer.sim._bullet import p
from robot_packer.sim.robot import HOME, IKSettings, Panda
from robot_packer.sim.render import render_cell
from robot_packer.sim.reach import CARRY_CLEARANCE, WIDE_OPEN, finger_opening
from robot_packer.sim.verify import plan_inputs
from robot_packer.sim.world import SimSettings, SimWorld


class SimulationError(RuntimeError):
    """The simulated robot could not carry out a step (no IK along a path, lost object)."""


@dataclass(frozen=True)
class ExecuteSettings:
    """Motion parameters (m, s, rad) and the acceptance of a placed object."""

    line_speed: float = 0.25       # m/s along straight approach/retreat lines
    joint_speed: float = 1.2       # rad/s of the fastest joint in joint-space moves
    waypoint_step: float = 0.01    # m between IK waypoints on straight lines
    clearance: float = 0.05        # m above rim / other tops while carrying
    low_clearance: float = CARRY_CLEARANCE  # m kept on the way when the transit is out of reach
    path_samples: int = 24         # configurations checked along such a joint-space move
    tool_reach: float = 0.06       # m around the TCP that the empty tool covers (fingers, cup)
    tool_hang: float = 0.01        # m the empty tool reaches below the TCP
    settle_after_place_s: float = 0.3
    final_settle_s: float = 1.0
    pos_tol: float = 0.015         # success: every object within 1.5 cm ...
    yaw_tol_deg: float = 5.0       # ... and 5 deg of its planned pose
    sim: SimSettings = field(default_factory=lambda: SimSettings(solver_iterations=50))
    ik: IKSettings = IKSettings(pos_tol=0.005, ang_tol_deg=3.0)
    # at the pick and place poses, where the vertical lines start
    ik_polish: IKSettings = IKSettings(pos_tol=0.0005, ang_tol_deg=0.3, refinements=12)


@dataclass
class ExecutionReport:
    """Outcome of an execution. Poses (n, 4) world frame, problem item order."""

    success: bool
    message: str
    planned_poses: np.ndarray
    final_poses: np.ndarray
    position_error: np.ndarray    # (n,) m, centre distance to the planned pose
    yaw_error_deg: np.ndarray     # (n,) deg, modulo the box's half-turn symmetry
    steps_done: int = 0
    before: np.ndarray | None = None   # (H, W, 3) uint8
    after: np.ndarray | None = None

    def summary(self) -> dict:
        """Summarise as a JSON-ready dict (no images)."""
        return {"success": self.success, "message": self.message, "steps_done": self.steps_done,
                "max_position_error_m": round(float(self.position_error.max(initial=0.0)), 5),
                "max_yaw_error_deg": round(float(self.yaw_error_deg.max(initial=0.0)), 3)}


def execute_plan(problem: PackingProblem, plan: Plan | np.ndarray,
                 rng: np.random.Generator | None = None, record: bool = True,
                 settings: ExecuteSettings = ExecuteSettings()) -> ExecutionReport:
    """Run the plan's steps with the Panda; items start at their current world poses.

    Args:
        problem: the problem (items need current world poses).
        plan: a Plan (its steps, or steps made from its placements) or (n, 4) placements.
        rng: unused by the deterministic motions; accepted for interface symmetry.
        record: render before/after RGB pictures.
        settings: motion settings.
    """
    del rng
    poses, steps, _ = plan_inputs(problem, plan)
    if any("pick" not in st for st in steps):
        raise ValueError("execute_plan: every step needs a pick pose (items need world poses)")
    planned = problem.container.to_world(poses)
    with SimWorld(problem, robot=True, visuals=record, settings=settings.sim) as world:
        before = render_cell(world) if record else None
        arm = _Arm(world, settings)
        done, message = 0, "all steps executed"
        try:
            for st in steps:
                arm.pick_and_place(st, problem.index(st["object"]))
                done += 1
            arm.retreat_home()
        except SimulationError as exc:
            message = f"step {done} ({steps[done]['object']}): {exc}"
        world.step(settings.final_settle_s)
        final = world.object_poses()
        after = render_cell(world) if record else None
    pos_err = np.linalg.norm(final[:, :3] - planned[:, :3], axis=1)
    half_turn = (final[:, 3] - planned[:, 3] + math.pi / 2) % math.pi - math.pi / 2
    yaw_err = np.degrees(np.abs(half_turn))
    ok = (done == len(steps) and bool(np.all(pos_err <= settings.pos_tol))
          and bool(np.all(yaw_err <= settings.yaw_tol_deg)))
    if done == len(steps) and not ok:
        worst = int(np.argmax(pos_err / settings.pos_tol + yaw_err / settings.yaw_tol_deg))
        message = (f"{problem.ids[worst]} ended {pos_err[worst] * 1000:.1f} mm / "
                   f"{yaw_err[worst]:.1f} deg from its planned pose")
    return ExecutionReport(ok, message, planned, final, pos_err, yaw_err, done, before, after)


class _Arm:
    """Motion primitives of the Panda in one world (kinematic joint waypoints + physics)."""

    def __init__(self, world: SimWorld, settings: ExecuteSettings) -> None:
        self.world, self.s = world, settings
        self.c = world.client
        self.panda = Panda(world.client, world.robot_id)
        self.q = self.panda.arm_q()
        self.opening = WIDE_OPEN
        self.grasp_cid: int | None = None

    # ---------------------------------------------------------------- primitives
    def _apply(self, q: np.ndarray, steps: int = 1) -> None:
        self.panda.set_arm(q)
        self.panda.set_fingers(self.opening)
        self.panda.hold(q, self.opening)
        for _ in range(steps):
            self.c.stepSimulation()
        self.q = np.asarray(q, float)

    def move_joints(self, q_goal: np.ndarray) -> None:
        """Smooth joint-space interpolation from the current configuration."""
        dq = np.asarray(q_goal) - self.q
        duration = max(0.3, float(np.abs(dq).max()) / self.s.joint_speed)
        n = max(1, int(round(duration / self.world.settings.timestep)))
        q0 = self.q.copy()
        for k in range(1, n + 1):
            s = k / n
            self._apply(q0 + dq * (3 * s * s - 2 * s * s * s))

    def follow(self, path: Sequence[np.ndarray]) -> None:
        """Joint waypoints ``waypoint_step`` apart on a straight TCP line, at ``line_speed``."""
        per = max(1, int(round(self.s.waypoint_step / self.s.line_speed
                               / self.world.settings.timestep)))
        for q in path:
            self._apply(q, per)

    def vertical_line(self, pos: np.ndarray, quat: Sequence[float], top: float,
                      obstacles: Sequence[int]) -> list[tuple[float, np.ndarray]]:
        """(TCP height, joints) from ``pos`` straight up toward height ``top``, the arm at
        ``pos`` clear of the bodies ``obstacles``. Tracked up from an IK solution at the pose
        (several seeds, the tool's half turn allowed, polished); where that ends below ``top``,
        tracked down from one at ``top`` instead, if that reaches the pose clear. Waypoints go
        from the previous one's joints (no restarts: the line stays smooth). Ends where the arm
        cannot follow; empty when the pose itself has no IK solution."""
        margin = self.s.ik.collision_margin

        def clear() -> bool:        # as verification checks it (sim/reach.py: the fingers open
            self.panda.set_fingers(self.opening)    # around the object, not wide open)
            return not self.panda.contacts(obstacles, margin)

        line = self._track(pos, quat, pos[2], top, clear)
        if not line or line[-1][0] < top - 1e-9:
            down = self._track(pos, quat, top, pos[2], clear)
            line = down[::-1] if down and abs(down[-1][0] - pos[2]) < 1e-9 else line
        self.panda.set_arm(self.q)           # IK moved the joints while searching
        return line

    def _track(self, pos: np.ndarray, quat: Sequence[float], start: float, end: float,
               clear: Callable[[], bool]) -> list[tuple[float, np.ndarray]]:
        """(TCP height, joints) on the vertical line through ``pos`` from height ``start``
        toward ``end``: IK at the start (polished), then waypoint after waypoint; ends where the
        arm cannot follow. Where the line reaches ``pos`` itself, the arm there must be
        ``clear``."""
        at = np.array([pos[0], pos[1], start], float)
        q = self.panda.solve_ik(at, quat, self.s.ik,
                                accept=clear if start == pos[2] else None)
        if q is None:
            return []
        quat = self.panda.held_turn(quat)    # the turn the IK found, kept all the way
        line = [(float(start), self._polished(q, at, quat))]
        n = max(1, int(math.ceil(abs(end - start) / self.s.waypoint_step)))
        for k in range(1, n + 1):
            z = float(start + (end - start) * k / n)
            q = self.panda.refine(line[-1][1], [pos[0], pos[1], z], quat, self.s.ik)
            if q is None:
                break
            if k == n and end == pos[2]:
                q = self._polished(q, np.array([pos[0], pos[1], z]), quat)
                self.panda.set_arm(q)
                if not clear():
                    break
            line.append((z, q))
        return line

    def _polished(self, q: np.ndarray, pos: np.ndarray, quat: Sequence[float]) -> np.ndarray:
        """``q`` refined further toward the pose: a solution from a far seed may sit anywhere
        within the tolerance, from a near one the IK converges further (dense plans put boxes
        into millimetre gaps)."""
        polished = self.panda.refine(q, pos, quat, self.s.ik_polish)
        return q if polished is None else polished

    def clears(self, q0: np.ndarray, q1: np.ndarray, corners: np.ndarray,
               obstacles: np.ndarray, bodies: Sequence[int]) -> bool:
        """Whether the joint-space move ``q0`` -> ``q1`` keeps the points ``corners`` (k, 3), in
        the TCP's frame (the carried box's corners, or the empty tool's), ``low_clearance`` above
        every obstacle row (x_min, x_max, y_min, y_max, top) whose footprint they pass over, and
        the arm off every body in ``bodies``. The tool may tilt on the way, so the corners are
        placed with the TCP's orientation."""
        ok = True
        for s in np.linspace(0.0, 1.0, self.s.path_samples):
            self.panda.set_arm(q0 + (q1 - q0) * s)
            tcp, quat = self.panda.tcp_pose()
            rot = np.array(self.c.getMatrixFromQuaternion(quat)).reshape(3, 3)
            pts = tcp + corners @ rot.T
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            over = ((obstacles[:, 0] <= hi[0]) & (lo[0] <= obstacles[:, 1])
                    & (obstacles[:, 2] <= hi[1]) & (lo[1] <= obstacles[:, 3]))
            if np.any(lo[2] < obstacles[over, 4] + self.s.low_clearance) or any(
                    self.c.getClosestPoints(self.world.robot_id, b, 0.0) for b in bodies):
                ok = False
                break
        self.panda.set_arm(self.q)
        return ok

    # ---------------------------------------------------------------- grasping
    def grasp(self, body: int, width: float) -> None:
        self.opening = width + 0.002
        self._apply(self.q, 24)
        tcp_pos, tcp_q = self.panda.tcp_pose()
        obj_pos, obj_q = self.c.getBasePositionAndOrientation(body)
        inv_p, inv_q = self.c.invertTransform(tcp_pos.tolist(), tcp_q.tolist())
        rel_p, rel_q = self.c.multiplyTransforms(inv_p, inv_q, obj_pos, obj_q)
        self.grasp_cid = self.c.createConstraint(
            self.world.robot_id, self.panda.tcp_link, body, -1, p.JOINT_FIXED, (0, 0, 0),
            rel_p, (0, 0, 0), rel_q, (0, 0, 0, 1))
        self.c.changeConstraint(self.grasp_cid, maxForce=2000.0)

    def release(self) -> None:
        if self.grasp_cid is not None:
            self.c.removeConstraint(self.grasp_cid)
            self.grasp_cid = None
        self.opening = WIDE_OPEN
        self._apply(self.q, int(round(self.s.settle_after_place_s / self.world.settings.timestep)))

    # ---------------------------------------------------------------- one step
    def pick_and_place(self, step: dict, i: int) -> None:
        problem = self.world.problem
        size = problem.items[i].size
        pick = np.asarray(step["pick"]["position"], float)
        place = np.asarray(step["place"]["position"], float)
        q_pick, q_place = step["pick"]["orientation"], step["place"]["orientation"]
        transit = self._transit_height(i, pick, place)
        width = float(size[:2].min())
        self.opening = finger_opening(problem, i)      # as verification checks the arm
        pick_down, place_down = self._descents(i, (pick, q_pick), (place, q_place), transit)
        self.move_joints(pick_down[0])
        self.follow(pick_down[1:])
        self.grasp(self.world.object_ids[i], width)
        self.follow(pick_down[::-1][1:])
        self.move_joints(place_down[0])
        self.follow(place_down[1:])
        self.release()
        self.follow(place_down[::-1][1:])

    def _descents(self, i: int, pick: tuple, place: tuple, transit: float
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Joints from the carrying height straight down to the pick and to the place
        (``(position, orientation)`` each): tracked up from the pose (found there with several IK
        seeds), followed down in reverse. The carrying height is ``transit``; where a line cannot
        reach it, the highest height both lines reach, if the moves there keep the carried object
        and the empty tool ``low_clearance`` above what they pass over and the arm off every
        object and the container (:meth:`clears`)."""
        objects = [b for j, b in enumerate(self.world.object_ids) if j != i]
        bodies = [self.world.container_id] + objects
        lines = []
        for key, (pos, quat) in (("pick", pick), ("place", place)):
            # as verification: the arm clear of the container and of every other object
            lines.append(self.vertical_line(pos, quat, transit, bodies))
            if not lines[-1]:
                raise SimulationError(f"no IK solution at the {key} pose "
                                      f"({pos[0]:.3f}, {pos[1]:.3f}, {pos[2]:.3f})")
        height = min(line[-1][0] for line in lines)
        paths = [[q for z, q in reversed(line) if z <= height + 1e-9] for line in lines]
        if height < transit - 1e-9 and not self._clear_below_transit(i, pick, paths, bodies):
            key, (pos, _) = ("pick", pick) if lines[0][-1][0] <= height else ("place", place)
            raise SimulationError(f"no IK solution above the {key} at ({pos[0]:.3f}, "
                                  f"{pos[1]:.3f}, {transit:.3f}), and at {height:.3f} m, as high "
                                  f"as the arm reaches there, the way is not clear")
        return paths[0], paths[1]

    def _clear_below_transit(self, i: int, pick: tuple, paths: list, bodies: list[int]) -> bool:
        """Whether the joint-space moves onto ``paths`` (to the top of the pick descent with the
        empty tool, then to the top of the place descent carrying object ``i``) are clear of the
        objects and walls below and keep the arm off ``bodies``."""
        problem, poses = self.world.problem, self.world.object_poses()
        pos, quat = np.asarray(pick[0], float), pick[1]
        r, hang = self.s.tool_reach, self.s.tool_hang
        tool = pos + np.array([[x, y, z] for x in (-r, r) for y in (-r, r) for z in (-hang, 0.0)])
        size = problem.items[i].size
        obstacles = self._obstacles(i, poses)
        return (self.clears(self.q, paths[0][0], _tool_frame(tool, pos, quat), obstacles, bodies)
                and self.clears(paths[0][0], paths[1][0],
                                _tool_frame(_box_corners(poses[i, :3], size, poses[i, 3]), pos,
                                            quat), obstacles, bodies))

    def _transit_height(self, i: int, pick: np.ndarray, place: np.ndarray) -> float:
        """TCP height that carries object i clear of the rim and every other object's top."""
        problem = self.world.problem
        poses = self.world.object_poses()
        tops = [poses[j, 2] + problem.items[j].size[2] / 2 for j in range(len(poses)) if j != i]
        rim = problem.container.pose[2] + problem.container.size[2]
        highest = max([rim, pick[2], place[2], *tops])
        return float(highest + problem.items[i].size[2] + self.s.clearance)

    def _obstacles(self, i: int, poses: np.ndarray) -> np.ndarray:
        """(x_min, x_max, y_min, y_max, top) rows: every object but ``i`` and the container's four
        walls (at rim height), each as its footprint's bounding box at its yaw."""
        problem = self.world.problem
        others = [j for j in range(len(poses)) if j != i]
        sizes = np.array([problem.items[j].size for j in others]).reshape(-1, 3)
        box = problem.container
        hx, hy, w = box.size[0] / 2, box.size[1] / 2, box.wall
        c, s = math.cos(box.pose[3]), math.sin(box.pose[3])
        walls = np.array([[0.0, -hy - w / 2], [0.0, hy + w / 2], [-hx - w / 2, 0.0],
                          [hx + w / 2, 0.0]]) @ np.array([[c, s], [-s, c]]) + box.pose[:2]
        centres = np.concatenate([poses[others, :2], walls])
        footprints = np.concatenate([sizes[:, :2], [[2 * hx + 2 * w, w]] * 2, [[w, 2 * hy]] * 2])
        yaws = np.concatenate([poses[others, 3], [box.pose[3]] * 4])
        tops = np.concatenate([poses[others, 2] + sizes[:, 2] / 2,
                               [box.pose[2] + box.size[2]] * 4])
        ex, ey = half_extents_xy_np(yaws, footprints)
        return np.stack([centres[:, 0] - ex, centres[:, 0] + ex, centres[:, 1] - ey,
                         centres[:, 1] + ey, tops], axis=1)

    def retreat_home(self) -> None:
        self.move_joints(np.array(HOME))


def _box_corners(centre: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    """(8, 3) world corners of an upright box."""
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    local = local * np.asarray(size, float)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return np.asarray(centre, float) + local @ rot.T


def _tool_frame(points: np.ndarray, tcp: np.ndarray, quat: Sequence[float]) -> np.ndarray:
    """World ``points`` (k, 3) in the frame of a TCP at ``tcp`` turned by ``quat``."""
    rot = np.array(p.getMatrixFromQuaternion([float(v) for v in quat])).reshape(3, 3)
    return (np.asarray(points) - tcp) @ rot
