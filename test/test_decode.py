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
from robot_packer.problem import Container, Item, PackingProblem, Rules
from robot_packer.solver import SolverConfig, make_solver, solve
from robot_packer.solver.decode import decode, decode_exact, layout_order
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
    cands = solver.propose(problem, config, deadline=time.monotonic() + 30)
    assert cands.violations[0] == 0.0
    assert cands.orders is not None and sorted(cands.orders[0]) == list(range(6))
    assert C.all_satisfied(C.check(problem, cands.poses[0], list(cands.orders[0])))
    assert solve(problem, config, solver).status == "solved"


def test_decoding_off_is_the_papers_pipeline_and_bad_values_are_named():
    problem, _ = dense(4, 2)
    config = SolverConfig(solver="diffusion", verify=False, candidates=16, seed=1,
                          options={"decode": 0, "max_rounds": 1})
    cands = make_solver(config).propose(problem, config, deadline=time.monotonic() + 30)
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
