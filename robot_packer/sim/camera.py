"""A simulated depth camera: labelled world-frame point clouds and RGB pictures (TinyRenderer).

``capture`` renders depth and segmentation with Bullet's CPU TinyRenderer. The OpenGL depth
buffer value d of a pixel is non-linear in range; mapping the pixel's normalised device
coordinates (x, y, 2d - 1) through the inverse of ``projection @ view`` (and dividing by w)
linearises it and gives the exact world point on the pixel's ray. Labels follow the
``objects/points`` convention (DESIGN.md §7): 0 is background (table, container, robot), object
k of the problem is label k + 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from robot_packer.problem import PackingProblem
from robot_packer.sim._bullet import p
from robot_packer.sim.world import SimWorld


@dataclass(frozen=True)
class DepthCamera:
    """A pinhole camera. Positions in metres, world frame; ``fov_deg`` is the vertical field.

    ``noise_std`` (m) is gaussian noise of the range along each pixel's ray; ``outlier_frac`` of
    the points are moved to a random range between ``near`` and 1.3x their true range (flying
    pixels; they keep their pixel's label).
    """

    width: int = 320
    height: int = 240
    fov_deg: float = 60.0
    position: tuple[float, float, float] = (0.45, -0.95, 0.75)
    target: tuple[float, float, float] = (0.45, -0.4, 0.0)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    near: float = 0.05
    far: float = 3.0
    noise_std: float = 0.0
    outlier_frac: float = 0.0

    def matrices(self, client) -> tuple[list[float], list[float]]:
        """Bullet's (view, projection) matrices, column-major flat lists of 16."""
        view = client.computeViewMatrix(list(self.position), list(self.target), list(self.up))
        proj = client.computeProjectionMatrixFOV(self.fov_deg, self.width / self.height,
                                                 self.near, self.far)
        return view, proj


def _render(client, camera: DepthCamera, flags: int = 0):
    view, proj = camera.matrices(client)
    _, _, rgb, depth, seg = client.getCameraImage(camera.width, camera.height, view, proj,
                                                  renderer=p.ER_TINY_RENDERER, flags=flags)
    shape = (camera.height, camera.width)
    return (np.asarray(rgb, np.uint8).reshape(*shape, 4),
            np.asarray(depth, np.float64).reshape(shape),
            np.asarray(seg, np.int64).reshape(shape), view, proj)


def capture(client, camera: DepthCamera, rng: np.random.Generator,
            labels: Mapping[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render one view and back-project it.

    Args:
        client: a Bullet client holding the scene (with visual shapes).
        camera: the camera.
        rng: source of the noise and outliers.
        labels: body id -> label; bodies not listed (and empty pixels) get label 0.

    Returns:
        points (N, 3) float64, metres, world frame, one per pixel that hit a surface; and
        labels (N,) uint32.
    """
    _, depth, seg, view, proj = _render(client, camera)
    hit = (seg >= 0) & (depth < 1.0)
    v, u = np.nonzero(hit)
    d = depth[v, u]
    # TinyRenderer samples pixel (u, v) at NDC (2u/W - 1, 1 - 2(v+1)/H) (measured: this makes
    # oblique planes exact to < 2 um, pixel centres would bias them by ~1 mm).
    ndc = np.stack([2.0 * u / camera.width - 1.0, 1.0 - 2.0 * (v + 1.0) / camera.height,
                    2.0 * d - 1.0, np.ones_like(d)], axis=1)
    inv = np.linalg.inv(np.asarray(proj).reshape(4, 4).T @ np.asarray(view).reshape(4, 4).T)
    world = ndc @ inv.T
    points = world[:, :3] / world[:, 3:4]
    points = _perturb(points, np.asarray(camera.position, float), camera, rng)
    body = seg[v, u]
    lab = np.zeros(len(d), np.uint32)
    for b, label in (labels or {}).items():
        lab[body == b] = label
    return points.astype(np.float64), lab


def _perturb(points: np.ndarray, origin: np.ndarray, camera: DepthCamera,
             rng: np.random.Generator) -> np.ndarray:
    """Range noise along each ray and flying-pixel outliers."""
    if camera.noise_std <= 0 and camera.outlier_frac <= 0:
        return points
    ray = points - origin
    rng_dist = np.linalg.norm(ray, axis=1, keepdims=True)
    unit = ray / np.maximum(rng_dist, 1e-12)
    dist = rng_dist[:, 0]
    if camera.noise_std > 0:
        dist = dist + rng.normal(0.0, camera.noise_std, size=dist.shape)
    if camera.outlier_frac > 0:
        mask = rng.random(dist.shape) < camera.outlier_frac
        dist[mask] = rng.uniform(camera.near, 1.3 * dist[mask])
    return origin + unit * dist[:, None]


def render_rgb(world, camera: DepthCamera) -> np.ndarray:
    """(H, W, 3) uint8 colour picture of a SimWorld (built with visuals) from ``camera``."""
    rgb, *_ = _render(world.client, camera, flags=p.ER_NO_SEGMENTATION_MASK)
    return np.ascontiguousarray(rgb[..., :3])


def look_from(target: Sequence[float], azimuth_deg: float, elevation_deg: float, distance: float,
              **kw) -> DepthCamera:
    """A camera at ``distance`` from ``target``, seen from azimuth/elevation (deg, world frame)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    t = np.asarray(target, float)
    pos = t + distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az),
                                   math.sin(el)])
    return DepthCamera(position=tuple(pos.tolist()), target=tuple(t.tolist()), **kw)


def default_cameras(problem: PackingProblem, **kw) -> tuple[DepthCamera, DepthCamera]:
    """Two cameras looking at the table area where the items are, from opposite sides.

    Extra keyword arguments (``noise_std``, ``width``, ...) go to both cameras.
    """
    poses = np.array([it.pose for it in problem.items if it.pose is not None]).reshape(-1, 4)
    centre = poses[:, :3].mean(0) if len(poses) else np.array([0.45, -0.4, 0.0])
    target = (float(centre[0]), float(centre[1]), 0.0)
    sizes = problem.sizes
    spread = float(np.ptp(poses[:, :2], axis=0).max()) if len(poses) > 1 else 0.0
    dist = 0.3 + 0.8 * spread + 1.2 * float(sizes.max(initial=0.0))
    az = math.degrees(math.atan2(centre[1], centre[0]))  # away from the robot
    return (look_from(target, az - 60.0, 60.0, dist, **kw),
            look_from(target, az + 60.0, 60.0, dist, **kw))


def render_scene_cloud(problem: PackingProblem, cameras: Sequence[DepthCamera] | None,
                       rng: np.random.Generator, include_meshes: bool = True,
                       robot: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fused labelled cloud of the problem's items at their current world poses.

    Builds a :class:`~robot_packer.sim.world.SimWorld` (table, container, items, Panda at home)
    and concatenates the clouds of ``cameras`` (default: :func:`default_cameras`).

    Returns:
        points (N, 3) float64, metres, world frame; labels (N,) uint32 (0 background, k+1 item k).
    """
    cams = list(cameras) if cameras else list(default_cameras(problem))
    with SimWorld(problem, robot=robot, visuals=True, meshes=include_meshes) as world:
        labels = world.labels_by_body()
        clouds = [capture(world.client, cam, rng, labels) for cam in cams]
    pts = np.concatenate([c[0] for c in clouds], axis=0) if clouds else np.zeros((0, 3))
    lab = np.concatenate([c[1] for c in clouds], axis=0) if clouds else np.zeros(0, np.uint32)
    return pts, lab
