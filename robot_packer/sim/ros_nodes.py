"""Simulated camera and executor nodes for the simulated cell (``sim.launch.py``, ``sim_cell.sh``).

* ``sim_camera``: loads a scene (``sim/scenes/<name>.yaml`` or a path), renders its labelled cloud
  with the simulated depth cameras and publishes it on ``objects/points`` (reliable +
  transient_local, once or every ``period_s``), and the scene's constraints on ``constraints``
  translated to the node's ids: item k of the scene is label k + 1, id ``obj<k+1>``.
* ``sim_executor``: executes each verified plan from ``robot_packer/plan`` with the Panda in
  PyBullet (the true scene objects), publishes the outcome on ``sim/result`` (JSON) and writes
  ``before.png`` / ``after.png`` into ``out_dir``.

``python -m robot_packer.sim.ros_nodes params SCENE OUT.yaml [name:=value ...]`` writes a packer
parameter file whose container, gripper and rules match the scene.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import rclpy
import yaml
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String

from robot_packer.problem import (Constraint, PackingProblem, Plan, SceneError, load_scene,
                                  resource_path)

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def find_scene(name: str) -> Path:
    """A scene file path, or a scene name looked up in the package's ``sim/scenes/``."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        return path
    return resource_path("sim", "scenes", name if path.suffix else name + ".yaml")


def ros_scene(problem: PackingProblem) -> PackingProblem:
    """The scene as the packer node names it: item k is ``obj<k+1>`` (its label k + 1)."""
    ids = {item.id: f"obj{k + 1}" for k, item in enumerate(problem.items)}
    items = tuple(dataclasses.replace(item, id=ids[item.id]) for item in problem.items)
    cons = [Constraint(c.name, tuple(ids.get(a, a) if (c.name != "region" or i == 0) else a
                                     for i, a in enumerate(c.args))) for c in problem.constraints]
    return dataclasses.replace(problem, items=items, constraints=tuple(cons))


def align_plan(plan: Plan, problem: PackingProblem) -> Plan:
    """The plan with each placement yaw expressed in the true object's box axes.

    Perception reports the longer footprint side as x; where the plan's (perceived) size has
    the true box's x and y swapped, the same physical placement has yaw - 90 degrees in the
    true box's axes. Steps (gripper poses) are physical and stay as they are.
    """
    placements = dict(plan.placements)
    for item in problem.items:
        if item.id not in placements or item.id not in plan.sizes:
            continue
        (px, py, _), (tx, ty, _) = plan.sizes[item.id], item.size
        if abs(px - ty) + abs(py - tx) < abs(px - tx) + abs(py - ty):
            x, y, z, yaw = placements[item.id]
            placements[item.id] = [x, y, z, (yaw - math.pi / 2 + math.pi) % (2 * math.pi) - math.pi]
    return dataclasses.replace(plan, placements=placements)


def packer_params(problem: PackingProblem, **overrides) -> dict:
    """``robot_packer`` parameters (ros__parameters) matching the scene's cell."""
    c, g, r = problem.container, problem.gripper, problem.rules
    params = {"container.size": [float(v) for v in c.size],
              "container.pose": [float(v) for v in c.pose], "container.wall": float(c.wall),
              "gripper.type": g.type, "gripper.max_opening": float(g.max_opening),
              "gripper.finger": [float(v) for v in g.finger],
              "gripper.cup_radius": float(g.cup_radius), "rules.heavy_below": r.heavy_below,
              "rules.gripper_clear": r.gripper_clear, "rules.stable": r.stable,
              "input_qos": "latched"}
    params.update(overrides)
    return params


