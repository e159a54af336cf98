"""``robot-packer bench``: side-by-side solver benchmarks on generated problems (DESIGN.md §8, §9).

Every solver gets the same problems, the same exact checker, the same time budget and the same
machine. Problems come from :func:`robot_packer.datagen.generate` with seeds
``TEST_SEED_BASE + 1_000_000 * seed + 10_000 * n + k`` — disjoint from every training seed
(training uses seeds below 1_000_000); in the robot domain (pack3d) only problems whose known
solution passes the whole verification, the Panda's reach included — and are saved as scene
files next to the results, so any case can be re-run with
``robot-packer solve <out>/scenes/<case>.yaml --solver S``.

Outputs (each written atomically, refreshed after every object count; tables and plots come from
:mod:`robot_packer.bench_report`): ``results.json`` (meta,
per-solver/per-N summary, every run), ``results.md`` (a table) and ``results.png`` (success vs N,
solve-time distributions). When ``diffusion`` runs, the same problems also measure pass@1 and
pass@10 of its raw samples (one batch of 10, no refinement or ranking, exact checker; ``passk``
in the JSON, ``pass_at_1``/``pass_at_10`` on the diffusion rows), plotted beside the seed paper's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np

from robot_packer.bench_report import PAPER_PASSK, format_markdown, format_table, plot, summarize

TEST_SEED_BASE = 10_000_000
DEFAULT_SOLVERS = "rejection,cem,heuristic"
SMOKE = {"objects": "3", "problems": 2}
ALL_DOMAINS = ("pack3d", "qualitative2d", "stack2d", "triangles2d")


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark runs. ``objects``: object counts; ``solvers``: registry names."""

    out: str
    domain: str = "pack3d"
    objects: tuple[int, ...] = (3, 4, 5, 6, 8)
    problems: int = 100
    solvers: tuple[str, ...] = ("rejection", "cem", "heuristic")
    budget: float = 5.0
    device: str = "auto"
    seed: int = 0
    tier: str = "standard"
    verify: bool = True
    candidates: int = 64
    threads: int | None = None
    progress: bool = True
    passk: bool = True


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``bench`` verb."""
    parser.add_argument("--domain", default="pack3d", choices=ALL_DOMAINS,
                        help="problem domain (one checkpoint each; default pack3d)")
    parser.add_argument("--objects", default=None,
                        help="comma-separated object counts (default: the domain's, e.g. "
                             "3,4,5,6,8,10 for pack3d, 2,3,4,5 for qualitative2d)")
    parser.add_argument("--problems", type=int, default=100, help="problems per object count")
    parser.add_argument("--solvers", default=DEFAULT_SOLVERS, help="comma-separated solver names")
    parser.add_argument("--budget", type=float, default=5.0, help="time budget per solve (s)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=0, help="benchmark seed (problems + solvers)")
    parser.add_argument("--tier", default="standard", choices=["standard", "hard"])
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                        help="PyBullet verification of solved plans where the domain has "
                             "physics: pack3d (with the robot's reach), stack2d (default: on)")
    parser.add_argument("--candidates", type=int, default=64, help="samples per batch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run: 2 problems of 3 objects")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--passk", action=argparse.BooleanOptionalAction, default=True,
                        help="pass@1/pass@10 of raw diffusion samples when diffusion runs "
                             "(default: on)")
    parser.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                        help="instead of running, join finished result folders of the same "
                             "problems (e.g. one per solver, run in parallel) into --out")
    parser.add_argument("--out", required=True, help="output folder (e.g. docs/bench/<name>)")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Map parsed options onto a BenchConfig; raise ValueError naming a bad option."""
    objects, problems, budget = args.objects, args.problems, args.budget
    if objects is None:
        objects = ",".join(map(str, domain_objects(args.domain)))
    if args.smoke:
        objects, problems = SMOKE["objects"], SMOKE["problems"]
    try:
        counts = tuple(int(v) for v in str(objects).split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--objects: must be comma-separated integers, got {objects!r}") from None
    if not counts or any(c < 1 or c > 64 for c in counts):
        raise ValueError(f"--objects: counts must be in [1, 64], got {objects!r}")
    if problems < 1 or problems > 9999:
        raise ValueError(f"--problems: must be in [1, 9999], got {problems}")
    if not 0 < budget <= 3600:
        raise ValueError(f"--budget: must be in (0, 3600], got {budget}")
    solvers = tuple(s.strip() for s in args.solvers.split(",") if s.strip())
    if not solvers:
        raise ValueError("--solvers: give at least one solver")
    if args.tier == "hard" and args.domain != "pack3d":
        raise ValueError(f"--tier: the hard tier exists for pack3d only, not {args.domain}")
    verify = args.verify and domain_physics(args.domain)
    return BenchConfig(args.out, args.domain, counts, problems, solvers, float(budget), args.device,
                       args.seed, args.tier, verify, args.candidates, args.threads,
                       not args.no_progress, args.passk)


def domain_objects(domain: str) -> tuple[int, ...]:
    """The object counts a domain is benchmarked at by default."""
    if domain == "triangles2d":
        return PAPER_PASSK["triangles2d"]["n"]
    from robot_packer.domains import get_domain

    return get_domain(domain).bench_objects


def domain_physics(domain: str) -> bool:
    """Whether a domain's success needs the PyBullet check (pack3d, stack2d)."""
    if domain == "triangles2d":
        return False
    from robot_packer.domains import get_domain

    return get_domain(domain).physics


def run_bench(args: argparse.Namespace) -> int:
    """The ``bench`` verb: 0 when the benchmark ran, 2 on invalid options."""
    if args.merge:
        try:
            result = merge_results([Path(d) for d in args.merge], Path(args.out))
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: --merge: {exc}", file=sys.stderr)
            return 2
        print(format_table(result["summary"]))
        return 0
    try:
        cfg = config_from_args(args)
        check_solvers(cfg)
        if cfg.verify:
            check_verifier()
        if cfg.domain == "triangles2d":
            configs, solvers = None, None
            check_triangle_solvers(cfg)
        else:
            configs, solvers = build_solvers(cfg)
    except (ValueError, OSError) as exc:   # bad option, or a solver that cannot load its model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_triangles(cfg) if cfg.domain == "triangles2d" else run(cfg, configs, solvers)
    print(format_table(result["summary"]))
    print(f"results written to {cfg.out}/results.json, results.md, results.png")
    return 0


def registered_solvers() -> list[str]:
    """Names of every registered solver (importing the optional ones when importable)."""
    from robot_packer.solver import SOLVERS
    from robot_packer.solver import cem, heuristic, rejection  # noqa: F401  (register)

    try:
        import robot_packer.solver.diffusion  # noqa: F401
    except ImportError:
        pass
    return sorted(SOLVERS)


def check_solvers(cfg: BenchConfig) -> None:
    known = registered_solvers()
    for name in cfg.solvers:
        if name not in known:
            raise ValueError(f"--solvers: {name!r} is not registered "
                             f"(registered: {', '.join(known)})")


def check_verifier() -> None:
    try:
        import robot_packer.sim.verify  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--verify: the PyBullet verifier is not available ({exc}); "
                         "use --no-verify") from None


