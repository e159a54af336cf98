"""Pictures of the cell: oblique TinyRenderer views and top-down placement plots (PNG)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from robot_packer.problem import PackingProblem, atomic_write
from robot_packer.sim.camera import DepthCamera, look_from, render_rgb
from robot_packer.sim.world import PALETTE, SimWorld


def cell_camera(problem: PackingProblem, width: int = 800, height: int = 600) -> DepthCamera:
    """An oblique camera framing the table, the items beside the container, and the Panda."""
    cont = problem.container.pose
    items = np.array([it.pose[:2] for it in problem.items if it.pose is not None]).reshape(-1, 2)
    pts = np.vstack([items, [cont[:2]], [[0.0, 0.0]]])
    centre = (pts.min(0) + pts.max(0)) / 2
    extent = float(np.ptp(pts, axis=0).max()) + float(problem.container.size[:2].max())
    return look_from((centre[0], centre[1], 0.22), azimuth_deg=-40.0, elevation_deg=35.0,
                     distance=0.95 + 0.75 * extent, width=width, height=height, fov_deg=45.0)


def render_cell(world: SimWorld, camera: DepthCamera | None = None) -> np.ndarray:
    """(H, W, 3) uint8 oblique picture of a world built with visuals."""
    return render_rgb(world, camera or cell_camera(world.problem))


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3|4) uint8 image as PNG, atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    buf = io.BytesIO()
    plt.imsave(buf, np.asarray(image, np.uint8), format="png")
    atomic_write(path, buf.getvalue())


def placements_png(problem: PackingProblem, poses: np.ndarray, path: str | Path,
                   title: str = "") -> None:
    """Top-down plot of container-frame placements (n, 4): outline, rotated boxes, ids."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    poses = np.asarray(poses, float).reshape(-1, 4)
    L, W, H = (float(v) for v in problem.container.size)
    t = problem.container.wall
    fig, ax = plt.subplots(figsize=(5.5, 5.5 * (W + 2 * t) / (L + 2 * t) + 0.6), dpi=120)
    ax.add_patch(Rectangle((-L / 2 - t, -W / 2 - t), L + 2 * t, W + 2 * t, fc="0.55", ec="k"))
    ax.add_patch(Rectangle((-L / 2, -W / 2), L, W, fc="0.93", ec="k"))
    order = np.argsort(poses[:, 2] + problem.sizes[:, 2] / 2)  # draw higher tops last
    for k in order:
        x, y, z, yaw = poses[k]
        sx, sy, sz = problem.sizes[k]
        c, s = math.cos(yaw), math.sin(yaw)
        corners = [(x + c * a - s * b, y + s * a + c * b)
                   for a, b in ((sx / 2, sy / 2), (-sx / 2, sy / 2), (-sx / 2, -sy / 2),
                                (sx / 2, -sy / 2))]
        ax.add_patch(Polygon(corners, closed=True, fc=PALETTE[k % len(PALETTE)][:3], ec="k",
                             alpha=0.85, lw=1.2))
        label = problem.items[k].id + (f"\nz={z + sz / 2:.2f}" if z - sz / 2 > 0.005 else "")
        ax.text(x, y, label, ha="center", va="center", fontsize=8)
    ax.set_xlim(-L / 2 - 2 * t - 0.01, L / 2 + 2 * t + 0.01)
    ax.set_ylim(-W / 2 - 2 * t - 0.01, W / 2 + 2 * t + 0.01)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m, container frame; robot at -x)")
    ax.set_ylabel("y (m)")
    ax.set_title(title or f"placements ({len(poses)} objects, container {L:.2f}x{W:.2f}x{H:.2f} m)")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
