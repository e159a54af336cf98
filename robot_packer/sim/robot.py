"""The Franka Panda in a :class:`SimWorld`: joints, tool centre point, IK and collision queries.

Two end effectors, chosen by the problem's ``gripper.type``:

* ``parallel``: pybullet_data's Panda with its Franka hand. The tool centre point (TCP) is the
  URDF's ``panda_grasptarget`` link (0.105 m beyond ``panda_hand``, between the fingertips); its
  y axis is the direction in which the fingers close.
* ``suction``: the same arm with the hand and fingers removed and a :class:`SuctionTool` on the
  flange (``panda_link8``): a straight cylinder (extension tube plus bellows cup) whose tip link
  ``panda_suction_tip`` is the TCP, the cup's contact point. The tip frame is turned about z like
  the hand, so a plan's TCP orientation puts the wrist where it would with the hand.

Either TCP's z axis points along the approach. Tool poses follow DESIGN.md §6: z down, i.e. the
rotation ``Rz(psi) @ Rx(pi)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from robot_packer.sim._bullet import p

HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
TCP_LINK_NAME = "panda_grasptarget"
HAND_TO_TCP = 0.105  # m, used only when the URDF has no grasp-target link
FINGER_MAX = 0.04    # m per finger

# The suction tool: flange-to-cup-lip length of a spring-plunger extension with a bellows cup
# (Schmalz FSTE / Piab-style, 100-150 mm catalogue lengths), and how far the cup's lip bulges
# past the nominal ``cup_radius`` when it is pressed on a box. The tool is one cylinder of radius
# cup_radius + SUCTION_LIP: slimmer than the square column of side 2 cup_radius that the
# geometric gripper_clear rule keeps free, except for the lip, which the arm-collision margin
# (``IKSettings.collision_margin``) forgives. The length decides whether the wrist (panda_link7,
# about 0.1 m wide, offset from the tool axis) clears the rim of a deep container when the tool
# reaches down to a low box beside a wall: on 20 + 20 HARD known solutions at N = 8 and 12, 0.10 m
# left 29 such hits, 0.12 m 16, 0.15 m one.
SUCTION_TOOL_LENGTH = 0.15  # m
SUCTION_LIP = 0.001         # m
SUCTION_TOOL_MASS = 0.3     # kg (tube, cup, vacuum fitting)
SUCTION_TOOL_LINK = "panda_suction_tool"
SUCTION_TIP_LINK = "panda_suction_tip"
HAND_YAW_ON_FLANGE = -math.pi / 4  # rad, the Franka hand's (and the suction tip's) turn on link 8


STALL = 0.05  # an IK refinement call that brings the TCP closer by less than this share of the
#               tolerances (position and orientation) has stalled: the next calls end where it
#               did. Within tolerance the solution is accepted then, twice the tolerance away it is
#               given up (dense N = 10 plans: 382 of 517 solutions sat 1-2 mm off from the 2nd
#               of 6 calls on; every failing refinement used all 6)


@dataclass(frozen=True)
class IKSettings:
    """Acceptance of an IK solution (DESIGN: position <= 1 cm, orientation <= 5 deg)."""

    pos_tol: float = 0.01
    ang_tol_deg: float = 5.0
    refinements: int = 6
    iterations: int = 60
    collision_margin: float = 0.001  # m of penetration tolerated between arm and obstacles


@dataclass(frozen=True)
class SuctionTool:
    """A straight suction tool on the Panda flange: a cylinder along the flange's z axis.

    ``radius`` and ``length`` in metres; the tip (``length`` beyond the flange) is the TCP.
    """

    radius: float
    length: float = SUCTION_TOOL_LENGTH

    @classmethod
    def for_cup(cls, cup_radius: float) -> "SuctionTool":
        """The tool for a cup of ``cup_radius`` m: that radius plus the lip's bulge."""
        return cls(radius=float(cup_radius) + SUCTION_LIP)


def suction_panda_urdf(panda_urdf: str, mesh_dir: str, tool: SuctionTool) -> str:
    """URDF text of the Panda arm with ``tool`` on its flange instead of the Franka hand.

    Args:
        panda_urdf: text of pybullet_data's ``franka_panda/panda.urdf`` (arm + hand).
        mesh_dir: absolute folder of its meshes; the text may then be loaded from any folder.
        tool: the suction tool.

    Everything after the flange link (``panda_link8``: hand, fingers, grasp target) is cut and
    replaced by two fixed links: the tool cylinder and its massless tip (the TCP).
    """
    cut = panda_urdf.find('<joint name="panda_hand_joint"')
    if cut < 0:
        raise ValueError("panda_urdf: no panda_hand_joint to replace by the suction tool")
    arm = panda_urdf[:cut].replace('filename="package://meshes/',
                                   f'filename="{mesh_dir.rstrip("/")}/')
    r, h, half = tool.radius, tool.length, tool.length / 2
    inertia = SUCTION_TOOL_MASS * (3 * r * r + h * h) / 12  # solid cylinder about a diameter
    axial = SUCTION_TOOL_MASS * r * r / 2
    shape = f'<geometry><cylinder radius="{r:.6f}" length="{h:.6f}"/></geometry>'
    return arm + f"""
  <joint name="panda_suction_tool_joint" type="fixed">
    <parent link="panda_link8"/>
    <child link="{SUCTION_TOOL_LINK}"/>
    <origin rpy="0 0 {HAND_YAW_ON_FLANGE:.12f}" xyz="0 0 0"/>
  </joint>
  <link name="{SUCTION_TOOL_LINK}">
    <inertial>
      <origin rpy="0 0 0" xyz="0 0 {half:.6f}"/>
      <mass value="{SUCTION_TOOL_MASS}"/>
      <inertia ixx="{inertia:.8f}" ixy="0" ixz="0" iyy="{inertia:.8f}" iyz="0"
               izz="{axial:.8f}"/>
    </inertial>
    <visual>
      <origin rpy="0 0 0" xyz="0 0 {half:.6f}"/>
      {shape}
      <material name="suction_grey"><color rgba="0.3 0.3 0.33 1"/></material>
    </visual>
    <collision>
      <origin rpy="0 0 0" xyz="0 0 {half:.6f}"/>
      {shape}
    </collision>
  </link>
  <joint name="panda_suction_tip_joint" type="fixed">
    <parent link="{SUCTION_TOOL_LINK}"/>
    <child link="{SUCTION_TIP_LINK}"/>
    <origin rpy="0 0 0" xyz="0 0 {h:.6f}"/>
  </joint>
  <link name="{SUCTION_TIP_LINK}">
    <inertial>
      <origin rpy="0 0 0" xyz="0 0 0"/>
      <mass value="0.0"/>
      <inertia ixx="0.0" ixy="0" ixz="0" iyy="0.0" iyz="0" izz="0.0"/>
    </inertial>
  </link>
</robot>
"""


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


