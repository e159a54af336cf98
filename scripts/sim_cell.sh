#!/usr/bin/env bash
# The simulated cell, pip-only: packer_node + sim_camera + sim_executor over DDS on localhost.
# Waits for the plan and the executor's result, prints the plan summary and the execution errors.
# Exit 0 only if the plan verified and every object ended within 1.5 cm of its planned pose.
#
# Usage: scripts/sim_cell.sh [SCENE] [OUT_DIR]       (SCENE: a name in sim/scenes/ or a path)
# Env:   SOLVER (diffusion), DEVICE (auto), TIME_BUDGET (10), TIMEOUT (300 s), PY (.venv/bin/python)
set -u
cd "$(dirname "$0")/.."
SCENE=${1:-cell6}
OUT=${2:-sim_cell_out}
PY=${PY:-.venv/bin/python}
BIN=${BIN:-$(dirname "$PY")}
SOLVER=${SOLVER:-portfolio}
DEVICE=${DEVICE:-auto}
TIME_BUDGET=${TIME_BUDGET:-10.0}
TIMEOUT=${TIMEOUT:-300}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Hermetic DDS: localhost only, a random domain, logs under OUT.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 1 ))}
export ROS_LOG_DIR="$OUT/ros_log"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PY" -m robot_packer.sim.ros_nodes params "$SCENE" "$OUT/packer_params.yaml" \
  "solver:=$SOLVER" "device:=$DEVICE" "time_budget_s:=$TIME_BUDGET" || exit 2
echo "sim_cell: scene $SCENE, solver $SOLVER, domain $ROS_DOMAIN_ID, logs in $OUT"

"$BIN/packer_node" --ros-args --params-file "$OUT/packer_params.yaml" >"$OUT/packer.log" 2>&1 &
PACKER_PID=$!
PIDS+=($PACKER_PID)
"$BIN/sim_executor" --ros-args -p "scene:=$SCENE" -p "out_dir:=$OUT" >"$OUT/executor.log" 2>&1 &
PIDS+=($!)
"$BIN/sim_camera" --ros-args -p "scene:=$SCENE" >"$OUT/camera.log" 2>&1 &
PIDS+=($!)

"$PY" - "$TIMEOUT" "$OUT" "$PACKER_PID" <<'PYEOF'
"""Wait for the plan and the executor's result; print them; exit 0 only on success."""
import json, os, sys, time
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

timeout, out, packer_pid = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def alive(pid):
    """True while the process runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
got = {}
rclpy.init()
node = rclpy.create_node("sim_cell_watcher")
for key, topic in (("plan", "robot_packer/plan"), ("result", "sim/result"),
                   ("status", "robot_packer/status")):
    node.create_subscription(String, topic, lambda m, k=key: got.__setitem__(k, json.loads(m.data)),
                             latched)
end = time.monotonic() + timeout
while time.monotonic() < end and "result" not in got:
    rclpy.spin_once(node, timeout_sec=0.2)
    if not alive(packer_pid):
        print("sim_cell: packer_node exited:\n" + open(f"{out}/packer.log").read()[-1500:])
        sys.exit(1)
    status = got.get("status", {})
    if status.get("state") == "failed" and "plan" not in got:
        time.sleep(1.0)
        rclpy.spin_once(node, timeout_sec=0.5)
        if "plan" not in got:
            print(f"sim_cell: the packer failed: {status.get('message')}")
            sys.exit(1)
plan, result = got.get("plan"), got.get("result")
if plan is None:
    print(f"sim_cell: no plan within {timeout:.0f} s (status: {got.get('status')})")
    sys.exit(1)
v = plan["verification"]
print(f"plan: status {plan['status']}, verified {v.get('passed')}, solver {plan['solver'].get('name')}"
      f" {plan['solver'].get('time_s')} s, {len(plan['steps'])} steps; {plan['message']}")
for oid, p in sorted(plan["placements"].items()):
    print(f"  {oid}: place [{', '.join(f'{x:.3f}' for x in p)}] size {plan['sizes'].get(oid)}")
if result is None:
    print(f"sim_cell: no execution result within {timeout:.0f} s")
    sys.exit(1)
print(f"execution: {result.get('message')}")
errors = result.get("objects", {})
for oid, e in sorted(errors.items()):
    print(f"  {oid}: position error {e['position_error_m'] * 1000:.1f} mm, "
          f"yaw error {e['yaw_error_deg']:.1f} deg")
json.dump({"plan": plan, "result": result}, open(f"{out}/sim_cell.json", "w"), indent=2)
ok = (v.get("passed") is True and plan["status"] == "solved" and result.get("executed")
      and errors and all(e["position_error_m"] <= 0.015 for e in errors.values()))
print("sim_cell: OK" if ok else "sim_cell: FAILED")
sys.exit(0 if ok else 1)
PYEOF
RC=$?
exit $RC
