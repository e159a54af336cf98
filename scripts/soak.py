#!/usr/bin/env python3
"""Soak and bad-input probe for the ``robot_packer`` node over real DDS on localhost.

Soak (default): publishes labelled clouds at ``--rate`` Hz for ``--duration`` s while the node
auto-solves, then checks: node RSS growth <= ``--max-rss-growth-mb`` (first solve done -> end),
every ``solving`` status is followed by a ``solved``/``failed`` one, no traceback/error in the
node's log, and the queue does not grow (latest cloud wins: after publishing stops the node is idle
within two solve times).

Probe (``--probe``): sends each bad input (cloud or constraints), records the node's ``~/status``
answer, then a good cloud, and records that it still solves; prints a markdown table.

Hermetic: a random ROS_DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, ROS_LOG_DIR in a temp
dir. Example: ``.venv/bin/python scripts/soak.py --duration 60 --out soak.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

PARAMS = """robot_packer:
  ros__parameters:
    solver: {solver}
    device: cpu
    threads: 1
    time_budget_s: {budget}
    verify: {verify}
    debounce_s: 0.05
    candidates: 32
    container.size: [0.40, 0.30, 0.10]
"""
LAYOUTS = [  # ((x, y), (sx, sy, sz), yaw) boxes resting on the table, world frame
    [((0.35, -0.35), (0.10, 0.06, 0.08), 0.0), ((0.50, -0.35), (0.08, 0.06, 0.07), 0.3)],
    [((0.35, -0.35), (0.10, 0.06, 0.08), 0.0), ((0.50, -0.35), (0.08, 0.06, 0.07), 0.3),
     ((0.45, 0.35), (0.12, 0.05, 0.06), 0.0)],
    [((0.40, 0.35), (0.07, 0.07, 0.05), 0.5), ((0.30, -0.30), (0.06, 0.05, 0.09), 1.2)],
]
CONSTRAINTS = '[["left_of", "obj1", "obj2"]]'


def box_cloud(boxes, spacing=0.005, seed=0):
    """Labelled world-frame cloud of boxes on a table (see ``robot_packer.synthetic``)."""
    from robot_packer import synthetic

    return synthetic.box_cloud(boxes, spacing=spacing, seed=seed)


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process (MB), from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def log_problems(folder: Path) -> list[str]:
    """Lines of the node's logs that show an exception or an error."""
    bad = []
    for path in folder.rglob("*"):
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if any(w in line for w in ("Traceback", "ERROR", "Exception", "Segmentation")):
                    bad.append(f"{path.name}: {line.strip()[:200]}")
    return bad


