"""The constraint vocabulary (DESIGN.md §5): exact verdicts on both sides of every tolerance,
rotated boxes, and differentiable violations that are zero exactly where the checker says true.

Default container: inner 0.40 x 0.30 x 0.20 m (x in [-0.2, 0.2], y in [-0.15, 0.15]).
Every number in a comment is the hand-computed quantity the assertion relies on.
"""
import math

import numpy as np
import pytest
import torch

from robot_packer import constraints as C
from robot_packer.problem import (Constraint, Container, Gripper, Item, PackingProblem, Rules)
from robot_packer.solver.feasibility import infeasibility_reason

CUBE = (0.1, 0.1, 0.1)
NO_RULES = Rules(heavy_below=False, gripper_clear=False, stable=False)
Q = math.pi / 2


def make(sizes, constraints=(), rules=NO_RULES, masses=None, fragile=None, box=(0.4, 0.3, 0.2),
         gripper=Gripper()):
    items = [Item(f"o{i}", s, mass=None if masses is None else masses[i],
                  fragile=bool(fragile[i]) if fragile is not None else False)
             for i, s in enumerate(sizes)]
    cons = [Constraint(c[0], tuple(c[1:])) for c in constraints]
    return PackingProblem(Container(box), items, cons, rules, gripper)


def verdict(problem, poses, name, order=None):
    """(satisfied, violation) of the first checked constraint called ``name``."""
    for r in C.check(problem, np.asarray(poses, dtype=np.float64), order):
        if r.constraint[0] == name:
            return r.satisfied, r.violation
    raise AssertionError(f"{name} not checked")


def diff_violation(problem, poses, name):
    """Sum of the batched torch violation of ``name`` (float64) and its gradient."""
    cp = C.compile_problem(problem, dtype=torch.float64)
    p = torch.tensor(np.asarray(poses, dtype=np.float64)[None], requires_grad=True)
    v = C.REGISTRY[name].violation(p, cp.geom, cp.edges[name]).sum()
    (grad,) = torch.autograd.grad(v, p, allow_unused=True) if v.requires_grad else (None,)
    return float(v.detach()), grad


def assert_case(problem, poses, name, expected, violation=None):
    ok, v = verdict(problem, poses, name)
    assert ok is expected, f"{name}: expected {expected}, got violation {v}"
    if violation is not None:
        assert v == pytest.approx(violation, abs=2e-5)
    if name in problem_edges(problem):
        dv, grad = diff_violation(problem, poses, name)
        if expected:
            assert dv == 0.0
        else:
            assert dv > 0.0
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def problem_edges(problem):
    return {k for k, v in C.compile_problem(problem).edges.items() if len(v)}


# ------------------------------------------------------------------ side relations

SIDE_CASES = [  # name, axis, sign of a relative to b
    ("left_of", 1, 1.0), ("right_of", 1, -1.0), ("behind", 0, 1.0), ("in_front_of", 0, -1.0)]


@pytest.mark.parametrize("name,axis,sign", SIDE_CASES)
@pytest.mark.parametrize("offset,expected,viol", [
    (0.100, True, 0.0),       # faces touch
    (0.1005, True, 0.0),      # 0.5 mm apart
    (0.0995, True, 0.0),      # 0.5 mm overlap, inside the 1 mm slack
    (0.0985, False, 0.0005),  # 1.5 mm overlap: 0.5 mm beyond the slack
    (-0.200, False, 0.299),   # on the wrong side entirely
])
def test_side_relations_axis_aligned(name, axis, sign, offset, expected, viol):
    p = make([CUBE, CUBE], [(name, "o0", "o1")])
    poses = np.array([[0, 0, 0.05, 0], [0, 0, 0.05, 0]], dtype=float)
    poses[0, axis] = sign * offset
    assert_case(p, poses, name, expected, viol)


@pytest.mark.parametrize("yaw,offset,expected", [
    (Q, 0.150, True),                  # b turned 90°: its y half extent is 0.1 -> 0.1 + 0.05
    (Q, 0.148, False),                 # 2 mm overlap
    (math.pi / 4, 0.1565, True),       # 45°: half extent 0.15 cos45 = 0.10607 -> 0.15607
    (math.pi / 4, 0.1540, False),      # 2.07 mm overlap
])
def test_left_of_rotated(yaw, offset, expected):
    p = make([CUBE, (0.2, 0.1, 0.1)], [("left_of", "o0", "o1")])
    poses = [[0, offset, 0.05, 0], [0, 0, 0.05, yaw]]
    assert_case(p, poses, "left_of", expected)


