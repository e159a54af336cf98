"""Slicing decode: a layout's arrangement packed exactly as a slicing (guillotine) tree."""
from __future__ import annotations

import math

import numpy as np
import pytest

from robot_packer import constraints as C
from robot_packer import datagen
from robot_packer.solver import slicing
from robot_packer.solver.slicing import SlicingPacker, slicing_decode

SEED = 10_000_700          # benchmark-range seeds: never training problems


def dense(n: int, k: int):
    return datagen.generate(n, np.random.default_rng(SEED + k), datagen.HARD)


def exact(problem, poses) -> bool:
    return C.all_satisfied(C.check(problem, poses, C.placement_order(problem, poses)))


def test_known_dense_solutions_shaken_by_a_centimetre_pack_exactly():
    """The generator's own 10-object dense solutions, every coordinate shaken by 1 cm (boxes
    overlap, float and sink), keep their arrangement: most come back exact, near the layout."""
    rng = np.random.default_rng(0)
    passed = 0
    for k in range(12):
        problem, known = dense(10, k)
        shaken = known + np.concatenate([rng.normal(0, 0.01, (10, 3)), np.zeros((10, 1))], 1)
        assert not exact(problem, shaken)
        for poses in slicing_decode(problem.sizes, problem.container.size, shaken):
            if exact(problem, poses):
                passed += 1
                assert np.abs(poses[:, :2] - known[:, :2]).max() < 0.05
                break
    assert passed >= 9


def test_two_boxes_side_by_side_need_the_sum_along_the_cut_and_may_turn():
    sizes = np.array([[0.20, 0.10, 0.05], [0.12, 0.10, 0.08]])
    layout = np.array([[-0.1, 0.0, 0.025, 0.0], [0.06, 0.0, 0.04, 0.0]])
    room = np.array([0.40, 0.30, 0.20])
    packer = SlicingPacker(sizes, room, layout)
    front = packer.front(0b11)
    g = slicing.GAP
    flat = [s for s in front if s.turns == 0 and s.axis == 0]
    assert flat and np.allclose(flat[0].dims, [0.32 + 2 * g, 0.10 + g, 0.08])
    # turning the second box a quarter makes the pair narrower along x: on the front, 1 turn
    assert any(s.turns == 1 and math.isclose(s.dims[0], 0.30 + 2 * g) for s in front)
    # a container too short for side by side and too low for a stack: nothing fits
    assert slicing_decode(sizes, np.array([0.25, 0.105, 0.10]), layout) == []


def test_a_stack_in_the_layout_is_packed_as_a_stack_resting_on_its_base():
    sizes = np.array([[0.20, 0.20, 0.06], [0.18, 0.18, 0.05]])
    layout = np.array([[0.01, 0.0, 0.03, 0.0], [0.0, 0.02, 0.085, 0.02]])  # top one 0.5 cm high
    room = np.array([0.22, 0.22, 0.12])
    poses = slicing_decode(sizes, room, layout)[0]
    assert poses[1, 2] == pytest.approx(0.06 + 0.025)       # bottom exactly on the base's top
    assert poses[0, 2] == pytest.approx(0.03)
    assert poses[1, 3] == 0.0                               # yaw snapped to the quarter turn


@pytest.mark.parametrize("seed", range(5))
def test_whatever_the_layout_a_packing_never_overlaps_or_leaves_the_container(seed):
    """By construction: random layouts, every packing returned has `in` and `cfree` exact."""
    rng = np.random.default_rng(seed)
    problem, _ = dense(6, seed)
    L, W, H = problem.container.size
    packed = 0
    for _ in range(20):
        layout = np.c_[rng.uniform(-L / 2, L / 2, 6), rng.uniform(-W / 2, W / 2, 6),
                       rng.uniform(0, H, 6), rng.uniform(-math.pi, math.pi, 6)]
        for poses in slicing_decode(problem.sizes, problem.container.size, layout,
                                    overlap=1.0):
            packed += 1
            for r in C.check(problem, poses):
                if r.constraint[0] in ("in", "cfree"):
                    assert r.satisfied, r
    assert packed      # not vacuous: some random arrangements do fit
