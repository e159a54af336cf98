"""Box fitting of perception: one object's points on the support plane -> a gravity-aligned box.

Pure numpy/scipy (no open3d): :mod:`robot_packer.perception` finds the support plane and the
objects' points and calls :func:`fit_object` on each (re-exported there: ``PerceivedObject``).
The support plane's geometry (:func:`refine_plane`, :class:`PlaneFrame`) lives here too.
Steps of :func:`fit_box` (docs/perception.md, "Pipeline" 6), in the plane's frame:

1. yaw: the minimum-area rectangle of the footprint (rotating calipers candidates on the 2D
   convex hull, scored robustly, :func:`min_area_yaw`);
2. the 4 sides and the top: robust face positions (:func:`edge`);
3. the unseen bottom is the support plane: the box reaches down to it.

Conventions: ``size = [sx, sy, sz]`` with ``sx >= sy`` (x along the longer footprint side), yaw
about world z in (-pi/2, pi/2], pose ``[x, y, z, yaw]`` is the box centre in the world frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import ConvexHull, QhullError

if TYPE_CHECKING:  # settings only; perception imports this module
    from robot_packer.perception import PerceptionConfig

YAW_POINTS = 1500  # footprint cells scored per candidate yaw


@dataclass(frozen=True)
class PlaneFrame:
    """Orthonormal frame of the support plane: u, v in the plane, n up, origin on the plane.

    All four are (3,) float arrays in the world frame (metres for the origin).
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    n: np.ndarray

    @classmethod
    def of(cls, plane: np.ndarray) -> "PlaneFrame":
        """Frame of the plane [a, b, c, d] (a x + b y + c z + d = 0, normal pointing up)."""
        n = plane[:3] / np.linalg.norm(plane[:3])
        d = plane[3] / np.linalg.norm(plane[:3])
        u = np.array([1.0, 0.0, 0.0]) - n[0] * n
        if np.linalg.norm(u) < 1e-6:
            u = np.array([0.0, 1.0, 0.0]) - n[1] * n
        u /= np.linalg.norm(u)
        return cls(-d * n, u, np.cross(n, u), n)

    def coords(self, pts: np.ndarray) -> np.ndarray:
        """(M, 3) world points -> (M, 3) [u, v, height above the plane]."""
        rel = pts - self.origin
        return np.stack([rel @ self.u, rel @ self.v, rel @ self.n], axis=1)


def refine_plane(pts: np.ndarray) -> np.ndarray:
    """Least-squares plane [a, b, c, d] through ``pts`` (M, 3) with a unit normal pointing up."""
    centre = pts.mean(axis=0)
    normal = np.linalg.svd(pts - centre, full_matrices=False)[2][-1]
    if normal[2] < 0:
        normal = -normal
    return np.append(normal, -normal @ centre)


@dataclass(frozen=True)
class PerceivedObject:
    """One fitted box. size (3,) m; pose (4,) [x, y, z, yaw] world; points (M, 3) world."""

    label: int
    size: np.ndarray
    pose: np.ndarray
    mass: float
    n_points: int
    points: np.ndarray

    def __post_init__(self) -> None:
        for name, shape in (("size", (3,)), ("pose", (4,))):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"PerceivedObject.{name}: expected shape {shape}, "
                                 f"got {np.shape(getattr(self, name))}")
        if np.ndim(self.points) != 2 or np.shape(self.points)[1] != 3:
            raise ValueError("PerceivedObject.points: expected (M, 3), "
                             f"got {np.shape(self.points)}")


def fit_object(pts: np.ndarray, label: int, what: str, frame: PlaneFrame,
               config: "PerceptionConfig", limit: float,
               warnings: list[str]) -> PerceivedObject | None:
    """Box of one object's (M, 3) world points standing on the plane of ``frame``, or None with
    a warning appended to ``warnings`` (too few points, too flat, an extent above ``limit``
    metres). ``what`` names the object in the warning."""
    c = frame.coords(pts)
    above = c[:, 2] > -3 * config.plane_distance  # nothing lies below the support plane
    pts, c = pts[above], c[above]
    if len(pts) < config.min_points:
        below = f" ({int(np.sum(~above))} more below the support plane)" if not above.all() else ""
        warnings.append(f"{what}: {len(pts)} points{below}, below min_points={config.min_points}, "
                        "dropped")
        return None
    size, pose, top = fit_box(c, frame, config)
    if top < config.min_height:
        warnings.append(f"{what}: {top * 1000:.1f} mm high, below min_height="
                        f"{config.min_height * 1000:.1f} mm (flat, not an object), dropped")
        return None
    if size.max() > limit:
        warnings.append(f"{what}: extent {size.max():.3f} m above the size limit {limit:.3f} m, "
                        "dropped")
        return None
    mass = config.density * float(np.prod(size))
    return PerceivedObject(label, size, pose, mass, len(pts), pts)