# ------------------------------------------------------------------ on

@pytest.mark.parametrize("a,b_yaw,expected,viol", [
    ([0, 0, 0.150, 0], 0.0, True, 0.0),       # bottom exactly on the top (0.1)
    ([0, 0, 0.154, 0], 0.0, True, 0.0),       # 4 mm above: within 5 mm
    ([0, 0, 0.156, 0], 0.0, False, 0.001),    # 6 mm above
    ([0.099, 0, 0.15, 0], 0.0, True, 0.0),    # centre 1 mm inside b's top face (x half 0.1)
    ([0.102, 0, 0.15, 0], 0.0, False, 0.002),  # centre 2 mm outside
    ([0.06, 0, 0.15, 0], Q, False, 0.01),     # b turned 90°: x half extent 0.05 -> 10 mm out
    ([0, 0.09, 0.15, 0], Q, True, 0.0),       # ... y half extent 0.1
])
def test_on(a, b_yaw, expected, viol):
    p = make([CUBE, (0.2, 0.1, 0.1)], [("on", "o0", "o1")])
    assert_case(p, [a, [0, 0, 0.05, b_yaw]], "on", expected, viol)


# ------------------------------------------------------------------ close_to / away_from

@pytest.mark.parametrize("name,b,expected,viol", [
    ("close_to", [0.129, 0], True, 0.0),          # gap 29 mm
    ("close_to", [0.131, 0], False, 0.001),       # gap 31 mm
    ("close_to", [0.12, 0.12], True, 0.0),        # corner gap sqrt(2) * 20 mm = 28.3 mm
    ("close_to", [0.123, 0.123], False, 0.00253),  # corner gap 32.5 mm (Euclidean, not per axis)
    ("close_to", [0.05, 0, ], False, None),       # overlapping footprints: gap 0, still close
    ("away_from", [0.201, 0], True, 0.0),         # gap 101 mm
    ("away_from", [0.199, 0], False, 0.001),      # gap 99 mm
    ("away_from", [0.171, 0.171], True, 0.0),     # corner gap sqrt(2) * 71 mm = 100.4 mm
    ("away_from", [0.170, 0.170], False, 0.00101),  # corner gap 99.0 mm
])
def test_footprint_gap_relations(name, b, expected, viol):
    if b == [0.05, 0]:
        expected = True  # overlapping footprints (b stacked above a) have gap 0 <= 0.03
        pose_b = [0.05, 0, 0.15, 0]
    else:
        pose_b = [b[0], b[1], 0.05, 0]
    p = make([CUBE, CUBE], [(name, "o0", "o1")], box=(0.6, 0.6, 0.3))
    assert_case(p, [[0, 0, 0.05, 0], pose_b], name, expected, viol)


def test_close_to_rotated():
    # b turned 45°: its corner reaches 0.0707 towards a -> gap = 0.2 - 0.05 - 0.0707 = 0.0793
    p = make([CUBE, CUBE], [("away_from", "o0", "o1")], box=(0.6, 0.6, 0.3))
    assert_case(p, [[0, 0, 0.05, 0], [0.2, 0, 0.05, math.pi / 4]], "away_from", False, 0.0207)
    q = make([CUBE, CUBE], [("close_to", "o0", "o1")], box=(0.6, 0.6, 0.3))
    assert_case(q, [[0, 0, 0.05, 0], [0.15, 0, 0.05, math.pi / 4]], "close_to", True)  # 29.3 mm


# ------------------------------------------------------------------ aligned

@pytest.mark.parametrize("name,axis", [("aligned_x", 0), ("aligned_y", 1)])
@pytest.mark.parametrize("delta,expected,viol", [(0.009, True, 0.0), (0.011, False, 0.001)])
def test_aligned(name, axis, delta, expected, viol):
    p = make([CUBE, CUBE], [(name, "o0", "o1")])
    poses = np.array([[-0.05, -0.05, 0.05, 0.3], [0.05, 0.05, 0.05, 0]])
    poses[1, axis] = poses[0, axis] + delta
    assert_case(p, poses, name, expected, viol)


# ------------------------------------------------------------------ region

@pytest.mark.parametrize("region,good,bad,viol", [
    ("left", [0, 0.0495], [0, 0.0485], 0.0005),     # left: y in [0, 0.15]; half size 0.05
    ("right", [0, -0.0495], [0, -0.0485], 0.0005),
    ("front", [-0.0495, 0], [-0.048, 0], 0.001),    # front: x in [-0.2, 0]
    ("back", [0.0495, 0], [0.048, 0], 0.001),
    ("center", [0.05, 0.025], [0.052, 0.027], 0.002),  # center: x in ±0.1, y in ±0.075
])
def test_region(region, good, bad, viol):
    p = make([CUBE], [("region", "o0", region)])
    assert_case(p, [[*good, 0.05, 0]], "region", True)
    assert_case(p, [[*bad, 0.05, 0]], "region", False, viol)


