"""A PyBullet cell built from a :class:`PackingProblem` (DESIGN.md §3 frames).

World frame: z up, the table top at z = 0, the Panda's base at the origin. The container is an
open box whose floor plate lies just below the container frame origin, with four walls of
``container.wall`` thickness reaching ``size[2]`` above the floor. Objects are boxes (or, for
camera scenes, their true meshes scaled to the box) with their masses and friction ``TOL.friction``.
Every world owns one private DIRECT client and closes it (use it as a context manager).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from robot_packer.constraints import TOL
from robot_packer.problem import PackingProblem
from robot_packer.sim._bullet import data_path, new_client, p
from robot_packer.sim.robot import Panda, SuctionTool, quat_angle  # noqa: F401 (re-exported)
from robot_packer.sim.robot import suction_panda_urdf

PANDA_URDF = "franka_panda/panda.urdf"
MIN_PLATE = 0.005  # m, physical thickness used for a container wall given as 0

# Object colours (RGBA), cycled in item order; muted, distinguishable, printable.
PALETTE = ((0.89, 0.35, 0.27, 1), (0.25, 0.55, 0.85, 1), (0.98, 0.75, 0.25, 1),
           (0.35, 0.72, 0.45, 1), (0.62, 0.45, 0.78, 1), (0.95, 0.55, 0.70, 1),
           (0.40, 0.78, 0.80, 1), (0.70, 0.55, 0.35, 1), (0.55, 0.60, 0.25, 1),
           (0.90, 0.50, 0.15, 1))
TABLE_RGBA = (0.80, 0.74, 0.64, 1)
CONTAINER_RGBA = (0.45, 0.47, 0.52, 1)


@dataclass(frozen=True)
class SimSettings:
    """Physics settings of a cell. ``timestep`` s; ``table`` = (x_min, x_max, y_min, y_max)."""

    timestep: float = 1.0 / 240.0
    solver_iterations: int = 20
    gravity: float = -9.81
    friction: float = TOL.friction
    table: tuple[float, float, float, float] = (-0.35, 1.05, -0.80, 0.80)
    table_thickness: float = 0.04


def yaw_quat(yaw: float) -> tuple[float, float, float, float]:
    """Quaternion (x, y, z, w) of a rotation by ``yaw`` about z."""
    return (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def quat_yaw(q: Sequence[float]) -> float:
    """Yaw (rad) of the body's x axis projected on the xy plane."""
    x, y, z, w = q
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