def turn_about_z(q: Sequence[float], angle: float) -> tuple[float, float, float, float]:
    """``q`` followed by a turn of ``angle`` rad about its own z axis."""
    x, y, z, w = q  # q * (0, 0, sin(angle / 2), cos(angle / 2))
    s, c = math.sin(angle / 2), math.cos(angle / 2)
    return (x * c + y * s, y * c - x * s, z * c + w * s, w * c - z * s)


class Panda:
    """Joint-level access to a loaded Panda body in ``client`` (hand or suction tool).

    ``tool`` is ``"suction"`` when the body carries the suction tool (then ``fingers`` is empty
    and finger commands do nothing), else ``"parallel"``.
    """

    def __init__(self, client, body: int) -> None:
        self.client, self.body = client, body
        info = [client.getJointInfo(body, j) for j in range(client.getNumJoints(body))]
        names = {i[12].decode(): i[0] for i in info}
        self.movable = [i[0] for i in info if i[2] != p.JOINT_FIXED]
        self.arm = self.movable[:7]
        self.fingers = self.movable[7:9]
        self.lower = np.array([info[j][8] for j in self.movable])
        self.upper = np.array([info[j][9] for j in self.movable])
        self.tool = "suction" if SUCTION_TIP_LINK in names else "parallel"
        if self.tool == "suction":
            self.tcp_link, self.tcp_offset = names[SUCTION_TIP_LINK], 0.0
        else:
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
        """Open the fingers to a total gap of ``opening`` m (clipped; no-op for suction)."""
        half = float(np.clip(opening / 2, 0.0, FINGER_MAX))
        for j in self.fingers:
            self.client.resetJointState(self.body, j, half, 0.0)

    def hold(self, q: Sequence[float], opening: float | None = None, force: float = 500.0) -> None:
        """Position-control targets so the stepped arm stays at ``q``."""
        self.client.setJointMotorControlArray(self.body, self.arm, p.POSITION_CONTROL,
                                              targetPositions=list(map(float, q)),
                                              forces=[force] * 7)
        if opening is not None and self.fingers:
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

    def held_turn(self, quat: Sequence[float]) -> tuple[float, float, float, float]:
        """``quat`` or its half turn about the tool axis, whichever the TCP holds now (after
        :meth:`solve_ik`, which may have reached either: the one to keep along a straight line)."""
        _, held = self.tcp_pose()
        flipped = flip_about_z(quat)
        return tuple(quat) if quat_angle(held, quat) <= quat_angle(held, flipped) else flipped

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
                 settings: IKSettings = IKSettings(), max_seeds: int | None = None,
                 flip: bool = True, accept: Callable[[], bool] | None = None,
                 start: Sequence[float] | None = None) -> np.ndarray | None:
        """Joint angles (7,) that put the TCP at ``pos``/``quat`` within tolerance, or None.

        Tries the given orientation and (``flip``) then its half turn about the tool z axis (the
        parallel gripper is symmetric; turned by a suction cup, a box looks the same after a half
        turn), from several seeds, refining each by repeated calls of Bullet's damped null-space
        IK; a solution must lie within the joint limits and, with ``accept``, pass it (called
        with the arm at the solution: e.g. the arm clear of the container, where another seed
        may bend the elbow the other way). ``start``: joints near the answer (the solution a few
        centimetres below on the same straight line, or at a nearby pose), the first seed
        for each orientation: from there the IK converges in a call or two instead of six from
        the default seeds, and the arm keeps that solution's branch. Leaves the arm at the
        solution (or at the last attempt).
        """
        seeds = self.seeds(pos)[:max_seeds]
        if start is not None:
            seeds.insert(0, np.clip(np.asarray(start, float), self.lower[:7], self.upper[:7]))
        goals = (tuple(quat), flip_about_z(quat)) if flip else (tuple(quat),)
        for q_goal in goals:
            for seed in seeds:
                q = self.refine(seed, pos, q_goal, settings)
                if q is not None and (accept is None or accept()):
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
        rest = [float(v) for v in seed] + [FINGER_MAX] * len(self.fingers)
        last = (math.inf, math.inf)
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
            stalled = (last[0] - pe < STALL * settings.pos_tol
                       and last[1] - ae < STALL * tol_ang)
            if stalled and (pe <= settings.pos_tol and ae <= tol_ang
                            or pe > 2 * settings.pos_tol or ae > 2 * tol_ang):
                break            # more calls would end where this one did: decided now
            last = (pe, ae)
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
