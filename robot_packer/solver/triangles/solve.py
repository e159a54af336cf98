"""triangles2d solvers behind one entry point: ``solve_triangles(problem, config) -> TrianglePlan``.

Every solver proposes candidate placements (K, n, 3) ranked by the batched violation; the
pipeline exact-checks the best few with :func:`robot_packer.triangles2d.check` and writes the
plan. Solvers (``TRIANGLE_SOLVERS``, same names as the pack3d registry):

* ``diffusion``: B samples of the composed denoiser (models/triangles2d.pt) in one batch, then
  Adam refinement on the batched exact violations; rounds repeat until solved or out of time.
* ``cem``: the same refinement from uniformly random starts (the refinement-only ablation).
* ``rejection``: sequential sampling — each triangle (largest first) at a uniformly random pose,
  rejected when it breaks ``in``/``cfree`` with those placed; restart after ``REJECT_LIMIT``.

Local frames need not be centred: solvers work on centroid-centred copies and the plan's poses
are converted back to the scene's frames.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robot_packer.deadline import Deadline
from robot_packer.solver.base import SolverConfig, registrar, resolve_device
from robot_packer.solver.triangles.batched import (BatchedViolations, build_graph, denormalise,
                                                   normalise, refine)
from robot_packer.triangles2d import (Triangle, TriangleProblem, all_satisfied, check,
                                      infeasibility, rotation)

EXACT_TRIES = 3          # zero-violation candidates exact-checked per round
# Refinement (Adam steps per round, lr in tray-normalised units, see batched.refine): diffusion
# samples start close, random starts (cem) need longer strides.
REFINE = {"diffusion": (200, 0.01), "cem": (150, 0.03)}
REFINE_TOP = {"diffusion": 32, "cem": 65536}   # starts refined per round (best raw violation)
SAMPLE_STEPS = 15        # diffusion: DDIM steps (15 vs 25: 44 vs 42 of 50 at n=5, faster rounds)
RESTART_BASES = 8        # diffusion: best candidates an inpainting round re-samples around
HELD_BELOW = 1e-6        # diffusion: a triangle charged less than this (m) is held
REJECT_LIMIT = 300       # rejection: failed tries before restarting from an empty tray
REJECT_CHUNK = 64        # rejection: poses drawn (and checked) at once for one triangle

TRIANGLE_SOLVERS: dict[str, type] = {}
# Class decorator filling ``TRIANGLE_SOLVERS``; a duplicate name raises ValueError.
register = registrar(TRIANGLE_SOLVERS, "triangles2d solver")


@dataclass(frozen=True)
class Proposal:
    """Candidates best first: ``poses`` (K, n, 3) tray frame; ``violations`` (K,) m."""

    poses: np.ndarray
    violations: np.ndarray
    samples: int
    timed_out: bool
    solved: bool = False     # the first candidate already passed the exact checker


@dataclass(frozen=True)
class TrianglePlan:
    """The solve's result (plan JSON): ``placements`` id -> [x, y, yaw] (m, rad, tray frame)."""

    status: str
    message: str
    solver: dict
    placements: dict[str, list[float]]
    constraints: list[dict] = field(default_factory=list)
    verification: dict = field(default_factory=dict)
    frame: str = "tray"

    def to_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "frame": self.frame,
                "solver": self.solver, "placements": self.placements,
                "constraints": self.constraints, "verification": self.verification}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def make_triangle_solver(config: SolverConfig):
    """The configured triangles2d solver (the diffusion model loads here, once)."""
    if config.solver not in TRIANGLE_SOLVERS:
        raise ValueError(f"solver: {config.solver!r} has no triangles2d version "
                         f"(allowed: {', '.join(sorted(TRIANGLE_SOLVERS))})")
    cls = TRIANGLE_SOLVERS[config.solver]
    unknown = sorted(set(config.options) - set(cls.OPTIONS))
    if unknown:
        raise ValueError(f"options.{unknown[0]}: unknown {config.solver} option "
                         f"(allowed: {', '.join(sorted(cls.OPTIONS))})")
    if config.threads:
        torch.set_num_threads(int(config.threads))
    return cls(config)


