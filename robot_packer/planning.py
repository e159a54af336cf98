"""Placements -> ordered pick-and-place steps (DESIGN.md §6).

Gripper poses are the tool centre point (TCP) in the world frame with the tool z axis pointing
down along the approach: orientation = Rz(psi) · Rx(pi). For a parallel gripper the fingers close
along the tool y axis, which is turned across the object's narrower horizontal side.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from robot_packer import constraints as C
from robot_packer.problem import PackingProblem

APPROACH_DISTANCE = 0.10  # m, straight-line descent to the pick/place pose
RETREAT_DISTANCE = 0.10   # m, straight-line lift after grasp/release


def gripper_yaw(object_yaw: float, size: np.ndarray) -> float:
    """Tool yaw psi so the closing axis (tool y) lies across the narrower side, wrapped to ±pi/2."""
    narrow_yaw = object_yaw if size[0] <= size[1] else object_yaw + math.pi / 2
    psi = narrow_yaw + math.pi / 2   # tool y = (sin psi, -cos psi) is parallel to the narrow axis
    return (psi + math.pi / 2) % math.pi - math.pi / 2


def down_quaternion(psi: float) -> list[float]:
    """[qx, qy, qz, qw] of Rz(psi) · Rx(pi): tool z pointing down, yawed by psi."""
    return [math.cos(psi / 2), math.sin(psi / 2), 0.0, 0.0]


def tcp_pose(world_pose: np.ndarray, size: np.ndarray) -> dict:
    """Pose message dict of the TCP at the top centre of a box at ``world_pose``."""
    x, y, z, yaw = (float(v) for v in world_pose)
    return {"position": [round(x, 6), round(y, 6), round(z + float(size[2]) / 2, 6)],
            "orientation": [round(q, 9) for q in down_quaternion(gripper_yaw(yaw, size))]}


def make_steps(problem: PackingProblem, poses: np.ndarray,
               order: Sequence[int] | None = None) -> list[dict]:
    """Ordered steps for placements ``poses`` (n, 4), container frame.

    ``order`` defaults to :func:`robot_packer.constraints.placement_order` (supports first, then
    an order that keeps the fingers clear of what is already placed).
    """
    poses = np.asarray(poses, dtype=np.float64)
    if order is None:
        order = C.placement_order(problem, poses)
    steps = []
    for i in order:
        item = problem.items[i]
        if item.pose is None:
            raise ValueError(f"object {item.id}: no current pose, cannot plan its pick")
        place_world = problem.container.to_world(poses[i])
        steps.append({
            "object": item.id,
            "pick": tcp_pose(item.pose, item.size),
            "place": tcp_pose(place_world, item.size),
            "approach": [0.0, 0.0, -1.0],
            "approach_distance": APPROACH_DISTANCE,
            "retreat_distance": RETREAT_DISTANCE,
        })
    return steps


def step_order(problem: PackingProblem, steps: Sequence[dict]) -> list[int]:
    """Object indices in the order of a plan's steps."""
    return [problem.index(s["object"]) for s in steps]