def problem_seed(cfg: BenchConfig, n: int, j: int) -> int:
    """The ``j``-th candidate seed for ``n`` objects: >= TEST_SEED_BASE, never a training seed."""
    return case_seed(cfg.seed, n, j)


def case_seed(seed: int, n: int, j: int) -> int:
    """The ``j``-th candidate problem seed for ``n`` objects of benchmark seed ``seed``."""
    return TEST_SEED_BASE + 1_000_000 * seed + 10_000 * n + j


def make_problems(cfg: BenchConfig, n: int) -> tuple[list, list[int]]:
    """The ``cfg.problems`` problems with ``n`` objects (saved as scenes) and their seeds."""
    from robot_packer.domains import get_domain
    from robot_packer.problem import save_scene

    generate = candidate_generator(cfg.domain, cfg.tier)
    if get_domain(cfg.domain).reach:
        generate = partial(robot_solvable, generate)
    scenes = Path(cfg.out) / "scenes"

    def save(problem, k: int) -> None:
        save_scene(problem, scenes / f"{case_name(n, k)}.yaml")

    return generate_cases(n, cfg.problems, cfg.seed, generate, save)


def candidate_generator(domain: str, tier: str):
    """``(n, rng) -> (problem, known solution)``: where a domain and tier's benchmark problems
    come from, before :func:`robot_solvable` keeps the robot domain's solvable ones."""
    from robot_packer import datagen
    from robot_packer.domains import get_domain

    if tier == "hard":
        return partial(datagen.generate, cfg=datagen.HARD)
    return get_domain(domain).generate