class SimWorld:
    """Table, container, objects and (optionally) a fixed-base Franka Panda in one DIRECT client.

    The Panda carries the problem's gripper: the Franka hand for ``parallel``, a
    :class:`~robot_packer.sim.robot.SuctionTool` on the flange for ``suction``.

    Args:
        problem: the packing problem (container, items with sizes, masses, current poses).
        poses: (n, 4) object poses ``[x, y, z, yaw]``; default: every item's current world pose.
        frame: ``"world"`` or ``"container"``, the frame of ``poses``.
        robot: load the Panda with the problem's gripper (base at the origin, home
            configuration).
        visuals: load visual shapes (needed for rendering; off is faster for verification).
        meshes: use each item's ``mesh`` file (scaled to its box) where given.
        settings: physics settings.
    """

    def __init__(self, problem: PackingProblem, poses: np.ndarray | None = None, *,
                 frame: str = "world", robot: bool = True, visuals: bool = True,
                 meshes: bool = False, settings: SimSettings = SimSettings()) -> None:
        self.problem = problem
        self.settings = settings
        self.visuals = visuals
        if poses is None:
            missing = [it.id for it in problem.items if it.pose is None]
            if missing:
                raise ValueError(f"objects {missing}: no current world pose to place them at")
            poses, frame = np.array([it.pose for it in problem.items]), "world"
        self.client = new_client()
        try:
            c = self.client
            c.setGravity(0, 0, settings.gravity)
            c.setPhysicsEngineParameter(fixedTimeStep=settings.timestep,
                                        numSolverIterations=settings.solver_iterations,
                                        deterministicOverlappingPairs=1)
            self.table_id = self._add_table()
            self.container_id = self._add_container()
            self.object_ids = tuple(self._add_object(k, meshes) for k in range(len(problem.items)))
            self.set_object_poses(poses, frame)
            self.robot_id = self.add_robot() if robot else None
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ building
    def _box(self, half: Sequence[float], pos, rgba, mass: float = 0.0, yaw: float = 0.0) -> int:
        c = self.client
        col = c.createCollisionShape(p.GEOM_BOX, halfExtents=list(half))
        vis = (c.createVisualShape(p.GEOM_BOX, halfExtents=list(half), rgbaColor=list(rgba))
               if self.visuals else -1)
        body = c.createMultiBody(mass, col, vis, list(pos), yaw_quat(yaw))
        c.changeDynamics(body, -1, lateralFriction=self.settings.friction)
        return body

    def _add_table(self) -> int:
        x0, x1, y0, y1 = self.settings.table
        t = self.settings.table_thickness
        return self._box(((x1 - x0) / 2, (y1 - y0) / 2, t / 2),
                         ((x0 + x1) / 2, (y0 + y1) / 2, -t / 2), TABLE_RGBA)

    def _add_container(self) -> int:
        """One static body: floor plate below the frame origin and four walls."""
        cont = self.problem.container
        L, W, H = (float(v) for v in cont.size)
        t = max(cont.wall, MIN_PLATE)
        parts = [((L / 2 + t, W / 2 + t, t / 2), (0, 0, -t / 2))]
        zc, hz = (H - t) / 2, (H + t) / 2
        for s in (-1, 1):
            parts.append(((t / 2, W / 2 + t, hz), (s * (L / 2 + t / 2), 0, zc)))
            parts.append(((L / 2, t / 2, hz), (0, s * (W / 2 + t / 2), zc)))
        c = self.client
        halves, offsets = [h for h, _ in parts], [o for _, o in parts]
        col = c.createCollisionShapeArray([p.GEOM_BOX] * 5, halfExtents=halves,
                                          collisionFramePositions=offsets)
        vis = -1
        if self.visuals:  # the floor's visual is lifted 0.5 mm so it does not z-fight the table
            voff = [(o[0], o[1], o[2] + (0.0005 if k == 0 else 0.0)) for k, o in enumerate(offsets)]
            vis = c.createVisualShapeArray([p.GEOM_BOX] * 5, halfExtents=halves,
                                           visualFramePositions=voff,
                                           rgbaColors=[CONTAINER_RGBA] * 5)
        x, y, z, yaw = (float(v) for v in cont.pose)
        body = c.createMultiBody(0.0, col, vis, (x, y, z), yaw_quat(yaw))
        c.changeDynamics(body, -1, lateralFriction=self.settings.friction)
        return body

    def _add_object(self, k: int, meshes: bool) -> int:
        item = self.problem.items[k]
        half = [float(v) / 2 for v in item.size]
        rgba = PALETTE[k % len(PALETTE)]
        if not (meshes and item.mesh):
            return self._box(half, (0, 0, -10 - k), rgba, mass=float(item.mass))
        c = self.client
        centre, scale = _mesh_fit(item.mesh, item.size)
        kw = dict(fileName=str(item.mesh), meshScale=scale)
        col = c.createCollisionShape(p.GEOM_MESH, collisionFramePosition=centre, **kw)
        vis = (c.createVisualShape(p.GEOM_MESH, visualFramePosition=centre, rgbaColor=rgba, **kw)
               if self.visuals else -1)
        body = c.createMultiBody(float(item.mass), col, vis, (0, 0, -10 - k))
        c.changeDynamics(body, -1, lateralFriction=self.settings.friction)
        return body

    def add_robot(self, tool: str | None = None) -> int:
        """Load the Panda with its base at the world origin (fixed) in the home configuration.

        Args:
            tool: its end effector, ``"parallel"`` (the Franka hand) or ``"suction"`` (the arm
                with a suction tool of the problem's ``cup_radius`` instead of the hand; its
                URDF is written to a temporary folder, loaded, and removed). Default: the
                problem's ``gripper.type``.
        """
        flags = 0 if self.visuals else p.URDF_IGNORE_VISUAL_SHAPES
        gripper = self.problem.gripper
        tool = gripper.type if tool is None else tool
        if tool not in ("parallel", "suction"):
            raise ValueError(f"tool: must be 'parallel' or 'suction', got {tool!r}")
        if tool == "suction":
            text = suction_panda_urdf(Path(data_path(PANDA_URDF)).read_text(),
                                      str(Path(data_path(PANDA_URDF)).parent / "meshes"),
                                      SuctionTool.for_cup(gripper.cup_radius))
            with tempfile.TemporaryDirectory(prefix="robot_packer_suction_") as folder:
                urdf = Path(folder) / "panda_suction.urdf"
                urdf.write_text(text)
                self.robot_id = self.client.loadURDF(str(urdf), (0, 0, 0), useFixedBase=True,
                                                     flags=flags | p.URDF_USE_IMPLICIT_CYLINDER)
        else:
            self.robot_id = self.client.loadURDF(data_path(PANDA_URDF), (0, 0, 0),
                                                 useFixedBase=True, flags=flags)
        Panda(self.client, self.robot_id).home()
        return self.robot_id

    # ------------------------------------------------------------------ state
    def labels_by_body(self) -> dict[int, int]:
        """Segmentation labels: object k -> k + 1; every other body is background (0)."""
        return {body: k + 1 for k, body in enumerate(self.object_ids)}

    def set_object_poses(self, poses: np.ndarray, frame: str = "world") -> None:
        """Teleport objects to ``poses`` (n, 4) in ``frame`` ('world' or 'container'), at rest."""
        poses = np.asarray(poses, dtype=np.float64)
        if poses.shape != (len(self.object_ids), 4):
            raise ValueError(f"poses: expected ({len(self.object_ids)}, 4), got {poses.shape}")
        if frame == "container":
            poses = self.problem.container.to_world(poses)
        elif frame != "world":
            raise ValueError(f"frame: must be 'world' or 'container', got {frame!r}")
        for body, pose in zip(self.object_ids, poses):
            self.set_object_pose(body, pose)

    def set_object_pose(self, body: int, pose: Sequence[float]) -> None:
        """Teleport one body to a world pose ``[x, y, z, yaw]``, at rest."""
        x, y, z, yaw = (float(v) for v in pose)
        self.client.resetBasePositionAndOrientation(body, (x, y, z), yaw_quat(yaw))
        self.client.resetBaseVelocity(body, (0, 0, 0), (0, 0, 0))

    def object_poses(self, frame: str = "world") -> np.ndarray:
        """(n, 4) float64 current object poses ``[x, y, z, yaw]`` in ``frame``."""
        out = np.array([[*pos, quat_yaw(q)] for pos, q in map(
            self.client.getBasePositionAndOrientation, self.object_ids)], dtype=np.float64)
        out = out.reshape(-1, 4)
        return self.problem.container.from_world(out) if frame == "container" else out

    def object_quaternions(self) -> np.ndarray:
        """(n, 4) float64 object orientations (x, y, z, w), world frame."""
        return np.array([self.client.getBasePositionAndOrientation(b)[1] for b in self.object_ids],
                        dtype=np.float64).reshape(-1, 4)

    def step(self, seconds: float) -> None:
        """Advance the physics by ``seconds`` (rounded to whole timesteps)."""
        for _ in range(int(round(seconds / self.settings.timestep))):
            self.client.stepSimulation()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Disconnect the client (idempotent)."""
        if getattr(self, "client", None) is not None:
            try:
                self.client.disconnect()
            except Exception:  # already disconnected
                pass
            self.client = None

    def __enter__(self) -> "SimWorld":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mesh_fit(path: str, size: np.ndarray) -> tuple[list[float], list[float]]:
    """Frame offset and per-axis scale that fit an OBJ mesh's bounding box to ``size``, centred."""
    verts = []
    with open(Path(path)) as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(v) for v in line.split()[1:4]])
    if not verts:
        raise ValueError(f"mesh {path}: no vertices")
    v = np.array(verts)
    lo, hi = v.min(0), v.max(0)
    scale = np.asarray(size, float) / np.maximum(hi - lo, 1e-9)
    centre = -(lo + hi) / 2 * scale
    return centre.tolist(), scale.tolist()