def test_region_rotated():
    p = make([(0.2, 0.1, 0.1)], [("region", "o0", "center")])
    assert_case(p, [[0, 0, 0.05, 0]], "region", True)       # x ±0.1, y ±0.05
    assert_case(p, [[0, 0, 0.05, Q]], "region", False, 2 * 0.024)  # y ±0.1: 24 mm out each side


# ------------------------------------------------------------------ in, cfree

@pytest.mark.parametrize("pose,expected,viol", [
    ([0.15, 0, 0.05, 0], True, 0.0),          # touches the +x wall
    ([0.1515, 0, 0.05, 0], False, 0.0005),    # 1.5 mm into it
    ([0.1293, 0, 0.05, math.pi / 4], True, 0.0),   # 45°: half extent 0.0707
    ([0.132, 0, 0.05, math.pi / 4], False, 0.0017),
    ([0, 0, 0.048, 0], False, 0.001),         # 2 mm below the floor
    ([0, 0, 0.152, 0], False, 0.001),         # top 2 mm above the rim (0.2)
])
def test_in(pose, expected, viol):
    assert_case(make([CUBE]), [pose], "in", expected, viol)


@pytest.mark.parametrize("b,expected,viol", [
    ([0.0995, 0, 0.05, 0], True, 0.0),        # 0.5 mm overlap within slack
    ([0.098, 0, 0.05, 0], False, 0.001),      # 2 mm overlap
    ([0, 0, 0.15, 0], True, 0.0),             # stacked: touching in z
    ([0.1207, 0, 0.05, math.pi / 4], True, 0.0),   # 45°: 0.05 + 0.0707 = 0.1207
    ([0.118, 0, 0.05, math.pi / 4], False, 0.0017),
])
def test_cfree(b, expected, viol):
    assert_case(make([CUBE, CUBE]), [[0, 0, 0.05, 0], b], "cfree", expected, viol)


def test_sat_separation_equals_projecting_every_corner():
    """The closed form (radii from the relative yaw) against the textbook separating-axis test:
    project all four corners of both footprints onto each of the four edge normals."""
    g = torch.Generator().manual_seed(0)
    pa, pb = torch.rand(500, 4, generator=g, dtype=torch.float64) * 0.4 - 0.2, \
        torch.rand(500, 4, generator=g, dtype=torch.float64) * 0.4 - 0.2
    pa[:, 3], pb[:, 3] = pa[:, 3] * 20, pb[:, 3] * 20                 # any yaw, several turns
    pb[:250, 3] = pa[:250, 3] + Q * torch.randint(0, 4, (250,), generator=g)   # right angles
    sa, sb = (torch.rand(500, 3, generator=g, dtype=torch.float64) * 0.2 + 0.01 for _ in "ab")
    ca, cb = C.corners(pa, sa), C.corners(pb, sb)                      # (500, 4, 2)
    normals = []
    for yaw in (pa[:, 3], pb[:, 3]):
        normals += [torch.stack([torch.cos(yaw), torch.sin(yaw)], -1),
                    torch.stack([-torch.sin(yaw), torch.cos(yaw)], -1)]
    gaps = []
    for n in normals:
        proj_a, proj_b = (ca * n[:, None]).sum(-1), (cb * n[:, None]).sum(-1)
        gaps.append(torch.maximum(proj_b.min(-1).values - proj_a.max(-1).values,
                                  proj_a.min(-1).values - proj_b.max(-1).values))
    expected = torch.stack(gaps, -1).max(-1).values
    assert torch.allclose(C.sat_separation(pa, sa, pb, sb), expected, atol=1e-12)
    assert (expected > 0).any() and (expected < 0).any()              # both verdicts covered


# ------------------------------------------------------------------ heavy_below, fragile, stable

STACK = [[0, 0, 0.05, 0], [0, 0, 0.15, 0]]   # o1 rests on o0


