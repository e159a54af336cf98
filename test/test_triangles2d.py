"""triangles2d: exact checker, batched violations, generator, scene files, solvers, model, CLI."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robot_packer import triangles2d as T
from robot_packer.solver.base import SolverConfig
from robot_packer.solver.diffusion.graph import ProblemGraph
from robot_packer.solver.diffusion.networks import ComposedDenoiser, DenoiserConfig
from robot_packer.solver.triangles.batched import (EDGE_TYPES, NODE_DIM, POSE_DIM,
                                                   BatchedViolations, build_graph, denormalise,
                                                   normalise)
from robot_packer.solver.triangles.solve import make_triangle_solver, solve_triangles

ROOT = Path(__file__).resolve().parents[1]
RIGHT = [[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]]     # a right triangle, legs 0.1 m along +x, +y

torch.set_num_threads(1)


def problem(*vertex_lists, tray: float = 0.3) -> T.TriangleProblem:
    items = tuple(T.Triangle(f"t{i}", np.array(v)) for i, v in enumerate(vertex_lists))
    return T.TriangleProblem(tray, items)


def verdicts(p: T.TriangleProblem, poses) -> dict:
    return {r.constraint: r for r in T.check(p, np.array(poses, dtype=float))}


def test_checker_overlap_touching_and_outside():
    p = problem(RIGHT, RIGHT)
    # overlap: the second shifted 0.03 m along x -> penetration 0.1 - 0.03 - ... along the
    # hypotenuse normal, at least positive
    v = verdicts(p, [[0, 0, 0], [0.03, 0, 0]])
    assert not v[("cfree", "t0", "t1")].satisfied
    assert v[("cfree", "t0", "t1")].violation > 0.01
    # touching: the second rotated a half turn about (0.05, 0.05) shares the hypotenuse
    v = verdicts(p, [[0, 0, 0], [0.1, 0.1, math.pi]])
    assert v[("cfree", "t0", "t1")].satisfied and v[("cfree", "t0", "t1")].violation < 1e-12
    # outside: a vertex 0.02 m beyond the right wall (tray half side 0.15)
    v = verdicts(p, [[0.07, 0, 0], [-0.1, -0.1, 0]])
    assert not v[("in", "t0")].satisfied
    assert v[("in", "t0")].violation == pytest.approx(0.02)
    assert v[("in", "t1")].satisfied


def test_exact_and_batched_violations_agree_on_random_poses():
    p, sol = T.generate(4, np.random.default_rng(5))
    rng = np.random.default_rng(0)
    poses = sol[None] + rng.normal(0.0, 0.04, (100, 4, 3))
    v_in, v_cf = BatchedViolations(p, dtype=torch.float64).terms(torch.tensor(poses))
    batched = torch.cat([v_in, v_cf], 1).numpy()
    exact = np.array([[r.violation for r in T.check(p, q)] for q in poses])
    assert (exact > 0).any() and (exact == 0).any()
    np.testing.assert_allclose(batched, exact, atol=1e-12)
    total32 = BatchedViolations(p).total(torch.tensor(poses, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(total32, exact.sum(1), atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_generated_known_solution_passes_and_angles_are_not_thin(n):
    for seed in range(5):
        p, sol = T.generate(n, np.random.default_rng(seed))
        assert p.n == n and T.all_satisfied(T.check(p, sol))
        assert min(T.min_angle(v) for v in p.vertices) >= 15.0 - 1e-9
        assert T.infeasibility(p) is None


def test_scene_round_trip_and_bad_inputs(tmp_path):
    p, _ = T.generate(3, np.random.default_rng(1))
    path = tmp_path / "scene.json"
    T.save_scene(p, path)
    q = T.load_scene(path)
    assert q.ids == p.ids and q.tray == p.tray
    np.testing.assert_array_equal(q.vertices, p.vertices)
    assert T.is_triangles_scene(path)
    good = json.loads(path.read_text())
    cases = [
        ({**good, "colour": "red"}, "scene.colour"),
        ({**good, "tray": -0.3}, "tray"),
        ({**good, "objects": good["objects"][:1] * 2}, "duplicate id"),
        ({**good, "objects": [{"id": "a b", "vertices": RIGHT}]}, "objects[0].id"),
        ({**good, "objects": [{"id": "a", "vertices": RIGHT[:2]}]}, "objects[0].vertices"),
        ({**good, "objects": [{"id": "a", "vertices": [[0, 0], [0.1, 0.1], [0.2, 0.2]]}]},
         "degenerate"),
        ({**good, "objects": [{"id": "a", "vertices": [[0, 0], [0.1, float("nan")], [0, 1]]}]},
         "objects[0].vertices"),
    ]
    for data, field in cases:
        with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
            T.problem_from_dict(data)


def test_a_triangle_that_fits_at_no_yaw_is_infeasible():
    p = problem([[0.0, 0.0], [0.5, 0.0], [0.0, 0.05]])
    plan = solve_triangles(p, SolverConfig(solver="cem", time_budget_s=1.0, device="cpu"))
    assert plan.status == "infeasible" and "fits" in plan.message


@pytest.mark.parametrize("name", ["diffusion", "cem", "rejection"])
def test_each_solver_solves_a_small_problem_within_the_budget(name):
    # roomier than the benchmark's pieces (shrunk to 70-75 %), so rejection sampling has a chance
    p, _ = T.generate(3, np.random.default_rng(10_000_123), T.GenConfig(shrink=(0.70, 0.75)))
    cfg = SolverConfig(solver=name, time_budget_s=2.0, device="cpu", seed=0)
    solver = make_triangle_solver(cfg)
    t0 = time.monotonic()
    plan = solve_triangles(p, cfg, solver)
    assert time.monotonic() - t0 < 2.0 + 0.3
    assert plan.status == "solved", plan.message
    poses = np.array([plan.placements[i] for i in p.ids])
    assert T.all_satisfied(T.check(p, poses))
    again = solve_triangles(p, cfg, solver)
    if again.status == "solved" and name != "rejection":   # deterministic for a seed
        assert again.placements == plan.placements


def test_deadline_is_honoured_on_a_hard_problem():
    p, _ = T.generate(8, np.random.default_rng(7))
    for name in ("cem", "rejection"):
        cfg = SolverConfig(solver=name, time_budget_s=0.5, device="cpu")
        t0 = time.monotonic()
        plan = solve_triangles(p, cfg)
        assert time.monotonic() - t0 < 0.5 + 0.3
        assert plan.status in ("solved", "timeout")


def test_uncentred_local_frames_are_placed_in_the_scene_frame():
    p, _ = T.generate(2, np.random.default_rng(2))
    moved = problem(*(v + np.array([0.05, -0.02]) for v in p.vertices))
    plan = solve_triangles(moved, SolverConfig(solver="cem", time_budget_s=2.0, device="cpu"))
    assert plan.status == "solved"
    assert T.all_satisfied(T.check(moved, np.array([plan.placements[i] for i in moved.ids])))


def test_composed_denoiser_with_4d_poses_is_the_edge_sum_over_sqrt_degree():
    torch.manual_seed(0)
    cfg = DenoiserConfig(16, 32, node_dim=NODE_DIM, pose_dim=POSE_DIM, edge_types=EDGE_TYPES)
    model = ComposedDenoiser(cfg)
    p, sol = T.generate(3, np.random.default_rng(0))
    g = build_graph(p)
    x = torch.randn(5, 3, POSE_DIM)
    t = torch.full((5, 3), 10)
    eps = model(x, t, g)
    assert eps.shape == (5, 3, 4) and torch.isfinite(eps).all()
    enc, temb = model.encode(x, t, g)
    e_in = model.edge_eps("in", enc, temb, g.edges["in"])[:, :, 0]        # (5, 3, 4)
    e_cf = model.edge_eps("cfree", enc, temb, g.edges["cfree"])           # (5, 3, 2, 4)
    by_hand = e_in.clone()
    for k, (a, b) in enumerate(g.edges["cfree"].tolist()):
        by_hand[:, a] += e_cf[:, k, 0]
        by_hand[:, b] += e_cf[:, k, 1]
    torch.testing.assert_close(eps, by_hand / math.sqrt(3.0))            # degree 1 + 2
    saved = DenoiserConfig(**cfg.to_dict())                               # list-form edge types
    assert saved == cfg
    poses = torch.tensor(sol, dtype=torch.float32)
    torch.testing.assert_close(denormalise(normalise(poses, p.tray), p.tray), poses,
                               atol=1e-6, rtol=0)
    assert isinstance(g, ProblemGraph) and g.nodes.shape == (3, NODE_DIM)


def test_shipped_checkpoint_loads_and_solves_a_generated_problem():
    from robot_packer.solver.diffusion.checkpoint import load_model

    model = load_model(ROOT / "models" / "triangles2d.pt")       # sha256 checked vs README
    assert model.config.pose_dim == 4 and dict(model.config.edge_types) == dict(EDGE_TYPES)
    p, _ = T.generate(4, np.random.default_rng(10_040_001))
    plan = solve_triangles(p, SolverConfig(solver="diffusion", time_budget_s=2.0, device="cpu"))
    assert plan.status == "solved" and plan.verification == {"simulator": "none", "passed": True}


def test_cli_solve_on_a_triangles_scene(tmp_path):
    p, _ = T.generate(3, np.random.default_rng(10_030_002))
    scene, out = tmp_path / "tri.json", tmp_path / "plan.json"
    T.save_scene(p, scene)
    run = subprocess.run([sys.executable, "-m", "robot_packer.cli", "solve", str(scene),
                          "--out", str(out), "--solver", "diffusion", "--time-budget", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    plan = json.loads(out.read_text())
    assert plan["status"] == "solved" and plan["frame"] == "tray"
    assert set(plan["placements"]) == set(p.ids)
    assert plan["verification"] == {"simulator": "none", "passed": True}
    assert {tuple(c["constraint"][:1]) for c in plan["constraints"]} == {("in",), ("cfree",)}
    assert set(plan["solver"]) >= {"name", "device", "candidates", "time_s", "seed"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"domain": "triangles2d", "tray": 0, "objects": []}))
    run = subprocess.run([sys.executable, "-m", "robot_packer.cli", "solve", str(bad),
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT,
                         timeout=60)
    assert run.returncode == 2 and "tray" in run.stderr
