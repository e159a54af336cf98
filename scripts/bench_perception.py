#!/usr/bin/env python3
"""Perception benchmark on simulated depth clouds (docs/perception.md).

Each scene puts 3-6 objects on the table in the pick area: boxes and real meshes from
pybullet_data ``random_urdfs`` (each scaled per axis to a 4-20 cm box), at random yaws, footprints
at least ``--min-gap`` apart. Two simulated depth cameras (``robot_packer.sim.camera``,
TinyRenderer, range noise 1-2 mm, 1% flying-pixel outliers) give one fused labelled cloud;
perception runs in labelled and in unlabelled mode (the container is passed, so its walls are
not objects; unlabelled mode looks only in the pick area, so the Panda is not one either).

Metrics: boxes: extents error per axis and yaw error (mod the box symmetry); meshes: share of the
true surface inside the fitted box and fitted volume / true box volume; unlabelled: scenes with
the right object count; time of ``perceive``.

Usage: .venv/bin/python scripts/bench_perception.py --scenes 30 --seed 0 [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from robot_packer import perception
from robot_packer.problem import Container, Item, PackingProblem
from robot_packer.sim._bullet import data_path
from robot_packer.sim.camera import DepthCamera, look_from, render_scene_cloud

PICK_AREA = (0.25, 0.75, -0.75, -0.25)  # x_min, x_max, y_min, y_max (world, on the table)
CONTAINER = Container([0.40, 0.30, 0.20])  # default pose: x = 0.55, away from the pick area
SIZE_RANGE = (0.04, 0.20)
SURFACE_SAMPLES = 4000
CONTAIN_TOL = 0.001  # a true surface point counts as inside within 1 mm of the fitted box
# Unlabelled mode looks for objects in the pick area only (the Panda at the origin is not one).
CONFIG = perception.PerceptionConfig(workspace=(PICK_AREA[0] - 0.1, PICK_AREA[1] + 0.1,
                                                PICK_AREA[2] - 0.1, PICK_AREA[3] + 0.1))


def rect_corners(size, pose):
    c, s = math.cos(pose[3]), math.sin(pose[3])
    local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]]) * np.asarray(size[:2]) / 2
    return local @ np.array([[c, s], [-s, c]]) + pose[:2]


def footprint_gap(a, b):
    """Distance between two convex footprints (4, 2); 0 when they overlap (separating axes)."""
    for poly in (a, b):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            normal = np.array([-edge[1], edge[0]]) / np.linalg.norm(edge)
            pa, pb = a @ normal, b @ normal
            if pa.max() < pb.min() or pb.max() < pa.min():
                return _vertex_edge_gap(a, b)
    return 0.0


def _vertex_edge_gap(a, b):
    best = np.inf
    for p, q in ((a, b), (b, a)):
        for k in range(4):
            s0, s1 = q[k], q[(k + 1) % 4]
            d = s1 - s0
            t = np.clip(((p - s0) @ d) / (d @ d), 0.0, 1.0)
            best = min(best, float(np.min(np.linalg.norm(p - (s0 + t[:, None] * d), axis=1))))
    return best


def make_scene(rng, mesh_share, min_gap):
    """A PackingProblem with 3-6 items (boxes or meshes) placed apart in the pick area."""
    n = int(rng.integers(3, 7))
    items, rects = [], []
    while len(items) < n:
        size = rng.uniform(*SIZE_RANGE, 3)
        pose = np.array([rng.uniform(*PICK_AREA[:2]), rng.uniform(*PICK_AREA[2:]), size[2] / 2,
                         rng.uniform(-math.pi, math.pi)])
        rect = rect_corners(size, pose)
        if any(footprint_gap(rect, r) < min_gap for r in rects):
            if rng.random() < 0.02:  # crowded: start the scene over
                items, rects = [], []
            continue
        mesh = None
        if rng.random() < mesh_share:
            folder = f"{int(rng.integers(1000)):03d}"
            mesh = data_path("random_urdfs", folder, f"{folder}.obj")
        items.append(Item(f"o{len(items)}", size, pose, mesh=mesh))
        rects.append(rect)
    gaps = [footprint_gap(a, b) for i, a in enumerate(rects) for b in rects[i + 1:]]
    return PackingProblem(CONTAINER, tuple(items)), min(gaps)


def load_obj(path):
    """(V, 3) vertices and (F, 3) triangle indices of an OBJ file (polygons fan-triangulated)."""
    verts, tris = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(v) for v in parts[1:4]])
        elif parts[0] == "f":
            idx = [int(p.split("/")[0]) for p in parts[1:]]
            idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
            tris += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
    return np.array(verts), np.array(tris)


def true_surface(item, rng):
    """Area-weighted samples of the item's mesh surface, scaled to its box, world frame."""
    verts, tris = load_obj(item.mesh)
    lo, hi = verts.min(0), verts.max(0)
    scale = item.size / np.maximum(hi - lo, 1e-9)
    verts = (verts - (lo + hi) / 2) * scale  # the simulator fits the mesh box to the item box
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1) / 2
    pick = rng.choice(len(tris), SURFACE_SAMPLES, p=area / area.sum())
    u, v = rng.random((2, SURFACE_SAMPLES))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    pts = a[pick] + u[:, None] * (b[pick] - a[pick]) + v[:, None] * (c[pick] - a[pick])
    return to_world(pts, item.pose)


