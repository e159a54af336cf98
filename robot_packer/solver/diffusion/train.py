"""Training of the composed denoisers: DDPM eps-prediction through the composition.

Single process: ``robot-packer train --domain pack3d --steps 20000``. Many GPUs/processes:
``torchrun --nproc_per_node=K -m robot_packer.solver.diffusion.train --steps ...`` (DDP,
detected from ``WORLD_SIZE``; gloo on CPU, NCCL on CUDA). Rank 0 writes checkpoints and logs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist

from robot_packer.domains import DOMAINS as BOX_DOMAINS
from robot_packer.solver.diffusion.checkpoint import save_model
from robot_packer.solver.diffusion.data import build_dataset
from robot_packer.solver.diffusion.graph import ProblemGraph, build_graph, normalise
from robot_packer.solver.diffusion.networks import ComposedDenoiser, DenoiserConfig
from robot_packer.solver.diffusion.schedule import CosineSchedule, ScheduleConfig

# The box domains (robot_packer.domains) train here; triangles2d has its own loop.
DOMAINS = (*BOX_DOMAINS, "triangles2d")
# Mirror augmentation: reflecting y (x) swaps these edge types; every constraint is symmetric.
MIRROR_Y = {"left_of": "right_of", "right_of": "left_of", "region:left": "region:right",
            "region:right": "region:left"}
MIRROR_X = {"in_front_of": "behind", "behind": "in_front_of", "region:front": "region:back",
            "region:back": "region:front"}


@dataclass(frozen=True)
class TrainConfig:
    """Training run settings (the CLI maps its flags onto these)."""

    domain: str = "pack3d"
    steps: int = 20000
    batch: int = 128                 # problems per step (per process under DDP)
    lr: float = 1e-3
    device: str = "auto"
    out: str = "models/pack3d.pt"
    resume: str | None = None
    data_size: int = 30000
    data_cache: str | None = None    # default: /tmp/robot_packer_<domain>_<size>_<seed>.pkl
    data_processes: int = 1
    seed: int = 0
    ckpt_every: int = 1000
    val_every: int = 2000
    val_problems: int = 8
    threads: int | None = 1
    hidden: int = 64
    head_hidden: int = 128


class PackedDataset:
    """All training problems as flat tensors; ``batch(ids)`` gathers a disjoint-union graph."""

    def __init__(self, records, device="cpu"):
        graphs = [build_graph(p) for p, _ in records]
        x0 = [normalise(torch.tensor(s, dtype=torch.float32), g.box) for (_, s), g in
              zip(records, graphs)]
        counts = torch.tensor([g.n for g in graphs])
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        self.nodes = torch.cat([g.nodes for g in graphs]).to(device)
        self.box = torch.cat([g.box for g in graphs]).to(device)
        self.x0 = torch.cat(x0).to(device)
        self.edges, self.edge_prob = {}, {}
        for k in sorted({k for g in graphs for k in g.edges}):
            parts = [(g.edges[k] + self.offsets[i], i) for i, g in enumerate(graphs)
                     if k in g.edges]
            self.edges[k] = torch.cat([a for a, _ in parts]).to(device)
            self.edge_prob[k] = torch.cat([torch.full((len(a),), i) for a, i in parts]).to(device)
        self.offsets = self.offsets.to(device)
        self.size = len(graphs)

    def batch(self, ids: torch.Tensor, generator: torch.Generator | None = None
              ) -> tuple[ProblemGraph, torch.Tensor, torch.Tensor]:
        """Graph, x0 (N, 5) and problem-within-batch index (N,) of the problems ``ids`` (unique).

        With a ``generator`` each problem is mirrored in x and/or y at random (poses reflected,
        side/region edge types swapped accordingly).
        """
        dev = ids.device
        start, counts = self.offsets[ids], self.offsets[ids + 1] - self.offsets[ids]
        new_start = counts.cumsum(0) - counts
        owner = torch.repeat_interleave(torch.arange(len(ids), device=dev), counts)
        node_idx = start[owner] + torch.arange(int(counts.sum()), device=dev) - new_start[owner]
        shift = torch.zeros(self.size, dtype=torch.long, device=dev)
        shift[ids] = new_start - start
        keep = torch.zeros(self.size, dtype=torch.bool, device=dev)
        keep[ids] = True
        flips = torch.zeros(self.size, 2, dtype=torch.bool, device=dev)
        if generator is not None:
            flips[ids] = torch.rand((len(ids), 2), generator=generator, device=dev) < 0.5
        edges: dict[str, list[torch.Tensor]] = {}
        for k, args in self.edges.items():
            prob = self.edge_prob[k]
            sel = keep[prob]
            fx, fy = flips[prob, 0], flips[prob, 1]
            for mx in (False, True):
                for my in (False, True):
                    m = sel & (fx == mx) & (fy == my)
                    if bool(m.any()):
                        name = MIRROR_X.get(k, k) if mx else k
                        name = MIRROR_Y.get(name, name) if my else name
                        edges.setdefault(name, []).append(args[m] + shift[prob[m]][:, None])
        x0 = self.x0[node_idx].clone()
        sign = 1.0 - 2.0 * flips[ids][owner].float()                 # (N, 2): -1 where mirrored
        x0[:, :2] *= sign                                            # x -> -x, y -> -y
        x0[:, 4] *= sign[:, 0] * sign[:, 1]                          # yaw -> pi - yaw / -yaw
        graph = ProblemGraph(self.nodes[node_idx], {k: torch.cat(v) for k, v in edges.items()},
                             self.box[node_idx])
        return graph, x0, owner


def diffusion_loss(model, schedule: CosineSchedule, data: PackedDataset, ids: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """DDPM simple loss ||eps - eps_theta(x_t, t)||^2 through the composition (DDPM eq. 14)."""
    graph, x0, owner = data.batch(ids, generator)
    dev = x0.device
    t = torch.randint(0, schedule.config.train_steps, (len(ids),), generator=generator,
                      device=dev)[owner]
    eps = torch.randn(x0.shape, generator=generator, device=dev)
    xt = schedule.add_noise(x0, eps, t)
    return ((model(xt[None], t[None], graph)[0] - eps) ** 2).mean()


def _setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun (WORLD_SIZE)."""
    from robot_packer.solver.base import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if dev.type == "cuda":
            dev = torch.device("cuda", local)
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        return dist.get_rank(), world, dev
    return 0, 1, dev