def robot_solvable(generate, n: int, rng: np.random.Generator):
    """``generate(n, rng)``, raising RuntimeError (skip this seed) unless the known solution's
    plan passes the whole verification, the robot's reach included: a benchmark problem of a robot
    domain is one the cell can carry out, not only one the exact checker accepts."""
    from robot_packer.solver import pipeline

    problem, known = generate(n, rng)
    if not pipeline.verify(problem, pipeline.plan_of(problem, known))["passed"]:
        raise RuntimeError("the known solution fails verification")
    return problem, known


def generate_cases(n: int, count: int, seed: int, generate, save) -> tuple[list, list[int]]:
    """``count`` problems with ``n`` objects and their seeds; ``save(problem, k)`` writes case k.

    Problem k comes from the k-th seed of the sequence :func:`case_seed` (n, 0), (n, 1), ...
    for which ``generate(n, rng)`` succeeds; the seeds it gives up on (RuntimeError: the
    generator, or :func:`robot_solvable`) are skipped. Every domain's benchmark draws its
    problems here.
    """
    problems, seeds, j = [], [], 0
    while len(problems) < count:
        if j >= 10_000:
            raise RuntimeError(f"the generator failed on too many {n}-object seeds")
        s = case_seed(seed, n, j)
        j += 1
        try:
            problem, _ = generate(n, np.random.default_rng(s))
        except RuntimeError:      # the generator gave up on this seed: take the next one
            continue
        save(problem, len(problems))
        problems.append(problem)
        seeds.append(s)
    return problems, seeds


def case_name(n: int, k: int) -> str:
    return f"n{n}_{k:03d}"


def build_solvers(cfg: BenchConfig) -> tuple[dict, dict]:
    """Per solver name: its SolverConfig and a ready instance (models load here, once)."""
    import torch

    from robot_packer.solver import SolverConfig, make_solver

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from robot_packer.domains import get_domain

    base = SolverConfig(seed=cfg.seed, device=cfg.device, candidates=cfg.candidates,
                        time_budget_s=cfg.budget, verify=cfg.verify, threads=cfg.threads,
                        verify_reach=get_domain(cfg.domain).reach)
    configs = {name: replace(base, solver=name,
                             options={"domain": cfg.domain} if name == "diffusion" else {})
               for name in cfg.solvers}
    return configs, {name: make_solver(c) for name, c in configs.items()}


def run(cfg: BenchConfig, configs: dict | None = None, solvers: dict | None = None) -> dict:
    """Run every solver on every problem; write and return the results."""
    import torch

    from robot_packer.solver import resolve_device

    if solvers is None:
        configs, solvers = build_solvers(cfg)
    meta = run_meta(cfg, str(resolve_device(cfg.device)), torch.get_num_threads())
    runs: list[dict] = []
    passk: list[dict] = []
    bar = _progress_bar(cfg)
    for n in cfg.objects:
        problems, seeds = make_problems(cfg, n)
        warm_up(problems[0], configs, solvers)
        for k, (problem, seed) in enumerate(zip(problems, seeds)):
            for name in cfg.solvers:
                runs.append(run_one(problem, configs[name], solvers[name], n, k) | {"seed": seed})
                bar.update(1)
        if cfg.passk and "diffusion" in solvers:
            passk += raw_passk(solvers["diffusion"], problems, seeds, n)
        write_results(cfg, meta, runs, passk)
    bar.close()
    return write_results(cfg, meta, runs, passk)


