"""Start the robot_packer node with launch/packer.yaml.

    ros2 launch robot_packer packer.launch.py [namespace:=cell1] [params_file:=my.yaml]
        [device:=cuda] [use_sim:=true] [log_level:=debug]

``use_sim`` sets ``use_sim_time`` (a simulated /clock). ``device`` (auto | cpu | cuda) overrides
the params file when given. Pip-only equivalent (no ROS install):
``packer_node --ros-args --params-file launch/packer.yaml``.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

ARGUMENTS = (
    ("namespace", "", "namespace of the node and its relative topics"),
    ("params_file", "", "parameter file (default: the package's launch/packer.yaml)"),
    ("device", "", "auto | cpu | cuda; empty keeps the params file's value"),
    ("use_sim", "false", "use simulated time (/clock)"),
    ("log_level", "info", "debug | info | warn | error"),
)


def packer_node(context, overrides=None):
    """The packer Node with the launch arguments resolved (also used by sim.launch.py)."""
    from robot_packer.problem import resource_path

    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    params = {"use_sim_time": arg("use_sim").lower() in ("true", "1", "yes")}
    if arg("device"):
        params["device"] = arg("device")
    params.update(overrides or {})
    return Node(package="robot_packer", executable="packer_node", name="robot_packer",
                namespace=arg("namespace"), output="screen", emulate_tty=True,
                parameters=[arg("params_file") or str(resource_path("launch", "packer.yaml")),
                            params],
                arguments=["--ros-args", "--log-level", arg("log_level")])


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=lambda context: [packer_node(context)])])