def _data(cfg: TrainConfig, rank: int, world: int):
    cache = cfg.data_cache or f"/tmp/robot_packer_{cfg.domain}_{cfg.data_size}_{cfg.seed}.pkl"
    seeds = range(cfg.seed * cfg.data_size, (cfg.seed + 1) * cfg.data_size)
    if rank == 0:
        records = build_dataset(seeds, cfg.data_processes, cache, domain=cfg.domain)
    if world > 1:
        dist.barrier()
    if rank != 0:
        records = build_dataset(seeds, 1, cache, progress=False, domain=cfg.domain)
    return records


def validate(model, problems, device, candidates: int = 32) -> float:
    """Fraction of held-out problems solved exactly (sample + refine, best candidate checked)."""
    from robot_packer.constraints import all_satisfied, check, compile_problem
    from robot_packer.solver.diffusion.solver import DiffusionOptions, DiffusionSolver

    solver = DiffusionSolver.__new__(DiffusionSolver)    # reuse the in-memory model
    solver.options, solver.device, solver.model = DiffusionOptions(), device, model
    solver.schedule = CosineSchedule(ScheduleConfig(model.config.train_steps), device)
    gen = torch.Generator(device=device).manual_seed(0)
    ok = 0
    model.eval()
    for problem, _ in problems:
        compiled = compile_problem(problem, device)
        raw = solver.draw(build_graph(problem, device), candidates, gen, time.monotonic() + 60)
        with torch.no_grad():
            v = compiled.total(raw)
        poses = solver.refined(compiled, problem, raw, v, time.monotonic() + 60)
        v = compiled.total(poses)
        best = poses[int(torch.argmin(v))].double().cpu().numpy()
        ok += all_satisfied(check(problem, best))
    model.train()
    return ok / max(1, len(problems))


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) and write the shipped checkpoint to ``cfg.out``; returns final metrics."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rank, world, dev = _setup_distributed(cfg.device)
    data = PackedDataset(_data(cfg, rank, world), dev)
    val = [build_dataset([900_000 + i], 1, None, progress=False, domain=cfg.domain)[0]
           for i in range(cfg.val_problems)]
    torch.manual_seed(cfg.seed)                       # identical initial weights on every rank
    model = ComposedDenoiser(DenoiserConfig(cfg.hidden, cfg.head_hidden)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    start = 0
    if cfg.resume:
        blob = torch.load(cfg.resume, map_location=dev, weights_only=True)
        model.load_state_dict(blob["state_dict"])
        if "optimizer" in blob:
            opt.load_state_dict(blob["optimizer"])
        start = int(blob.get("config", {}).get("step", 0))
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    for _ in range(start):
        sched.step()
    schedule = CosineSchedule(ScheduleConfig(model.config.train_steps), dev)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed * 1000 + rank + 7 * start)
    log = _Logger(cfg, rank, start)
    metrics = {"loss": float("nan"), "val_success": None}
    for step in range(start, cfg.steps):
        ids = torch.randperm(data.size, generator=gen, device=dev)[:cfg.batch]
        loss = diffusion_loss(net, schedule, data, ids, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        metrics["loss"] = log.loss(loss.item())
        last = step + 1 == cfg.steps
        if rank == 0 and ((step + 1) % cfg.ckpt_every == 0 or last):
            _checkpoint(model, opt, cfg, step + 1, metrics)
        if rank == 0 and cfg.val_every and ((step + 1) % cfg.val_every == 0 or last):
            metrics["val_success"] = validate(model, val, dev)
            log.write(f"step {step + 1} loss {metrics['loss']:.4f} "
                      f"val_success {metrics['val_success']:.2f}")
    log.close()
    if world > 1:
        # Tear down together: a rank that destroys its group while rank 0 still writes the last
        # checkpoint can see gloo's peer connection close under it and abort (seen once in CI).
        dist.barrier()
        dist.destroy_process_group()
    return metrics


def _checkpoint(model, opt, cfg: TrainConfig, step: int, metrics: dict) -> None:
    """The shipped file (config + weights) at ``cfg.out`` and a resumable ``<out>.resume``."""
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, out, {"domain": cfg.domain, "step": step})
    torch.save({"config": {"step": step, "loss": metrics["loss"]}, "state_dict": model.state_dict(),
                "optimizer": opt.state_dict()}, str(out) + ".resume")


