"""Procedurally generated, solved packing problems for training and benchmarks.

``pack3d``: a guillotine split of part of the container volume into boxes (stacking included),
yaw a multiple of 90° plus a little jitter, masses consistent with ``heavy_below``; every sample
is checked with the exact checker, so each problem is solvable by construction. The ``hard``
tier splits nearly the whole container (fill 78–93 %) with 1–3 mm clearances and many relations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from robot_packer import constraints as C
from robot_packer.problem import (REGIONS, Constraint, Container, Gripper, Item, PackingProblem,
                                  Rules)

PAIR_RELATIONS = ("left_of", "right_of", "in_front_of", "behind", "on", "close_to", "away_from",
                  "aligned_x", "aligned_y")


@dataclass(frozen=True)
class GenConfig:
    """Knobs of the pack3d generator (lengths in metres)."""

    container_min: tuple[float, float, float] = (0.30, 0.24, 0.14)
    container_max: tuple[float, float, float] = (0.46, 0.36, 0.26)
    fill_xy: tuple[float, float] = (0.45, 0.95)     # used fraction of each footprint side
    fill_z: tuple[float, float] = (0.5, 1.0)
    clearance: tuple[float, float] = (0.004, 0.012)  # gap between neighbouring boxes
    min_side: float = 0.03
    stack_prob: float = 0.3
    yaw_jitter_deg: float = 2.0
    relations: tuple[int, int] = (0, 3)             # listed relations per problem
    fragile_prob: float = 0.25
    gripper: str = "parallel"                       # parallel | suction | none (no grasp room)
    rules: Rules = Rules()
    quarter_turns: bool = True                      # False: yaw 0 or 180° only (planar domains)
    relation_types: tuple[str, ...] | None = None   # relations a problem may list (None: all)
    headroom: tuple[float, float] = (0.0, 0.02)  # container height above the highest top
    max_tries: int = 400


TABLE_X0 = -0.15     # m: rows of objects on the table start here (x; the arm turns to reach them)
TABLE_REACH = 0.72   # m: no object centre on the table farther than this from the robot base
#                      (the Panda's top-down reach with a 15 cm suction tool; farther fails IK)
TABLE_MIN_REACH = 0.32  # m: ... and none nearer (the folded arm cannot point down there)
TABLE_GAP = {"parallel": 0.13, "suction": 0.06}   # m from the container's wall to the first row,
TABLE_ROW_GAP = {"parallel": 0.09, "suction": 0.04}   # ... and between rows: the Franka hand
#   reaches ~0.105 m either side of the fingers' centre, across the row toward its neighbours

HARD = GenConfig(fill_xy=(0.93, 0.98), fill_z=(0.93, 1.0), clearance=(0.001, 0.003),
                 stack_prob=0.4, yaw_jitter_deg=0.5, relations=(3, 8), gripper="suction",
                 min_side=0.04)


def generate(n: int, rng: np.random.Generator, cfg: GenConfig = GenConfig()
             ) -> tuple[PackingProblem, np.ndarray]:
    """One solvable problem with ``n`` objects and its known solution (n, 4), container frame."""
    for _ in range(cfg.max_tries):
        out = _try_generate(n, rng, cfg)
        if out is not None:
            return out
    raise RuntimeError(f"could not generate a {n}-object problem in {cfg.max_tries} tries")


def _try_generate(n, rng, cfg):
    box = rng.uniform(cfg.container_min, cfg.container_max)
    low = min(cfg.fill_xy[1], max(cfg.fill_xy[0], 0.3 + 0.05 * n))  # more objects, more room
    used = box * np.r_[rng.uniform(low, cfg.fill_xy[1], 2), rng.uniform(*cfg.fill_z)]
    lo = -box / 2 + rng.uniform(0, 1, 3) * (box - used)
    lo[2] = 0.0
    leaves = _split([np.r_[lo, lo + used]], n, rng, cfg)
    if leaves is None:
        return None
    sizes, poses = _boxes_in_leaves(leaves, rng, cfg)
    if sizes is None:
        return None
    poses = _drop(sizes, poses)
    # The rim just above the highest top: a deeper tote leaves no room for the gripper's hand.
    box[2] = float(np.max(poses[:, 2] + sizes[:, 2] / 2)) + rng.uniform(*cfg.headroom)
    masses = _masses(sizes, poses, rng)
    fragile = _fragile(sizes, poses, rng, cfg)
    gripper = Gripper(type="suction") if cfg.gripper == "suction" else Gripper()
    container = Container(box, [0.55, 0.0, 0.0, 0.0], 0.01)
    items = [Item(f"o{i}", sizes[i], None, float(masses[i]), bool(fragile[i])) for i in range(n)]
    tool = cfg.gripper if cfg.gripper in TABLE_GAP else "suction"
    items = _table_poses(items, container, TABLE_GAP[tool], TABLE_ROW_GAP[tool])
    problem = PackingProblem(container, items, (), cfg.rules, gripper)
    if not C.all_satisfied(C.check(problem, poses)):
        return None
    held = label_relations(problem, poses, cfg.relation_types)
    k = min(len(held), int(rng.integers(cfg.relations[0], cfg.relations[1] + 1)))
    chosen = [held[i] for i in sorted(rng.choice(len(held), size=k, replace=False))] if k else []
    return replace(problem, constraints=tuple(chosen)), poses


def _split(leaves, n, rng, cfg):
    """Guillotine-split the biggest blocks until there are ``n`` (each side >= its minimum).

    With a parallel gripper a footprint side also keeps room for both fingers.
    """
    leaves = list(leaves)
    finger_room = C.finger_room(Gripper()) + 0.002
    xy_min = cfg.min_side + (finger_room if cfg.gripper == "parallel" else 0.0)
    minimum = np.array([xy_min, xy_min, cfg.min_side])
    while len(leaves) < n:
        vols = np.array([np.prod(b[3:] - b[:3]) for b in leaves])
        i = int(rng.choice(len(leaves), p=vols / vols.sum()))
        b = leaves[i]
        dims = b[3:] - b[:3]
        can = dims >= 2 * minimum + 0.01
        if not can.any():
            return None
        weights = np.where(can, dims, 0.0)
        weights[2] *= cfg.stack_prob / max(1e-9, 1 - cfg.stack_prob) if can[2] else 0.0
        if weights.sum() <= 0:
            return None
        axis = int(rng.choice(3, p=weights / weights.sum()))
        cut = b[axis] + dims[axis] * rng.uniform(0.35, 0.65)
        if min(cut - b[axis], b[axis + 3] - cut) < minimum[axis]:
            continue
        first, second = b.copy(), b.copy()
        first[axis + 3] = cut
        second[axis] = cut
        leaves[i:i + 1] = [first, second]
    return leaves


def _boxes_in_leaves(leaves, rng, cfg):
    """A box per leaf: the leaf shrunk by the clearance, yaw 0/90° (sizes swapped) + jitter.

    With a parallel gripper the narrower side is also narrowed so that it fits the gripper's
    opening and both fingers fit inside the leaf: the solution keeps ``gripper_clear``.
    """
    finger_room = C.finger_room(Gripper()) + 0.002
    max_narrow = Gripper().max_opening - 2 * C.TOL.grip_margin - 0.002
    sizes, poses = [], []
    for b in leaves:
        dims = b[3:] - b[:3]
        gap = rng.uniform(*cfg.clearance)
        jit = math.radians(rng.uniform(-cfg.yaw_jitter_deg, cfg.yaw_jitter_deg))
        xy = dims[:2] - gap - np.abs(math.sin(jit)) * dims[[1, 0]]
        ext = np.r_[np.maximum(xy, 0.01), dims[2] - min(gap, 0.003)]
        centre = (b[:3] + b[3:]) / 2
        if cfg.gripper == "parallel":
            k = int(np.argmin(ext[:2]))
            room = dims[k] - finger_room
            if ext[k] > min(room, max_narrow):
                ext[k] = min(room, rng.uniform(0.035, max_narrow))
                if ext[k] < 0.025:
                    return None, None
                centre[k] += rng.uniform(-1, 1) * (room - ext[k]) / 2
        quarter = int(rng.integers(0, 4)) if cfg.quarter_turns else 2 * int(rng.integers(0, 2))
        size = ext if quarter % 2 == 0 else ext[[1, 0, 2]]
        sizes.append(size)
        poses.append([centre[0], centre[1], centre[2], _wrap(quarter * math.pi / 2 + jit)])
    return np.array(sizes), np.array(poses)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _drop(sizes, poses):
    """Let each box fall straight down onto the floor or the boxes under it (lowest first)."""
    order = np.argsort(poses[:, 2] - sizes[:, 2] / 2)
    p = torch.as_tensor(poses.copy())
    s = torch.as_tensor(sizes)
    placed = []
    for i in order:
        floor = 0.0
        for j in placed:
            if float(C.sat_separation(p[i], s[i], p[j], s[j])) < -C.TOL.slack:
                floor = max(floor, float(p[j, 2] + s[j, 2] / 2))
        p[i, 2] = floor + s[i, 2] / 2
        placed.append(i)
    return p.numpy()


def _on_pairs(sizes, poses):
    p, s = torch.as_tensor(poses), torch.as_tensor(sizes)
    n = len(sizes)
    rest = C._rests_on(p[:, None].expand(n, n, 4), s[:, None].expand(n, n, 3),
                       p[None].expand(n, n, 4), s[None].expand(n, n, 3)) > 0
    rest.fill_diagonal_(False)
    return [tuple(ab) for ab in rest.nonzero().tolist()]


def _masses(sizes, poses, rng):
    """Random densities, then each box made no heavier than the boxes it rests on."""
    masses = np.prod(sizes, axis=1) * rng.uniform(150, 900, len(sizes))
    order = np.argsort(poses[:, 2])
    pairs = _on_pairs(sizes, poses)
    for a in order:
        below = [masses[b] for (top, b) in pairs if top == a]
        if below:
            masses[a] = min(masses[a], min(below))
    return np.maximum(masses, 0.01)


def _fragile(sizes, poses, rng, cfg):
    carrying = {b for (_, b) in _on_pairs(sizes, poses)}
    flags = np.zeros(len(sizes), dtype=bool)
    free = [i for i in range(len(sizes)) if i not in carrying]
    if free and rng.random() < cfg.fragile_prob:
        flags[int(rng.choice(free))] = True
    return flags


def _table_poses(items, container, gap: float, row_gap: float):
    """Current poses: rows on the table on both sides of the container, the first ``gap`` from
    its wall and ``row_gap`` apart, long side along x, 4 cm apart in a row, each centre between
    ``TABLE_MIN_REACH`` and ``TABLE_REACH`` from the robot base (a row ends where the next spot
    would be too far).
    """
    out = []
    near = container.size[1] / 2 + container.wall + gap
    x, row_y, row_depth = {1: TABLE_X0, -1: TABLE_X0}, {1: near, -1: near}, {1: 0.0, -1: 0.0}
    for k, item in enumerate(items):
        side = 1 if k % 2 else -1
        turn = item.size[1] > item.size[0]
        length, depth = (item.size[1], item.size[0]) if turn else (item.size[0], item.size[1])
        far = math.hypot(x[side] + length / 2, row_y[side] + max(row_depth[side], depth) / 2)
        if x[side] > TABLE_X0 and (x[side] + length > 0.80 or far > TABLE_REACH):
            row_y[side] += row_depth[side] + row_gap
            x[side], row_depth[side] = TABLE_X0, 0.0
        row_depth[side] = max(row_depth[side], depth)
        cy = side * (row_y[side] + depth / 2)
        if math.hypot(x[side] + length / 2, cy) < TABLE_MIN_REACH:   # too close to the base
            x[side] = max(x[side], math.sqrt(max(TABLE_MIN_REACH ** 2 - cy ** 2, 0.0)) - length / 2)
        cx = x[side] + length / 2
        yaw = math.pi / 2 if turn else 0.0
        out.append(replace(item, pose=np.array([cx, cy, item.size[2] / 2, yaw])))
        x[side] += length + 0.04
    return out


def label_relations(problem: PackingProblem, poses: np.ndarray,
                    types: tuple[str, ...] | None = None) -> list[Constraint]:
    """Every pairwise relation and region that holds for ``poses`` (training labels), only of
    ``types`` when given."""
    cp = C.compile_problem(problem, dtype=torch.float64)
    p = torch.as_tensor(poses, dtype=torch.float64)[None]
    n = len(problem.items)
    ids = problem.ids
    pairs = torch.tensor([[a, b] for a in range(n) for b in range(n) if a != b], dtype=torch.long)
    held: list[Constraint] = []
    for name in PAIR_RELATIONS:
        if len(pairs) == 0 or (types is not None and name not in types):
            break
        v = C.REGISTRY[name].violation(p, cp.geom, pairs)[0]
        held += [Constraint(name, (ids[a], ids[b]))
                 for (a, b), ok in zip(pairs.tolist(), v <= 0) if ok]
    if types is not None and "region" not in types:
        return held
    regions = torch.tensor([[i, r] for i in range(n) for r in range(len(REGIONS))],
                           dtype=torch.long)
    v = C.REGISTRY["region"].violation(p, cp.geom, regions)[0]
    held += [Constraint("region", (ids[i], REGIONS[r]))
             for (i, r), ok in zip(regions.tolist(), v <= 0) if ok]
    return held