def check_triangle_solvers(cfg: BenchConfig) -> None:
    from robot_packer.solver.triangles.solve import TRIANGLE_SOLVERS

    for name in cfg.solvers:
        if name not in TRIANGLE_SOLVERS:
            raise ValueError(f"--solvers: {name!r} does not apply to triangles2d "
                             f"(available: {', '.join(TRIANGLE_SOLVERS)})")


def run_triangles(cfg: BenchConfig) -> dict:
    """The triangles2d benchmark (its own problem type and solvers, the same records)."""
    from robot_packer.solver.triangles.bench import run_triangles_cases

    meta = run_meta(cfg, "cpu" if cfg.device == "auto" else cfg.device, cfg.threads or 1)
    bar = _progress_bar(cfg)
    runs, passk = run_triangles_cases(cfg.objects, cfg.problems, cfg.solvers, cfg.budget,
                                      cfg.seed, cfg.out, cfg.candidates, cfg.device, cfg.passk,
                                      progress_update=lambda: bar.update(1))
    bar.close()
    return write_results(cfg, meta, runs, passk)


def raw_passk(solver, problems: list, seeds: list[int], n: int) -> list[dict]:
    """Per problem: pass@1 and pass@10 of raw diffusion samples (noise seeded by the problem
    seed, so a case's record does not depend on which other cases ran)."""
    import torch

    from robot_packer.solver.diffusion.evaluate import PASSK_SAMPLES, raw_sample_checks

    records = []
    for k, (problem, seed) in enumerate(zip(problems, seeds)):
        oks = raw_sample_checks(solver, problem, PASSK_SAMPLES, torch.Generator().manual_seed(seed))
        records.append({"n": n, "case": case_name(n, k), "seed": seed,
                        "pass@1": bool(oks[0]), "pass@10": bool(oks.any())})
    return records


def warm_up(problem, configs, solvers) -> None:
    """One untimed short solve per solver: lazy torch/kernel set-up is not charged to case 0."""
    from robot_packer.solver import solve

    for name, c in configs.items():
        solve(problem, replace(c, time_budget_s=min(c.time_budget_s, 0.5), verify=False),
              solvers[name])


def run_one(problem, config, solver, n: int, k: int) -> dict:
    """Solve one case and summarise it as a run record."""
    from robot_packer.solver import solve

    t0, c0 = time.monotonic(), time.process_time()
    plan = solve(problem, config, solver)
    wall, cpu = time.monotonic() - t0, time.process_time() - c0
    success = plan.status == "solved" and (not config.verify or plan.verified)
    return {"solver": config.solver, "n": n, "case": case_name(n, k), "status": plan.status,
            "success": bool(success), "time_s": round(wall, 4), "cpu_s": round(cpu, 4),
            "verified": plan.verification.get("passed"), "reasons": failure_reasons(plan, success),
            "samples": plan.solver.get("samples")}


def failure_reasons(plan, success: bool) -> list[str]:
    """Short labels of why a run failed: violated constraint types, verification, or message."""
    if success:
        return []
    if plan.status == "solved":   # exact constraints hold; simulation said no
        reasons = plan.verification.get("reasons") or ["failed"]
        return sorted({f"verification: {r.split(':')[0]}" for r in reasons})[:3]
    names = sorted({c["constraint"][0] for c in plan.constraints if not c["satisfied"]})
    if names:
        return names
    return [f"{plan.status}: {plan.message[:80]}"]


def run_meta(cfg: BenchConfig, device: str, threads: int) -> dict:
    import torch

    cmd = " ".join(["robot-packer", "bench"] + [a for a in sys.argv[2:]]) if (
        len(sys.argv) > 1 and sys.argv[1] == "bench") else None
    return {"command": cmd or reproduce_command(cfg), "domain": cfg.domain, "tier": cfg.tier,
            "objects": list(cfg.objects), "problems": cfg.problems, "solvers": list(cfg.solvers),
            "budget_s": cfg.budget, "verify": cfg.verify, "seed": cfg.seed,
            "candidates": cfg.candidates, "passk": cfg.passk, "device": device, "threads": threads,
            "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__,
            "git_commit": git_commit(), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                  time.gmtime()),
            "seeds": f"{TEST_SEED_BASE} + 1_000_000*seed + 10_000*n + j, j = 0, 1, ... "
                     "(seeds the generator gives up on are skipped; each run lists its seed)"}


