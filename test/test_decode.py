"""Guided decoding: a layout (a known solution, a diffusion sample) made into an exact placement."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

import robot_packer.solver.diffusion  # noqa: F401  (registers the "diffusion" solver)
from robot_packer import constraints as C
from robot_packer import datagen
from robot_packer.deadline import Deadline
from robot_packer.geometry import half_extents_xy_np
from robot_packer.problem import Container, Item, PackingProblem, Rules
from robot_packer.solver import SolverConfig, make_solver, solve
from robot_packer.solver.decode import decode, decode_exact, layout_order, legalize
from robot_packer.solver.rejection import PartialChecker

SEED = 10_000_500          # benchmark-range seeds: never training problems
NO_GRIPPER = Rules(gripper_clear=False)   # hand-made boxes flush with the walls


def dense(n: int, k: int):
    return datagen.generate(n, np.random.default_rng(SEED + k), datagen.HARD)


def test_a_known_solution_decodes_into_an_exact_placement():
    """The decoder keeps a good layout and makes it exact: the generator's own solutions of dense
    problems, shaken by 1 cm (so that boxes overlap), come back exact and nearby."""
    rng = np.random.default_rng(0)
    passed = 0
    for k in range(10):
        problem, known = dense(6, k)
        shaken = known + np.concatenate([rng.normal(0, 0.01, (6, 2)), np.zeros((6, 2))], 1)
        assert not C.all_satisfied(C.check(problem, shaken))
        out = decode_exact(problem, PartialChecker(problem), shaken)
        if out.exact:
            poses, order = out.poses, out.order
            assert sorted(order) == list(range(6))
            passed += C.all_satisfied(C.check(problem, poses, order))
            # nearby, not anywhere: every object within 10 cm of its layout position
            assert np.abs(poses[:, :2] - known[:, :2]).max() < 0.10
    assert passed >= 8


def footprints_apart(problem, layout) -> bool:
    """Whether no two boxes of a layout (yaws multiples of 90°) overlap in volume."""
    half = np.stack([*half_extents_xy_np(layout[:, 3], problem.sizes),
                     problem.sizes[:, 2] / 2], 1)
    gap = np.abs(layout[:, None, :3] - layout[None, :, :3]) - (half[:, None] + half[None])
    apart = (gap > -1e-9).any(-1)
    return bool(apart[~np.eye(len(layout), dtype=bool)].all())


def test_legalize_pushes_a_shaken_dense_layout_apart_inside_the_container():
    """Boxes shaken into each other come back apart, inside, resting, near the layout; decoding
    the pushed layout is exact more often than decoding the shaken one."""
    rng = np.random.default_rng(1)
    exact = {"shaken": 0, "pushed": 0}
    for k in range(8):
        problem, known = dense(8, k)
        known[:, 3] = np.round(known[:, 3] / (math.pi / 2)) * (math.pi / 2)
        shaken = known + np.concatenate([rng.normal(0, 0.02, (8, 3)), np.zeros((8, 1))], 1)
        pushed, overflow = legalize(problem, shaken)
        assert np.array_equal(pushed[:, 3], shaken[:, 3])
        if overflow == 0.0:
            assert footprints_apart(problem, pushed)
            ext = np.abs(problem.container.size[:2]) / 2 + 1e-9
            assert (np.abs(pushed[:, :2]) <= ext).all()
        assert (pushed[:, 2] - problem.sizes[:, 2] / 2 >= -1e-9).all()       # nothing sunk
        assert np.abs(pushed[:, :2] - shaken[:, :2]).max() < 0.15
        for name, layout in (("shaken", shaken), ("pushed", pushed)):
            exact[name] += decode_exact(problem, PartialChecker(problem), layout).exact
    assert exact["pushed"] >= exact["shaken"] and exact["pushed"] >= 5, exact


def test_legalize_moves_a_pair_that_overflows_onto_another_axis():
    """Two boxes overlapping least along x, in a tote too short for them side by side in x or y:
    the pair is moved to z, one on the other."""
    box = dict(size=(0.20, 0.20, 0.05), mass=1.0)
    problem = PackingProblem(Container(size=(0.30, 0.21, 0.12)),
                             [Item(id="a", **box), Item(id="b", **box)], [], NO_GRIPPER)
    layout = np.array([[-0.08, 0.0, 0.025, 0.0], [0.08, 0.0, 0.025, 0.0]])
    pushed, overflow = legalize(problem, layout)
    assert overflow == 0.0
    assert sorted(np.round(pushed[:, 2], 6)) == [0.025, 0.075]        # stacked, then dropped
    assert footprints_apart(problem, pushed)


def test_layout_order_is_bottom_up_and_puts_bases_first():
    problem, known = dense(6, 3)
    order = layout_order(problem, known)
    bottoms = [known[i, 2] - problem.sizes[i, 2] / 2 for i in order]
    on = [(problem.index(c.args[0]), problem.index(c.args[1]))
          for c in problem.constraints if c.name == "on"]
    for top, base in on:
        assert order.index(base) < order.index(top)
    if not on:
        assert all(b1 <= b2 + 0.01 for b1, b2 in zip(bottoms, bottoms[1:]))


def test_an_object_with_no_room_ends_the_decode():
    """Two boxes each filling the tote's floor and height: the second has no extreme point."""
    box = dict(size=(0.30, 0.20, 0.10), mass=1.0)
    problem = PackingProblem(Container(size=(0.302, 0.202, 0.12)),
                             [Item(id="a", **box), Item(id="b", **box)], [], NO_GRIPPER)
    layout = np.array([[0.0, 0.0, 0.05, 0.0], [0.0, 0.0, 0.05, math.pi / 2]])
    out = decode(problem, PartialChecker(problem), layout)
    assert out.placed == 1 and out.stuck == out.order[1] and not out.exact
    assert not decode_exact(problem, PartialChecker(problem), layout).exact


