"""The ``diffusion`` solver: compositional diffusion proposals, refined and ranked by violation.

Options (``SolverConfig.options``, all optional): ``steps`` (DDIM steps, default 12), ``eta``,
``langevin_steps`` (ULA corrections per step, default 1), ``langevin_size``, ``langevin_until``
(default 0.75: corrections only at the noisiest levels, t/T >= this; 12 steps corrected in the
top quarter sample ~4x faster than 25 steps corrected everywhere, and the layouts decode as far:
dense N = 10 5.2 vs 5.3 of 10 objects per sample), ``refine_steps`` (default 100; a round stops
refining as soon as one candidate reaches zero; with decoding on, refinement is the fallback and
gets at most ``REFINE_SHARE`` of the time left: on dense problems it never reached zero, and on
the standard tier decoding solved every problem it did), ``refine_lr``, ``refine_top`` (candidates
refined per round, default 32), ``snap_yaw`` (default true: half the refined candidates get
their yaw snapped to the nearest quarter turn), ``domain`` (``pack3d``),
``init`` (``random`` replaces the samples by uniform starts: the refinement-only ablation),
``restart`` (``inpaint``, default: every second round re-samples only the objects that still
violate something in the best candidates so far, the others held — RePaint-style conditioning
on the composed model; ``fresh``: every round samples all objects anew),
``settle`` (default true: zero-violation candidates are exact-checked dropped onto their
supports first), ``support_margin`` (default 0.01 m: the refinement and the decoder ask every
stacked centre to be that far inside its support, a robustness margin the exact checker does not
require),
``decode`` (default 16: each round, the best that many samples by composed violation are first
decoded into exact placements along their layout, :mod:`robot_packer.solver.decode`, before
any gradient refinement; every second round then holds the objects the furthest decodes placed
and re-samples only the others — a completion round; a fresh round decodes for at most
``DECODE_SHARE`` of the time left at its start, so that a short budget still reaches a
completion round; 0: the paper's pipeline, samples refined only),
``legalize`` (default true: before decoding, a fresh sample's boxes are pushed apart along the
axes it separates them on and dropped, :func:`~robot_packer.solver.decode.legalize`),
``max_rounds`` (sampling rounds before giving up, default: until the deadline).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from robot_packer.constraints import all_satisfied, check, compile_problem
from robot_packer.deadline import Deadline
from robot_packer.problem import PackingProblem, resource_path
from robot_packer.solver.base import (Candidates, SolverConfig, ranked, register_solver,
                                      resolve_device, seeded_generators)
from robot_packer.solver.decode import Decoded, decode_exact, legalize
from robot_packer.solver.diffusion.checkpoint import load_model
from robot_packer.solver.diffusion.graph import build_graph, denormalise, normalise
from robot_packer.solver.diffusion.sampler import Inpaint, SamplerConfig, sample
from robot_packer.solver.diffusion.schedule import CosineSchedule, ScheduleConfig
from robot_packer.solver.rejection import PartialChecker
from robot_packer.solver.refine import project, refine


SAMPLE_SHARE = 0.4   # at most this share of the time left goes to reverse diffusion
MIN_STEPS = 8        # ... but never fewer DDIM steps than this
FAILED_EXACT = 1e-7  # violation recorded for a zero-total candidate the exact checker rejects
RESTART_SHARE = 0.5  # a new round starts only with this share of the last round's time left
RESTART_BASES = 8    # best candidates an inpainting round re-samples around
HELD_BELOW = 1e-6    # an object whose charged violation (m) is below this is held
DECODE_SHARE = 0.5   # a fresh round decodes for at most this share of the time left at its start
#                      (the rest is for completing its furthest decodes)
CYCLE = 2            # rounds per fresh batch: the others complete (or re-sample around) the best
REFINE_SHARE = 0.1   # with decoding on, refinement gets at most this share of the time left
SETTLE_SNAP_DEG = 3.0  # settling snaps yaws this close to a right angle


@dataclass(frozen=True)
class DiffusionOptions:
    """Solver-specific knobs, parsed from ``SolverConfig.options``."""

    domain: str = "pack3d"
    steps: int = 12
    eta: float = 0.5
    langevin_steps: int = 1
    langevin_size: float = 0.01
    langevin_until: float = 0.75
    refine_steps: int = 100
    refine_lr: float = 0.003
    refine_top: int = 32
    snap_yaw: bool = True
    init: str = "diffusion"       # "random": uniform starts instead of samples (ablation)
    restart: str = "inpaint"      # "fresh": every round samples every object anew
    settle: bool = True           # exact-check candidates dropped onto their supports first
    support_margin: float = 0.01  # refine towards centres this far inside their supports (m)
    decode: int = 16              # samples per round decoded along their layout (0: none)
    legalize: bool = True         # decode fresh layouts with their boxes pushed apart first

    @classmethod
    def from_dict(cls, options: dict) -> "DiffusionOptions":
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(options) - set(known) - {"max_rounds"})
        if unknown:
            raise ValueError(f"options.{unknown[0]}: unknown diffusion option "
                             f"(allowed: {', '.join(sorted(known))})")
        out = cls(**{k: v for k, v in options.items() if k in known})
        if out.init not in ("diffusion", "random"):
            raise ValueError(f"options.init: must be 'diffusion' or 'random', got {out.init!r}")
        if out.restart not in ("inpaint", "fresh"):
            raise ValueError(f"options.restart: must be 'inpaint' or 'fresh', got {out.restart!r}")
        if not (isinstance(out.decode, int) and out.decode >= 0):
            raise ValueError(f"options.decode: must be an integer >= 0, got {out.decode!r}")
        until = out.langevin_until
        if isinstance(until, bool) or not isinstance(until, (int, float)) or not 0 <= until <= 1:
            raise ValueError(f"options.langevin_until: must be a number in [0, 1] (the share of "
                             f"the noise levels without corrections), got {until!r}")
        return out

    def sampler(self) -> SamplerConfig:
        return SamplerConfig(self.steps, self.eta, self.langevin_steps, self.langevin_size,
                             self.langevin_until)


def model_path(config: SolverConfig, domain: str) -> Path:
    """Where the domain's checkpoint lives: ``config.model_dir`` or the package's models/."""
    if config.model_dir:
        return Path(config.model_dir) / f"{domain}.pt"
    try:
        return resource_path("models", f"{domain}.pt")
    except FileNotFoundError as exc:
        raise ValueError(f"model {domain}.pt: not found ({exc})") from None


@register_solver("diffusion")
class DiffusionSolver:
    """Loads the checkpoint once; ``propose`` samples, refines and ranks candidates."""

    def __init__(self, config: SolverConfig):
        self.options = DiffusionOptions.from_dict(config.options)
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(int(config.threads))
        self.model = load_model(model_path(config, self.options.domain), self.device)
        steps = int(getattr(self.model, "config").train_steps)
        self.schedule = CosineSchedule(ScheduleConfig(train_steps=steps), self.device)

    def propose(self, problem: PackingProblem, config: SolverConfig,
                deadline: Deadline) -> Candidates:
        _, gen = seeded_generators(config, torch.device("cpu"))   # CPU noise: same on CUDA
        graph = build_graph(problem, self.device)
        compiled = compile_problem(problem, self.device,
                                   support_margin=self.options.support_margin)
        max_rounds = int(config.options.get("max_rounds", 1000))
        checker = (PartialChecker(problem, self.options.support_margin)
                   if self.options.decode else None)
        found, vals, orders, samples, timed_out = [], [], [], 0, False
        partials: list[Decoded] = []     # the furthest decodes so far, most objects placed first
        # one denoiser forward on this graph and batch, timed once: every round's sampler is
        # fitted to the time left with it
        per_forward = (self.forward_time(graph, config.candidates)
                       if self.options.init != "random" else None)
        for r in range(max_rounds):       # smart restarts: new batches while time remains
            t0 = time.monotonic()
            inpaint, firsts = None, None
            if r % CYCLE and partials:    # complete the furthest decodes: re-sample the rest
                # (init=random ignores the inpainting; the decodes still place the prefix first)
                inpaint, firsts = self.completion(graph, partials, config.candidates)
            elif r % CYCLE and self.options.restart == "inpaint" and self.options.init != "random":
                inpaint = self.held_objects(graph, compiled, np.concatenate(found),
                                            np.concatenate(vals), config.candidates)
            raw = self.draw(graph, config.candidates, gen, deadline, inpaint, per_forward)
            samples += config.candidates
            with torch.no_grad():
                v_raw = compiled.total(raw)
            if checker is not None:
                until = (deadline if firsts else
                         deadline.sooner(t0 + DECODE_SHARE * (deadline.at - t0)))
                outs = self.decoded(problem, checker, raw, v_raw, until, firsts)
                if outs and outs[-1].exact:
                    found.append(outs[-1].poses[None])
                    vals.append(np.zeros(1))
                    orders.append(np.array(outs[-1].order)[None])
                    break
                partials = sorted(partials + [d for d in outs if d.placed],
                                  key=lambda d: -d.placed)[:RESTART_BASES]
            poses = self.refined(compiled, problem, raw, v_raw,
                                 deadline if checker is None else
                                 deadline.sooner(time.monotonic()
                                                 + REFINE_SHARE * deadline.left()))
            v = compiled.total(poses).detach()
            solved = self.exactly_solved(problem, poses, v)
            found.append(poses.cpu().numpy())
            vals.append(v.cpu().numpy())
            orders.append(np.full(poses.shape[:2], -1))
            if solved:
                break
            left = deadline.left()
            if left < RESTART_SHARE * (time.monotonic() - t0):   # no time for a useful round
                timed_out = True
                break
        return ranked(np.concatenate(found), np.concatenate(vals), samples, timed_out,
                      orders=np.concatenate(orders))

    def decoded(self, problem: PackingProblem, checker: PartialChecker, raw: torch.Tensor,
                v: torch.Tensor, deadline: Deadline,
                firsts: list[list[int]] | None = None) -> list[Decoded]:
        """Decodes of the ``decode`` lowest-violation samples (yaws snapped to quarter turns;
        with ``legalize``, boxes pushed apart along the axes the sample separates them on,
        :func:`~robot_packer.solver.decode.legalize`), stopping at the first exact one (the last
        in the list). ``firsts[k]``: objects sample k held, placed first in that order (such
        samples are decoded as drawn: their held objects are where they were placed)."""
        best = torch.argsort(v)[:self.options.decode].tolist()
        layouts = raw[best].double().cpu().numpy()
        layouts[..., 3] = np.round(layouts[..., 3] / (math.pi / 2)) * (math.pi / 2)
        outs = []
        for k, layout in zip(best, layouts):
            first = firsts[k] if firsts is not None else ()
            if self.options.legalize and not first:    # held objects stay where they are
                layout, _ = legalize(problem, layout)
            out = decode_exact(problem, checker, layout, first, deadline=deadline)
            if out is None:           # out of time
                break
            outs.append(out)
            if out.exact:
                break
        return outs

    def completion(self, graph, partials: list[Decoded], num: int
                   ) -> tuple[Inpaint, list[list[int]]]:
        """Inpainting that holds the placed objects of ``partials`` (``num`` copies spread over
        them) and re-samples the others, with each copy's placing prefix."""
        dev = graph.nodes.device
        pick = [partials[k % len(partials)] for k in range(num)]
        known = torch.as_tensor(np.stack([d.poses for d in pick]), dtype=graph.box.dtype,
                                device=dev)
        mask = torch.zeros(num, graph.n, dtype=torch.bool, device=dev)
        for k, d in enumerate(pick):
            mask[k, d.prefix] = True
        return Inpaint(normalise(known, graph.box), mask), [d.prefix for d in pick]

    def exactly_solved(self, problem: PackingProblem, poses: torch.Tensor, v: torch.Tensor,
                       tries: int = 3) -> bool:
        """Whether one of the first ``tries`` zero-violation candidates passes the exact checker
        too (the batched ``gripper_clear`` is an order-free relaxation; float32 vs float64).

        Each is first tried settled (``settle`` option): every object dropped onto what is
        under it and near-right yaws snapped — refinement stops as soon as the violation is
        zero, i.e. at the edge of the tolerances, and a box left hovering a few millimetres over
        its support drifts when PyBullet lets it fall. A passing settled candidate replaces the
        original in ``poses``. Rejected ones get ``FAILED_EXACT`` written into ``v``."""
        sizes = torch.as_tensor(problem.sizes, dtype=poses.dtype, device=poses.device)
        for i in torch.nonzero(v <= 0).flatten()[:tries].tolist():
            tried = [poses[i]]
            if self.options.settle:
                tried.insert(0, project(poses[i:i + 1], sizes, SETTLE_SNAP_DEG)[0])
            for q in tried:
                if all_satisfied(check(problem, q.double().cpu().numpy())):
                    poses[i] = q
                    return True
            v[i] = FAILED_EXACT    # ranks behind candidates that pass, ahead of real violations
        return False

    def held_objects(self, graph, compiled, poses: np.ndarray, v: np.ndarray,
                     num: int) -> Inpaint | None:
        """Inpainting for the next round: ``num`` copies spread over the ``RESTART_BASES`` best
        candidates so far, each holding the objects that violate nothing (None when no base has
        both held and free objects)."""
        best = torch.as_tensor(poses[np.argsort(v)[:RESTART_BASES]], device=graph.nodes.device)
        with torch.no_grad():
            held = compiled.per_object(best) < HELD_BELOW              # (K, n)
        useful = held.any(1) & ~held.all(1)
        if not bool(useful.any()):
            return None
        best, held = best[useful], held[useful]
        pick = torch.arange(num, device=best.device) % len(best)
        return Inpaint(normalise(best[pick], graph.box), held[pick])

    def forward_time(self, graph, num: int) -> float:
        """Seconds one denoiser forward takes on ``graph`` with ``num`` candidates (the faster of
        two: one preempted call must not decide)."""
        dev = graph.nodes.device
        x = torch.zeros(num, graph.n, 5, device=dev)
        t = torch.zeros(num, graph.n, dtype=torch.long, device=dev)
        times = []
        for _ in range(2):
            t0 = time.monotonic()
            with torch.no_grad():
                self.model(x, t, graph)
            times.append(time.monotonic() - t0)
        return min(times)

    def fitted_sampler(self, per_forward: float, deadline: Deadline) -> SamplerConfig:
        """The configured sampler, with fewer DDIM steps (>= MIN_STEPS) when forwards of
        ``per_forward`` seconds say the full count would take more than SAMPLE_SHARE of the time
        left."""
        cfg = self.options.sampler()
        per_step = per_forward * (1 + cfg.langevin_steps * (1 - cfg.langevin_until))
        fit = int(SAMPLE_SHARE * deadline.left() / max(per_step, 1e-6))
        return replace(cfg, steps=max(MIN_STEPS, min(cfg.steps, fit)))

    def draw(self, graph, num: int, gen: torch.Generator, deadline: Deadline,
             inpaint: Inpaint | None = None, per_forward: float | None = None) -> torch.Tensor:
        """One batch of ``num`` samples (metres): the free objects only, with ``inpaint``;
        ``per_forward``: :meth:`forward_time` of this graph and ``num`` (None: timed here)."""
        if self.options.init == "random":
            x = (torch.rand((num, graph.n, 5), generator=gen) * 2 - 1).to(graph.nodes.device)
        else:
            if per_forward is None:
                per_forward = self.forward_time(graph, num)
            cfg = self.fitted_sampler(per_forward, deadline)
            x = sample(self.model, self.schedule, graph, num, cfg, gen, deadline, inpaint)
        return denormalise(x, graph.box)

    def refined(self, compiled, problem, poses: torch.Tensor, v: torch.Tensor,
                deadline: Deadline) -> torch.Tensor:
        """The best ``refine_top`` samples by violation ``v``, refined (metres)."""
        opts = self.options
        top = poses[torch.argsort(v)[:min(opts.refine_top, len(poses))]]
        if opts.snap_yaw:                 # try both: raw yaw and the nearest quarter turn
            snapped = top.clone()
            snapped[..., 3] = torch.round(snapped[..., 3] / (math.pi / 2)) * (math.pi / 2)
            top = torch.cat([top[: (len(top) + 1) // 2], snapped[(len(top) + 1) // 2:]])
        return refine(top, compiled, opts.refine_steps, opts.refine_lr, problem.container.size,
                      deadline=deadline, stop_at_first=True)