def fit_box(c: np.ndarray, frame: PlaneFrame,
            config: "PerceptionConfig") -> tuple[np.ndarray, np.ndarray, float]:
    """Gravity-aligned box of one object standing on the plane of ``frame``.

    Args:
        c: (M, 3) the object's points in plane coordinates [u, v, height], metres (M >= 1).
        frame: the support plane's frame.
        config: face estimator settings (``edge_*``, ``step_level``, ``face_outer``),
            ``min_height`` (points above it make the footprint) and ``coarse_voxel``.

    Returns:
        size (3,) metres (``sx >= sy``, each at least ``edge_bin``), pose (4,) [x, y, z, yaw]
        world frame, and the top's height above the plane (metres, before that floor).
    """
    raised = c[c[:, 2] >= config.min_height]
    foot = raised if len(raised) >= config.min_points else c
    yaw = min_area_yaw(_dense_cell_centroids(foot[:, :2], config.coarse_voxel))
    cos, sin = math.cos(yaw), math.sin(yaw)
    a = foot[:, 0] * cos + foot[:, 1] * sin
    b = -foot[:, 0] * sin + foot[:, 1] * cos
    lo_a, hi_a = -edge(-a, config), edge(a, config)
    lo_b, hi_b = -edge(-b, config), edge(b, config)
    top = edge(c[:, 2], config)
    size = np.maximum([hi_a - lo_a, hi_b - lo_b, top], config.edge_bin)
    ca, cb = (lo_a + hi_a) / 2, (lo_b + hi_b) / 2
    centre = (frame.origin + (ca * cos - cb * sin) * frame.u + (ca * sin + cb * cos) * frame.v
              + size[2] / 2 * frame.n)
    if size[0] < size[1]:
        size[:2] = size[1::-1]
        yaw += math.pi / 2
    axis = math.cos(yaw) * frame.u + math.sin(yaw) * frame.v
    pose = np.append(centre, _wrap_half_pi(math.atan2(axis[1], axis[0])))
    return size, pose, top


def _dense_cell_centroids(xy, cell):
    """Centroids of the 2D cells holding at least 2 points (stray points do not set the yaw)."""
    ij = np.floor((xy - xy.min(axis=0)) / cell).astype(np.int64)
    keys, inverse, counts = np.unique(ij[:, 0] * (ij[:, 1].max() + 1) + ij[:, 1],
                                      return_inverse=True, return_counts=True)
    cent = np.stack([np.bincount(inverse, xy[:, k], len(keys)) for k in range(2)], axis=1)
    cent /= counts[:, None]
    dense = cent[counts >= 2]
    return dense if len(dense) >= 3 else cent


def _wrap_half_pi(yaw):
    """Yaw of a box (symmetric under a half turn) in (-pi/2, pi/2]."""
    yaw = math.remainder(yaw, math.pi)
    return math.pi / 2 if yaw <= -math.pi / 2 + 1e-12 else yaw


