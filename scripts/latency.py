#!/usr/bin/env python3
"""Latency of the packer node: cloud published -> ``~/plan`` received, over real DDS (localhost).

Starts ``packer_node`` (pip-only) in a subprocess with a scene's container/gripper/rules,
renders ``--clouds`` distinct labelled clouds of the scene with the simulated cameras, then
publishes one cloud per run and times until the plan arrives (perception + solve + PyBullet
verification + planning + both DDS hops). ``debounce_s`` is 0 so no waiting is added.

    .venv/bin/python scripts/latency.py --solver heuristic --runs 20 --out docs/latency.json

Default scene: the first 6 objects of sim/scenes/demo_tote.yaml (with its constraints).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml


def scene_problem(path: str, n_objects: int):
    from robot_packer.problem import load_scene
    from robot_packer.sim.ros_nodes import find_scene, ros_scene

    problem = load_scene(find_scene(path))
    keep = {it.id for it in problem.items[:n_objects]}
    cons = tuple(c for c in problem.constraints
                 if all(a in keep for a in (c.args[:1] if c.name == "region" else c.args)))
    return ros_scene(dataclasses.replace(problem, items=problem.items[:n_objects],
                                         constraints=cons))


def start_node(problem, args, tmp: Path) -> subprocess.Popen:
    from robot_packer.sim.ros_nodes import packer_params

    params = packer_params(problem, solver=args.solver, device=args.device,
                           time_budget_s=args.time_budget, debounce_s=0.0,
                           input_qos="reliable", threads=args.threads)
    (tmp / "params.yaml").write_text(yaml.safe_dump(
        {"robot_packer": {"ros__parameters": params}}, default_flow_style=None))
    exe = shutil.which("packer_node", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "robot_packer.node"]
    if args.preload:  # a solver module not (yet) imported by robot_packer.solver
        cmd = [sys.executable, "-c", f"import sys, {args.preload}; "
               "from robot_packer.node import main; sys.exit(main())"]
    return subprocess.Popen(cmd + ["--ros-args", "--params-file", str(tmp / "params.yaml")],
                            stdout=open(tmp / "node.log", "w"), stderr=subprocess.STDOUT)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default="demo_tote")
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--solver", default="diffusion")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--time-budget", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the node (0: default)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--clouds", type=int, default=4, help="distinct rendered clouds, cycled")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--preload", help="import this module in the node first (a solver module "
                    "that robot_packer.solver does not import yet)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="packer_latency_"))
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_LOG_DIR=str(tmp / "log"),
                      ROS_DOMAIN_ID=os.environ.get("ROS_DOMAIN_ID", str(random.randint(1, 100))))
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import String

    from robot_packer import ros_io
    from robot_packer.sim.camera import default_cameras, render_scene_cloud

    problem = scene_problem(args.scene, args.objects)
    cams = default_cameras(problem, noise_std=0.001)
    clouds = [ros_io.cloud_to_msg(*render_scene_cloud(problem, cams, np.random.default_rng(s)),
                                  "world") for s in range(args.clouds)]
    proc = start_node(problem, args, tmp)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    rclpy.init()
    node = rclpy.create_node("packer_latency")
    plans, statuses, lock = [], [], threading.Condition()

    def on(kind):
        def cb(msg):
            with lock:
                (plans if kind == "plan" else statuses).append((time.perf_counter(),
                                                               json.loads(msg.data)))
                lock.notify_all()
        return cb
    node.create_subscription(String, "/robot_packer/plan", on("plan"), latched)
    node.create_subscription(String, "/robot_packer/status", on("status"), latched)
    pub_cloud = node.create_publisher(PointCloud2, "/objects/points",
                                      QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    pub_cons = node.create_publisher(String, "/constraints", latched)
    spinner = threading.Thread(target=rclpy.spin, args=(node,), daemon=True)
    spinner.start()
    results = []
    try:
        deadline = time.monotonic() + 120
        while not statuses or pub_cloud.get_subscription_count() == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                print((tmp / "node.log").read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.1)
        pub_cons.publish(String(data=json.dumps([c.to_list() for c in problem.constraints])))
        time.sleep(0.5)
        for run in range(args.runs + 1):  # run 0 warms up (first-call imports), not counted
            with lock:
                n_plan, n_status = len(plans), len(statuses)
            t0 = time.perf_counter()
            pub_cloud.publish(clouds[run % len(clouds)])
            with lock:
                ok = lock.wait_for(lambda: len(plans) > n_plan or any(
                    s["state"] == "failed" for _, s in statuses[n_status:]), timeout=120)
                if not ok or len(plans) == n_plan:
                    print(f"run {run}: no plan ({statuses[-1][1] if statuses else None})",
                          file=sys.stderr)
                    continue
                t1, plan = plans[n_plan]
                lock.wait_for(lambda: any(s["state"] in ("solved", "failed")
                                          for _, s in statuses[n_status:]), timeout=30)
            row = {"run": run, "latency_s": round(t1 - t0, 4), "status": plan["status"],
                   "verified": bool(plan["verification"].get("passed")),
                   "solve_s": plan["solver"].get("time_s")}
            print(json.dumps(row), flush=True)
            if run > 0:
                results.append(row)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        node.destroy_node()
        rclpy.try_shutdown()
    lat = [r["latency_s"] for r in results]
    summary = {"scene": args.scene, "objects": args.objects, "solver": args.solver,
               "device": args.device, "time_budget_s": args.time_budget, "runs": len(results),
               "points": [c.width * c.height for c in clouds],
               "median_s": round(statistics.median(lat), 3) if lat else None,
               "p90_s": round(float(np.percentile(lat, 90)), 3) if lat else None,
               "min_s": min(lat, default=None), "max_s": max(lat, default=None),
               "verified": sum(r["verified"] for r in results),
               "median_solve_s": round(statistics.median(r["solve_s"] for r in results), 3)
               if results else None,
               # everything but solve(): DDS both ways, decoding, perception, publishing
               "median_overhead_s": round(statistics.median(r["latency_s"] - r["solve_s"]
                                                            for r in results), 3)
               if results else None, "rows": results}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if lat else 1


if __name__ == "__main__":
    sys.exit(main())
