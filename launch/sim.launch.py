"""The simulated cell: the packer node + a simulated camera + a simulated Panda executor.

    ros2 launch robot_packer sim.launch.py [scene:=groceries_relations] [solver:=heuristic]
        [namespace:=...] [device:=...] [out_dir:=sim_out] [log_level:=info]

The camera publishes the scene's labelled cloud and constraints (latched); the packer's
container, gripper and rules come from the scene; the executor runs each verified plan in
PyBullet and publishes ``sim/result``. Pip-only equivalent: ``scripts/sim_cell.sh``.
"""
import importlib.util
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _packer_launch():
    """packer.launch.py, loaded from this folder (its arguments and its Node factory)."""
    spec = importlib.util.spec_from_file_location(
        "robot_packer_packer_launch", Path(__file__).with_name("packer.launch.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PACKER = _packer_launch()
ARGUMENTS = PACKER.ARGUMENTS + (
    ("scene", "groceries_relations", "a scene name in sim/scenes/ or a scene file path"),
    ("solver", "", "solver override (empty keeps the params file's value)"),
    ("out_dir", "sim_out", "where the executor writes before.png / after.png"),
)


def _nodes(context):
    from robot_packer.problem import load_scene
    from robot_packer.sim.ros_nodes import find_scene, packer_params

    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    scene = str(find_scene(arg("scene")))
    overrides = packer_params(load_scene(scene))
    if arg("solver"):
        overrides["solver"] = arg("solver")
    common = dict(package="robot_packer", namespace=arg("namespace"), output="screen",
                  arguments=["--ros-args", "--log-level", arg("log_level")])
    return [PACKER.packer_node(context, overrides),
            Node(executable="sim_camera", name="sim_camera", parameters=[{"scene": scene}],
                 **common),
            Node(executable="sim_executor", name="sim_executor",
                 parameters=[{"scene": scene, "out_dir": arg("out_dir")}], **common)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_nodes)])