def min_area_yaw(xy: np.ndarray) -> float:
    """Yaw (rad) of the smallest bounding rectangle of ``xy`` (N, 2), robust to stray points.

    Candidates are the edge directions of the 2D convex hull (rotating calipers: the exact
    minimum-area rectangle has a side on the hull) plus a 2 degree grid; each is scored by the
    area between the 1st and 99th percentiles along its axes, then refined to 0.1 degree.
    """
    try:
        hull = xy[ConvexHull(xy).vertices]
    except (QhullError, ValueError):  # collinear or too few points: principal direction
        d = np.linalg.svd(xy - xy.mean(axis=0), full_matrices=False)[2][0]
        return math.atan2(d[1], d[0])
    edges = np.roll(hull, -1, axis=0) - hull
    candidates = np.concatenate([np.mod(np.arctan2(edges[:, 1], edges[:, 0]), math.pi / 2),
                                 np.radians(np.arange(0.0, 90.0, 2.0))])
    if len(xy) > YAW_POINTS:  # the score is a percentile: a fixed subsample is plenty
        xy = xy[np.linspace(0, len(xy) - 1, YAW_POINTS).astype(np.int64)]
    best = _robust_best(xy, np.unique(np.round(candidates, 4)))
    return _robust_best(xy, best + np.radians(np.arange(-1.5, 1.55, 0.1)))


def _robust_best(xy, angles):
    """The angle whose rotated 1-99 percentile box of ``xy`` has the smallest area."""
    cos, sin = np.cos(angles), np.sin(angles)
    a = xy[:, 0, None] * cos + xy[:, 1, None] * sin      # (point, candidate angle)
    b = -xy[:, 0, None] * sin + xy[:, 1, None] * cos
    qa, qb = np.percentile(a, [1, 99], axis=0), np.percentile(b, [1, 99], axis=0)
    area = (qa[1] - qa[0]) * (qb[1] - qb[0])
    return float(angles[np.argmin(area)])


def edge(values: np.ndarray, config: "PerceptionConfig") -> float:
    """Robust position (metres) of the upper end of a 1-D point distribution (a face, an edge).

    A histogram near the robust maximum is smoothed. Where a peak near the end stands at least
    twice above the plateau inward of it, a face was seen (under sensor noise): its position is
    the outer half-maximum of the peak (``face_outer``: about 1.2 noise sigmas outside the face,
    so the box encloses what was seen) or the peak's centre. Otherwise the end is a step (a top
    face seen up to its edge) or a tapering surface (a curved object seen at grazing angles): its
    position is the outermost crossing of ``step_level`` times the maximum, so thin tips stay in.
    """
    step = max(config.edge_bin, min(config.edge_window * 20.0 / len(values), 3 * config.edge_bin))
    hi = float(np.percentile(values, 98.0))  # anchor below stray points along camera rays
    top = min(float(values.max()), hi + config.edge_window)
    lo = max(hi - config.edge_window, float(np.percentile(values, 2.0)))
    edges = np.arange(lo - step, top + 2 * step, step)
    counts = np.histogram(values, edges)[0].astype(np.float64)
    smooth = np.convolve(np.pad(counts, 1), [0.25, 0.5, 0.25], mode="valid")
    centres = (edges[:-1] + edges[1:]) / 2
    near = int(math.ceil(0.006 / step))                      # a face peak is this close to the end
    if values.max() - values.min() < config.edge_bin or smooth.max() <= 0:
        return float(values.max())                         # degenerate: one value, no histogram
    last = int(np.flatnonzero(smooth >= smooth.max() / 2)[-1])
    q = max(0, last - near) + int(np.argmax(smooth[max(0, last - near):last + 1]))
    half = smooth[q] / 2
    outer = _crossing(smooth, centres, half, q, +1)
    outer = float(centres[-1]) if outer is None else outer
    inner = _crossing(smooth, centres, half, q, -1)
    plateau = smooth[:max(0, q - near)]
    if inner is not None and len(plateau) >= 3 and np.median(plateau) < half:
        return outer if config.face_outer else (inner + outer) / 2
    level = max(config.step_level * smooth.max(), 1.0)  # 1.0: ignores one isolated point
    hits = np.flatnonzero(smooth >= level)
    if hits.size == 0:
        return float(centres[last])
    j = int(hits[-1])
    end = _crossing(smooth, centres, level, j, +1)
    return float(centres[-1]) if end is None else end


def _crossing(smooth, centres, level, start, direction):
    """Interpolated position where ``smooth`` first drops below ``level`` walking from ``start``."""
    j = start
    while 0 <= j + direction < len(smooth):
        k = j + direction
        if smooth[k] < level:
            t = (smooth[j] - level) / (smooth[j] - smooth[k])
            return float(centres[j] + t * (centres[k] - centres[j]))
        j = k
    return None