@pytest.mark.parametrize("masses,fragile,heavy_rule,expected", [
    ((1.0, 2.0), (False, False), True, False),   # heavier o1 on lighter o0
    ((2.0, 1.0), (False, False), True, True),    # lighter on heavier
    ((1.0, 1.0), (False, False), True, True),    # equal masses are allowed
    ((1.0, 2.0), (False, False), False, True),   # rule off
    ((2.0, 1.0), (True, False), False, False),   # nothing rests on a fragile object, ever
    ((2.0, 1.0), (False, True), True, True),     # a fragile object on top is fine
])
def test_heavy_below_and_fragile(masses, fragile, heavy_rule, expected):
    p = make([CUBE, CUBE], masses=masses, fragile=fragile,
             rules=Rules(heavy_below=heavy_rule, gripper_clear=False, stable=False))
    assert_case(p, STACK, "heavy_below", expected)


def test_heavy_below_needs_contact():
    p = make([CUBE, CUBE], masses=(1.0, 2.0), rules=Rules(True, False, False))
    assert verdict(p, [[0, 0, 0.05, 0], [0, 0, 0.156, 0]], "heavy_below")[0]   # 6 mm gap
    assert not verdict(p, [[0, 0, 0.05, 0], [0, 0, 0.154, 0]], "heavy_below")[0]  # 4 mm


@pytest.mark.parametrize("poses,expected", [
    ([[0, 0, 0.054, 0]], True),                        # 4 mm above the floor
    ([[0, 0, 0.056, 0]], False),                       # 6 mm: floating
    ([[0, 0, 0.05, 0], [0.09, 0, 0.15, 0]], True),     # centre over the 0.2 x 0.1 support
    ([[0, 0, 0.05, 0], [0.11, 0, 0.15, 0]], False),    # centre 10 mm beyond its edge (x 0.1)
    ([[0, 0, 0.05, 0], [0.16, 0, 0.05, 0], [0.13, 0, 0.15, 0]], True),  # over the second one
    ([[0, 0, 0.05, Q], [0.06, 0, 0.15, 0]], False),    # support turned 90°: x only ±0.05 ...
    ([[0, 0, 0.05, Q], [0.0, 0.09, 0.15, 0.3]], True),  # ... but y ±0.1
])
def test_stable(poses, expected):
    sizes = [(0.2, 0.1, 0.1)] + [CUBE] * (len(poses) - 1)
    p = make(sizes, rules=Rules(False, False, True), box=(0.6, 0.6, 0.3))
    assert_case(p, poses, "stable", expected)


# ------------------------------------------------------------------ gripper_clear

NARROW = (0.05, 0.15, 0.1)   # grasped across x (its narrower side)
# a finger's outer face lies REACH beyond the grasped side: opening margin + finger thickness
# (the pad plus the clearance the real finger's collision hull needs)
REACH = C.TOL.grip_margin + Gripper().finger[1] + C.TOL.finger_clearance
SHALLOW = (0.4, 0.3, 0.12)   # rim 0.12: the hand (>= 36 mm above a 0.1 top) stays above it


@pytest.mark.parametrize("dx,expected,viol", [
    (0.0, True, 0.0),        # finger outer face exactly at the wall (x = 0.2)
    (0.005, False, 0.004),   # 5 mm into the wall, minus the 1 mm slack
])
def test_gripper_finger_hits_wall(dx, expected, viol):
    p = make([NARROW], rules=Rules(False, True, False), box=SHALLOW)
    x = 0.2 - 0.025 - REACH + dx
    assert_case(p, [[x, 0, 0.05, 0]], "gripper_clear", expected, viol)
    # turned 90°, the fingers close along y instead: the same x is clear of the x walls
    assert verdict(p, [[0.2 - 0.075, 0, 0.05, Q]], "gripper_clear")[0]


@pytest.mark.parametrize("dx,expected,viol", [(0.0, True, 0.0), (0.005, False, 0.004)])
def test_gripper_hand_hits_wall_in_a_deep_tote(dx, expected, viol):
    """With the rim above the hand's underside, the hand's length along the closing axis counts."""
    p = make([NARROW], rules=Rules(False, True, False), box=(0.4, 0.3, 0.2))
    x = 0.2 - C.HAND_SIZE[0] / 2 + dx
    assert C.HAND_ABOVE_TCP + 0.1 < 0.2
    assert_case(p, [[x, 0, 0.05, 0]], "gripper_clear", expected, viol)
    shallow = make([NARROW], rules=Rules(False, True, False), box=SHALLOW)
    assert verdict(shallow, [[x, 0, 0.05, 0]], "gripper_clear")[0]   # hand above the rim