def to_world(local, pose):
    c, s = math.cos(pose[3]), math.sin(pose[3])
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return local @ rot.T + pose[:3]


def inside_share(points, obj):
    """Share of world ``points`` inside the fitted box (within CONTAIN_TOL)."""
    c, s = math.cos(obj.pose[3]), math.sin(obj.pose[3])
    rel = points - obj.pose[:3]
    local = np.column_stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1],
                             rel[:, 2]])
    return float(np.mean(np.all(np.abs(local) <= obj.size / 2 + CONTAIN_TOL, axis=1)))


def box_errors(obj, item):
    """(per-axis |extent error| (3,), yaw error in degrees mod the box's half-turn symmetry)."""
    dyaw = math.remainder(obj.pose[3] - item.pose[3], math.pi / 2)
    quarter = round((obj.pose[3] - item.pose[3] - dyaw) / (math.pi / 2)) % 2
    true = np.array(item.size, float)
    if quarter:
        true[:2] = true[1::-1]
    return np.abs(obj.size - true), abs(math.degrees(dyaw))


def cameras(problem, noise, outliers, layout):
    """Two depth cameras looking at the objects: from opposite sides (``opposite``: every side
    of an object is seen by one of them) or both from the side away from the robot (``sim``,
    ``robot_packer.sim.camera.default_cameras``)."""
    if layout == "sim":
        from robot_packer.sim.camera import default_cameras

        return default_cameras(problem, noise_std=noise, outlier_frac=outliers)
    poses = np.array([it.pose for it in problem.items])
    target = (float(poses[:, 0].mean()), float(poses[:, 1].mean()), 0.0)
    spread = float(np.ptp(poses[:, :2], axis=0).max())
    dist = 0.3 + 0.8 * spread + 1.2 * float(problem.sizes.max())
    kw = dict(noise_std=noise, outlier_frac=outliers, width=DepthCamera.width,
              height=DepthCamera.height)
    return tuple(look_from(target, az, 55.0, dist, **kw) for az in (0.0, 180.0))


def run_scene(k, args):
    rng = np.random.default_rng([args.seed, k])
    problem, gap = make_scene(rng, args.mesh_share, args.min_gap)
    noise = float(rng.uniform(0.001, 0.002))
    cams = cameras(problem, noise, args.outliers, args.cameras)
    pts, labels = render_scene_cloud(problem, cams, rng, include_meshes=True)
    out = {"scene": k, "n_objects": len(problem.items), "n_points": len(pts), "noise": noise,
           "min_gap": gap, "boxes": [], "meshes": [], "missing": []}
    start = time.perf_counter()
    result = perception.perceive(pts, labels, CONFIG, container=CONTAINER)
    out["time_labelled"] = time.perf_counter() - start
    if args.repeats and len(problem.items) == 6:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            perception.perceive(pts, labels, CONFIG, container=CONTAINER)
            times.append(time.perf_counter() - start)
        out["time_labelled_repeats"] = times
    found = {o.label: o for o in result.objects}
    for i, item in enumerate(problem.items):
        obj = found.get(i + 1)
        if obj is None:
            out["missing"].append(item.id)
        elif item.mesh is None:
            ext, yaw = box_errors(obj, item)
            out["boxes"].append({"extent_err": ext.tolist(), "yaw_err_deg": yaw,
                                 "size": item.size.tolist()})
        else:
            out["meshes"].append({"inside": inside_share(true_surface(item, rng), obj),
                                  "volume_ratio": float(np.prod(obj.size) / np.prod(item.size)),
                                  "mesh": Path(item.mesh).name})
    start = time.perf_counter()
    unlabelled = perception.perceive(pts, None, CONFIG, container=CONTAINER)
    out["time_unlabelled"] = time.perf_counter() - start
    out["unlabelled_count"] = len(unlabelled.objects)
    out["skipped_unlabelled"] = list(unlabelled.skipped)
    return out


