"""The packer node over real DDS on localhost: the node runs as its console script (pip-only,
``packer_node --ros-args --params-file ...``) in a subprocess; this test talks to it with rclpy.

Hermetic: a random ROS_DOMAIN_ID, discovery limited to localhost, logs in a temp dir.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from geometry_msgs.msg import PoseArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from robot_packer import ros_io, synthetic  # noqa: E402

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
GOOD_BOXES = [((0.35, -0.35), (0.10, 0.06, 0.08), 0.0), ((0.50, -0.35), (0.08, 0.06, 0.07), 0.3),
              ((0.45, 0.35), (0.12, 0.05, 0.06), 0.0)]
GOOD_CONSTRAINTS = '[["left_of", "obj1", "obj2"]]'
PARAMS = """robot_packer:
  ros__parameters:
    solver: heuristic
    device: cpu
    threads: 1
    time_budget_s: 3.0
    debounce_s: 0.05
    container.size: [0.40, 0.30, 0.10]   # shallow: the Panda hand must reach the floor
"""


def box_cloud(boxes, spacing=0.004, seed=0):
    """Labelled world-frame cloud of boxes on a table (see ``robot_packer.synthetic``)."""
    return synthetic.box_cloud(boxes, spacing=spacing, seed=seed)


def node_cmd():
    """The ``packer_node`` console script (pip-only run)."""
    exe = shutil.which("packer_node", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "robot_packer.node"]


class RosHarness:
    """Publishes inputs to the node and records everything it publishes (thread-safe lists)."""

    def __init__(self, ctx):
        self.node = rclpy.create_node("packer_tester", context=ctx)
        self.proc = None
        self.lock = threading.Lock()
        self.got = {k: [] for k in ("status", "plan", "pick", "place", "markers", "diag")}
        n = self.node
        for key, typ, topic, qos in (("status", String, "/robot_packer/status", LATCHED),
                                     ("plan", String, "/robot_packer/plan", LATCHED),
                                     ("pick", PoseArray, "/robot_packer/pick_poses", 10),
                                     ("place", PoseArray, "/robot_packer/place_poses", 10),
                                     ("markers", MarkerArray, "/robot_packer/markers", LATCHED),
                                     ("diag", DiagnosticArray, "/diagnostics", 10)):
            n.create_subscription(typ, topic, self._rec(key), qos)
        self.cloud_pub = n.create_publisher(PointCloud2, "/objects/points", RELIABLE)
        self.cons_pub = n.create_publisher(String, "/constraints", LATCHED)
        self.solve_cli = n.create_client(Trigger, "/robot_packer/solve")
        self.clear_cli = n.create_client(Trigger, "/robot_packer/clear")
        self.param_cli = n.create_client(SetParameters, "/robot_packer/set_parameters")
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _rec(self, key):
        def cb(msg):
            with self.lock:
                self.got[key].append((time.monotonic(), msg))
        return cb

    def count(self, key):
        with self.lock:
            return len(self.got[key])

    def wait(self, pred, timeout, what):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the node exited with code {self.proc.returncode}")
            with self.lock:
                result = pred(self.got)
            if result:
                return result
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                             f"last status: {self.statuses()[-1:]}")

    def statuses(self, start=0):
        with self.lock:
            return [json.loads(m.data) for _, m in self.got["status"][start:]]

    def outcome(self, start, timeout=40.0):
        """The first solved/failed status after index ``start``."""
        def done(got):
            for _, m in got["status"][start:]:
                s = json.loads(m.data)
                if s["state"] in ("solved", "failed"):
                    return s
            return None
        return self.wait(done, timeout, "a solved/failed status")

    def settle(self, quiet=1.0, timeout=60.0):
        """Wait until the node is idle: its last status is solved/failed and nothing new came
        for ``quiet`` s (a queued solve announces itself with ``solving`` within milliseconds of
        the previous outcome). Two topics have no common order, so a test's inputs can leave a
        re-solve queued behind the outcome it waited for."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            n = self.count("status")
            time.sleep(quiet)
            last = self.statuses()[-1:]
            if self.count("status") == n and last and last[0]["state"] in ("solved", "failed"):
                return
        raise AssertionError(f"the node did not settle within {timeout} s")

    def call(self, client, request, timeout=60.0):
        assert client.wait_for_service(timeout_sec=20.0), f"{client.srv_name} not available"
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        assert future.done(), f"{client.srv_name} did not answer within {timeout} s"
        return future.result()

    def set_params(self, **values):
        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                for k, v in values.items()])
        results = self.call(self.param_cli, req).results
        assert all(r.successful for r in results), [r.reason for r in results]

    def send(self, msg=None, constraints=None):
        """Publish constraints and/or a cloud; return the status index to wait from."""
        start = self.count("status")
        if constraints is not None:
            self.cons_pub.publish(String(data=constraints))
        if msg is not None:
            self.cloud_pub.publish(msg)
        return start


