"""The Franka Panda in a :class:`SimWorld`: joints, tool centre point, IK and collision queries.

The tool centre point (TCP) is the URDF's ``panda_grasptarget`` link (0.105 m beyond
``panda_hand``, between the fingertips); its z axis points along the approach and its y axis is
the direction in which the fingers close. Tool poses follow DESIGN.md §6: z down, i.e. the
rotation ``Rz(psi) @ Rx(pi)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from robot_packer.sim._bullet import p

HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
TCP_LINK_NAME = "panda_grasptarget"
HAND_TO_TCP = 0.105  # m, used only when the URDF has no grasp-target link
FINGER_MAX = 0.04    # m per finger


@dataclass(frozen=True)
class IKSettings:
    """Acceptance of an IK solution (DESIGN: position <= 1 cm, orientation <= 5 deg)."""

    pos_tol: float = 0.01
    ang_tol_deg: float = 5.0
    refinements: int = 6
    iterations: int = 60
    collision_margin: float = 0.001  # m of penetration tolerated between arm and obstacles


def tool_quat(psi: float) -> tuple[float, float, float, float]:
    """Quaternion (x, y, z, w) of ``Rz(psi) @ Rx(pi)``: tool z down, tool x at angle psi."""
    return (math.cos(psi / 2), math.sin(psi / 2), 0.0, 0.0)


def quat_angle(q1: Sequence[float], q2: Sequence[float]) -> float:
    """Rotation angle (rad, in [0, pi]) between two unit quaternions (x, y, z, w)."""
    d = abs(float(np.dot(np.asarray(q1, float), np.asarray(q2, float))))
    return 2.0 * math.acos(min(1.0, d))


def flip_about_z(q: Sequence[float]) -> tuple[float, float, float, float]:
    """``q`` followed by a half turn about its own z axis (a parallel gripper's symmetry)."""
    x, y, z, w = q  # q * (0, 0, 1, 0)
    return (y, -x, w, -z)


class Panda:
    """Joint-level access to a loaded Panda body in ``client``."""

    def __init__(self, client, body: int) -> None:
        self.client, self.body = client, body
        info = [client.getJointInfo(body, j) for j in range(client.getNumJoints(body))]
        names = {i[12].decode(): i[0] for i in info}
        self.movable = [i[0] for i in info if i[2] != p.JOINT_FIXED]
        self.arm = self.movable[:7]
        self.fingers = self.movable[7:9]
        self.lower = np.array([info[j][8] for j in self.movable])
        self.upper = np.array([info[j][9] for j in self.movable])
        self.tcp_link = names.get(TCP_LINK_NAME, names.get("panda_hand"))
        self.tcp_offset = 0.0 if TCP_LINK_NAME in names else HAND_TO_TCP
        self._link_names = {i[0]: i[12].decode() for i in info}

    def link_name(self, link: int) -> str:
        """URDF name of a link index (-1 is the base)."""
        return self._link_names.get(link, "panda_link0")

    # ------------------------------------------------------------------ state
    def set_arm(self, q: Sequence[float]) -> None:
        """Teleport the 7 arm joints to ``q`` (rad), at rest."""
        for j, v in zip(self.arm, q):
            self.client.resetJointState(self.body, j, float(v), 0.0)

    def arm_q(self) -> np.ndarray:
        """(7,) current arm joint angles (rad)."""
        return np.array([self.client.getJointState(self.body, j)[0] for j in self.arm])

    def set_fingers(self, opening: float) -> None:
        """Open the fingers to a total gap of ``opening`` m (clipped to the hand's range)."""
        half = float(np.clip(opening / 2, 0.0, FINGER_MAX))
        for j in self.fingers:
            self.client.resetJointState(self.body, j, half, 0.0)

    def hold(self, q: Sequence[float], opening: float | None = None, force: float = 500.0) -> None:
        """Position-control targets so the stepped arm stays at ``q``."""
        self.client.setJointMotorControlArray(self.body, self.arm, p.POSITION_CONTROL,
                                              targetPositions=list(map(float, q)),
                                              forces=[force] * 7)
        if opening is not None:
            half = float(np.clip(opening / 2, 0.0, FINGER_MAX))
            self.client.setJointMotorControlArray(self.body, self.fingers, p.POSITION_CONTROL,
                                                  targetPositions=[half, half], forces=[50.0] * 2)

    def home(self) -> None:
        """Ready pose, fingers open, motors holding it."""
        self.set_arm(HOME)
        self.set_fingers(2 * FINGER_MAX)
        self.hold(HOME, 2 * FINGER_MAX)

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """TCP position (3,) and quaternion (4,) in the world frame for the current joints."""
        st = self.client.getLinkState(self.body, self.tcp_link, computeForwardKinematics=True)
        pos, quat = np.array(st[4]), np.array(st[5])
        if self.tcp_offset:
            rot = np.array(self.client.getMatrixFromQuaternion(quat)).reshape(3, 3)
            pos = pos + rot[:, 2] * self.tcp_offset
        return pos, quat

    def within_limits(self, q: Sequence[float], eps: float = 1e-6) -> bool:
        """Whether arm joints ``q`` lie within the URDF limits."""
        q = np.asarray(q)
        return bool(np.all(q >= self.lower[:7] - eps) and np.all(q <= self.upper[:7] + eps))

    # ------------------------------------------------------------------ inverse kinematics
    def seeds(self, target: Sequence[float]) -> list[np.ndarray]:
        """Deterministic IK starts: home turned toward the target, and elbow/wrist variants."""
        base = math.atan2(target[1], target[0])
        out = []
        for q2, q4 in ((0.3, -2.0), (-0.2, -2.4), (0.8, -1.4)):
            for q7 in (0.785, -0.785, 2.35):
                out.append(np.array([base, q2, 0.0, q4, 0.0, q2 - q4, q7]))
        out.insert(0, np.array(HOME))
        return [np.clip(s, self.lower[:7], self.upper[:7]) for s in out]

    def solve_ik(self, pos: Sequence[float], quat: Sequence[float],
                 settings: IKSettings = IKSettings(), max_seeds: int | None = None
                 ) -> np.ndarray | None:
        """Joint angles (7,) that put the TCP at ``pos``/``quat`` within tolerance, or None.

        Tries the given orientation and its half turn about the tool z axis (the parallel
        gripper is symmetric), from several seeds, refining each by repeated calls of Bullet's
        damped null-space IK; a solution must lie within the joint limits. Leaves the arm at the
        solution (or at the last attempt).
        """
        seeds = self.seeds(pos)[:max_seeds]
        for q_goal in (tuple(quat), flip_about_z(quat)):
            for seed in seeds:
                q = self.refine(seed, pos, q_goal, settings)
                if q is not None:
                    return q
        return None

    def refine(self, seed: Sequence[float], pos: Sequence[float], quat: Sequence[float],
               settings: IKSettings = IKSettings()) -> np.ndarray | None:
        """IK from one seed: joints within limits reaching the pose within tolerance, or None."""
        target = [float(v) for v in pos]
        lo, hi = self.lower.tolist(), self.upper.tolist()
        ranges = (self.upper - self.lower).tolist()
        self.set_arm(seed)
        tol_ang = math.radians(settings.ang_tol_deg)
        rest = [float(v) for v in seed] + [FINGER_MAX, FINGER_MAX]
        for _ in range(settings.refinements):
            sol = self.client.calculateInverseKinematics(
                self.body, self.tcp_link, target, list(quat), lowerLimits=lo, upperLimits=hi,
                jointRanges=ranges, restPoses=rest, maxNumIterations=settings.iterations,
                residualThreshold=1e-5)
            q = np.clip(np.array(sol[:7]), self.lower[:7], self.upper[:7])
            self.set_arm(q)
            pe, ae = self.pose_error(target, quat)
            if pe <= 0.1 * settings.pos_tol and ae <= 0.1 * tol_ang:
                return q
        return q if pe <= settings.pos_tol and ae <= tol_ang else None

    def pose_error(self, pos: Sequence[float], quat: Sequence[float]) -> tuple[float, float]:
        """(position error m, orientation error rad) of the current TCP against a target."""
        cur_p, cur_q = self.tcp_pose()
        return float(np.linalg.norm(cur_p - np.asarray(pos))), quat_angle(cur_q, quat)

    # ------------------------------------------------------------------ collisions
    def contacts(self, bodies: Iterable[int], margin: float = 0.001
                 ) -> list[tuple[int, int, float]]:
        """(body, robot link, distance) for every robot link penetrating a body by > margin."""
        hits = []
        for b in bodies:
            for cp in self.client.getClosestPoints(self.body, b, 0.0):
                if cp[8] < -margin:
                    hits.append((b, cp[3], float(cp[8])))
        return hits
