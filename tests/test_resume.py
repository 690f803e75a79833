"""Resume after a crash: SIGKILL at any moment, atomic checksummed checkpoints, safe loading.

A killed run resumed with ``fastadv train --resume RUN_DIR`` must end with the very
figures, weights and metrics.csv rows of an unbroken run with the same seed.
"""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import without_timings

import fastadv
from fastadv.cli import main
from fastadv.data import BatchStream, batches
from fastadv.errors import CheckpointError
from fastadv.training.checkpoint import CHECKPOINT_DIR, KILL_HOOK, list_checkpoints

# Tiny synthetic runs: 512 images, batch 32, 2 epochs = 32 minibatches; a checkpoint every
# 4 optimizer steps and a held-out check every 6, so kills land between, on and in checkpoints.
ARGS = {"dataset": "synthetic", "train_limit": 512, "batch_size": 32, "epochs": 2, "augment": True,
        "replays": 2, "lr_max": 0.05, "eval_every": 6, "eval_size": 64, "eval_attack_steps": 2,
        "final_attack_steps": 3, "final_limit": 128, "checkpoint_every": 4, "progress": False, "seed": 5}
ROOT = Path(__file__).resolve().parents[1]


def cli_args(cfg: dict) -> list[str]:
    out = []
    for k, v in cfg.items():
        flag = "--" + k.replace("_", "-")
        out += ([flag] if v else ["--no-" + k.replace("_", "-")]) if isinstance(v, bool) else [flag, str(v)]
    return out