@contextmanager
def node_running(tmp, params_text, domain):
    """The node as its console script with ``params_text`` on ROS domain ``domain`` (discovery
    on localhost, logs in ``tmp``), and a :class:`RosHarness` talking to it; yields the harness
    (``harness.proc``: the node's process), ends both afterwards and prints the node's log."""
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "ROS_LOG_DIR": str(tmp / "log"),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    params = tmp / "params.yaml"
    params.write_text(params_text)
    proc = subprocess.Popen(node_cmd() + ["--ros-args", "--params-file", str(params)], env=env,
                            stdout=open(tmp / "node.log", "w"), stderr=subprocess.STDOUT)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    tester = RosHarness(ctx)
    tester.proc = proc
    try:
        tester.wait(lambda g: g["status"], 60.0, "the node's first status")
        assert tester.cloud_pub.get_subscription_count() or tester.wait(
            lambda g: tester.cloud_pub.get_subscription_count(), 20.0, "the cloud subscription")
        yield tester
    finally:
        tester.executor.shutdown()
        tester.node.destroy_node()
        rclpy.shutdown(context=ctx)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print((tmp / "node.log").read_text()[-3000:])


@pytest.fixture(scope="module")
def ros(tmp_path_factory):
    tmp, domain = tmp_path_factory.mktemp("ros"), random.randint(1, 100)
    os.environ.update(ROS_DOMAIN_ID=str(domain), ROS_LOG_DIR=str(tmp / "log"),
                      ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")   # this process's rclpy too
    with node_running(tmp, PARAMS, domain) as tester:
        yield tester


def good_msg(seed=0):
    return ros_io.cloud_to_msg(*box_cloud(GOOD_BOXES, seed=seed), "world")


def solve_good(ros):
    """Send the good cloud and constraints; the ``solved`` status of the solve that used both.

    The cloud may land before the new constraints (the node then solves it without them and
    re-solves when they arrive), so wait for that solve, not for the first outcome.
    """
    n_plan = ros.count("plan")
    start = ros.send(good_msg(), GOOD_CONSTRAINTS)

    def solved(got):
        # the two topics have no common order: a solve of the cloud alone may come first (and
        # succeed); wait for the plan that carries the constraint, then for its status
        plans = [json.loads(m.data) for _, m in got["plan"][n_plan:]]
        if not any(c["constraint"][0] == "left_of" for p in plans for c in p["constraints"]):
            return None
        states = [json.loads(m.data) for _, m in got["status"][start:]]
        return states[-1] if states and states[-1]["state"] == "solved" else None
    return ros.wait(solved, 40.0, "a solved status for the good input")


def test_cloud_and_constraints_give_plan_goals_and_markers(ros):
    n_pick, n_plan = ros.count("pick"), ros.count("plan")
    state = solve_good(ros)
    assert state["verified"] and state["goals_published"]
    ros.wait(lambda g: len(g["pick"]) > n_pick and len(g["place"]) > n_pick
             and len(g["plan"]) > n_plan, 20.0, "plan and goals")
    with ros.lock:
        plan = json.loads(ros.got["plan"][-1][1].data)
        pick, place = ros.got["pick"][-1][1], ros.got["place"][-1][1]
        markers = ros.got["markers"][-1][1].markers
    assert plan["status"] == "solved" and plan["verification"]["passed"]
    assert sorted(plan["placements"]) == ["obj1", "obj2", "obj3"]
    assert [c["constraint"] for c in plan["constraints"] if c["constraint"][0] == "left_of"] == [
        ["left_of", "obj1", "obj2"]]
    assert len(pick.poses) == len(place.poses) == len(plan["steps"]) == 3
    for pose, step in zip(place.poses, plan["steps"]):
        assert [pose.position.x, pose.position.y, pose.position.z] == pytest.approx(
            step["place"]["position"])
    for pose, step in zip(pick.poses, plan["steps"]):
        assert pose.position.x == pytest.approx(step["pick"]["position"][0])
    assert markers[0].action == Marker.DELETEALL
    assert len([m for m in markers if m.type == Marker.CUBE]) == 3
    reply = ros.call(ros.solve_cli, Trigger.Request())  # on demand, with the latest cloud
    assert reply.success and json.loads(reply.message)["status"] == "solved"


BAD_INPUTS = {
    "no label field": (lambda: ros_io.cloud_to_msg(box_cloud(GOOD_BOXES)[0], None, "world"),
                       None, "label"),
    "all NaN": (lambda: ros_io.cloud_to_msg(np.full((500, 3), np.nan), np.ones(500), "world"),
                None, "no finite points"),
    "empty": (lambda: ros_io.cloud_to_msg(np.zeros((0, 3)), np.zeros(0), "world"), None, "empty"),
    "5 million points": (lambda: ros_io.cloud_to_msg(np.zeros((5_000_000, 3)),
                                                     np.ones(5_000_000), "world", pad_to=None),
                         None, "5000000 points, more than max_points"),
    "labels with no objects": (lambda: ros_io.cloud_to_msg(box_cloud(GOOD_BOXES)[0],
                                                           np.zeros(len(box_cloud(GOOD_BOXES)[0])),
                                                           "world"), None, "no labelled objects"),
    # constraints alone: the node re-solves its current cloud with them (a cloud sent alongside
    # could be solved first with the previous constraints: two topics have no common order)
    "malformed constraints JSON": (lambda: None, '[["left_of", "obj1"', "not valid JSON"),
    "unknown object id": (lambda: None, '[["left_of", "obj1", "obj7"]]',
                          "unknown object id 'obj7'"),
    "infeasible scene": (lambda: ros_io.cloud_to_msg(*box_cloud(
        [((0.35, -0.35), (0.10, 0.06, 0.14), 0.0), GOOD_BOXES[1]]), "world"),
        None, "fits the container"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_fails_cleanly_and_next_good_input_solves(ros, name):
    make_msg, constraints, words = BAD_INPUTS[name]
    ros.outcome(ros.send(constraints=GOOD_CONSTRAINTS))  # a known state first
    ros.settle()                                          # ... and nothing still queued
    n_goals = ros.count("pick") + ros.count("place")
    state = ros.outcome(ros.send(make_msg(), constraints))
    assert state["state"] == "failed" and words in state["message"], state
    time.sleep(0.3)
    assert ros.count("pick") + ros.count("place") == n_goals, "goals published for bad input"
    solve_good(ros)  # the node is alive and solves the next good input


def test_services_and_diagnostics_respond_while_solving(ros):
    cyclic = ('[["left_of", "obj1", "obj2"], ["left_of", "obj2", "obj3"], '
              '["left_of", "obj3", "obj1"]]')   # unsatisfiable: the solver uses its budget
    n_plan, n_diag = ros.count("plan"), ros.count("diag")
    start = ros.send(good_msg(1), cyclic)
    ros.wait(lambda g: any(json.loads(m.data)["state"] == "solving"
                           for _, m in g["status"][start:]),
             10.0, "state solving")
    t0 = time.monotonic()
    reply = ros.call(ros.clear_cli, Trigger.Request(), timeout=5.0)
    assert reply.success and time.monotonic() - t0 < 2.5  # the solve itself runs >= 3 s
    ros.wait(lambda g: len(g["diag"]) > n_diag + 1, 5.0, "diagnostics during the solve")
    assert ros.statuses()[-1]["state"] == "idle"
    time.sleep(6.0)  # the cleared solve finishes; its result is discarded
    assert ros.count("plan") == n_plan and ros.statuses()[-1]["state"] == "idle"
    reply = ros.call(ros.solve_cli, Trigger.Request())
    assert not reply.success and "no cloud" in reply.message


def test_unverified_plans_never_publish_goals(ros):
    ros.set_params(verify=False)
    try:
        n_goals, n_plan = ros.count("pick") + ros.count("place"), ros.count("plan")
        state = solve_good(ros)
        assert not state["verified"] and not state["goals_published"]
        ros.wait(lambda g: len(g["plan"]) > n_plan, 30.0, "the plan")
        with ros.lock:
            plan = json.loads(ros.got["plan"][-1][1].data)
            markers = ros.got["markers"][-1][1].markers
        assert plan["verification"]["simulator"] == "none" and not plan["verification"]["passed"]
        cube = next(m for m in markers if m.type == Marker.CUBE)
        assert (cube.color.r, cube.color.g) == pytest.approx((1.0, 0.6))  # orange
        time.sleep(0.3)
        assert ros.count("pick") + ros.count("place") == n_goals
        ros.set_params(publish_unverified=True)
        assert solve_good(ros)["goals_published"]
    finally:
        ros.set_params(verify=True, publish_unverified=False)


def test_bad_parameters_are_rejected_at_runtime(ros):
    req = SetParameters.Request(parameters=[
        Parameter("container.size", value=[0.4, 0.3]).to_parameter_msg(),
        Parameter("solver", value="cem").to_parameter_msg()])
    results = ros.call(ros.param_cli, req).results
    assert not results[0].successful and "container.size" in results[0].reason
    assert not results[1].successful  # read-only: needs a restart (models load once)


def test_unknown_solver_exits_with_one_clear_line(tmp_path):
    env = dict(os.environ, ROS_LOG_DIR=str(tmp_path))
    out = subprocess.run(node_cmd() + ["--ros-args", "-p", "solver:=magic"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 2 and "solver" in out.stderr and "magic" in out.stderr


def proc_stat(pid):
    """(state, parent pid) of process ``pid`` from /proc, or None when there is no such process
    (any more)."""
    try:
        state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return None
    return state, int(ppid)


def running(pid):
    """Whether process ``pid`` exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def process_tree(pid):
    """The live descendants of ``pid`` (zombies left out): {pid: command line}."""
    children = {}
    for entry in Path("/proc").iterdir():
        stat = proc_stat(entry.name) if entry.name.isdigit() else None
        if stat is None or stat[0] == "Z":
            continue                     # not a process, it ended meanwhile, or a zombie
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        children.setdefault(stat[1], {})[int(entry.name)] = cmdline
    tree, todo = {}, [pid]
    while todo:
        for child, cmdline in children.get(todo.pop(), {}).items():
            tree[child] = cmdline
            todo.append(child)
    return tree


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree in /proc")
def test_the_portfolio_races_in_the_node_and_its_workers_end_with_it(tmp_path):
    """``solver: portfolio``: the members race in worker processes started from a fork server
    (the node's process runs DDS threads, which a forked child must not inherit), the plan is
    verified and names the member that won; when the node ends, none of its workers outlives
    it."""
    domain = random.randint(101, 200)                 # not the module node's domain
    params = PARAMS.replace("solver: heuristic", "solver: portfolio")
    with node_running(tmp_path, params, domain) as tester:
        state = solve_good(tester)
        assert state["verified"] and state["goals_published"]
        with tester.lock:
            plan = json.loads(tester.got["plan"][-1][1].data)
        assert plan["solver"]["name"] == "portfolio"
        assert plan["solver"]["member"] in ("diffusion", "heuristic", "cpsat")
        workers = process_tree(tester.proc.pid)
        assert any("forkserver" in cmd for cmd in workers.values()), workers
        assert len(workers) >= 3, workers     # the fork server, diffusion's and heuristic's
    end = time.monotonic() + 15.0
    while any(running(p) for p in workers) and time.monotonic() < end:
        time.sleep(0.1)
    alive = {p: cmd for p, cmd in workers.items() if running(p)}
    assert not alive, f"portfolio workers outlived the node: {alive}"


def test_latest_cloud_wins_while_solving(ros):
    """Clouds A then B arrive during a solve: B is solved next, A is dropped."""
    cyclic = ('[["left_of", "obj1", "obj2"], ["left_of", "obj2", "obj3"], '
              '["left_of", "obj3", "obj1"]]')   # unsatisfiable: each solve uses its budget
    ros.set_params(time_budget_s=1.0)
    try:
        ros.outcome(ros.send(constraints=cyclic))
        n_plan = ros.count("plan")
        start = ros.send(good_msg(2))
        ros.wait(lambda g: any(json.loads(m.data)["state"] == "solving"
                               for _, m in g["status"][start:]), 10.0, "state solving")
        moved = [((x + 0.05, y), size, yaw) for (x, y), size, yaw in GOOD_BOXES]
        ros.cloud_pub.publish(good_msg(3))                                            # A
        ros.cloud_pub.publish(ros_io.cloud_to_msg(*box_cloud(moved, seed=4), "world"))  # B
        ros.wait(lambda g: len(g["plan"]) >= n_plan + 2, 30.0, "two plans")
        time.sleep(2.5)  # no third solve follows
        assert ros.count("plan") == n_plan + 2
        with ros.lock:
            plan = json.loads(ros.got["plan"][-1][1].data)
            dropped = {kv.key: kv.value for kv in ros.got["diag"][-1][1].status[0].values}
        picks = sorted(s["pick"]["position"][0] for s in plan["steps"])
        assert picks == pytest.approx(sorted(x for (x, _), _, _ in moved), abs=0.01)
        assert int(dropped["dropped"]) >= 1
    finally:
        ros.set_params(time_budget_s=3.0)


def test_sim_scene_ids_and_plan_alignment():
    """The sim nodes name scene item k obj<k+1> and re-express yaws in the true box axes."""
    from robot_packer.problem import Plan, load_scene
    from robot_packer.sim.ros_nodes import align_plan, find_scene, packer_params, ros_scene

    scene = load_scene(find_scene("groceries_relations"))
    ros_problem = ros_scene(scene)
    assert ros_problem.ids == [f"obj{k + 1}" for k in range(len(scene.items))]
    assert [c.to_list() for c in ros_problem.constraints][:1] == [["left_of", "obj1", "obj2"]]
    assert ["region", "obj4", "back"] in [c.to_list() for c in ros_problem.constraints]
    cereal = ros_problem.items[0]            # true size 0.06 x 0.15: x is the short side
    plan = Plan("solved", placements={"obj1": [0.0, 0.0, 0.095, 0.3]},
                sizes={"obj1": [0.15, 0.06, 0.19]})  # perceived: long side along x
    assert align_plan(plan, ros_problem).placements["obj1"][3] == pytest.approx(
        0.3 - np.pi / 2)
    plan.sizes["obj1"] = [float(v) for v in cereal.size]
    assert align_plan(plan, ros_problem).placements["obj1"][3] == pytest.approx(0.3)
    params = packer_params(scene, solver="cem")
    settings = ros_io.settings_from_params(params)
    assert list(settings.container.size) == list(scene.container.size)
    assert settings.input_qos == "latched" and settings.solver.solver == "cem"


def test_reported_state_never_calls_an_unverified_plan_solved():
    from robot_packer.node import reported_state
    from robot_packer.problem import Plan

    passed = {"simulator": "pybullet", "passed": True}
    assert reported_state(Plan("solved", verification=passed), verify=True) == "solved"
    # the budget ran out before the simulation check: exact, but not verified
    late = Plan("solved", "time budget spent before simulation verification: not verified")
    assert reported_state(late, verify=True) == "failed"
    assert reported_state(late, verify=False) == "solved"     # verification switched off
    assert reported_state(Plan("timeout"), verify=False) == "failed"
    assert reported_state(Plan("solved", verification={"simulator": "pybullet", "passed": False}),
                          verify=True) == "failed"
