"""The box domains: generators that keep their promises, and the benchmark/training plumbing."""
import argparse
from pathlib import Path

import numpy as np
import pytest

from robot_packer import bench
from robot_packer import constraints as C
from robot_packer.datagen import label_relations
from robot_packer.domains import DOMAINS, PLANAR_RELATIONS, get_domain
from robot_packer.solver import SolverConfig, solve
from robot_packer.solver.diffusion.data import make_record

ROOT = Path(__file__).resolve().parents[1]


def problems(name, n, count=4):
    return [get_domain(name).generate(n, np.random.default_rng(100 + k)) for k in range(count)]


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_known_solutions_pass_the_exact_checker(name):
    for problem, poses in problems(name, 4):
        assert C.all_satisfied(C.check(problem, poses))


def test_qualitative2d_is_one_flat_layer_with_relations_and_no_robot_rules():
    for problem, poses in problems("qualitative2d", 5):
        bottoms = poses[:, 2] - problem.sizes[:, 2] / 2
        assert np.allclose(bottoms, 0.0, atol=1e-6)             # everything on the floor
        assert problem.container.size[2] < 0.05
        assert 2 <= len(problem.constraints) <= 6
        assert "on" not in {c.name for c in problem.constraints}
        assert not problem.rules.gripper_clear and not problem.rules.heavy_below


def test_stack2d_is_a_tight_vertical_slot_that_settles_in_pybullet():
    from robot_packer.sim.verify import settles, verify_plan

    stacked = 0
    for problem, poses in problems("stack2d", 5):
        depth = problem.container.size[1]
        assert np.all(problem.sizes[:, 1] < depth) and np.all(problem.sizes[:, 1] > depth - 0.02)
        assert np.allclose(np.cos(2 * poses[:, 3]), 1.0)            # yaw 0 or 180 degrees
        assert {c.name for c in problem.constraints} <= set(PLANAR_RELATIONS)
        stacked += int(np.sum(poses[:, 2] - problem.sizes[:, 2] / 2 > 0.01))
        assert settles(problem, poses)
        report = verify_plan(problem, poses, reach=False)
        assert report["passed"] and report["reachable"] is None, report["reasons"]
    assert stacked >= 4          # the slot is tight: most problems need stacking


def test_settles_says_no_to_a_box_hanging_off_its_support():
    from robot_packer.sim.verify import settles

    problem, poses = problems("stack2d", 2, 1)[0]
    lifted = poses.copy()
    lifted[:, 2] += 0.05                                              # both float in the air
    assert not settles(problem, lifted)


def test_relation_labels_can_be_restricted_to_some_types():
    problem, poses = problems("qualitative2d", 4, 1)[0]
    every = label_relations(problem, poses)
    sides = label_relations(problem, poses, ("left_of", "right_of"))
    assert sides and {c.name for c in sides} <= {"left_of", "right_of"}
    assert set(sides) < set(every)


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_training_records_use_the_domain_counts(name):
    lo, hi = get_domain(name).train_objects
    counts = {len(make_record(s, name)[0].items) for s in range(12)}
    assert counts <= set(range(lo, hi + 1)) and len(counts) > 1


def test_unknown_domain_is_a_clear_error():
    with pytest.raises(ValueError, match="domain: unknown 'shelves'.*qualitative2d"):
        get_domain("shelves")


def test_planar_problems_solve_through_the_pipeline():
    problem, _ = problems("stack2d", 4, 1)[0]
    plan = solve(problem, SolverConfig(solver="heuristic", device="cpu", time_budget_s=5.0,
                                       verify_reach=False))
    assert plan.status == "solved" and plan.verified
    assert plan.verification["reachable"] is None


def parse(*argv):
    parser = argparse.ArgumentParser()
    bench.add_bench_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize("domain,verify", [("qualitative2d", False), ("stack2d", True)])
def test_bench_smoke_on_the_2d_box_domains(domain, verify, tmp_path):
    out = tmp_path / domain
    args = parse("--domain", domain, "--smoke", "--no-progress", "--device", "cpu",
                 "--solvers", "heuristic", "--budget", "3", "--out", str(out))
    cfg = bench.config_from_args(args)
    assert cfg.verify is verify and cfg.objects == (3,)
    assert bench.run_bench(args) == 0
    result = __import__("json").loads((out / "results.json").read_text())
    assert result["meta"]["domain"] == domain and len(result["runs"]) == 2
    assert all(r["success"] for r in result["runs"])
    assert len(list((out / "scenes").glob("*.yaml"))) == 2


