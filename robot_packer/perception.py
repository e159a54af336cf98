"""Perception: a world-frame point cloud -> gravity-aligned object boxes (DESIGN.md §1, §3).

The only module that imports open3d. Pipeline of :func:`perceive`:

1. drop non-finite points; voxel-average clouds above ``max_points`` (300k points stay fast);
2. group points into coarse voxels (per label in labelled mode) and drop isolated voxels with a
   statistical outlier filter on the voxel centroids (removes sensor outliers cheaply);
3. RANSAC support plane (open3d ``segment_plane``, seeded) on the background, least-squares
   refined; objects rest on it (fallback: the table plane z = 0, with a warning);
4. objects by label, or by DBSCAN (open3d ``cluster_dbscan``) of the voxels above the plane,
   projected on it (objects stand side by side; optional container/workspace exclusion); a
   cluster that does not reach down to the plane joins the nearest lower, larger one within
   ``merge_gap`` (:func:`_merge_unsupported`: a part of an object whose joining surface is
   hidden from the cameras);
5. per object, :func:`robot_packer.boxfit.fit_object`: the minimum-area rectangle of the points
   projected on the plane gives the yaw, robust face positions give the footprint extents and
   the top, the unseen bottom is filled down to the plane. docs/perception.md has the details
   and measurements.

Conventions: ``size = [sx, sy, sz]`` with ``sx >= sy`` (x along the longer footprint side), yaw
about world z in (-pi/2, pi/2], pose ``[x, y, z, yaw]`` is the box centre in the world frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import open3d as o3d
from scipy.spatial import cKDTree

from robot_packer.boxfit import PerceivedObject, PlaneFrame, fit_object, refine_plane
from robot_packer.problem import DEFAULT_DENSITY, Container, Item

TABLE_PLANE = np.array([0.0, 0.0, 1.0, 0.0])  # world z = 0 (DESIGN.md §3)


@dataclass(frozen=True)
class PerceptionConfig:
    """Settings of :func:`perceive` (metres unless noted)."""

    max_points: int = 150_000          # clouds above this are voxel-averaged first
    voxel_size: float = 0.002          # voxel of that averaging
    coarse_voxel: float = 0.004        # voxels for outlier filter, plane and clustering
    outlier_neighbors: int = 12        # statistical outlier removal on coarse voxels
    outlier_std_ratio: float = 2.5
    plane_distance: float = 0.004      # RANSAC inlier distance
    plane_iterations: int = 300
    plane_max_points: int = 5_000      # RANSAC runs on at most this many coarse voxels
    plane_candidates: int = 3          # planes tried before falling back to z = 0
    max_plane_tilt_deg: float = 20.0   # support plane normal vs world z
    max_below_fraction: float = 0.2    # a support plane has few points below it
    min_height: float = 0.006          # points above the plane by this much are objects
    cluster_eps: float = 0.006         # DBSCAN radius on the plane (objects further apart)
    cluster_min_points: int = 3        # DBSCAN core-point neighbours (2D cells)
    float_height: float = 0.025        # a cluster whose bottom is this far above the plane joins
    merge_gap: float = 0.012           # a larger, lower one this close (footprint); 0: never
    min_points: int = 30               # fewer points: the object is dropped with a warning
    max_object_size: float = 1.0       # larger extents: dropped with a warning
    container_margin: float = 0.01     # unlabelled: points this close to the container are its
    workspace: tuple[float, float, float, float] | None = None  # unlabelled: x0, x1, y0, y1 (world)
    edge_bin: float = 0.001            # histogram bin of the face estimator
    edge_window: float = 0.015         # depth of the face search below the robust extreme
    step_level: float = 0.1            # share of the peak density that marks a step/tapering end
    face_outer: bool = True            # a seen face: its outer half-maximum, not its centre
    density: float = DEFAULT_DENSITY   # kg/m^3 for masses
    seed: int = 0                      # open3d RANSAC seed (when no rng is passed)


@dataclass(frozen=True)
class PerceptionResult:
    """Objects, the support plane [a, b, c, d] (ax+by+cz+d=0, unit normal up) and warnings."""

    objects: tuple[PerceivedObject, ...]
    support_plane: np.ndarray
    skipped: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- public API


def perceive(points: np.ndarray, labels: np.ndarray | None = None,
             config: PerceptionConfig = PerceptionConfig(),
             rng: np.random.Generator | None = None,
             container: Container | None = None) -> PerceptionResult:
    """Fit one gravity-aligned box per object of a world-frame cloud.

    Args:
        points: (N, 3) float, metres, world frame (z up). Non-finite rows are dropped.
        labels: optional (N,) non-negative integers, 0 = background; without labels the points
            above the support plane are clustered (objects must be > ``cluster_eps`` apart;
            parts that do not reach the plane join a neighbour, :func:`_merge_unsupported`).
        config: settings.
        rng: seeds open3d's RANSAC when given (else ``config.seed``).
        container: when given, objects with an extent above its largest inner extent are
            dropped with a warning (as are those above ``config.max_object_size``), and in
            unlabelled mode the points over the container (walls included) are ignored.

    Returns:
        PerceptionResult; ``skipped`` lists human-readable warnings (dropped clusters etc.).

    Raises:
        ValueError: wrong shapes or dtypes, an empty or all non-finite cloud.
    """
    pts, lab = _clean_input(points, labels)
    warnings: list[str] = []
    if len(pts) > config.max_points:
        pts, lab = _voxel_average(pts, lab, config.voxel_size)
    dense_lab = np.unique(lab, return_inverse=True)[1] if lab is not None else None
    keys, inverse = _voxel_keys(pts, config.coarse_voxel, dense_lab)
    centroids, voxel_label = _voxel_centroids(pts, lab, inverse, len(keys))
    seed = int(rng.integers(2**31 - 1)) if rng is not None else config.seed
    plane_pts = centroids[voxel_label == 0] if lab is not None else centroids
    plane = _support_plane(plane_pts, config, seed, warnings)
    candidates = (voxel_label > 0 if lab is not None
                  else _unlabelled_candidates(centroids, plane, container, config))
    keep_voxel = _inlier_voxels(centroids, voxel_label, candidates, config)
    if lab is not None:
        groups = _label_groups(lab, keep_voxel[inverse])
    else:
        groups = _cluster_groups(centroids, keep_voxel, inverse, PlaneFrame.of(plane), config,
                                 warnings)
    limit = config.max_object_size
    if container is not None:
        limit = min(limit, float(np.max(container.size)))
    objects = []
    for label, idx, what in groups:
        obj = fit_object(pts[idx], label, what, PlaneFrame.of(plane), config, limit, warnings)
        if obj is not None:
            objects.append(obj)
    if not groups:
        warnings.append("no objects found (no labelled points)" if lab is not None
                        else "no objects found above the support plane")
    return PerceptionResult(tuple(objects), plane, tuple(warnings))


def fit_single_object(points: np.ndarray,
                      config: PerceptionConfig = PerceptionConfig()) -> PerceivedObject:
    """Fit the box of one object's world-frame cloud, resting on the table plane z = 0.

    The cloud should hold only the object (a few table points near z = 0 are ignored for the
    footprint). No support plane is searched: the world table plane z = 0 (DESIGN.md §3) is the
    bottom of the box.

    Raises:
        ValueError: bad shape, too few finite points, or an object above ``max_object_size``.
    """
    pts, _ = _clean_input(points, None)
    if len(pts) > config.max_points:
        pts, _ = _voxel_average(pts, None, config.voxel_size)
    keys, inverse = _voxel_keys(pts, config.coarse_voxel, None)
    centroids, _ = _voxel_centroids(pts, None, inverse, len(keys))
    keep = _inlier_voxels(centroids, np.zeros(len(centroids), np.int64),
                          np.ones(len(centroids), bool), config)[inverse]
    warnings: list[str] = []
    obj = fit_object(pts[keep], 1, "object", PlaneFrame.of(TABLE_PLANE), config,
                     config.max_object_size, warnings)
    if obj is None:
        raise ValueError(warnings[-1] if warnings else "cannot fit a box to the cloud")
    return obj


def load_cloud(path: str | Path) -> np.ndarray:
    """Read a cloud file: .npy (N, 3) or (N, 4) with a label column, .ply or .pcd (N, 3).

    Raises:
        ValueError: missing/unreadable file, unsupported suffix, wrong shape, empty cloud.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".ply", ".pcd"):
        raise ValueError(f"{path}: unsupported cloud format {suffix!r} (use .npy, .ply or .pcd)")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npy file ({exc})") from None
        if arr.ndim != 2 or arr.shape[1] not in (3, 4) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{path}: expected a numeric (N, 3) or (N, 4) array, "
                             f"got {arr.dtype} {arr.shape}")
        arr = arr.astype(np.float64)
    else:
        cloud = o3d.io.read_point_cloud(str(path), format="auto", print_progress=False)
        arr = np.asarray(cloud.points, dtype=np.float64)
    if len(arr) == 0:
        raise ValueError(f"{path}: empty or unreadable point cloud")
    return arr


