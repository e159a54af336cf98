"""``robot-packer bench``: a smoke run writes usable results and re-runnable scenes."""
import argparse
import json

import numpy as np
import pytest

from robot_packer import bench
from robot_packer.problem import load_scene
from robot_packer.solver import SolverConfig, solve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def parse(*argv):
    parser = argparse.ArgumentParser()
    bench.add_bench_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """A smoke run in two parts (as scripts/bench_all.sh runs solvers in parallel), joined."""
    root = tmp_path_factory.mktemp("bench")
    for part, solvers in (("a", "rejection,heuristic"), ("b", "cem")):
        args = parse("--smoke", "--no-verify", "--no-progress", "--device", "cpu",
                     "--solvers", solvers, "--out", str(root / part))
        assert bench.run_bench(args) == 0
    out = root / "smoke"
    assert bench.run_bench(parse("--merge", str(root / "a"), str(root / "b"),
                                 "--out", str(out))) == 0
    return out


@pytest.fixture(scope="module")
def diffusion_smoke(tmp_path_factory):
    """A smoke run of the diffusion solver (2 problems of 3 objects): pass@k is measured too."""
    out = tmp_path_factory.mktemp("bench") / "diffusion"
    args = parse("--smoke", "--no-verify", "--no-progress", "--device", "cpu", "--budget", "0.5",
                 "--solvers", "diffusion,heuristic", "--out", str(out))
    assert bench.run_bench(args) == 0
    return out


def test_diffusion_run_reports_raw_pass_at_1_and_10(diffusion_smoke):
    result = json.loads((diffusion_smoke / "results.json").read_text())
    assert result["meta"]["passk"] is True
    assert [(p["case"], p["seed"]) for p in result["passk"]] == [
        (r["case"], r["seed"]) for r in result["runs"] if r["solver"] == "diffusion"]
    assert all(p["pass@10"] or not p["pass@1"] for p in result["passk"])   # sample 1 of the 10
    rows = {r["solver"]: r for r in result["summary"]}
    raw = rows["diffusion"]
    assert raw["passk_problems"] == 2 and 0.0 <= raw["pass_at_1"] <= raw["pass_at_10"] <= 1.0
    assert "pass_at_1" not in rows["heuristic"]
    table = (diffusion_smoke / "results.md").read_text()
    assert "| diffusion pass@1 | pass@10 |" in table
    assert f"{100 * raw['pass_at_10']:.0f}% |\n" in table and "| — | — |" in table
    assert (diffusion_smoke / "results.png").read_bytes().startswith(PNG_MAGIC)


def test_no_passk_option_is_kept_in_the_reproduce_command():
    cfg = bench.config_from_args(parse("--no-passk", "--solvers", "diffusion", "--out", "x"))
    assert cfg.passk is False and "--no-passk" in bench.reproduce_command(cfg)
    assert bench.config_from_args(parse("--out", "x")).passk is True


def test_merging_parts_of_different_benchmarks_is_refused(smoke, tmp_path, capsys):
    other = tmp_path / "other"
    assert bench.run_bench(parse("--no-verify", "--no-progress", "--objects", "2", "--problems",
                                 "1", "--solvers", "heuristic", "--out", str(other))) == 0
    assert bench.run_bench(parse("--merge", str(smoke), str(other),
                                 "--out", str(tmp_path / "m"))) == 2
    assert "problems" in capsys.readouterr().err
    assert bench.run_bench(parse("--merge", str(smoke), str(smoke),
                                 "--out", str(tmp_path / "m2"))) == 2
    assert "overlap" in capsys.readouterr().err


def test_smoke_run_writes_json_markdown_and_plot(smoke):
    result = json.loads((smoke / "results.json").read_text())
    meta, summary, runs = result["meta"], result["summary"], result["runs"]
    assert meta["problems"] == 2 and meta["objects"] == [3] and meta["verify"] is False
    assert meta["device"] == "cpu" and meta["threads"] >= 1 and meta["git_commit"]
    assert "robot-packer bench" in meta["command"] and "--no-verify" in meta["command"]
    assert all(r["cpu_s"] >= 0 and r["seed"] >= bench.TEST_SEED_BASE for r in runs)
    assert {r["solver"] for r in summary} == {"rejection", "cem", "heuristic"}
    assert len(runs) == 2 * 3
    for row in summary:
        assert row["runs"] == 2 and 0.0 <= row["success_rate"] <= 1.0
        assert 0 < row["median_time_s"] <= row["p95_time_s"] < 10.0
    # the easy 3-object problems are solved by the strong baselines
    assert all(r["success"] for r in runs if r["solver"] in ("heuristic", "rejection"))
    table = (smoke / "results.md").read_text()
    assert "| heuristic | 3 | 100% (2/2) |" in table and "Reproduce:" in table
    assert "pass@" not in table and result["passk"] == []   # no diffusion: no pass@k columns
    assert (smoke / "results.png").read_bytes().startswith(PNG_MAGIC)
    assert not [p for p in smoke.iterdir() if p.name.startswith(".")]   # no temp files left