class Harness:
    """Starts the node (console script), publishes inputs, records statuses and plans."""

    def __init__(self, tmp: Path, args):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import String

        params = tmp / "params.yaml"
        params.write_text(PARAMS.format(solver=args.solver, budget=args.time_budget,
                                        verify=str(not args.no_verify).lower()))
        exe = shutil.which("packer_node", path=str(Path(sys.executable).parent))
        cmd = ([exe] if exe else [sys.executable, "-m", "robot_packer.node"])
        self.log_path = tmp / "node.log"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd + ["--ros-args", "--params-file", str(params)],
                                     stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                     env=env)
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("packer_soak", context=self.ctx)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        record = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.lock = threading.Lock()
        self.status: list[tuple[float, dict]] = []
        self.plans: list[tuple[float, dict]] = []
        self.node.create_subscription(String, "/robot_packer/status", self._on_status, record)
        self.node.create_subscription(String, "/robot_packer/plan", self._on_plan, record)
        self.cloud_pub = self.node.create_publisher(PointCloud2, "/objects/points", 5)
        self.cons_pub = self.node.create_publisher(String, "/constraints", latched)
        self.String = String
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_status(self, msg) -> None:
        with self.lock:
            self.status.append((time.monotonic(), json.loads(msg.data)))

    def _on_plan(self, msg) -> None:
        with self.lock:
            self.plans.append((time.monotonic(), json.loads(msg.data)))

    def wait(self, pred, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the node exited with code {self.proc.returncode}")
            with self.lock:
                got = pred()
            if got:
                return got
            time.sleep(0.02)
        return None

    def outcome(self, start: int, timeout: float):
        """The first solved/failed status after index ``start`` (or None)."""
        def done():
            return next((s for _, s in self.status[start:] if s["state"] in ("solved", "failed")),
                        None)
        return self.wait(done, timeout)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start(args) -> tuple[Harness, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="packer_soak_"))
    os.environ.update(ROS_DOMAIN_ID=str(random.randint(1, 100)), ROS_LOG_DIR=str(tmp / "log"),
                      ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    h = Harness(tmp, args)
    if not h.wait(lambda: h.status, 90.0):
        h.close()
        raise RuntimeError(f"no status from the node within 90 s; log: {h.log_path}")
    h.wait(lambda: h.cloud_pub.get_subscription_count(), 20.0)
    return h, tmp


def soak(args) -> dict:
    from robot_packer import ros_io

    clouds = [ros_io.cloud_to_msg(*box_cloud(b, seed=i), "world") for i, b in enumerate(LAYOUTS)]
    h, tmp = start(args)
    h.cons_pub.publish(h.String(data=CONSTRAINTS))
    rss, sent, t0 = [], 0, time.monotonic()
    period, next_rss = 1.0 / args.rate, t0
    try:
        while time.monotonic() - t0 < args.duration:
            if h.proc.poll() is not None:
                raise RuntimeError(f"the node exited with code {h.proc.returncode}")
            h.cloud_pub.publish(clouds[sent % len(clouds)])
            sent += 1
            now = time.monotonic()
            if now >= next_rss:
                rss.append((now, rss_mb(h.proc.pid)))
                next_rss += 1.0
            time.sleep(max(0.0, t0 + sent * period - time.monotonic()))
        stop = time.monotonic()

        def settled():  # the node answered after we stopped, and is not solving any more
            last = h.status[-1]
            return last[1]["state"] in ("solved", "failed") and last[0] > stop - 1.0
        h.wait(settled, 2 * args.time_budget + 60.0)
        time.sleep(2.0)  # a dropped-then-solved latest cloud would show up here
        with h.lock:
            statuses, plans = list(h.status), list(h.plans)
        final_rss = rss_mb(h.proc.pid)
    finally:
        h.close()
    return summarize(args, tmp, statuses, plans, rss, sent, stop - t0, stop, final_rss)


def summarize(args, tmp, statuses, plans, rss, sent, pub_s, stop, final_rss) -> dict:
    states = [s["state"] for _, s in statuses]
    solving = [i for i, s in enumerate(states) if s == "solving"]
    unanswered = [i for i in solving if i + 1 >= len(states)
                  or states[i + 1] not in ("solved", "failed")]
    durations = [statuses[i + 1][0] - statuses[i][0] for i in solving if i not in unanswered]
    terminal = [(t, s) for t, s in statuses if s["state"] in ("solved", "failed")]
    first_done = terminal[0][0] if terminal else None
    base = [m for t, m in rss if m is not None and first_done is not None and t >= first_done]
    baseline = min(base[:5]) if base else None
    growth = (final_rss - baseline) if (final_rss is not None and baseline is not None) else None
    drain = (terminal[-1][0] - stop) if terminal else None
    max_solve = max(durations) if durations else None
    problems = log_problems(tmp)
    result = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "solver": args.solver, "time_budget_s": args.time_budget, "verify": not args.no_verify,
        "rate_hz": args.rate, "published_s": round(pub_s, 1), "clouds_published": sent,
        "solves": len(solving), "statuses": len(statuses), "plans": len(plans),
        "solved": sum(s == "solved" for s in states), "failed": sum(s == "failed" for s in states),
        "unanswered_solves": len(unanswered),
        "solve_s_median": round(float(np.median(durations)), 2) if durations else None,
        "solve_s_max": round(max_solve, 2) if max_solve else None,
        "drain_after_stop_s": round(drain, 2) if drain is not None else None,
        "rss_mb_baseline": round(baseline, 1) if baseline else None,
        "rss_mb_final": round(final_rss, 1) if final_rss else None,
        "rss_mb_peak": round(max(m for _, m in rss if m), 1) if rss else None,
        "rss_growth_mb": round(growth, 1) if growth is not None else None,
        "failure_reasons": dict(Counter(str(s.get("message", ""))[:90] for _, s in statuses
                                        if s["state"] == "failed").most_common(5)),
        "log_problems": problems[:20], "log_dir": str(tmp),
    }
    checks = {
        "rss_growth_ok": growth is not None and growth <= args.max_rss_growth_mb,
        "every_solve_answered": bool(solving) and not unanswered,
        "clean_log": not problems,
        "queue_bounded": (drain is not None and max_solve is not None
                          and drain <= 2 * max_solve + 5.0 and len(solving) < sent),
    }
    result["checks"], result["passed"] = checks, all(checks.values())
    return result