def to_items(result: PerceptionResult, ids: Sequence[str] | None = None) -> list[Item]:
    """Items for the perceived objects: id ``obj<label>`` unless ``ids`` (one per object)."""
    if ids is not None and len(ids) != len(result.objects):
        raise ValueError(f"ids: expected {len(result.objects)} ids, got {len(ids)}")
    return [Item(ids[i] if ids is not None else f"obj{o.label}", o.size, o.pose, o.mass,
                 points=o.points) for i, o in enumerate(result.objects)]


# ----------------------------------------------------------------------------- input, voxels


def _clean_input(points, labels):
    """Validate shapes; drop non-finite rows. Returns float64 (N, 3) and int64 (N,) or None."""
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("points: expected a numeric (N, 3) array") from None
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points: expected shape (N, 3), got {pts.shape}")
    if len(pts) == 0:
        raise ValueError("points: the cloud is empty")
    finite = np.all(np.isfinite(pts), axis=1)
    lab = None
    if labels is not None:
        raw = np.asarray(labels)
        if raw.shape != (len(pts),):
            raise ValueError(f"labels: expected shape ({len(pts)},), got {raw.shape}")
        raw = raw[finite]
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
                raise ValueError("labels: must be non-negative integers (0 = background)")
        elif raw.dtype.kind not in "iu":
            raise ValueError(f"labels: must be non-negative integers, got dtype {raw.dtype}")
        if np.any(raw < 0):
            raise ValueError("labels: must be non-negative integers (0 = background)")
        lab = raw.astype(np.int64)
    if not finite.any():
        raise ValueError(f"points: no finite points (all {len(pts)} are NaN/inf)")
    return pts[finite], lab