def reproduce_command(cfg: BenchConfig) -> str:
    return (f"robot-packer bench --domain {cfg.domain} --objects {','.join(map(str, cfg.objects))} "
            f"--problems {cfg.problems} --solvers {','.join(cfg.solvers)} --budget {cfg.budget} "
            f"--device {cfg.device} --seed {cfg.seed} --tier {cfg.tier} "
            f"{'--verify' if cfg.verify else '--no-verify'} "
            f"{'' if cfg.passk else '--no-passk '}--out {cfg.out}")


def git_commit() -> str:
    """HEAD of the source tree (with '-dirty' when it has local changes), or 'unknown'.

    Results under docs/bench/ do not count as changes: a multi-part run rewrites committed
    results of its own earlier parts before the later parts start."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)docs/bench"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def write_results(cfg: BenchConfig, meta: dict, runs: list[dict],
                  passk: list[dict] | None = None) -> dict:
    """Write results.json, results.md and results.png atomically; return the results."""
    from robot_packer.problem import atomic_write

    summary = summarize(runs, cfg.solvers, cfg.objects, passk)
    result = {"meta": meta, "summary": summary, "runs": runs, "passk": passk or []}
    out = Path(cfg.out)
    atomic_write(out / "results.json", json.dumps(result, indent=1) + "\n")
    atomic_write(out / "results.md", format_markdown(meta, summary))
    atomic_write(out / "results.png", plot(summary, runs, cfg))
    return result


def merge_results(parts: list[Path], out: Path) -> dict:
    """Join result folders of the same benchmark (seed, tier, budget, problems per N; solvers
    or object counts split across parts) into one results set in ``out`` (scenes copied)."""
    import shutil

    loaded = [json.loads((p / "results.json").read_text()) for p in parts]
    same = ("domain", "tier", "problems", "budget_s", "verify", "seed")
    meta = dict(loaded[0]["meta"])
    for part, res in zip(parts, loaded):
        for key in same:
            if res["meta"][key] != meta[key]:
                raise ValueError(f"{part}: {key} {res['meta'][key]!r} differs from {meta[key]!r}")
    solvers = list(dict.fromkeys(s for res in loaded for s in res["meta"]["solvers"]))
    objects = sorted({n for res in loaded for n in res["meta"]["objects"]})
    meta.update(solvers=solvers, objects=objects, parts=[str(p) for p in parts],
                command=" && ".join(r["meta"]["command"] for r in loaded),
                git_commit=", ".join(sorted({r["meta"]["git_commit"] for r in loaded})))
    cfg = BenchConfig(str(out), meta["domain"], tuple(meta["objects"]), meta["problems"],
                      tuple(solvers), meta["budget_s"], meta["device"], meta["seed"],
                      meta["tier"], meta["verify"])
    for part in parts:
        if (part / "scenes").is_dir() and Path(out).resolve() != part.resolve():
            shutil.copytree(part / "scenes", Path(out) / "scenes", dirs_exist_ok=True)
    runs = [r for res in loaded for r in res["runs"]]
    keys = [(r["solver"], r["case"]) for r in runs]
    if len(set(keys)) != len(keys):
        raise ValueError("the parts overlap: some solver ran the same case in two parts")
    passk = [p for res in loaded for p in res.get("passk", [])]
    return write_results(cfg, meta, runs, passk)


class _NoBar:
    def update(self, _k: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(cfg: BenchConfig):
    if not cfg.progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=len(cfg.objects) * cfg.problems * len(cfg.solvers), desc="bench",
                unit="solve", mininterval=2.0, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m robot_packer.bench`` (same options as the ``bench`` verb)."""
    parser = argparse.ArgumentParser(prog="robot-packer bench", description=__doc__.splitlines()[0])
    add_bench_arguments(parser)
    return run_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
