"""Training of the triangles2d composed denoiser: DDPM eps-prediction through the composition.

``robot-packer train --domain triangles2d --steps S --batch B`` calls :func:`train_triangles`.
Data: ``data_size`` problems from :func:`robot_packer.triangles2d.generate` with training seeds
``seed * data_size + i`` (< 1_000_000), object count ``2 + i % 3`` (balanced over n = 2, 3, 4).
Each step draws ``batch / 3`` problems of every count, applies a random symmetry of the square
(a quarter-turn multiple about the tray centre, optionally a mirror, which also mirrors the
triangles' local vertices) and trains on their disjoint union.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from robot_packer.solver.diffusion.checkpoint import save_model
from robot_packer.solver.diffusion.graph import ProblemGraph
from robot_packer.solver.diffusion.networks import ComposedDenoiser, DenoiserConfig
from robot_packer.solver.diffusion.schedule import CosineSchedule, ScheduleConfig
from robot_packer.solver.triangles.batched import EDGE_TYPES, NODE_DIM, POSE_DIM, node_features
from robot_packer.triangles2d import generate, pairs

COUNTS = (2, 3, 4)          # object counts trained on (issue 5: at most 4 for 2D domains)
VAL_SEED_BASE = 900_000     # validation problems (still training-range seeds, never in the data)
MAX_TRAIN_SEED = 1_000_000


@dataclass(frozen=True)
class TriTrainConfig:
    """One training run (``train_triangles`` maps its arguments onto this)."""

    steps: int = 12000
    batch: int = 96                  # problems per step, split evenly over COUNTS
    out: str = "models/triangles2d.pt"
    seed: int = 0
    data_size: int = 20000
    device: str = "auto"
    threads: int | None = 1
    resume: str | None = None
    progress: bool = True
    lr: float = 1e-3
    hidden: int = 128                # twice pack3d's widths (a guess that fitting triangle
    head_hidden: int = 256           # edges to each other needs more; not ablated)
    ckpt_every: int = 1000
    val_every: int = 3000
    val_problems: int = 30


class TriangleData:
    """Generated solved problems grouped by object count, with mirrored features precomputed."""

    def __init__(self, seeds: range, device: torch.device):
        groups: dict[int, list] = {n: [] for n in COUNTS}
        for s in seeds:
            n = COUNTS[s % len(COUNTS)]
            groups[n].append(generate(n, np.random.default_rng(s)))
        self.tray = {n: torch.tensor([p.tray for p, _ in g], dtype=torch.float32, device=device)
                     for n, g in groups.items()}
        self.poses = {n: torch.tensor(np.stack([sol for _, sol in g]), dtype=torch.float32,
                                      device=device) for n, g in groups.items()}
        self.feats = {}
        for n, g in groups.items():
            verts = np.stack([p.vertices for p, _ in g])                  # (M, n, 3, 2)
            trays = np.array([p.tray for p, _ in g])[:, None, None, None]
            mirrored = verts * np.array([-1.0, 1.0])
            self.feats[n] = torch.tensor(np.stack([
                node_features(verts / trays, 1.0), node_features(mirrored / trays, 1.0)]),
                device=device)                                            # (2, M, n, F)
        self.pairs = {n: torch.as_tensor(pairs(n), device=device) for n in COUNTS}
        self.device = device

    def batch(self, per_count: int, gen: torch.Generator) -> tuple[ProblemGraph, torch.Tensor,
                                                                   torch.Tensor]:
        """Disjoint-union graph, x0 (N, 4) and each node's problem index (N,) of a batch with
        ``per_count`` random problems of every count, each under a random square symmetry."""
        dev = self.device
        nodes, x0, owner, cfree, offset, problem = [], [], [], [], 0, 0
        for n in COUNTS:
            m = len(self.poses[n])
            ids = torch.randint(0, m, (per_count,), generator=gen, device=dev)
            mirror = torch.randint(0, 2, (per_count,), generator=gen, device=dev)
            turn = torch.randint(0, 4, (per_count,), generator=gen, device=dev).float()
            pose = self.poses[n][ids].clone()                              # (b, n, 3)
            sign = (1 - 2 * mirror).float()[:, None]
            pose[..., 0] *= sign                                           # mirror: x -> -x
            pose[..., 2] *= sign                                           # and yaw -> -yaw
            ang = (turn * math.pi / 2)[:, None]
            c, s = torch.cos(ang), torch.sin(ang)
            x, y = pose[..., 0].clone(), pose[..., 1].clone()
            pose[..., 0], pose[..., 1] = c * x - s * y, s * x + c * y       # quarter turns
            pose[..., 2] += ang
            half = self.tray[n][ids][:, None] / 2
            norm = torch.stack([pose[..., 0] / half, pose[..., 1] / half,
                                torch.cos(pose[..., 2]), torch.sin(pose[..., 2])], -1)
            x0.append(norm.reshape(-1, POSE_DIM))                          # as batched.normalise
            nodes.append(self.feats[n][mirror, ids].reshape(-1, NODE_DIM))
            base = offset + n * torch.arange(per_count, device=dev)
            cfree.append((self.pairs[n][None] + base[:, None, None]).reshape(-1, 2))
            owner.append(problem + torch.arange(per_count, device=dev).repeat_interleave(n))
            offset += n * per_count
            problem += per_count
        total = offset
        edges = {"in": torch.arange(total, device=dev)[:, None], "cfree": torch.cat(cfree)}
        box = torch.ones(total, 3, device=dev)
        return ProblemGraph(torch.cat(nodes), edges, box), torch.cat(x0), torch.cat(owner)


def diffusion_loss(model, schedule: CosineSchedule, data: TriangleData, per_count: int,
                   gen: torch.Generator) -> torch.Tensor:
    """DDPM simple loss ||eps - eps_theta(x_t, t)||^2 through the composition (DDPM eq. 14)."""
    graph, x0, owner = data.batch(per_count, gen)
    dev = x0.device
    t = torch.randint(0, schedule.config.train_steps, (int(owner.max()) + 1,), generator=gen,
                      device=dev)[owner]
    eps = torch.randn(x0.shape, generator=gen, device=dev)
    xt = schedule.add_noise(x0, eps, t)
    return ((model(xt[None], t[None], graph)[0] - eps) ** 2).mean()


def validate(model, problems: list, device: torch.device) -> dict:
    """Held-out success: one round of 64 samples + refinement (``success``), and raw pass@10
    (10 samples, no refinement), both with the exact checker."""
    from robot_packer.solver.base import SolverConfig
    from robot_packer.solver.triangles.solve import TriangleDiffusionSolver, solve_triangles
    from robot_packer.triangles2d import all_satisfied, check

    model.eval()
    cfg = SolverConfig(solver="diffusion", device=str(device), time_budget_s=30.0,
                       options={"max_rounds": 1})
    solver = TriangleDiffusionSolver.from_model(model, cfg)
    ok, raw = 0, 0
    for k, problem in enumerate(problems):
        ok += solve_triangles(problem, replace(cfg, seed=k), solver).status == "solved"
        poses = solver.samples(problem, 10, torch.Generator().manual_seed(k))
        raw += any(all_satisfied(check(problem, q)) for q in poses.double().cpu().numpy())
    model.train()
    return {"val_success": ok / len(problems), "val_pass10": raw / len(problems)}


def train_triangles(steps: int, batch: int, out: str, seed: int = 0, data_size: int = 20000,
                    device: str = "auto", threads: int = 1, resume: str | None = None,
                    progress: bool = True) -> dict:
    """Train (or resume from ``<out>.resume``) and write the shipped checkpoint to ``out``.

    Returns the final metrics: EMA loss, validation success and raw pass@10, wall time (s).
    """
    cfg = TriTrainConfig(steps=steps, batch=batch, out=out, seed=seed, data_size=data_size,
                         device=device, threads=threads, resume=resume, progress=progress)
    if steps < 1 or batch < len(COUNTS) or data_size < len(COUNTS):
        raise ValueError(f"steps, batch, data_size: need steps >= 1, batch >= {len(COUNTS)}, "
                         f"data_size >= {len(COUNTS)}")
    if (seed + 1) * data_size > MAX_TRAIN_SEED:
        raise ValueError(f"seed, data_size: training seeds must stay below {MAX_TRAIN_SEED}")
    return _run(cfg)


def _run(cfg: TriTrainConfig) -> dict:
    from robot_packer.solver.base import resolve_device

    t_start = time.monotonic()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(cfg.device)
    data = TriangleData(range(cfg.seed * cfg.data_size, (cfg.seed + 1) * cfg.data_size), dev)
    val = [generate(COUNTS[i % len(COUNTS)], np.random.default_rng(VAL_SEED_BASE + i))[0]
           for i in range(cfg.val_problems)]
    torch.manual_seed(cfg.seed)
    model = ComposedDenoiser(DenoiserConfig(cfg.hidden, cfg.head_hidden, node_dim=NODE_DIM,
                                            pose_dim=POSE_DIM, edge_types=EDGE_TYPES)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    start = 0
    if cfg.resume:
        blob = torch.load(cfg.resume, map_location=dev, weights_only=True)
        model.load_state_dict(blob["state_dict"])
        opt.load_state_dict(blob["optimizer"])
        start = int(blob["step"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    for _ in range(start):
        sched.step()
    schedule = CosineSchedule(ScheduleConfig(model.config.train_steps), dev)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + 7 * start)
    bar = _bar(cfg, start)
    metrics: dict = {"loss": float("nan"), "val_success": None, "val_pass10": None}
    ema = None
    for step in range(start, cfg.steps):
        loss = diffusion_loss(model, schedule, data, cfg.batch // len(COUNTS), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        metrics["loss"] = ema
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.4f}", refresh=False)
        last = step + 1 == cfg.steps
        if cfg.val_every and ((step + 1) % cfg.val_every == 0 or last):
            metrics |= validate(model, val, dev)
            _log(bar, f"step {step + 1} loss {ema:.4f} val_success {metrics['val_success']:.2f} "
                      f"val_pass10 {metrics['val_pass10']:.2f}")
        if (step + 1) % cfg.ckpt_every == 0 or last:
            _checkpoint(model, opt, cfg, step + 1, metrics)
    if bar is not None:
        bar.close()
    metrics["wall_s"] = round(time.monotonic() - t_start, 1)
    return metrics


def _checkpoint(model, opt, cfg: TriTrainConfig, step: int, metrics: dict) -> None:
    """The shipped file (config + weights) at ``cfg.out`` and a resumable ``<out>.resume``."""
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, out, {"domain": "triangles2d", "step": step})
    tmp = Path(str(out) + ".resume.tmp")
    torch.save({"step": step, "loss": metrics["loss"], "state_dict": model.state_dict(),
                "optimizer": opt.state_dict()}, tmp)
    tmp.replace(str(out) + ".resume")


def _bar(cfg: TriTrainConfig, start: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=start, desc="train triangles2d", mininterval=10.0,
                file=sys.stderr)


def _log(bar, msg: str) -> None:
    if bar is not None:
        bar.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr)