def test_saved_scenes_rerun_with_solve(smoke):
    scenes = sorted((smoke / "scenes").glob("*.yaml"))
    assert [s.name for s in scenes] == ["n3_000.yaml", "n3_001.yaml"]
    problem = load_scene(scenes[0])
    assert len(problem.items) == 3 and all(item.pose is not None for item in problem.items)
    plan = solve(problem, SolverConfig(solver="heuristic", device="cpu", verify=False))
    assert plan.status == "solved"


def test_problem_seeds_are_never_training_seeds():
    from robot_packer.solver.diffusion.data import TRAIN_SEED_LIMIT

    cfg = bench.BenchConfig(out="x", problems=9999, objects=(1, 64))
    seeds = [bench.problem_seed(cfg, n, k) for n in cfg.objects for k in (0, 9999)]
    assert min(seeds) >= bench.TEST_SEED_BASE > TRAIN_SEED_LIMIT
    assert len(set(seeds)) == len(seeds)


def test_unknown_solver_is_a_clear_error(tmp_path, capsys):
    args = parse("--smoke", "--no-verify", "--solvers", "heuristic,annealing",
                 "--out", str(tmp_path / "x"))
    assert bench.run_bench(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --solvers: 'annealing' is not registered")
    assert "heuristic" in err and "rejection" in err and "\n" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv,message", [
    (("--objects", "3,x"), "--objects"),
    (("--problems", "0"), "--problems"),
    (("--budget", "-1"), "--budget"),
])
def test_bad_options_are_rejected(argv, message, tmp_path, capsys):
    assert bench.run_bench(parse(*argv, "--no-verify", "--out", str(tmp_path / "y"))) == 2
    assert message in capsys.readouterr().err


def test_summary_statistics():
    runs = [{"solver": "s", "n": 3, "success": ok, "time_s": t, "reasons": r}
            for ok, t, r in [(True, 1.0, []), (False, 3.0, ["in", "cfree"]), (False, 2.0, ["in"]),
                             (True, 4.0, [])]]
    (row,) = bench.summarize(runs, ["s"], [3])
    assert row["success_rate"] == 0.5 and row["solved"] == 2
    assert row["median_time_s"] == 2.5
    assert row["p95_time_s"] == pytest.approx(float(np.percentile([1, 3, 2, 4], 95)), abs=1e-3)
    assert row["failure_reasons"][0] == ["in", 2]


def test_robot_benchmark_problems_are_ones_the_arm_can_carry_out(tmp_path):
    # The dense tier's first N = 10 candidate puts a box far in front, where the arm cannot hold
    # it above the container's wall: its known solution fails verification, so the benchmark
    # takes the next candidate instead; every kept scene is saved.
    cfg = bench.BenchConfig(out=str(tmp_path), tier="hard", objects=(10,), problems=2)
    problems, seeds = bench.make_problems(cfg, 10)
    candidates = bench.generate_cases(10, 3, 0, bench.candidate_generator("pack3d", "hard"),
                                      lambda problem, k: None)[1]
    assert seeds == candidates[1:]
    assert sorted(p.name for p in (tmp_path / "scenes").glob("*.yaml")) == [
        "n10_000.yaml", "n10_001.yaml"]


def test_execute_known_verifies_and_executes_the_benchmarks_known_solutions(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "execute_known.py"
    spec = importlib.util.spec_from_file_location("execute_known", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "execute.json"
    assert script.main(["--objects", "4", "--problems", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["summary"]["4"] == {"problems": 2, "verified": 2, "executed": 2}
    assert [row["message"] for row in result["rows"]] == ["all steps executed"] * 2
