"""Synthetic labelled clouds of boxes on a table (numpy only), for tests, soak runs and examples.

The simulated depth camera in ``robot_packer.sim.camera`` renders realistic views; this is the
cheap stand-in when only a plausible labelled cloud is needed, without a physics engine.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

Box = tuple[tuple[float, float], tuple[float, float, float], float]  # ((x, y), size, yaw)


def box_cloud(boxes: Sequence[Box], spacing: float = 0.005, seed: int = 0,
              noise: float = 0.0005) -> tuple[np.ndarray, np.ndarray]:
    """Top and side faces of boxes resting on a table at z = 0, plus the table around them.

    Args:
        boxes: ``[((x, y), (sx, sy, sz), yaw), ...]`` in the world frame, metres / radians.
        spacing: point spacing on the faces (m); the table is sampled at twice that.
        seed: noise seed.
        noise: gaussian noise std (m) on every coordinate.

    Returns:
        points (N, 3) float64 world frame; labels (N,) uint32 (box k -> k + 1, table -> 0).
    """
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(0.1, 0.9, 2 * spacing), np.arange(-0.6, 0.6, 2 * spacing))
    table = np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1)
    pts, labs = [], []
    for k, ((cx, cy), (sx, sy, sz), yaw) in enumerate(boxes, start=1):
        u, v = np.arange(-sx / 2, sx / 2, spacing), np.arange(-sy / 2, sy / 2, spacing)
        w = np.arange(0, sz, spacing)
        a, b = np.meshgrid(u, v)
        faces = [np.stack([a.ravel(), b.ravel(), np.full(a.size, sz)], 1)]
        for s in (-1, 1):
            a, b = np.meshgrid(u, w)
            faces.append(np.stack([a.ravel(), np.full(a.size, s * sy / 2), b.ravel()], 1))
            a, b = np.meshgrid(v, w)
            faces.append(np.stack([np.full(a.size, s * sx / 2), a.ravel(), b.ravel()], 1))
        c, s_ = np.cos(yaw), np.sin(yaw)
        rot = np.array([[c, s_, 0], [-s_, c, 0], [0, 0, 1]])
        pts.append(np.concatenate(faces) @ rot + [cx, cy, 0])
        labs.append(np.full(len(pts[-1]), k))
        rel = (table[:, :2] - [cx, cy]) @ rot[:2, :2].T
        table = table[(np.abs(rel[:, 0]) > sx / 2 + 0.01) | (np.abs(rel[:, 1]) > sy / 2 + 0.01)]
    pts.append(table)
    labs.append(np.zeros(len(table)))
    points = np.concatenate(pts) + rng.normal(0, noise, (sum(map(len, pts)), 3))
    return points, np.concatenate(labs).astype(np.uint32)
