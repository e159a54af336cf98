#!/usr/bin/env bash
# Build the package with colcon (from PyPI, no ROS install) into a temp dir and assert the real
# ament layout: package marker, package.xml, launch files and the node executable.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV_BIN:-.venv/bin}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
git ls-files -z | tar --null -T - -cf - | tar -xf - -C "$work/src"   # tracked files only
(
  cd "$work"
  PATH="$(cd "$OLDPWD" && realpath "$BIN"):$PATH" colcon --log-base log build --base-paths src \
    --build-base build --install-base install --merge-install >colcon.log 2>&1 \
    || { cat colcon.log; exit 1; }
)
inst="$work/install"
for f in share/robot_packer/package.xml share/ament_index/resource_index/packages/robot_packer \
         lib/robot_packer/packer_node; do
  [ -e "$inst/$f" ] || { echo "colcon-check: missing $f"; find "$inst" -maxdepth 3 | head -50; exit 1; }
done
ls "$inst"/share/robot_packer/launch/*.launch.py >/dev/null \
  || { echo "colcon-check: no launch/*.launch.py installed"; exit 1; }
ls "$inst"/share/robot_packer/sim/scenes/*.yaml >/dev/null \
  || { echo "colcon-check: no sim/scenes installed"; exit 1; }
echo "colcon-check: ament layout OK"