def centred(problem: TriangleProblem) -> tuple[TriangleProblem, np.ndarray]:
    """The problem with every local frame moved to its triangle's centroid, and the centroids."""
    c = problem.vertices.mean(1)                                       # (n, 2)
    items = tuple(Triangle(t.id, t.vertices - c[i]) for i, t in enumerate(problem.items))
    return TriangleProblem(problem.tray, items), c


def solve_triangles(problem: TriangleProblem, config: SolverConfig, solver=None) -> TrianglePlan:
    """Solve within ``config.time_budget_s``; the plan's status is solved, infeasible, timeout
    or failed, and its constraints are the exact checker's verdict on the returned poses."""
    t0 = time.monotonic()
    deadline = Deadline(t0 + config.time_budget_s)
    solver = solver if solver is not None else make_triangle_solver(config)
    info = {"name": config.solver, "device": str(resolve_device(config.device)),
            "candidates": config.candidates, "seed": config.seed}
    reason = infeasibility(problem)
    if reason is not None:
        return TrianglePlan("infeasible", reason, info | {"time_s": 0.0, "samples": 0}, {},
                            verification={"simulator": "none", "passed": False})
    work, centroids = centred(problem)
    prop = solver.propose(work, config, deadline)
    best, verdict = None, None
    for q in prop.poses[:EXACT_TRIES]:
        res = check(work, q)
        if best is None or all_satisfied(res):
            best, verdict = q, res
        if all_satisfied(res):
            break
    ok = verdict is not None and all_satisfied(verdict)
    status = "solved" if ok else ("timeout" if prop.timed_out else "failed")
    if ok:
        msg = ""
    elif verdict is None:
        msg = "no candidate before the deadline"
    else:
        msg = f"best candidate violates {sum(not r.satisfied for r in verdict)} constraint(s)"
    placements = {}
    if best is not None:
        yaw = best[:, 2]
        xy = best[:, :2] - np.einsum("nij,nj->ni", rotation(yaw), centroids)
        placements = {t.id: [float(xy[i, 0]), float(xy[i, 1]), float(yaw[i])]
                      for i, t in enumerate(problem.items)}
        verdict = check(problem, np.column_stack([xy, yaw]))
    return TrianglePlan(status, msg, info | {"time_s": round(time.monotonic() - t0, 4),
                                             "samples": prop.samples},
                        placements, [r.to_dict() for r in verdict or []],
                        {"simulator": "none", "passed": bool(ok)})


def _ranked(poses: list[np.ndarray], vals: list[np.ndarray], samples: int, timed_out: bool,
            solved: bool, keep: int = 8) -> Proposal:
    p, v = np.concatenate(poses), np.concatenate(vals)
    order = np.argsort(v, kind="stable")[:keep]
    return Proposal(p[order], v[order], samples, timed_out, solved)


class _RefiningSolver:
    """Rounds of (starts -> refinement -> exact check of the best) until solved or out of time."""

    OPTIONS = ("refine_steps", "refine_lr", "refine_top", "max_rounds")

    def __init__(self, config: SolverConfig):
        self.device = resolve_device(config.device)
        opts = dict(config.options)
        steps, lr = REFINE[self.name]
        self.refine_steps = int(opts.get("refine_steps", steps))
        self.refine_lr = float(opts.get("refine_lr", lr))
        self.max_rounds = int(opts.get("max_rounds", 10_000))
        self.refine_top = int(opts.get("refine_top", REFINE_TOP[self.name]))

    def starts(self, problem: TriangleProblem, num: int, gen: torch.Generator,
               deadline: Deadline, history: tuple[list, list]) -> torch.Tensor:
        """(num, n, 3) starting poses of one round; ``history``: (poses, violations) arrays of
        the rounds so far."""
        raise NotImplementedError

    def propose(self, problem: TriangleProblem, config: SolverConfig,
                deadline: Deadline) -> Proposal:
        gen = torch.Generator().manual_seed(int(config.seed))      # CPU noise: same on CUDA
        viol = BatchedViolations(problem, self.device)
        found, vals, samples, solved = [], [], 0, False
        for _ in range(self.max_rounds):
            start = self.starts(problem, config.candidates, gen, deadline, (found, vals))
            if self.refine_top < len(start):       # refine only the most promising starts
                with torch.no_grad():
                    start = start[torch.argsort(viol.total(start))[:self.refine_top]]
            poses, v = refine(start, viol, self.refine_steps, self.refine_lr, deadline)
            poses, v = poses.double().cpu().numpy(), v.double().cpu().numpy()
            samples += config.candidates          # drawn, refined or not
            order = np.argsort(v, kind="stable")
            for i in order[:EXACT_TRIES]:
                if v[i] > 0:
                    break
                if all_satisfied(check(problem, poses[i])):
                    solved = True
                    v[i] = -1.0                       # rank it first
                    break
            found.append(poses)
            vals.append(v)
            if solved or deadline.passed():
                break
        return _ranked(found, vals, samples, not solved and deadline.passed(), solved)