def test_a_stuck_object_is_placed_first_on_the_next_try():
    """A big box whose layout position comes last finds no room after the small ones spread
    out; the re-decode places it first, and then everything fits."""
    big, small = dict(size=(0.20, 0.20, 0.10), mass=1.0), dict(size=(0.10, 0.10, 0.10), mass=1.0)
    problem = PackingProblem(Container(size=(0.302, 0.202, 0.12)),
                             [Item(id="s1", **small), Item(id="s2", **small),
                              Item(id="b", **big)], [], NO_GRIPPER)
    # the layout puts the small boxes near the middle, the big one at the +x end
    layout = np.array([[-0.01, -0.05, 0.05, 0.0], [-0.01, 0.05, 0.05, 0.0],
                       [0.10, 0.0, 0.05, 0.0]])
    first = decode(problem, PartialChecker(problem), layout)
    assert first.stuck == 2                  # the second small one took the middle
    out = decode_exact(problem, PartialChecker(problem), layout)
    assert out.exact and out.order[0] == 2
    assert C.all_satisfied(C.check(problem, out.poses, out.order))


def test_decoded_plans_carry_their_placing_order_and_pass_the_pipeline():
    problem, _ = dense(6, 1)
    config = SolverConfig(solver="diffusion", verify=False, candidates=32, seed=3,
                          time_budget_s=20.0)
    solver = make_solver(config)
    cands = solver.propose(problem, config, deadline=Deadline(time.monotonic() + 30))
    assert cands.violations[0] == 0.0
    assert cands.orders is not None and sorted(cands.orders[0]) == list(range(6))
    assert C.all_satisfied(C.check(problem, cands.poses[0], list(cands.orders[0])))
    assert solve(problem, config, solver).status == "solved"


def test_decoding_off_is_the_papers_pipeline_and_bad_values_are_named():
    problem, _ = dense(4, 2)
    config = SolverConfig(solver="diffusion", verify=False, candidates=16, seed=1,
                          options={"decode": 0, "max_rounds": 1})
    deadline = Deadline(time.monotonic() + 30)
    cands = make_solver(config).propose(problem, config, deadline=deadline)
    assert (cands.orders == -1).all()          # refined samples: no placing order of their own
    for bad in (-1, 2.5, "many"):
        with pytest.raises(ValueError, match="options.decode"):
            make_solver(SolverConfig(solver="diffusion", options={"decode": bad}))


def test_a_completion_round_keeps_the_placed_objects_and_resamples_the_rest():
    """The furthest decode's placed objects are held while the model re-samples the others; the
    next decode places the held ones first, exactly where they were."""
    from robot_packer.solver.decode import Decoded
    from robot_packer.solver.diffusion.graph import build_graph, denormalise
    from robot_packer.solver.diffusion.sampler import sample

    problem, known = dense(6, 4)
    full = decode(problem, PartialChecker(problem), known)
    assert full.complete
    kept = 3
    poses = full.poses.copy()
    poses[full.order[kept:]] = 0.0
    partial = Decoded(full.order, poses, kept)
    solver = make_solver(SolverConfig(solver="diffusion", verify=False))
    graph = build_graph(problem, solver.device)
    inpaint, firsts = solver.completion(graph, [partial], 8)
    assert firsts == [full.order[:kept]] * 8
    assert inpaint.mask.sum(1).tolist() == [kept] * 8
    gen = torch.Generator().manual_seed(0)
    raw = denormalise(sample(solver.model, solver.schedule, graph, 8, solver.options.sampler(),
                             gen, None, inpaint), graph.box)
    held = full.order[:kept]
    assert np.allclose(raw[:, held].numpy(), full.poses[held], atol=1e-5)
    out = decode_exact(problem, PartialChecker(problem), raw[0].double().numpy(), firsts[0])
    assert out.order[:kept] == held and out.placed >= kept
    assert np.allclose(out.poses[held], full.poses[held], atol=1e-6)