@pytest.mark.parametrize("gap,expected,viol", [
    (REACH + 0.001, True, 0.0),          # both fingers fit between the two boxes
    (0.010, False, REACH - 0.010 - 0.001),  # the later object's finger goes into the first
])
def test_gripper_finger_hits_placed_object(gap, expected, viol):
    p = make([NARROW, NARROW], rules=Rules(False, True, False), box=SHALLOW)
    poses = [[-0.06, 0, 0.05, 0], [-0.06 + 0.05 + gap, 0, 0.05, 0]]
    for order in ([0, 1], [1, 0]):
        ok, v = verdict(p, poses, "gripper_clear", order)
        assert ok is expected and v == pytest.approx(viol, abs=2e-5)
    # side by side along the wide side (y) the fingers close along x: touching is fine
    ok, _ = verdict(p, [[0, -0.0755, 0.05, 0], [0, 0.0755, 0.05, 0]], "gripper_clear")
    assert ok


def test_ungraspable_object():
    p = make([(0.1, 0.1, 0.1)], rules=Rules(False, True, False))   # 0.1 + 2*5 mm > 0.08
    assert_case(p, [[0, 0, 0.05, 0]], "gripper_clear", False, 0.03)
    reason = infeasibility_reason(p)
    assert reason and "wider than the gripper opening" in reason
    suction = make([(0.1, 0.1, 0.1)], rules=Rules(False, True, False),
                   gripper=Gripper(type="suction"))
    assert verdict(suction, [[0, 0, 0.05, 0]], "gripper_clear")[0]


# ------------------------------------------------------------------ registry

def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        C.register("left_of", 2)(lambda poses, geom, args: poses[..., 0])
    assert C.REGISTRY["left_of"].arity == 2


def test_every_registered_type_is_batched_and_finite():
    """Every registry entry on a random batch: shape (B, E), finite, >= 0, gradients finite."""
    g = torch.Generator().manual_seed(0)
    p = make([CUBE, (0.2, 0.1, 0.1), (0.05, 0.15, 0.1)], masses=(1.0, 2.0, 0.5),
             rules=Rules(True, True, True))
    geom = C.Geometry.from_problem(p)
    poses = torch.rand((16, 3, 4), generator=g) * torch.tensor([0.4, 0.3, 0.2, 6.0]) - torch.tensor(
        [0.2, 0.15, 0.0, 3.0])
    poses.requires_grad_(True)
    for name, ct in C.REGISTRY.items():
        args = torch.tensor([[0, 1]] if ct.arity == 2 else [[2]])
        if name == "region":
            args = torch.tensor([[0, 4]])
        v = ct.violation(poses, geom, args)
        assert v.shape == (16, 1), name
        assert torch.isfinite(v).all() and (v >= 0).all(), name
        (grad,) = torch.autograd.grad(v.sum(), poses, allow_unused=True)
        assert grad is None or torch.isfinite(grad).all(), name


def test_total_is_zero_exactly_on_a_checked_solution():
    from robot_packer import datagen

    problem, sol = datagen.generate(4, np.random.default_rng(10_000_123))
    assert C.all_satisfied(C.check(problem, sol))
    cp = C.compile_problem(problem, dtype=torch.float64)
    assert float(cp.total(torch.as_tensor(sol)[None])) == 0.0
    moved = sol.copy()
    moved[0, 0] += problem.container.size[0]          # out of the container
    p = torch.as_tensor(moved)[None].requires_grad_(True)
    v = cp.total(p)
    assert not C.all_satisfied(C.check(problem, moved)) and float(v) > 0
    (grad,) = torch.autograd.grad(v.sum(), p)
    assert torch.isfinite(grad).all() and grad[0, 0, 0] > 0   # pushes it back in
    assert "in o0" in C.describe_failures(C.check(problem, moved))


def test_support_margin_asks_the_centre_well_inside_its_support():
    items = [Item("base", np.array([0.2, 0.2, 0.05]), mass=1.0),
             Item("top", np.array([0.1, 0.1, 0.05]), mass=0.5)]
    problem = PackingProblem(Container(np.array([0.4, 0.3, 0.2])), items,
                             rules=Rules(stable=True, gripper_clear=False))
    # top's centre 5 mm inside the base's edge (x = 0.095), resting on it
    poses = torch.tensor([[[0.0, 0.0, 0.025, 0.0], [0.095, 0.0, 0.075, 0.0]]], dtype=torch.float64)
    exact = C.compile_problem(problem, dtype=torch.float64)
    robust = C.compile_problem(problem, dtype=torch.float64, support_margin=0.01)
    assert float(exact.violations(poses)["stable"].sum()) == 0.0
    assert float(robust.violations(poses)["stable"].sum()) == pytest.approx(0.005, abs=1e-6)
    assert C.all_satisfied(C.check(problem, poses[0].numpy()))   # the exact check keeps 0