class _Logger:
    """tqdm bar plus an EMA of the loss (rank 0 only)."""

    def __init__(self, cfg: TrainConfig, rank: int, start: int):
        self.ema = None
        self.bar = None
        if rank == 0:
            from tqdm import tqdm

            self.bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.domain}",
                            mininterval=10.0, file=sys.stderr)

    def loss(self, value: float) -> float:
        self.ema = value if self.ema is None else 0.98 * self.ema + 0.02 * value
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.ema:.4f}", refresh=False)
        return self.ema

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``robot-packer train`` (defaults from :class:`TrainConfig`)."""
    d = TrainConfig()
    parser.add_argument("--domain", choices=DOMAINS, default=d.domain)
    parser.add_argument("--steps", type=int, default=d.steps, help="optimizer steps")
    parser.add_argument("--batch", type=int, default=d.batch,
                        help="problems per step (per process)")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--device", default=d.device, help="auto | cpu | cuda")
    parser.add_argument("--out", default=None, help="checkpoint path (default models/<domain>.pt)")
    parser.add_argument("--resume", default=None, help="a <out>.resume file to continue from")
    parser.add_argument("--data-size", type=int, default=d.data_size, help="generated problems")
    parser.add_argument("--data-cache", default=None, help="JSON cache of generated problems")
    parser.add_argument("--data-processes", type=int, default=d.data_processes)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    parser.add_argument("--val-every", type=int, default=d.val_every)
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    parser.add_argument("--hidden", type=int, default=d.hidden)
    parser.add_argument("--head-hidden", type=int, default=d.head_hidden)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.steps < 1 or args.batch < 1 or args.data_size < 2:
        raise ValueError("--steps, --batch must be >= 1 and --data-size >= 2")
    out = args.out or f"models/{args.domain}.pt"
    return replace(TrainConfig(), domain=args.domain, steps=args.steps, batch=args.batch,
                   lr=args.lr, device=args.device, out=out, resume=args.resume,
                   data_size=args.data_size, data_cache=args.data_cache,
                   data_processes=args.data_processes, seed=args.seed,
                   ckpt_every=args.ckpt_every, val_every=args.val_every, threads=args.threads,
                   hidden=args.hidden, head_hidden=args.head_hidden)


def run_train(args: argparse.Namespace) -> int:
    """``robot-packer train``: returns the exit code (0 ok)."""
    cfg = config_from_args(args)
    if cfg.domain == "triangles2d":
        from robot_packer.solver.triangles.train import train_triangles

        metrics = train_triangles(steps=cfg.steps, batch=cfg.batch, out=cfg.out, seed=cfg.seed,
                                  data_size=cfg.data_size, device=cfg.device,
                                  threads=cfg.threads or 1, resume=cfg.resume)
    else:
        metrics = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final loss {metrics['loss']:.4f}, validation success {metrics['val_success']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the compositional diffusion denoisers.")
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