def _voxel_keys(pts, voxel, dense_labels):
    """Unique voxel (and label) keys and, per point, its voxel index."""
    ijk = np.floor((pts - pts.min(axis=0)) / voxel).astype(np.int64)
    dims = ijk.max(axis=0) + 1
    n_lab = int(dense_labels.max()) + 1 if dense_labels is not None else 1
    if float(np.prod(dims.astype(np.float64))) * n_lab > 2.0**62:
        raise ValueError(f"points: the cloud spans {np.ptp(pts, axis=0).max():.0f} m, too large")
    key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
    if dense_labels is not None:
        key = key * n_lab + dense_labels
    return np.unique(key, return_inverse=True)


def _voxel_centroids(pts, lab, inverse, n):
    counts = np.bincount(inverse, minlength=n).astype(np.float64)
    cent = np.stack([np.bincount(inverse, pts[:, k], n) for k in range(3)], axis=1)
    cent /= counts[:, None]
    vlab = np.zeros(n, dtype=np.int64)
    if lab is not None:
        vlab[inverse] = lab
    return cent, vlab


def _voxel_average(pts, lab, voxel):
    """Average the points (of one label) inside each voxel: fast downsampling of large clouds."""
    dense = np.unique(lab, return_inverse=True)[1] if lab is not None else None
    keys, inverse = _voxel_keys(pts, voxel, dense)
    cent, vlab = _voxel_centroids(pts, lab, inverse, len(keys))
    return cent, (vlab if lab is not None else None)


