"""The package installs as a real ament_python package and carries what operators need."""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_declares_format3_and_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "robot_packer"
    exec_deps = {e.text for e in root.findall("exec_depend")}
    for dep in ("rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "std_srvs",
                "visualization_msgs", "diagnostic_msgs", "launch", "launch_ros",
                "python3-numpy", "python3-yaml"):
        assert dep in exec_deps, dep
    test_deps = {e.text for e in root.findall("test_depend")}
    assert {"ament_flake8", "ament_pep257", "python3-pytest"} <= test_deps
    assert root.find("export/build_type").text == "ament_python"


def test_requirements_pin_cpu_torch():
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in reqs


def test_colcon_build_gives_the_ament_layout():
    bin_dir = Path(sys.executable).parent
    out = subprocess.run(["bash", str(ROOT / "scripts/colcon_check.sh")], cwd=ROOT,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "VENV_BIN": str(bin_dir),
                              "HOME": str(Path.home())},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ament layout OK" in out.stdout


def test_console_scripts_run():
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([str(bin_dir / "robot-packer"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for verb in ("solve", "verify", "perceive", "demo", "bench", "train"):
        assert verb in out.stdout
