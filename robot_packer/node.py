"""The ``robot_packer`` ROS 2 node: a thin adapter around perception -> solve -> publish (§7).

Solving runs on one worker thread, never on the executor, so ``~/status``, ``/diagnostics`` and
the services stay responsive. The latest cloud wins: a cloud arriving mid-solve is kept and
solved next, older unsolved clouds are dropped. Object ids are ``obj<label>``.
Run pip-only as ``packer_node --ros-args --params-file launch/packer.yaml``.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import replace

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import String
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from robot_packer import ros_io
from robot_packer.problem import Plan
from robot_packer.solver import make_solver, resolve_device, solve

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
INPUT_QOS = {"sensor_data": QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
             "reliable": QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE),
             "latched": LATCHED}


def descriptor(spec: ros_io.ParamSpec) -> ParameterDescriptor:
    """ParameterDescriptor with the description and, for numbers, the allowed range."""
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.range is not None and isinstance(spec.default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                     to_value=float(spec.range[1]))]
    elif spec.range is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]))]
    return d


def reported_state(plan: Plan, verify: bool) -> str:
    """The node's ``state`` for a finished solve: ``solved`` for a verified plan, or for an
    exactly solved one when verification is switched off; ``failed`` otherwise (a plan whose
    budget ran out before its simulation check is not reported as solved)."""
    return "solved" if plan.verified or (plan.status == "solved" and not verify) else "failed"


class PackerNode(Node):
    """Subscribes a labelled cloud and constraints; publishes the plan and pick/place goals."""

    def __init__(self, **kwargs) -> None:
        super().__init__("robot_packer", **kwargs)
        for spec in ros_io.PARAMETERS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        self.settings = ros_io.settings_from_params(self._values({}))  # ValueError: fatal
        self.device = str(resolve_device(self.settings.solver.device))  # cuda without CUDA: fatal
        config = self.settings.solver
        if config.solver == "portfolio":  # its workers must not be forks of this process, which
            config = replace(config, options={  # runs DDS threads (a fork may deadlock)
                **config.options, "start_method": "forkserver"})
        self.solver = make_solver(config)  # models load once, here
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._cv = threading.Condition()
        self._cloud, self._constraints, self._pending, self._waiters = None, None, False, []
        self._generation, self._stop, self._counts = 0, False, {"received": 0, "dropped": 0}
        self._state, self._last = ("idle", "waiting for a cloud on objects/points"), {}
        self.pub_plan = self.create_publisher(String, "~/plan", LATCHED)
        self.pub_pick = self.create_publisher(PoseArray, "~/pick_poses", 10)
        self.pub_place = self.create_publisher(PoseArray, "~/place_poses", 10)
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", LATCHED)
        self.pub_status = self.create_publisher(String, "~/status", LATCHED)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(PointCloud2, "objects/points", self._on_cloud,
                                 INPUT_QOS[self.settings.input_qos])
        self.create_subscription(String, "constraints", self._on_constraints, LATCHED)
        group = ReentrantCallbackGroup()
        self.create_service(Trigger, "~/solve", self._srv_solve, callback_group=group)
        self.create_service(Trigger, "~/clear", self._srv_clear, callback_group=group)
        self.create_timer(1.0, self._publish_diagnostics)
        self._set_state(*self._state)
        self._worker = threading.Thread(target=self._work, name="packer-solver", daemon=True)
        self._worker.start()

    # -------------------------------------------------------------- parameters
    def _values(self, changed: dict) -> dict:
        return {p.name: changed.get(p.name, self.get_parameter(p.name).value)
                for p in ros_io.PARAMETERS}

    def _on_set_parameters(self, params) -> SetParametersResult:
        try:
            new = ros_io.settings_from_params(self._values({p.name: p.value for p in params}))
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.settings = new  # read at the start of every solve
        return SetParametersResult(successful=True)

    # -------------------------------------------------------------- inputs
    def _on_cloud(self, msg: PointCloud2) -> None:
        with self._cv:
            self._counts["received"] += 1
            self._counts["dropped"] += self._cloud is not None and self._pending
            self._cloud = msg
            self._pending = self._pending or self.settings.auto_solve
            self._cv.notify()

    def _on_constraints(self, msg: String) -> None:
        with self._cv:
            self._constraints = msg.data
            self._pending = self._pending or (self.settings.auto_solve and self._cloud is not None)
            self._cv.notify()

    def _srv_solve(self, _req, resp):
        done = {"event": threading.Event()}
        with self._cv:
            if self._cloud is None:
                resp.success, resp.message = False, "no cloud received on objects/points yet"
                return resp
            self._waiters.append(done)
            self._pending = True
            self._cv.notify()
        if not done["event"].wait(self.settings.solver.time_budget_s + 120.0):
            resp.success, resp.message = False, "timed out waiting for the solver"
            return resp
        resp.success, resp.message = done["ok"], done["message"]
        return resp

    def _srv_clear(self, _req, resp):
        with self._cv:
            self._cloud, self._pending, self._generation = None, False, self._generation + 1
            waiters, self._waiters = self._waiters, []
        for w in waiters:  # ~/solve calls still queued: answer them
            w.update(ok=False, message="cleared before the solve started")
            w["event"].set()
        self.pub_markers.publish(MarkerArray(markers=[Marker(action=Marker.DELETEALL)]))
        self._set_state("idle", "cleared; waiting for a cloud on objects/points")
        resp.success, resp.message = True, json.dumps({"state": "idle", "message": "cleared"})
        return resp

    # -------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or self._pending)
                if self._stop:
                    return
                waiting = bool(self._waiters)
            if not waiting:
                time.sleep(self.settings.debounce_s)  # auto_solve: let a burst settle
            with self._cv:
                if not self._pending or self._cloud is None:
                    self._pending = False
                    continue
                msg, constraints, generation = self._cloud, self._constraints, self._generation
                waiters, self._waiters, self._pending = self._waiters, [], False
            try:
                ok, message = self._solve_once(msg, constraints, generation)
            except Exception as exc:  # never let the worker die: report and wait for input
                self.get_logger().error(f"solve failed: {exc!r}")
                ok, message = self._finish(generation, "failed", f"internal error: {exc!r}")
            for w in waiters:
                w.update(ok=ok, message=message)
                w["event"].set()

    def _solve_once(self, msg, constraints, generation) -> tuple[bool, str]:
        s = self.settings
        self._set_state("solving", f"cloud of {msg.width * msg.height} points")
        try:
            points, labels = ros_io.points_in_world(msg, s)
            problem = ros_io.build_problem(points, labels, constraints, s)
            plan = solve(problem, s.solver, self.solver)
        except Exception as exc:  # bad input (ValueError) or a solver error: report, keep going
            if not isinstance(exc, ValueError):
                self.get_logger().error(f"solve failed: {exc!r}")
            return self._finish(generation, "failed", str(exc) or repr(exc))
        plan.frame = s.world_frame
        if generation != self._generation:
            return False, "cleared while solving; result discarded"
        self.pub_plan.publish(String(data=plan.to_json()))
        self.pub_markers.publish(ros_io.plan_markers(plan, s.container, s.world_frame,
                                                     self.get_clock().now().to_msg()))
        goals = plan.verified or (s.publish_unverified and plan.status == "solved")
        if goals and plan.steps:
            for pub, arr in zip((self.pub_pick, self.pub_place), ros_io.plan_pose_arrays(
                    plan, s.world_frame, self.get_clock().now().to_msg())):
                pub.publish(arr)
        self._last = {k: v for k, v in ros_io.plan_summary(plan).items() if k != "message"}
        return self._finish(generation, reported_state(plan, s.solver.verify),
                            plan.message or ("verified" if plan.verified else plan.status),
                            goals_published=bool(goals and plan.steps), **self._last)

    def _finish(self, generation, state, message, **extra) -> tuple[bool, str]:
        if generation == self._generation:
            self._set_state(state, message, **extra)
        return state == "solved", json.dumps({"state": state, "message": message, **extra})

    # -------------------------------------------------------------- outputs
    def _set_state(self, state: str, message: str, **extra) -> None:
        self._state = (state, message)
        self.pub_status.publish(ros_io.status_msg(state, message, **extra))
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        s = self.settings
        values = {"state": self._state[0], "solver": s.solver.solver, "device": self.device,
                  **self._counts, **{f"last_{k}": v for k, v in self._last.items()}}
        self.pub_diag.publish(ros_io.diagnostics_msg(
            f"{self.get_fully_qualified_name()}: packer", *self._state, values,
            self.get_clock().now().to_msg(), warn=self._last.get("verified") is False))

    def shutdown(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._worker.join(timeout=5.0)
        close = getattr(self.solver, "close", None)     # the portfolio's worker processes
        if close is not None:
            close()


def main(args=None) -> int:
    """Console script ``packer_node``: spin the node on a multi-threaded executor."""
    rclpy.init(args=args)
    try:
        node = PackerNode()
    except Exception as exc:  # a bad parameter, an unknown solver, a missing model: one line
        print(f"error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