def figures(run_dir: Path) -> dict:
    """summary.json without timing fields and the run's own name."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return without_timings(summary, drop=("name",))


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.csv rows without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(open(run_dir / "metrics.csv"))]


def same_weights(a: Path, b: Path) -> bool:
    sa, sb = (torch.load(p / "model.pt", weights_only=True) for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def launch(argv: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop(KILL_HOOK, None)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # as in this process, which trains the references
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "fastadv", "train", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def newest_step(run_dir: Path) -> int:
    found = list_checkpoints(run_dir / CHECKPOINT_DIR)
    return int(found[0].stem.split("-")[1]) if found else -1


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """method -> (config, run directory) of an unbroken run, trained once per module."""
    cache = {}

    def get(method: str):
        if method not in cache:
            cfg = {**ARGS, "method": method}
            out = tmp_path_factory.mktemp(f"ref-{method}")
            cache[method] = cfg, fastadv.train({**cfg, "out_dir": str(out), "name": "ref"}).run_dir
        return cache[method]

    return get


@pytest.fixture(scope="module")
def killed(references, tmp_path_factory):
    """A Free-m run SIGKILLed by the test hook in its 5th checkpoint write (4 complete: 2 kept)."""
    cfg, _ = references("free")
    return killed_run(cfg, tmp_path_factory.mktemp("killed"), at_write=5)


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


@pytest.mark.parametrize("method", ["free", "fgsm-rs"])  # free: delta and replays; fgsm-rs: attack random starts
def test_sigkill_anywhere_then_resume_matches_unbroken_run(method, references, tmp_path):
    cfg, ref = references(method)
    run = tmp_path / "killed"
    rng = random.Random(os.environ.get("PYTEST_SEED", 7))
    # 1. killed by the test hook inside its 3rd checkpoint write (temp file written, not renamed)
    proc = launch(cli_args({**cfg, "out_dir": str(tmp_path), "name": "killed"}), {KILL_HOOK: "3"})
    assert proc.wait(timeout=300) == -signal.SIGKILL
    assert list((run / CHECKPOINT_DIR).glob(".*.tmp")), "the hook should leave a half-written checkpoint"
    # 2. resumed, killed by the hook inside the first checkpoint it writes
    proc = launch(["--resume", str(run)], {KILL_HOOK: "1"})
    assert proc.wait(timeout=300) == -signal.SIGKILL
    # 3. resumed, then SIGKILLed from outside at a random moment after it has made progress
    kills = 2
    for _ in range(10):
        before = newest_step(run)
        proc = launch(["--resume", str(run)])
        deadline = time.time() + 120
        while proc.poll() is None and newest_step(run) <= before and time.time() < deadline:
            time.sleep(0.002)
        # a random moment within the next few steps: short, so that a fast machine does not finish first
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None and kills < 4:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        out, err = proc.communicate(timeout=300)
        if (run / "summary.json").is_file():
            assert proc.returncode == 0, err
            assert "resuming killed from step-" in err
            break
    assert kills >= 3
    assert figures(run) == figures(ref)
    assert same_weights(run, ref)
    assert metric_rows(run) == metric_rows(ref)  # no row lost, none duplicated
    assert not list((run / CHECKPOINT_DIR).glob(".*.tmp"))
    assert len(list_checkpoints(run / CHECKPOINT_DIR)) <= 3  # the last two, and the guard's last good one


def killed_run(cfg: dict, tmp_path: Path, at_write: int, name: str = "cut") -> Path:
    proc = launch(cli_args({**cfg, "out_dir": str(tmp_path), "name": name}), {KILL_HOOK: str(at_write)})
    assert proc.wait(timeout=300) == -signal.SIGKILL
    return tmp_path / name


def test_truncated_newest_checkpoint_falls_back_to_previous(killed, references, tmp_path, capsys):
    _, ref = references("free")
    run = copy_of(killed, tmp_path)
    newest, previous = list_checkpoints(run / CHECKPOINT_DIR)[:2]
    with open(newest, "r+b") as f:
        f.truncate(newest.stat().st_size // 2)
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    warning = next(line for line in err.splitlines() if newest.name in line)
    assert "corrupted or truncated (sha256 mismatch" in warning and "trying the previous one" in warning
    assert f"resuming cut from {previous.name}" in err
    assert figures(run) == figures(ref) and same_weights(run, ref)


def test_corrupted_byte_and_no_usable_checkpoint(killed, tmp_path, capsys):
    run = copy_of(killed, tmp_path)
    for path in list_checkpoints(run / CHECKPOINT_DIR):
        data = bytearray(path.read_bytes())
        data[len(data) // 3] ^= 0xFF  # one flipped byte: the zip may still open, the sha256 catches it
        path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"^no usable checkpoint in .* \(2 damaged in checkpoints/\)"):
        fastadv.train(None, resume=run)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fastadv train: error: no usable checkpoint") and "Traceback" not in "".join(err)


def test_resume_errors_are_one_line(killed, references, tmp_path, capsys):
    cfg, ref = references("free")
    run = copy_of(killed, tmp_path)
    cases = [
        (["--resume", str(run), "--lr-max", "0.2"], "--lr-max would change it"),
        (["--resume", str(run), "--config", "x.toml"], "--config would change it"),
        (["--resume", str(ref)], "has finished (summary.json exists)"),
        (["--resume", str(tmp_path / "nope")], "is not a readable fastadv run directory"),
    ]
    for argv, message in cases:
        assert main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    # the Python API refuses a config that differs from the run's config.json, naming the field
    with pytest.raises(fastadv.ConfigError, match=r"lr_max=0.3 \(run: 0.05\)"):
        fastadv.train({**cfg, "lr_max": 0.3}, resume=run)
    # a run directory with a config.json but no checkpoint (killed at once): CheckpointError
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(run / "config.json", empty / "config.json")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        fastadv.train(None, resume=empty)


def test_checkpoint_of_another_run_is_refused(killed, tmp_path):
    run = copy_of(killed, tmp_path)
    resolved = json.loads((run / "config.json").read_text())
    other = tmp_path / "other"
    shutil.copytree(run, other)
    (other / "config.json").write_text(json.dumps({**resolved, "model": "fast-cnn"}))
    with pytest.raises(CheckpointError, match=r"holds model 'small-cnn' on dataset 'synthetic', but this run "
                                              r"trains 'fast-cnn' on 'synthetic'"):
        fastadv.train(None, resume=other)
    (other / "config.json").write_text(json.dumps({**resolved, "weight_decay": 0.01}))
    with pytest.raises(CheckpointError, match=r"belongs to another run: weight_decay=0.0002 \(this run: 0.01\)"):
        fastadv.train(None, resume=other)


class Pickled:
    """Not a tensor or a plain value: a checkpoint holding it must not be unpickled."""


def test_checkpoint_with_pickled_objects_is_not_loaded(killed, tmp_path):
    import hashlib

    run = copy_of(killed, tmp_path)
    newest = list_checkpoints(run / CHECKPOINT_DIR)[0]
    torch.save({"step": 4, "payload": Pickled()}, newest)
    Path(f"{newest}.sha256").write_text(f"{hashlib.sha256(newest.read_bytes()).hexdigest()}  {newest.name}\n")
    with pytest.raises(CheckpointError, match=r"^cannot read checkpoint .*step-\d+\.pt: "):
        fastadv.train(None, resume=run)


def test_divergence_stops_and_is_recorded(tmp_path, capsys):
    argv = cli_args({**ARGS, "method": "standard", "lr_max": 1e9, "augment": False, "out_dir": str(tmp_path),
                     "name": "nan"})
    assert main(["train", *argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training loss became non-finite" in err
    summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["robust_acc"] is None
    assert summary["events"][-1]["event"] == "diverged"
    kept = run_dir_checkpoint(tmp_path / "nan", summary["last_checkpoint"])
    state = torch.load(kept, weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in state.values())  # the kept checkpoint is a good one


def run_dir_checkpoint(run_dir: Path, name: str) -> Path:
    path = run_dir / CHECKPOINT_DIR / name
    assert path.is_file() and Path(f"{path}.sha256").is_file()
    return path


def test_batch_stream_resumes_mid_epoch(synthetic):
    x, y = synthetic.x_train[:100], synthetic.y_train[:100]
    gen = torch.Generator().manual_seed(3)
    plain = [*batches(x, y, 16, generator=gen, augment=True), *batches(x, y, 16, generator=gen, augment=True)]
    stream = BatchStream(x, y, 16, generator=torch.Generator().manual_seed(3), augment=True)
    first = [next(stream) for _ in range(10)]  # 7 batches an epoch: stop inside epoch two
    state = stream.state_dict()
    rest = [next(stream) for _ in range(4)]
    same = lambda a, b: all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))  # noqa: E731
    assert same(first + rest, plain) and len(first + rest) == len(plain)  # the draws of batches(), epoch by epoch
    other = BatchStream(x, y, 16, generator=torch.Generator().manual_seed(99), augment=True)
    other.load_state_dict(state)
    assert same([next(other) for _ in range(4)], rest)


# ----------------------------------------------------------------------------- clean interrupts
def test_sigint_checkpoints_says_how_to_resume_and_resuming_equals_an_unbroken_run(references, tmp_path):
    """Ctrl-C (SIGINT) at a random moment: exit 130 with one line naming the step and the resume command; the
    checkpoint is at that step; resuming ends where an unbroken run ends. SIGTERM does the same with 143."""
    cfg, ref = references("fgsm-rs")
    run = tmp_path / "stopped"
    code = None
    for sig, want in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        before = max(newest_step(run), 0) if run.exists() else 0
        args = ["--resume", str(run)] if run.exists() else cli_args({**cfg, "out_dir": str(tmp_path), "name": "stopped"})
        proc = launch(args)
        deadline = time.time() + 120
        while proc.poll() is None and newest_step(run) <= before and time.time() < deadline:
            time.sleep(0.002)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
        if proc.returncode == 0:  # finished before the signal landed: nothing to test this round
            break
        code = proc.returncode
        assert code == want, err
        last = [line for line in err.splitlines() if line.strip()][-1]
        step, total = newest_step(run), json.loads((run / "config.json").read_text())["total_steps"]
        assert last == (f"fastadv train: interrupted at step {step} of {total}; resume with: "
                        f"fastadv train --resume {run}")
        assert not (run / "summary.json").exists()
    assert code is not None, "the run always finished before a signal: nothing was tested"
    if not (run / "summary.json").exists():
        assert main(["train", "--resume", str(run)]) == 0
    assert figures(run) == figures(ref)
    assert same_weights(run, ref)
    assert metric_rows(run) == metric_rows(ref)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_previous_checkpoint(tmp_path):
    from fastadv.training.loop import Interrupts

    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a shell's background job
    stop = Interrupts()
    with stop:
        os.kill(os.getpid(), signal.SIGINT)  # the first: a request, no exception
        assert stop.requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second: at once
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
