"""DistributedDataParallel under torchrun: sharding, communication per step, and a real 2-process run.

The 2-process tests start ``python -m torch.distributed.run --nproc_per_node=2 -m fastadv train`` on
the CPU (gloo over loopback) and compare with a single-process run of the same global batch.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

import fastadv
from fastadv.cli import main
from fastadv.config import ConfigError
from fastadv.core import distributed
from fastadv.core.methods import METHODS, StepContext
from fastadv.data import batches
from fastadv.models import build_model
from fastadv.models.store import model_from_arch
from fastadv.training.setup import seed_everything


# ----------------------------------------------------------------------------- sharding (no processes)
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 7, 64, 65])
def test_rows_split_a_batch_into_equal_disjoint_slices(world, n):
    parts = [distributed.rows(n, r, world) for r in range(world)]
    taken = [i for p in parts for i in range(n)[p]]
    assert taken == list(range(n - n % world))  # in order, disjoint, only the remainder left out
    assert len({p.stop - p.start for p in parts}) == 1  # equal sizes: DDP's mean of means is the global mean


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_batches_reassemble_the_single_process_batches(synthetic, world):
    """Each rank's shards, concatenated in rank order, are the single-process batches (with augmentation),
    and every rank's data generator ends in the same state: the ranks stay in step."""
    x, y = synthetic.x_train[:300], synthetic.y_train[:300]  # 300 = 4 batches of 64 and one of 44
    single_gen = torch.Generator().manual_seed(5)
    single = list(batches(x, y, 64, generator=single_gen, augment=True))
    gens = [torch.Generator().manual_seed(5) for _ in range(world)]
    per_rank = [list(batches(x, y, 64, generator=g, augment=True, shard=lambda n, r=r: distributed.rows(n, r, world)))
                for r, g in enumerate(gens)]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == len(single)
    for i, (xs, ys) in enumerate(single):
        kept = len(ys) - len(ys) % world
        assert torch.equal(torch.cat([p[i][0] for p in per_rank]), xs[:kept])
        assert torch.equal(torch.cat([p[i][1] for p in per_rank]), ys[:kept])
    states = [g.get_state() for g in gens]
    assert all(torch.equal(s, single_gen.get_state()) for s in states)


def test_global_batch_must_split_evenly():
    assert distributed.per_rank_batch(128, world=4) == 32
    with pytest.raises(ConfigError, match="batch_size 65 is not divisible by the 2 processes"):
        distributed.per_rank_batch(65, world=2)


def test_helpers_are_single_process_answers_without_a_group():
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    t = torch.arange(3.0)
    assert distributed.all_reduce_sum(t) is t and distributed.gather_objects("a") == ["a"]
    assert distributed.from_main(lambda: 7) == 7 and distributed.rank_seed(3) == 3
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model and distributed.unwrap(model) is model


# ----------------------------------------------------------------------------- communication per step
@pytest.fixture
def process_group(tmp_path):
    """A one-process gloo group in this process, destroyed afterwards."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("method,replays,attack_steps", [("standard", 1, 1), ("fgsm-rs", 1, 1), ("pgd", 1, 5),
                                                         ("free", 3, 1)])
def test_attack_steps_run_outside_ddp(process_group, synthetic, method, replays, attack_steps):
    """Only optimizer steps go through the DDP wrapper (one gradient all-reduce per bucket each, Free-m: one
    per replay); the attack's forward/backward passes use the plain module and communicate nothing."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    torch.manual_seed(0)
    model = build_model("small-cnn", channels=1, size=16)
    ddp = distributed.wrap(model, torch.device("cpu"))
    assert distributed.unwrap(ddp) is model
    all_reduces, ddp_forwards, module_forwards = [], [], []

    def counting_hook(state, bucket):
        all_reduces.append(1)
        return allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, counting_hook)
    ddp_forward = ddp.forward
    ddp.forward = lambda *a, **k: (ddp_forwards.append(1), ddp_forward(*a, **k))[1]
    model.register_forward_pre_hook(lambda *_: module_forwards.append(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    ctx = StepContext(ddp, optimizer, eps=0.1, alpha=0.05, replays=replays, attack_steps=attack_steps,
                      set_hyperparams=lambda step: None, generator=torch.Generator().manual_seed(0))
    x, y = synthetic.x_train[:32].float() / 255, synthetic.y_train[:32]
    for _ in range(2):
        METHODS[method].step(ctx, x, y)
    steps = 2 * METHODS[method].steps_per_minibatch(replays, attack_steps)
    assert ctx.iteration == steps
    assert len(ddp_forwards) == steps  # training forwards only
    assert len(all_reduces) == steps  # small-cnn's gradients fit one bucket: one all-reduce per optimizer step
    assert len(module_forwards) > steps or method in ("standard", "free")  # the attacks did run, unwrapped


# ----------------------------------------------------------------------------- torchrun, 2 processes
RUN = ["--dataset", "synthetic", "--model", "small-cnn", "--epochs", "0.5", "--batch-size", "64", "--lr-max", "0.1",
       "--replays", "2", "--eval-size", "64", "--eval-attack-steps", "2", "--final-limit", "64",
       "--final-attack-steps", "2", "--no-progress", "--seed", "0", "--precision", "fp32"]  # fp32: the
# tolerances below are float32 rounding (bf16 autocast rounds each rank's activations differently)
# Largest |w_ddp - w_single| allowed, per method. DDP averages the two ranks' mean gradients over their 32
# rows, which is the mean over the 64 rows of the single run computed in another order: the weights differ
# only by float32 rounding (measured: about 3e-8 after 16 standard steps). Free-m's delta takes the sign of
# the input gradient, and a pixel whose gradient is ~0 can get the other sign from such rounding, moving
# delta by 2 eps there (measured: about 3e-5 after 32 replayed steps). Both are far below what training
# changes (> 1e-2, checked below).
TOLERANCE = {"standard": 1e-5, "free": 1e-3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    root = Path(fastadv.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "fastadv", "train", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("method", ["standard", pytest.param("free", marks=pytest.mark.slow)])
def test_torchrun_two_processes_match_one(method, tmp_path, capsys):
    args = [*RUN, "--method", method, "--out-dir", str(tmp_path)]
    out = torchrun([*args, "--name", "ddp"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("run directory:") == 1  # only rank 0 prints and writes
    ddp_summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp_summary["world_size"] == 2 and ddp_summary["ranks_in_sync"]
    assert len(ddp_summary["rank_param_sha256"]) == 2 and len(set(ddp_summary["rank_param_sha256"])) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]

    assert main(["train", *args, "--name", "single"]) == 0
    capsys.readouterr()
    single_summary = json.loads((tmp_path / "single" / "summary.json").read_text())
    for key in ("steps", "minibatches", "grad_computations", "epochs"):
        assert ddp_summary[key] == single_summary[key], key
    ddp_w = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    single_w = load_file(str(tmp_path / "single" / "model.safetensors"))
    arch = json.loads((tmp_path / "single" / "config.json").read_text())["arch"]
    seed_everything(0)
    init_w = model_from_arch(arch).state_dict()
    difference = max((ddp_w[k] - single_w[k]).abs().max().item() for k in single_w)
    moved = max((single_w[k] - init_w[k]).abs().max().item() for k in single_w)
    print(f"{method}: max |w_ddp - w_single| = {difference:.3g}, max |w_single - w_init| = {moved:.3g}")
    assert difference <= TOLERANCE[method]
    assert moved > 10 * TOLERANCE[method]  # the tolerance is small against what training did
    assert ddp_summary["clean_loss"] == pytest.approx(single_summary["clean_loss"], abs=1e-3)