def _inlier_voxels(centroids, voxel_label, candidates, config):
    """Mask of candidate coarse voxels kept by open3d's statistical outlier removal, per label."""
    keep = candidates.copy()
    for label in np.unique(voxel_label[candidates]):
        members = np.flatnonzero(candidates & (voxel_label == label))
        if len(members) <= config.outlier_neighbors + 1:
            continue
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(centroids[members]))
        _, idx = cloud.remove_statistical_outlier(config.outlier_neighbors,
                                                  config.outlier_std_ratio)
        keep[members] = False
        keep[members[np.asarray(idx, dtype=np.int64)]] = True
    return keep


# ----------------------------------------------------------------------------- plane, groups


def _support_plane(pts, config, seed, warnings):
    """Largest near-horizontal RANSAC plane with few points below it; else z = 0 (warned)."""
    if len(pts) > config.plane_max_points:
        pts = pts[np.random.default_rng(seed).choice(len(pts), config.plane_max_points, False)]
    remaining = pts
    o3d.utility.random.seed(seed)
    for _ in range(config.plane_candidates):
        if len(remaining) < 10:
            break
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(remaining))
        _, inliers = cloud.segment_plane(config.plane_distance, 3, config.plane_iterations)
        inliers = np.asarray(inliers, dtype=np.int64)
        plane = refine_plane(remaining[inliers])
        for _ in range(2):  # re-select inliers: makes the plane independent of RANSAC's draw
            near = np.abs(remaining @ plane[:3] + plane[3]) <= config.plane_distance
            plane = refine_plane(remaining[near])
        tilt = math.degrees(math.acos(min(1.0, abs(plane[2]))))
        below = np.mean(pts @ plane[:3] + plane[3] < -3 * config.plane_distance)
        if tilt <= config.max_plane_tilt_deg and below <= config.max_below_fraction:
            return plane
        remaining = np.delete(remaining, inliers, axis=0)
    warnings.append("no support plane found in the cloud; using the table plane z = 0")
    return TABLE_PLANE.copy()


def _unlabelled_candidates(centroids, plane, container, config):
    """Mask of voxels that may belong to objects: above the plane, off the container, in the
    workspace."""
    candidates = PlaneFrame.of(plane).coords(centroids)[:, 2] > config.min_height
    if container is not None:
        candidates &= ~_inside_container(centroids, container, config.container_margin)
    if config.workspace is not None:
        x0, x1, y0, y1 = config.workspace
        candidates &= ((centroids[:, 0] >= x0) & (centroids[:, 0] <= x1)
                       & (centroids[:, 1] >= y0) & (centroids[:, 1] <= y1))
    return candidates


def _inside_container(pts, container, margin):
    """Mask of points over the container's outer footprint (walls + ``margin``)."""
    local = container.from_world(np.column_stack([pts, np.zeros(len(pts))]))
    half = container.size[:2] / 2 + container.wall + margin
    return np.all(np.abs(local[:, :2]) <= half, axis=1)


def _label_groups(lab, keep):
    """(label, point indices, name) per non-zero label, outlier points removed."""
    return [(int(label), np.flatnonzero((lab == label) & keep), f"label {label}")
            for label in np.unique(lab[lab > 0])]


