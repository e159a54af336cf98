"""``robot-packer`` command line (DESIGN.md §9). Each verb maps argparse onto config dataclasses.

Exit codes: 0 ok, 2 invalid input (one ``error: …`` line on stderr), 3 not solved / not passed.
"""
from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_INVALID, EXIT_FAILED = 0, 2, 3


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_INVALID


def cmd_solve(args: argparse.Namespace) -> int:
    from robot_packer.problem import SceneError, load_scene, save_plan
    from robot_packer.solver import SolverConfig, solve
    from robot_packer.triangles2d import is_triangles_scene

    if is_triangles_scene(args.scene):      # `domain: triangles2d`: the triangle solvers
        from robot_packer.solver.triangles.solve import run_solve

        return run_solve(args)
    try:
        from robot_packer.domains import get_domain

        problem = load_scene(args.scene)
        domain = get_domain(args.domain)
        learned = args.solver in ("diffusion", "portfolio")
        config = SolverConfig(solver=args.solver, seed=args.seed, device=args.device,
                              candidates=args.candidates, time_budget_s=args.time_budget,
                              verify=not args.no_verify and domain.physics,
                              verify_reach=domain.reach,
                              options={"domain": domain.name} if learned else {})
        from robot_packer.solver import make_solver
        solver = make_solver(config)
    except (SceneError, ValueError) as exc:
        return _error(str(exc))
    plan = solve(problem, config, solver)
    save_plan(plan, args.out)
    v = plan.verification
    print(f"{plan.status}: {len(plan.placements)} objects, solver {config.solver}, "
          f"{plan.solver['time_s']:.2f} s, verified: {v['passed']} ({v['simulator']})"
          + (f" — {plan.message}" if plan.message else ""))
    print(f"plan written to {args.out}")
    return EXIT_OK if plan.status == "solved" else EXIT_FAILED


def cmd_verify(args: argparse.Namespace) -> int:
    from robot_packer.domains import get_domain
    from robot_packer.sim.cli_verify import run_verify

    return run_verify(args.scene, args.plan, args.out, reach=get_domain(args.domain).reach)


def cmd_perceive(args: argparse.Namespace) -> int:
    from robot_packer.cli_perceive import run_perceive

    return run_perceive(args.cloud, args.labelled, args.out)


def cmd_demo(args: argparse.Namespace) -> int:
    from robot_packer.demo import run_demo

    return run_demo(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from robot_packer.bench import run_bench

    return run_bench(args)


def cmd_train(args: argparse.Namespace) -> int:
    from robot_packer.solver.diffusion.train import run_train

    return run_train(args)


def _solver_names() -> list[str]:
    from robot_packer.solver import SOLVERS

    return sorted(SOLVERS)


# The box domains of robot_packer.domains (named here: building the parser must not import torch).
BOX_DOMAINS = ("pack3d", "qualitative2d", "stack2d")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robot-packer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("solve", help="scene file -> plan JSON")
    p.add_argument("scene", help="scene file (.yaml/.json, DESIGN.md §4)")
    p.add_argument("--out", required=True, help="plan JSON to write")
    p.add_argument("--solver", default="diffusion", choices=_solver_names())
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", type=int, default=64, help="samples per batch")
    p.add_argument("--time-budget", type=float, default=5.0, help="seconds")
    p.add_argument("--no-verify", action="store_true", help="skip PyBullet verification")
    p.add_argument("--domain", default="pack3d", choices=BOX_DOMAINS,
                   help="box domain: picks the diffusion checkpoint and what verification "
                        "means (stack2d: physics only; qualitative2d: exact only); default "
                        "pack3d. triangles2d scenes are recognised by their `domain` key")
    p.set_defaults(func=cmd_solve)

    p = sub.add_parser("verify", help="re-check a plan: exact constraints + PyBullet")
    p.add_argument("scene")
    p.add_argument("plan")
    p.add_argument("--out", default=None, help="verification report JSON (+ PNGs beside it)")
    p.add_argument("--domain", default="pack3d", choices=BOX_DOMAINS,
                   help="stack2d/qualitative2d: physics only, no robot reach check")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("perceive", help="point cloud file -> objects JSON")
    p.add_argument("cloud", help=".npy (N,3)/(N,4 with labels), .ply or .pcd, world frame")
    p.add_argument("--labelled", action="store_true", help="the 4th .npy column holds labels")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_perceive)

    p = sub.add_parser("demo", help="the main job in a simulated cell, with a report")
    from robot_packer.demo import add_demo_arguments
    add_demo_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="side-by-side solver benchmarks")
    from robot_packer.bench import add_bench_arguments
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("train", help="train one domain's constraint models")
    from robot_packer.solver.diffusion.train import add_train_arguments
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