class SimCameraNode(Node):
    """Publishes the scene's labelled cloud (world frame) and its constraints, latched."""

    def __init__(self) -> None:
        super().__init__("sim_camera")
        scene = self.declare_parameter("scene", "groceries_relations").value
        period = self.declare_parameter("period_s", 0.0).value
        seed = self.declare_parameter("seed", 0).value
        noise = self.declare_parameter("noise_std", 0.001).value
        self.frame = self.declare_parameter("frame_id", "world").value
        self.problem = ros_scene(load_scene(find_scene(scene)))
        self.pub_cloud = self.create_publisher(PointCloud2, "objects/points", LATCHED)
        self.pub_cons = self.create_publisher(String, "constraints", LATCHED)
        self.pub_cons.publish(String(data=json.dumps(
            [c.to_list() for c in self.problem.constraints])))
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.publish_cloud()
        if period > 0:
            self.create_timer(period, self.publish_cloud)

    def publish_cloud(self) -> None:
        from robot_packer import ros_io  # the message conversions (no node logic)
        from robot_packer.sim.camera import default_cameras, render_scene_cloud

        cams = default_cameras(self.problem, noise_std=self.noise)
        points, labels = render_scene_cloud(self.problem, cams, self.rng)
        self.pub_cloud.publish(ros_io.cloud_to_msg(points, labels, self.frame,
                                                   self.get_clock().now().to_msg()))
        self.get_logger().info(f"published {len(points)} points of {len(self.problem.items)} "
                               f"objects")


class SimExecutorNode(Node):
    """Executes verified plans with the simulated Panda and reports the outcome."""

    def __init__(self) -> None:
        super().__init__("sim_executor")
        scene = self.declare_parameter("scene", "groceries_relations").value
        self.out_dir = Path(self.declare_parameter("out_dir", "sim_out").value)
        self.unverified = self.declare_parameter("execute_unverified", False).value
        self.problem = ros_scene(load_scene(find_scene(scene)))
        self.pub = self.create_publisher(String, "sim/result", LATCHED)
        self.create_subscription(String, "robot_packer/plan", self.on_plan, LATCHED)

    def on_plan(self, msg: String) -> None:
        try:
            plan = Plan.from_dict(json.loads(msg.data))
        except (ValueError, SceneError) as exc:
            return self.report({"executed": False, "message": f"bad plan: {exc}"})
        if not (plan.verified or (self.unverified and plan.status == "solved")):
            return self.report({"executed": False, "plan_status": plan.status,
                                "message": f"plan not verified, not executed: {plan.message}"})
        try:
            report = self.execute(plan)
        except Exception as exc:  # a plan that does not match the scene: report it
            return self.report({"executed": False, "message": f"execution error: {exc}"})
        self.report(report)

    def execute(self, plan: Plan) -> dict:
        from robot_packer.sim.execute import execute_plan
        from robot_packer.sim.render import save_png

        rep = execute_plan(self.problem, align_plan(plan, self.problem))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, image in (("before.png", rep.before), ("after.png", rep.after)):
            if image is not None:
                save_png(self.out_dir / name, image)
        objects = {oid: {"position_error_m": round(float(e), 5),
                         "yaw_error_deg": round(float(y), 2)}
                   for oid, e, y in zip(self.problem.ids, rep.position_error, rep.yaw_error_deg)}
        return {"executed": True, **rep.summary(), "objects": objects,
                "images": [str(self.out_dir / n) for n in ("before.png", "after.png")]}

    def report(self, result: dict) -> None:
        self.pub.publish(String(data=json.dumps(result)))
        self.get_logger().info(f"result: {json.dumps(result)[:300]}")


def _spin(make, args=None) -> int:
    rclpy.init(args=args)
    try:
        node = make()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def camera_main(args=None) -> int:
    """Console script ``sim_camera``."""
    return _spin(SimCameraNode, args)


def executor_main(args=None) -> int:
    """Console script ``sim_executor``."""
    return _spin(SimExecutorNode, args)


def _write_params(argv: list[str]) -> int:
    """``params SCENE OUT.yaml [name:=value ...]`` (values parsed as YAML)."""
    scene, out, *pairs = argv
    overrides = {k: yaml.safe_load(v) for k, v in (p.split(":=", 1) for p in pairs)}
    params = packer_params(load_scene(find_scene(scene)), **overrides)
    Path(out).write_text(yaml.safe_dump({"robot_packer": {"ros__parameters": params}},
                                        default_flow_style=None, sort_keys=False))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "params":
        sys.exit(_write_params(sys.argv[2:]))
    print("usage: python -m robot_packer.sim.ros_nodes params SCENE OUT.yaml [name:=value ...]",
          file=sys.stderr)
    sys.exit(2)
