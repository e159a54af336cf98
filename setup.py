"""Install robot_packer as an ament_python package (colcon) or a plain pip package."""
import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "robot_packer"


def tree(folder):
    """data_files entries for every file below ``folder``, keeping the folder structure."""
    entries = []
    for root, _, files in os.walk(folder):
        paths = [os.path.join(root, f) for f in files if not f.startswith(".")]
        if paths:
            entries.append((os.path.join("share", PACKAGE, root), paths))
    return entries


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        (os.path.join("share", PACKAGE), ["package.xml"]),
        (os.path.join("share", PACKAGE, "launch"), glob("launch/*")),
    ] + tree("models") + tree("sim"),
    install_requires=["setuptools"],
    extras_require={"cpsat": ["ortools>=9.10"]},
    zip_safe=True,
    maintainer="robot_packer developers",
    maintainer_email="robot-packer@example.com",
    description="Compositional diffusion constraint solver for robot packing, as a ROS 2 node.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "robot-packer = robot_packer.cli:main",
            "packer_node = robot_packer.node:main",
            "sim_camera = robot_packer.sim.ros_nodes:camera_main",
            "sim_executor = robot_packer.sim.ros_nodes:executor_main",
        ],
    },
)