@register("cem")
class RandomStartSolver(_RefiningSolver):
    """Refinement from uniformly random starts (centres in the tray, any yaw)."""

    def starts(self, problem, num, gen, deadline, history):
        u = torch.rand((num, problem.n, 3), generator=gen, dtype=torch.float32)
        h = problem.tray / 2
        scale = torch.tensor([2 * h, 2 * h, 2 * math.pi])
        return (u * scale - scale / 2).to(self.device)


@register("diffusion")
class TriangleDiffusionSolver(_RefiningSolver):
    """Samples of the composed denoiser as starts (one batch per round)."""

    OPTIONS = _RefiningSolver.OPTIONS + ("steps", "eta", "langevin_steps", "langevin_size",
                                         "restart")

    def __init__(self, config: SolverConfig, model: torch.nn.Module | None = None):
        super().__init__(config)
        from robot_packer.solver.diffusion.checkpoint import load_model
        from robot_packer.solver.diffusion.sampler import SamplerConfig
        from robot_packer.solver.diffusion.schedule import CosineSchedule, ScheduleConfig

        self.model = model if model is not None else load_model(model_path(config), self.device)
        if getattr(self.model.config, "pose_dim", None) != 4:
            raise ValueError(f"model: not a triangles2d denoiser (pose_dim "
                             f"{getattr(self.model.config, 'pose_dim', None)}, expected 4)")
        self.schedule = CosineSchedule(ScheduleConfig(self.model.config.train_steps), self.device)
        opts = dict(config.options)
        self.restart = str(opts.get("restart", "inpaint"))
        if self.restart not in ("inpaint", "fresh"):
            raise ValueError(f"options.restart: must be 'inpaint' or 'fresh', got {self.restart!r}")
        self.sampler = SamplerConfig(int(opts.get("steps", SAMPLE_STEPS)),
                                     float(opts.get("eta", 0.5)),
                                     int(opts.get("langevin_steps", 1)),
                                     float(opts.get("langevin_size", 0.01)))

    @classmethod
    def from_model(cls, model: torch.nn.Module, config: SolverConfig) -> "TriangleDiffusionSolver":
        """A solver around an in-memory model (validation during training)."""
        return cls(config, model)

    def samples(self, problem: TriangleProblem, num: int, gen: torch.Generator,
                deadline: Deadline | None = None, inpaint=None) -> torch.Tensor:
        """``num`` raw samples (num, n, 3) [x, y, yaw] of the model, one batch (``inpaint``:
        objects held at known poses: :class:`robot_packer.solver.diffusion.sampler.Inpaint`)."""
        from robot_packer.solver.diffusion.sampler import sample

        graph = build_graph(problem, self.device)
        x = sample(self.model, self.schedule, graph, num, self.sampler, gen, deadline, inpaint)
        return denormalise(x, problem.tray)

    def starts(self, problem, num, gen, deadline, history):
        inpaint = None
        if len(history[0]) % 2 == 1 and self.restart == "inpaint":
            inpaint = self.held_objects(problem, np.concatenate(history[0]),
                                        np.concatenate(history[1]), num)
        return self.samples(problem, num, gen, deadline, inpaint)

    def held_objects(self, problem: TriangleProblem, poses: np.ndarray, v: np.ndarray, num: int):
        """Inpainting for a restart round: ``num`` copies spread over the ``RESTART_BASES`` best
        candidates so far, each holding its triangles that violate nothing (None when no base
        has both held and free triangles)."""
        from robot_packer.solver.diffusion.sampler import Inpaint

        best = torch.as_tensor(poses[np.argsort(v, kind="stable")[:RESTART_BASES]],
                               dtype=torch.float32, device=self.device)
        held = BatchedViolations(problem, self.device).per_object(best) <= HELD_BELOW
        useful = held.any(1) & ~held.all(1)
        if not bool(useful.any()):
            return None
        best, held = best[useful], held[useful]
        pick = torch.arange(num, device=self.device) % len(best)
        return Inpaint(normalise(best[pick], problem.tray), held[pick])