def probe(args) -> list[dict]:
    """Each bad input, the node's answer, and whether the next good cloud still solved."""
    from robot_packer import ros_io
    from sensor_msgs.msg import PointField

    good_pts, good_lab = box_cloud(LAYOUTS[0])
    good = ros_io.cloud_to_msg(good_pts, good_lab, "world")
    cases = []

    def bad_cloud(name, msg, constraints=None):
        cases.append((name, msg, constraints))

    bad_cloud("all points background (label 0)",
              ros_io.cloud_to_msg(good_pts, good_lab * 0, "world"))
    bad_cloud("no label field", ros_io.cloud_to_msg(good_pts, None, "world"))
    nan = good_pts.copy()
    nan[:] = np.nan
    bad_cloud("every point NaN", ros_io.cloud_to_msg(nan, good_lab, "world"))
    bad_cloud("empty cloud (0 points)", ros_io.cloud_to_msg(np.zeros((0, 3)), np.zeros(0), "world"))
    m = ros_io.cloud_to_msg(good_pts, good_lab, "world")
    m.data = bytes(m.data)[:-7]
    bad_cloud("data shorter than row_step x height", m)
    m = ros_io.cloud_to_msg(good_pts, good_lab, "world")
    m.fields[0] = PointField(name="x", offset=30, datatype=7, count=1)
    bad_cloud("field offset past point_step", m)
    m = ros_io.cloud_to_msg(good_pts, good_lab, "world")
    m.fields[1] = PointField(name="y", offset=4, datatype=42, count=1)
    bad_cloud("unknown PointField datatype 42", m)
    bad_cloud("unknown frame_id", ros_io.cloud_to_msg(good_pts, good_lab, "camera_that_isnt"))
    far = good_pts * 1e6
    bad_cloud("coordinates x1e6 (objects far away)", ros_io.cloud_to_msg(far, good_lab, "world"))
    bad_cloud("constraints: not JSON", good, "[[left_of, obj1")
    bad_cloud("constraints: unknown id", good, '[["left_of", "obj1", "obj99"]]')
    bad_cloud("constraints: unknown relation", good, '[["teleport", "obj1", "obj2"]]')
    bad_cloud("constraints: contradictory", good, '[["left_of", "obj1", "obj2"], '
                                                  '["left_of", "obj2", "obj1"]]')
    bad_cloud("constraints: 1e999 / nested junk", good, '[[1e999, {"a": [[[]]]}]]')
    h, _ = start(args)
    rows = []
    try:
        for name, msg, cons in cases:
            i = len(h.status)
            if cons is not None:
                h.cons_pub.publish(h.String(data=cons))
                time.sleep(0.3)
            h.cloud_pub.publish(msg)
            answer = h.outcome(i, args.time_budget + 60.0)
            if cons is not None:
                h.cons_pub.publish(h.String(data=CONSTRAINTS))
                time.sleep(0.3)
            j = len(h.status)
            h.cloud_pub.publish(good)
            after = h.outcome(j, args.time_budget + 60.0)
            rows.append({"input": name, "answer": answer, "next_good": after,
                         "alive": h.proc.poll() is None})
    finally:
        h.close()
    return rows


def probe_table(rows: list[dict]) -> str:
    lines = ["| bad input (node) | node's ~/status answer | next good cloud |", "|---|---|---|"]
    for r in rows:
        a, g = r["answer"] or {}, r["next_good"] or {}
        msg = str(a.get("message", "no answer")).replace("|", "\\|")[:160]
        lines.append(f"| {r['input']} | {a.get('state', '-')}: {msg} | "
                     f"{g.get('state', 'no answer')}{'' if r['alive'] else ' (node died)'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=300.0, help="seconds of publishing")
    p.add_argument("--rate", type=float, default=30.0, help="clouds per second")
    p.add_argument("--solver", default="heuristic")
    p.add_argument("--time-budget", type=float, default=2.0)
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--max-rss-growth-mb", type=float, default=50.0)
    p.add_argument("--probe", action="store_true", help="bad-input probe instead of the soak")
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args(argv)
    try:
        import rclpy  # noqa: F401
        import robot_packer.node  # noqa: F401
    except ImportError as exc:
        print(f"error: the node is not available ({exc})", file=sys.stderr)
        return 2
    if args.probe:
        rows = probe(args)
        print(probe_table(rows))
        result = {"probe": rows, "passed": all(r["alive"] and r["answer"] and (r["next_good"] or {})
                                               .get("state") == "solved" for r in rows)}
    else:
        result = soak(args)
        print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
