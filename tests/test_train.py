"""The training loop end to end: run directory contract, determinism, eval reproduces the run."""
from __future__ import annotations

import csv
import json

import pytest
import torch
from helpers import without_timings

import fastadv
from fastadv.cli import main
from fastadv.training.log import METRIC_FIELDS

QUICK = {"dataset": "synthetic", "model": "small-cnn", "epochs": 2, "batch_size": 64, "eval_size": 128,
         "eval_attack_steps": 3, "final_attack_steps": 5, "progress": False, "lr_max": 0.05, "replays": 2,
         "final_aa_points": 128}  # AA-lite on a quarter of the 512 test points: its files and figures, 4x cheaper


def test_run_files_get_the_mode_the_umask_gives_not_mkstemps_0600(tmp_path):
    """Atomic writes go through a temporary file; the result must still be readable as a plain write is."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        run = fastadv.train({**QUICK, "epochs": 0.25, "method": "standard", "out_dir": str(tmp_path)}).run_dir
    finally:
        os.umask(old)
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {"config.json", "metrics.csv", "summary.json", "model.pt", "model.safetensors"} <= {p.name for p in files}
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert all(m == 0o644 for m in modes.values()), modes


@pytest.mark.parametrize("method", ["standard", "free", "fgsm-rs", "pgd"])
def test_run_directory_contract(method, tmp_path):
    result = fastadv.train({**QUICK, "method": method, "attack_steps": 2, "out_dir": str(tmp_path)})
    run = result.run_dir
    for name in ("config.json", "metrics.csv", "summary.json", "model.safetensors", "model.pt"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    for key in ("clean_acc", "robust_acc", "attack", "train_seconds", "steps", "epochs", "name",
                "grad_computations", "status", "events", "co_guard"):
        assert key in summary
    assert summary["status"] == "completed" and summary["co_guard"] == (method in ("free", "fgsm-rs"))
    # the final number comes with the sanity checks of fastadv.evaluation.sanity and their verdict
    from fastadv.evaluation.sanity import CHECKS

    assert {c["name"] for c in summary["sanity"]} == set(CHECKS)
    assert summary["trusted"] == all(c["passed"] is not False for c in summary["sanity"])
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step-*.pt"))
    assert checkpoints and checkpoints[-1] == f"step-{summary['steps']:09d}.pt"  # the last check is saved
    assert summary["attack"].startswith("PGD-5 (1 restart, eps=0.1")
    assert 0 <= summary["robust_acc"] <= summary["clean_acc"] <= 1
    minibatches = 2 * -(-summary["train_size"] // 64)  # 2 epochs of the training split (less validation) / 64
    assert summary["train_size"] + summary["val_size"] == 2048
    expected_passes = {"standard": 1, "free": 2, "fgsm-rs": 2, "pgd": 3}[method] * minibatches
    assert summary["grad_computations"] == expected_passes
    assert summary["steps"] == minibatches * (2 if method == "free" else 1)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert list(rows[0]) == METRIC_FIELDS and len(rows) >= 5
    assert int(rows[-1]["step"]) == summary["steps"]
    # weights load without unpickling anything
    state = torch.load(run / "model.pt", weights_only=True)
    assert "0.mean" in state
    assert list(run.glob("events.out.tfevents.*")), "TensorBoard events missing (tensorboard is a test extra)"


def test_same_seed_same_figures(tmp_path):
    figures = []
    for i in range(2):
        s = fastadv.train({**QUICK, "method": "free", "out_dir": str(tmp_path / str(i)), "seed": 3}).summary
        figures.append(without_timings(s))
    assert figures[0] == figures[1]
    other = fastadv.train({**QUICK, "method": "free", "out_dir": str(tmp_path / "x"), "seed": 4}).summary
    assert other["clean_loss"] != figures[0]["clean_loss"]


def test_cli_eval_reproduces_the_run(tmp_path, capsys):
    result = fastadv.train({**QUICK, "method": "fgsm-rs", "out_dir": str(tmp_path)})
    code = main(["eval", str(result.run_dir), "--steps", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["robust_acc"] == pytest.approx(result.summary["robust_acc"], abs=1e-9)
    assert out["clean_acc"] == pytest.approx(result.summary["clean_acc"], abs=1e-9)
    # the .pt next to its config.json and the .safetensors alone load the same model
    for name in ("model.pt", "model.safetensors"):
        model = fastadv.load_model(result.run_dir / name)
        assert not model.training


def test_run_names_never_overwrite(tmp_path):
    a = fastadv.train({**QUICK, "epochs": 0.5, "method": "standard", "out_dir": str(tmp_path), "name": "same"})
    b = fastadv.train({**QUICK, "epochs": 0.5, "method": "standard", "out_dir": str(tmp_path), "name": "same"})
    assert a.run_dir.name == "same" and b.run_dir.name == "same-2"


def test_config_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('dataset = "synthetic"\nmethod = "standard"\nepochs = 1\nprogress = false\n'
                   'final_attack_steps = 2\neval_size = 64\n')
    assert main(["train", "--config", str(cfg), "--epochs", "0.5", "--out-dir", str(tmp_path / "r"),
                 "--name", "cli"]) == 0
    out = capsys.readouterr().out
    assert "robust accuracy" in out and "run directory" in out
    resolved = json.loads((tmp_path / "r" / "cli" / "config.json").read_text())
    assert resolved["epochs"] == 0.5 and resolved["method"] == "standard"


def test_progress_in_a_log_file_is_one_line_per_held_out_check(tmp_path):
    """stderr not a terminal: no carriage-return bar updates, one short line per metrics.csv row."""
    import subprocess
    import sys

    log = tmp_path / "train.log"
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "fastadv", "train", "--dataset", "synthetic", "--preset", "none",
                               "--epochs", "2", "--batch-size", "64", "--eval-every", "8", "--eval-size", "64",
                               "--final-limit", "64", "--final-aa-points", "0", "--out-dir", str(tmp_path / "runs")],
                              stderr=f, stdout=subprocess.DEVNULL)
    assert proc.returncode == 0
    text = log.read_text()
    rows = list(csv.DictReader(open(next((tmp_path / "runs").iterdir()) / "metrics.csv")))
    lines = [line for line in text.splitlines() if line.startswith("step ")]
    assert "\r" not in text and len(lines) == len(rows) >= 5
    assert all(len(line) < 200 for line in text.splitlines())
