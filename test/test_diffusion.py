"""Compositional diffusion solver: denoisers, composition, sampler, training, checkpoint,
solving."""
from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import robot_packer.solver.diffusion  # noqa: F401  (registers the "diffusion" solver)
from robot_packer import constraints as C
from robot_packer.datagen import GenConfig, generate
from robot_packer.deadline import Deadline
from robot_packer.problem import Constraint, Container, Item, PackingProblem, resource_path
from robot_packer.solver.base import SOLVERS, SolverConfig
from robot_packer.solver.diffusion.checkpoint import load_model, save_model, sha256_of
from robot_packer.solver.diffusion.data import make_record
from robot_packer.solver.diffusion.graph import (EDGE_TYPES, POSE_DIM, build_graph, denormalise,
                                                 normalise)
from robot_packer.solver.diffusion.networks import ComposedDenoiser, DenoiserConfig, head_key
from robot_packer.solver.diffusion.sampler import Inpaint, SamplerConfig, sample
from robot_packer.solver.diffusion.schedule import CosineSchedule, ScheduleConfig
from robot_packer.solver.diffusion.solver import DiffusionOptions
from robot_packer.solver.diffusion.train import PackedDataset, diffusion_loss
from robot_packer.solver.pipeline import solve
from robot_packer.solver.refine import refine

ROOT = Path(__file__).resolve().parent.parent
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TINY = DenoiserConfig(hidden=16, head_hidden=16, train_steps=100)


def tiny_model(seed: int = 0) -> ComposedDenoiser:
    torch.manual_seed(seed)
    return ComposedDenoiser(TINY).eval()