def model_path(config: SolverConfig) -> Path:
    """models/triangles2d.pt under ``config.model_dir`` or the package's models/ folder."""
    from robot_packer.problem import resource_path

    if config.model_dir:
        return Path(config.model_dir) / "triangles2d.pt"
    try:
        return resource_path("models", "triangles2d.pt")
    except FileNotFoundError as exc:
        raise ValueError(f"model triangles2d.pt: not found ({exc})") from None


@register("rejection")
class RejectionSolver:
    """Sequential rejection sampling (numpy; ``REJECT_CHUNK`` tries checked at once)."""

    OPTIONS = ("reject_limit",)

    def __init__(self, config: SolverConfig):
        self.limit = int(dict(config.options).get("reject_limit", REJECT_LIMIT))

    def propose(self, problem: TriangleProblem, config: SolverConfig,
                deadline: Deadline) -> Proposal:
        from robot_packer.triangles2d import in_violation, penetration, world_vertices

        rng = np.random.default_rng(config.seed)
        order = np.argsort([-t.area for t in problem.items], kind="stable")
        verts, h, tol = problem.vertices, problem.tray / 2, 0.0
        samples, placed, fails = 0, {}, 0
        while not deadline.passed() and len(placed) < problem.n:
            i = int(order[len(placed)])
            cand = np.column_stack([rng.uniform(-h, h, (REJECT_CHUNK, 2)),
                                    rng.uniform(-math.pi, math.pi, REJECT_CHUNK)])
            samples += REJECT_CHUNK
            w = world_vertices(verts[i][None], cand[:, None])[:, 0]        # (C, 3, 2)
            ok = in_violation(w, problem.tray) <= tol
            for j, pj in placed.items():
                wj = world_vertices(verts[j][None], pj[None, None])[0, 0]
                ok &= penetration(w, np.broadcast_to(wj, w.shape)) <= tol
            hit = np.flatnonzero(ok)
            fails += REJECT_CHUNK if not len(hit) else int(hit[0])
            if len(hit):
                placed[i] = cand[hit[0]]
            if fails > self.limit and len(placed) < problem.n:
                placed, fails = {}, 0
        poses = np.zeros((problem.n, 3))
        for j, p in placed.items():
            poses[j] = p
        if len(placed) < problem.n:      # unplaced triangles stay at the centre (violating)
            v = 1.0 + problem.n - len(placed)
            return Proposal(poses[None], np.array([v]), samples, True, False)
        return Proposal(poses[None], np.array([0.0]), samples, False, True)


def run_solve(args) -> int:
    """``robot-packer solve`` on a triangles2d scene: 0 solved, 2 invalid input, 3 not solved."""
    import sys

    from robot_packer.problem import atomic_write
    from robot_packer.triangles2d import load_scene

    try:
        problem = load_scene(args.scene)
        config = SolverConfig(solver=args.solver, seed=args.seed, device=args.device,
                              candidates=args.candidates, time_budget_s=args.time_budget,
                              verify=False)
        solver = make_triangle_solver(config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan = solve_triangles(problem, config, solver)
    atomic_write(args.out, plan.to_json() + "\n")
    print(f"{plan.status}: {len(plan.placements)} triangles, solver {config.solver}, "
          f"{plan.solver['time_s']:.2f} s" + (f" — {plan.message}" if plan.message else ""))
    print(f"plan written to {args.out}")
    return 0 if plan.status == "solved" else 3