def _stats(values, fn, nd=3):
    """``fn(values)`` rounded, or None when there are no values (a box-only or mesh-only run)."""
    return round(float(fn(values)), nd) if len(values) else None


def summarise(scenes):
    ext = np.array([b["extent_err"] for s in scenes for b in s["boxes"]]).reshape(-1, 3) * 1000
    yaw = np.array([b["yaw_err_deg"] for s in scenes for b in s["boxes"]])
    inside = np.array([m["inside"] for s in scenes for m in s["meshes"]])
    vol = np.array([m["volume_ratio"] for s in scenes for m in s["meshes"]])
    count_ok = [s["unlabelled_count"] == s["n_objects"] for s in scenes]
    six = [s for s in scenes if s["n_objects"] == 6]
    med = [s["time_labelled"] for s in six]
    return {
        "scenes": len(scenes), "objects": int(sum(s["n_objects"] for s in scenes)),
        "boxes": len(ext), "meshes": len(inside),
        "missing_labelled": int(sum(len(s["missing"]) for s in scenes)),
        "box_extent_err_mm_median_xyz": (np.median(ext, 0).round(2).tolist() if len(ext)
                                         else None),
        "box_extent_err_mm_p95_xyz": (np.percentile(ext, 95, 0).round(2).tolist() if len(ext)
                                      else None),
        "box_extent_err_mm_max": _stats(ext, np.max, 2),
        "box_yaw_err_deg_median": _stats(yaw, np.median, 2),
        "box_yaw_err_deg_p95": _stats(yaw, lambda v: np.percentile(v, 95), 2),
        "box_yaw_err_deg_max": _stats(yaw, np.max, 2),
        "mesh_inside_mean": _stats(inside, np.mean, 4),
        "mesh_inside_median": _stats(inside, np.median, 4),
        "mesh_inside_min": _stats(inside, np.min, 4),
        "mesh_inside_share_ge_97pct": _stats(inside, lambda v: np.mean(v >= 0.97)),
        "mesh_volume_ratio_median": _stats(vol, np.median),
        "mesh_volume_ratio_max": _stats(vol, np.max),
        "mesh_volume_share_le_1.6": _stats(vol, lambda v: np.mean(v <= 1.6)),
        "unlabelled_count_ok": f"{sum(count_ok)}/{len(scenes)}",
        "points_median": int(np.median([s["n_points"] for s in scenes])),
        "time_labelled_s_median": _stats([s["time_labelled"] for s in scenes], np.median),
        "time_unlabelled_s_median": _stats([s["time_unlabelled"] for s in scenes], np.median),
        "time_labelled_s_median_6obj": _stats(med, np.median),
        "points_median_6obj": int(np.median([s["n_points"] for s in six])) if six else None,
        "time_labelled_s_median_6obj_repeats": _stats(
            [t for s in six for t in s.get("time_labelled_repeats", [])], np.median),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mesh-share", type=float, default=0.5, help="share of mesh objects")
    parser.add_argument("--min-gap", type=float, default=0.01, help="footprint gap (m)")
    parser.add_argument("--outliers", type=float, default=0.01, help="flying-pixel share")
    parser.add_argument("--cameras", choices=("opposite", "sim"), default="opposite",
                        help="camera layout (see cameras())")
    parser.add_argument("--repeats", type=int, default=0,
                        help="also time labelled perceive this many times on 6-object scenes")
    parser.add_argument("--out", default=None, help="write per-scene results + summary (JSON)")
    args = parser.parse_args()
    scenes = []
    for k in range(args.scenes):
        s = run_scene(k, args)
        scenes.append(s)
        print(f"scene {k:2d}: {s['n_objects']} objects, {s['n_points']} points, "
              f"gap {s['min_gap'] * 1000:.1f} mm, unlabelled {s['unlabelled_count']}, "
              f"{s['time_labelled']:.3f}/{s['time_unlabelled']:.3f} s", flush=True)
    summary = summarise(scenes)
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "scenes": scenes}, indent=1))


if __name__ == "__main__":
    main()