def _cluster_groups(centroids, above, inverse, frame, config, warnings):
    """DBSCAN of the kept coarse voxels above the plane, projected on it (objects stand on the
    plane side by side, so footprints separate them even where the sensor sampled sparsely).
    Clusters are numbered 1.. by (x, y)."""
    if not above.any():
        return []
    flat = frame.coords(centroids[above])  # [u, v, height]
    foot = flat * [1.0, 1.0, 0.0]
    _, cell = _voxel_keys(foot, config.coarse_voxel, None)  # 2D cells: stacked voxels merge
    cells, _ = _voxel_centroids(foot, None, cell, int(cell.max()) + 1)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cells))
    cell_cluster = np.asarray(cloud.cluster_dbscan(config.cluster_eps, config.cluster_min_points))
    vox_cluster = np.full(len(centroids), -1, dtype=np.int64)
    vox_cluster[above] = cell_cluster[cell]
    n_points = np.bincount(vox_cluster[inverse] + 1, minlength=cell_cluster.max() + 2)[1:]
    vox_cluster[above] = _merge_unsupported(flat, vox_cluster[above], n_points, config)
    pt_cluster = vox_cluster[inverse]
    order = np.argsort(pt_cluster, kind="stable")
    bounds = np.searchsorted(pt_cluster[order], np.arange(pt_cluster.max() + 2))
    found, small, small_points = [], 0, 0
    for k in range(pt_cluster.max() + 1):
        idx = order[bounds[k]:bounds[k + 1]]
        if len(idx) == 0:  # joined to another cluster
            continue
        if len(idx) < config.min_points:
            small, small_points = small + 1, small_points + len(idx)
            continue
        centre = centroids[vox_cluster == k].mean(axis=0)
        found.append((round(centre[0], 4), round(centre[1], 4), idx))
    if small:
        warnings.append(f"{small} cluster(s) below min_points={config.min_points} dropped "
                        f"({small_points} points)")
    found.sort(key=lambda f: (f[0], f[1]))
    return [(i + 1, idx, f"cluster {i + 1}") for i, (_, _, idx) in enumerate(found)]


def _merge_unsupported(flat, cluster, n_points, config):
    """Cluster ids (M,) after joining each cluster that does not reach down to the plane to a
    neighbour holding it.

    Objects stand on the support plane (DESIGN.md §3), so a cluster whose lowest voxels (2nd
    percentile of their heights) are more than ``float_height`` above it is held up: it is a
    part of a neighbour whose joining surface neither camera saw (an irregular object's side
    over its foot). It joins the nearest cluster in the footprint, within ``merge_gap``, that
    reaches lower and has more voxels. Clusters that reach the plane are never joined, however
    close (boxes side by side stay apart). ``flat`` (M, 3): kept voxels [u, v, height] in the
    plane frame (metres); ``cluster`` (M,): DBSCAN id, -1 = noise; ``n_points`` (K,): points
    per cluster (clusters below ``min_points`` take no part).
    """
    ids = [k for k in range(len(n_points)) if n_points[k] >= config.min_points]
    members = {k: np.flatnonzero(cluster == k) for k in ids}
    bottom = {k: float(np.percentile(flat[members[k], 2], 2.0)) for k in ids}
    host = np.arange(len(n_points))
    for k in ids:
        if bottom[k] <= config.float_height:
            continue
        lower = [j for j in ids if bottom[j] < bottom[k] and len(members[j]) > len(members[k])]
        gaps = [cKDTree(flat[members[j], :2]).query(flat[members[k], :2])[0].min()
                for j in lower]
        if gaps and min(gaps) <= config.merge_gap:
            host[k] = lower[int(np.argmin(gaps))]
    for _ in ids:  # hosts are strictly lower, so chains end within len(ids) steps
        host = host[host]
    out = cluster.copy()
    out[cluster >= 0] = host[cluster[cluster >= 0]]
    return out