def test_bench_defaults_to_the_domain_counts_and_refuses_a_hard_2d_tier(tmp_path, capsys):
    cfg = bench.config_from_args(parse("--domain", "stack2d", "--out", str(tmp_path)))
    assert cfg.objects == (4, 5, 6, 7)
    args = parse("--domain", "qualitative2d", "--tier", "hard", "--out", str(tmp_path / "h"))
    assert bench.run_bench(args) == 2
    assert "hard tier exists for pack3d only" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["qualitative2d", "stack2d"])
def test_shipped_checkpoint_solves_a_fresh_problem_of_its_domain(name):
    """models/<domain>.pt loads (sha256 checked against models/README.md) and its diffusion
    solver solves a problem from a benchmark seed, never a training one."""
    problem, _ = get_domain(name).generate(3, np.random.default_rng(10_000_000 + 30_000))
    config = SolverConfig(solver="diffusion", device="cpu", time_budget_s=10.0, verify=False,
                          options={"domain": name})
    plan = solve(problem, config)
    assert plan.status == "solved", plan.message


def test_solve_cli_takes_the_domain(tmp_path):
    """`robot-packer solve --domain stack2d`: the stack2d checkpoint, physics verification
    without the robot (reachable stays None)."""
    import json

    from robot_packer.cli import main
    from robot_packer.problem import save_scene

    problem, _ = get_domain("stack2d").generate(4, np.random.default_rng(10_000_000 + 40_000))
    save_scene(problem, tmp_path / "stack.yaml")
    out = tmp_path / "plan.json"
    assert main(["solve", str(tmp_path / "stack.yaml"), "--domain", "stack2d", "--out", str(out),
                 "--time-budget", "10"]) == 0
    plan = json.loads(out.read_text())
    assert plan["status"] == "solved" and plan["verification"]["passed"] is True
    assert plan["verification"]["reachable"] is None


def test_bench_smoke_on_triangles2d(tmp_path, capsys):
    import json

    out = tmp_path / "tri"
    args = parse("--domain", "triangles2d", "--smoke", "--no-progress", "--device", "cpu",
                 "--solvers", "diffusion,rejection", "--budget", "1", "--out", str(out))
    assert bench.run_bench(args) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["meta"]["domain"] == "triangles2d" and result["meta"]["verify"] is False
    assert {r["solver"] for r in result["runs"]} == {"diffusion", "rejection"}
    assert len(result["passk"]) == 2
    assert sorted(p.name for p in (out / "scenes").iterdir()) == ["n3_000.json", "n3_001.json"]
    assert bench.run_bench(parse("--domain", "triangles2d", "--smoke", "--solvers", "heuristic",
                                 "--out", str(tmp_path / "h"))) == 2
    assert "does not apply to triangles2d" in capsys.readouterr().err


def test_verify_cli_checks_a_stack2d_plan_without_the_robot(tmp_path):
    from robot_packer.cli import main
    from robot_packer.problem import save_scene

    problem, _ = get_domain("stack2d").generate(4, np.random.default_rng(10_000_000 + 40_001))
    save_scene(problem, tmp_path / "stack.yaml")
    plan = tmp_path / "plan.json"
    assert main(["solve", str(tmp_path / "stack.yaml"), "--solver", "heuristic", "--domain",
                 "stack2d", "--out", str(plan), "--time-budget", "10"]) == 0
    assert main(["verify", str(tmp_path / "stack.yaml"), str(plan), "--domain", "stack2d"]) == 0


@pytest.mark.parametrize("domain", ["pack3d", "qualitative2d", "stack2d", "triangles2d"])
def test_every_domain_ships_a_listed_weights_only_checkpoint_under_20_mb(domain):
    """models/<domain>.pt: listed with its sha256 in the model card, config + state dict only
    (loads with weights_only=True), at most 20 MB."""
    import torch

    from robot_packer.solver.diffusion.checkpoint import listed_sha256, sha256_of

    path = ROOT / "models" / f"{domain}.pt"
    assert path.stat().st_size <= 20 * 1024 * 1024
    assert listed_sha256(ROOT / "models" / "README.md", path.name) == sha256_of(path)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert set(blob) == {"config", "state_dict"} and blob["config"]["domain"] == domain


def test_the_cli_knows_every_box_domain():
    from robot_packer.cli import BOX_DOMAINS

    assert set(BOX_DOMAINS) == set(DOMAINS)