def problem(n: int = 4, seed: int = 10_000_123):
    return generate(n, np.random.default_rng(seed), GenConfig(relations=(2, 3)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("edge_type", sorted(EDGE_TYPES))
def test_every_denoiser_head_shapes_finite_deterministic(edge_type, device):
    arity = EDGE_TYPES[edge_type]
    graph = build_graph(problem(3)[0], device)
    args = torch.tensor([[0, 1][:arity], [2, 0][:arity]], device=device)
    x = torch.randn(5, graph.n, POSE_DIM, generator=torch.Generator().manual_seed(1)).to(device)
    t = torch.full((5, graph.n), 40, device=device)
    outs = []
    for _ in range(2):
        model = tiny_model().to(device)
        enc, temb = model.encode(x, t, graph)
        outs.append(model.edge_eps(edge_type, enc, temb, args))
    assert outs[0].shape == (5, 2, arity, POSE_DIM)
    assert torch.isfinite(outs[0]).all()
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("edge_type", ["cfree", "left_of", "in"])
def test_an_edge_head_is_its_mlp_over_the_concatenated_arguments(edge_type):
    """Types with more edges than nodes run the head's first layer per node: it must still be
    the head applied to (argument encodings, first argument's time encoding) of every edge."""
    graph = build_graph(problem(5)[0])
    model = tiny_model()
    x = torch.randn(3, graph.n, POSE_DIM, generator=torch.Generator().manual_seed(3))
    t = torch.full((3, graph.n), 60)
    enc, temb = model.encode(x, t, graph)
    arity = EDGE_TYPES[edge_type]
    pairs = [list(p) for p in itertools.permutations(range(graph.n), arity)]   # 20 > 5 nodes
    for args in (torch.tensor(pairs), torch.tensor(pairs[:2])):
        got = model.edge_eps(edge_type, enc, temb, args)
        feats = torch.cat([enc[:, args].flatten(2), temb[:, args[:, 0]]], -1)
        head = model.heads[head_key(edge_type)](feats)
        want = model.decoder(head.reshape(3, len(args), arity, -1))
        assert torch.allclose(got, want, atol=1e-6)


def test_composition_is_edge_sum_over_sqrt_degree():
    graph = build_graph(problem(4)[0])
    model = tiny_model()
    x = torch.randn(3, graph.n, POSE_DIM, generator=torch.Generator().manual_seed(2))
    t = torch.full((3, graph.n), 10)
    enc, temb = model.encode(x, t, graph)
    expected = torch.zeros_like(x)
    degree = torch.zeros(graph.n)
    for k, args in graph.edges.items():
        eps = model.edge_eps(k, enc, temb, args)
        for e, row in enumerate(args.tolist()):
            for a, node in enumerate(row):
                expected[:, node] += eps[:, e, a]
                degree[node] += 1
    assert torch.allclose(model(x, t, graph), expected / degree.sqrt()[:, None], atol=1e-5)


def test_pose_normalisation_round_trip_keeps_boxes():
    prob, sol = problem(4)
    graph = build_graph(prob)
    back = denormalise(normalise(torch.tensor(sol, dtype=torch.float32), graph.box), graph.box)
    assert torch.allclose(back[:, :3], torch.tensor(sol[:, :3], dtype=torch.float32), atol=1e-5)
    assert C.all_satisfied(C.check(prob, back.double().numpy()))   # yaw mod pi is the same box


def fixed_problem() -> PackingProblem:
    """A hand-written 3-object problem (independent of the generator's evolution)."""
    items = [Item(f"o{i}", np.array(s), mass=m) for i, (s, m) in
             enumerate([((0.1, 0.08, 0.1), 0.4), ((0.12, 0.06, 0.08), 0.3),
                        ((0.08, 0.08, 0.05), 0.2)])]
    return PackingProblem(Container(np.array([0.4, 0.3, 0.2])), items,
                          (Constraint("left_of", ("o0", "o1")),
                           Constraint("region", ("o2", "back"))))


def test_sampling_loop_is_pinned_and_seeded():
    graph = build_graph(fixed_problem())
    model = tiny_model()
    sched = CosineSchedule(ScheduleConfig(train_steps=100))
    cfg = SamplerConfig(steps=5, eta=0.5, langevin_steps=1, langevin_size=0.01)
    a = sample(model, sched, graph, 2, cfg, torch.Generator().manual_seed(0))
    b = sample(model, sched, graph, 2, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert a.shape == (2, 3, POSE_DIM)
    pinned = torch.tensor(PINNED_SAMPLE)
    assert torch.allclose(a[0, 0], pinned, atol=1e-4), a[0, 0].tolist()


PINNED_SAMPLE = [-1.5, -1.4977568, 1.5, -1.3869188, 1.5]   # seed 0, tiny untrained model


def test_inpainting_holds_known_objects_and_samples_the_rest():
    graph = build_graph(fixed_problem())
    sched = CosineSchedule(ScheduleConfig(train_steps=100))
    cfg = SamplerConfig(steps=5, eta=0.5, langevin_steps=1, langevin_size=0.01)
    known = torch.full((2, 3, POSE_DIM), 0.25)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    x = sample(tiny_model(), sched, graph, 2, cfg, torch.Generator().manual_seed(0),
               inpaint=Inpaint(known, mask))
    assert torch.equal(x[mask], known[mask])
    assert not torch.isclose(x[~mask], known[~mask]).all(-1).any()   # the free ones were sampled


def test_sampling_past_its_deadline_returns_the_x0_estimate_at_once():
    graph = build_graph(fixed_problem())
    sched = CosineSchedule(ScheduleConfig(train_steps=100))
    calls = []
    model = tiny_model()
    counted = lambda x, t, g: calls.append(1) or model(x, t, g)   # noqa: E731
    x = sample(counted, sched, graph, 2, SamplerConfig(steps=20), torch.Generator().manual_seed(0),
               deadline=Deadline(0.0))
    assert len(calls) == 1 and x.shape == (2, 3, POSE_DIM) and torch.isfinite(x).all()


def test_langevin_corrections_run_only_at_the_noisiest_levels_when_asked():
    graph = build_graph(fixed_problem())
    sched = CosineSchedule(ScheduleConfig(train_steps=100))
    model = tiny_model()
    levels = []
    counted = lambda x, t, g: levels.append(int(t[0, 0])) or model(x, t, g)   # noqa: E731
    grid = sched.set_timesteps(12).tolist()
    for until in (0.0, 0.75, 1.01):
        levels.clear()
        sample(counted, sched, graph, 2, SamplerConfig(steps=12, langevin_until=until),
               torch.Generator().manual_seed(0))
        corrected = [t for t in grid if t / 100 >= until]
        assert sorted(levels) == sorted(grid + corrected)     # one extra call per correction
    assert 0 < len([t for t in grid if t / 100 >= 0.75]) < len(grid)
    options = DiffusionOptions.from_dict({})                  # the solver's defaults
    assert (options.steps, options.langevin_steps, options.langevin_until) == (12, 1, 0.75)
    assert options.sampler().langevin_until == 0.75
    for bad in (-0.1, 1.5, "top", True):
        with pytest.raises(ValueError, match="options.langevin_until: must be a number in"):
            DiffusionOptions.from_dict({"langevin_until": bad})


def test_per_object_violation_charges_each_argument():
    p = fixed_problem()
    compiled = C.compile_problem(p)
    poses = torch.tensor([[[0.0, 0.0, 0.05, 0.0], [0.0, 0.0, 0.04, 0.0], [0.0, 0.0, 0.025, 0.0]]])
    # all three on one spot: every pair collides, o2 is not in the back region
    per = compiled.per_object(poses)
    assert per.shape == (1, 3) and (per > 0).all()
    # the charged violations add up to each edge counted once per object argument
    v = compiled.violations(poses)
    charged = sum(t.sum() * (1 if k in ("gripper_walls", "region") else compiled.edges[k].shape[1])
                  for k, t in v.items())
    assert float(per.sum()) == pytest.approx(float(charged), rel=1e-5)


def test_training_lowers_the_loss_on_a_tiny_dataset():
    records = [make_record(s) for s in range(24)]
    data = PackedDataset(records)
    torch.manual_seed(0)
    model = ComposedDenoiser(TINY)
    sched = CosineSchedule(ScheduleConfig(train_steps=100))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(200):
        ids = torch.randperm(data.size, generator=gen)[:12]
        loss = diffusion_loss(model, sched, data, ids, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-30:]) < 0.8 * np.mean(losses[:30])


def test_refine_reaches_zero_violation_from_a_perturbed_solution():
    prob, sol = problem(4)
    compiled = C.compile_problem(prob)
    start = torch.tensor(sol, dtype=torch.float32)[None].repeat(4, 1, 1)
    start[..., :2] += 0.01 * torch.randn(start[..., :2].shape,
                                         generator=torch.Generator().manual_seed(0))
    assert float(compiled.total(start).min()) > 0
    out = refine(start, compiled, steps=150, lr=0.003, box_size=prob.container.size)
    assert float(compiled.total(out).min()) == 0.0


def test_shipped_checkpoint_solves_a_four_object_problem():
    assert "diffusion" in SOLVERS
    prob, _ = problem(4, seed=10_000_777)
    plan = solve(prob, SolverConfig(solver="diffusion", verify=False, time_budget_s=20.0, seed=0))
    assert plan.status == "solved", plan.message
    assert C.all_satisfied(C.check(prob, plan.poses(prob.ids)))


def test_tampered_truncated_or_missing_checkpoint_is_rejected(tmp_path):
    src = resource_path("models")
    shutil.copy(src / "pack3d.pt", tmp_path / "pack3d.pt")
    shutil.copy(src / "README.md", tmp_path / "README.md")
    assert load_model(tmp_path / "pack3d.pt") is not None
    blob = bytearray((tmp_path / "pack3d.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (tmp_path / "pack3d.pt").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="pack3d.pt"):
        load_model(tmp_path / "pack3d.pt")
    (tmp_path / "pack3d.pt").write_bytes(bytes(blob[:1000]))
    with pytest.raises(ValueError, match="pack3d.pt"):
        SOLVERS["diffusion"](SolverConfig(model_dir=str(tmp_path)))
    (tmp_path / "pack3d.pt").unlink()
    with pytest.raises(ValueError, match="pack3d.pt"):
        SOLVERS["diffusion"](SolverConfig(model_dir=str(tmp_path)))


def test_saved_tiny_model_round_trips(tmp_path):
    model = tiny_model()
    sha = save_model(model, tmp_path / "pack3d.pt")
    (tmp_path / "README.md").write_text(
        f"| file | sha256 |\n|---|---|\n| pack3d.pt | {sha} | tiny |\n")
    assert sha == sha256_of(tmp_path / "pack3d.pt")
    loaded = load_model(tmp_path / "pack3d.pt")
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA absent")
def test_same_seed_same_candidates_on_cpu_and_cuda():
    prob, _ = problem(4, seed=10_000_778)
    plans = [solve(prob, SolverConfig(solver="diffusion", device=d, verify=False, seed=3,
                                      options={"max_rounds": 1})) for d in ("cpu", "cuda")]
    a, b = (p.poses(prob.ids) for p in plans)
    assert np.allclose(a, b, atol=2e-3)


def test_ddp_training_with_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:     # a free port: a fixed one collides with other runs
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={port}",
           "-m", "robot_packer.solver.diffusion.train", "--steps", "4", "--batch", "4",
           "--data-size", "8", "--data-cache", str(tmp_path / "data.pkl"), "--device", "cpu",
           "--val-every", "0", "--ckpt-every", "2", "--hidden", "16", "--head-hidden", "16",
           "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    causes = [ln for ln in res.stderr.splitlines()
              if any(k in ln for k in ("terminate", "what()", "Error", "error"))]
    assert res.returncode == 0, "\n".join(causes[:20]) + "\n" + res.stderr[-1500:]
    blob = torch.load(out, weights_only=True)
    assert blob["config"]["step"] == 4 and (tmp_path / "ddp.pt.resume").exists()
