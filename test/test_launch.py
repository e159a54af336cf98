"""Launch files, parameter file and RViz config.

STRUCTURAL CHECK ONLY when ROS 2 ``launch``/``launch_ros`` are not installed (the pip-only
environment): the test then installs a minimal record-only stand-in for ``launch``,
``launch.actions``, ``launch.substitutions`` and ``launch_ros.actions`` into ``sys.modules``;
the stand-in records the nodes, packages, executables and parameters that the launch files
declare, it does not start anything. With a real ROS install the real modules are used (no
processes are started either; parameters are only checked with the stand-in).
"""
import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from robot_packer import ros_io
from robot_packer.problem import load_scene
from robot_packer.sim.ros_nodes import find_scene

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"


def _real_launch() -> bool:
    try:
        import launch
        import launch_ros.actions  # noqa: F401
    except ImportError:
        return False
    return hasattr(launch, "LaunchDescription")  # not the repo's launch/ folder or PyPI 'launch'


REAL = _real_launch()


class _Record:
    """Stand-in action: remembers its constructor arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Record):
    def perform(self, context):
        return context.launch_configurations[self.args[0]]


def _stand_in() -> dict:
    """Modules of the record-only stand-in (structural checks only)."""
    launch = types.ModuleType("launch")
    launch.LaunchDescription = type("LaunchDescription", (_Record,), {})
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = type("DeclareLaunchArgument", (_Record,), {})
    actions.OpaqueFunction = type("OpaqueFunction", (_Record,), {})
    subs = types.ModuleType("launch.substitutions")
    subs.LaunchConfiguration = _LaunchConfiguration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = type("Node", (_Record,), {})
    launch.actions, launch.substitutions, launch_ros.actions = actions, subs, ros_actions
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
            "launch_ros": launch_ros, "launch_ros.actions": ros_actions}


@pytest.fixture
def load(monkeypatch):
    """load(file, **arguments) -> (declared {name: default}, [node dicts])."""
    if not REAL:
        for name, module in _stand_in().items():
            monkeypatch.setitem(sys.modules, name, module)

    def run(filename, **arguments):
        spec = importlib.util.spec_from_file_location(filename.replace(".", "_"),
                                                      LAUNCH / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ld = module.generate_launch_description()
        return _declared(ld), _nodes(ld, _declared(ld), arguments)
    return run


def _declared(ld) -> dict:
    if REAL:
        return {a.name: a.default_value for a in ld.get_launch_arguments()}
    return {e.args[0]: e.kwargs["default_value"] for e in ld.args[0]
            if type(e).__name__ == "DeclareLaunchArgument"}


def _nodes(ld, declared, arguments) -> list[dict]:
    values = {k: v if isinstance(v, str) else "" for k, v in declared.items()}
    values.update(arguments)
    if REAL:
        import launch

        context = launch.LaunchContext()
        context.launch_configurations.update(values)
        funcs = [e for e in ld.entities if type(e).__name__ == "OpaqueFunction"]
        nodes = [n for f in funcs for n in f.execute(context)]
        return [{"package": n.node_package, "executable": n.node_executable, "parameters": None}
                for n in nodes]
    context = types.SimpleNamespace(launch_configurations=values)
    funcs = [e for e in ld.args[0] if type(e).__name__ == "OpaqueFunction"]
    return [dict(n.kwargs) for f in funcs for n in f.kwargs["function"](context)]


def _entry_points() -> dict:
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"(\w+) = (robot_packer[\w.]*:\w+)"', text))


def test_packer_launch_declares_the_arguments_and_one_node(load):
    declared, nodes = load("packer.launch.py")
    assert set(declared) >= {"namespace", "params_file", "device", "use_sim", "log_level"}
    assert len(nodes) == 1
    node = nodes[0]
    assert (node["package"], node["executable"]) == ("robot_packer", "packer_node")
    assert _entry_points()["packer_node"] == "robot_packer.node:main"
    if REAL:
        return
    assert node["name"] == "robot_packer" and node["namespace"] == ""
    params_file, overrides = node["parameters"]
    assert Path(params_file).resolve() == (LAUNCH / "packer.yaml").resolve()
    assert overrides == {"use_sim_time": False}  # device: the params file's value
    assert node["arguments"][-2:] == ["--log-level", "info"]


def test_packer_launch_arguments_reach_the_node(load):
    _, nodes = load("packer.launch.py", namespace="cell1", device="cuda", use_sim="true",
                    params_file="/tmp/my.yaml", log_level="debug")
    if REAL:
        return
    node = nodes[0]
    assert node["namespace"] == "cell1"
    assert node["parameters"] == ["/tmp/my.yaml", {"use_sim_time": True, "device": "cuda"}]
    assert node["arguments"][-1] == "debug"


def test_sim_launch_starts_packer_camera_and_executor(load):
    declared, nodes = load("sim.launch.py", solver="heuristic")
    assert set(declared) >= {"namespace", "scene", "solver", "device", "out_dir"}
    assert [(n["package"], n["executable"]) for n in nodes] == [
        ("robot_packer", "packer_node"), ("robot_packer", "sim_camera"),
        ("robot_packer", "sim_executor")]
    eps = _entry_points()
    assert eps["sim_camera"] == "robot_packer.sim.ros_nodes:camera_main"
    assert eps["sim_executor"] == "robot_packer.sim.ros_nodes:executor_main"
    if REAL:
        return
    scene = load_scene(find_scene(declared["scene"]))
    packer = nodes[0]["parameters"][1]
    assert packer["container.size"] == pytest.approx(list(scene.container.size))
    assert packer["solver"] == "heuristic" and packer["input_qos"] == "latched"
    ros_io.settings_from_params({k: v for k, v in packer.items() if k != "use_sim_time"})
    cam, exe = nodes[1]["parameters"][0], nodes[2]["parameters"][0]
    assert Path(cam["scene"]).exists() and cam["scene"] == exe["scene"]


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_params_file_matches_the_declared_parameters():
    data = yaml.safe_load((LAUNCH / "packer.yaml").read_text())
    params = _flatten(data["robot_packer"]["ros__parameters"])
    specs = {p.name: p for p in ros_io.PARAMETERS}
    assert set(params) == set(specs), set(params) ^ set(specs)
    for name, value in params.items():  # ROS parameters are strictly typed: 0 is not 0.0
        default = specs[name].default
        assert type(value) is type(default), f"{name}: {value!r} vs default {default!r}"
        if isinstance(default, list):
            assert all(type(v) is type(default[0]) for v in value), name
    settings = ros_io.settings_from_params(params)
    assert settings.publish_unverified is False and settings.solver.device == "auto"


def test_rviz_config_shows_markers_and_pose_arrays():
    rviz = yaml.safe_load((LAUNCH / "packer.rviz").read_text())
    manager = rviz["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "world"
    topics = {d["Class"].split("/")[-1] + ":" + d["Topic"]["Value"]
              for d in manager["Displays"] if "Topic" in d}
    assert {"MarkerArray:/robot_packer/markers", "PoseArray:/robot_packer/pick_poses",
            "PoseArray:/robot_packer/place_poses", "PointCloud2:/objects/points"} <= topics
