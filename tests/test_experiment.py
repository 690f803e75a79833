"""Thesis run names, the thesis configs, the `iterations` budget, and the grid runner."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastadv.cli import main
from fastadv.config import ConfigError, TrainConfig
from fastadv.core import schedules
from fastadv.experiments.grid import GridRun, plan_grid, run_grid
from fastadv.naming import strip_seed, thesis_name

ROOT = Path(__file__).resolve().parents[1]
THESIS_DIR = ROOT / "configs" / "thesis"
SCALED_DIR = ROOT / "configs" / "scaled"

# The thesis' Tables 1 and 2: name -> (iterations, momentum, LR max, LR min).
THESIS_TABLE = {
    "10_FAT_80_0.10": (80_000, "constant", 0.1, 0.001),
    "10_1cyc_80_0.10": (80_000, "constant", 0.1, 0.0001),
    "10_1cyc2_60_0.10": (60_000, "one-cycle", 0.1, 0.0001),
    "10_1cyc2_40_0.15": (40_000, "one-cycle", 0.15, 0.00015),
    "10_1cyc2_40_0.12": (40_000, "one-cycle", 0.12, 0.00012),
    "10_1tru2_40_0.15": (40_000, "one-cycle", 0.15, 0.00015),
    "10_lin2_40_0.15": (40_000, "one-cycle", 0.15, 0.00015),
    "10_1half_50_0.15": (50_000, "constant", 0.15, 0.00015),
    "10_warm_50_0.15": (50_000, "constant", 0.15, 0.015),
    "10_walin_40_0.15": (40_000, "constant", 0.15, 0.00015),
    "10_exp_45_0.12": (45_000, "constant", 0.12, 0.00012),
    "10_const_40_0.15": (40_000, "constant", 0.15, 0.15),
    "10_exp_40_0.15": (40_000, "constant", 0.15, 0.00015),
    "10_warm_40_0.15": (40_000, "constant", 0.15, 0.0015),
    "10_1cyc_40_0.15": (40_000, "constant", 0.15, 0.00015),
    "100_FAT_80_0.10": (80_000, "constant", 0.1, 0.001),
    "100_walin_60_0.12": (60_000, "constant", 0.12, 0.00012),
    "100_exp_45_0.12": (45_000, "constant", 0.12, 0.00012),
    "100_lin_40_0.12": (40_000, "constant", 0.12, 0.00012),
    "100_1cyc_40_0.12": (40_000, "constant", 0.12, 0.00012),
    "100_exp_40_0.12": (40_000, "constant", 0.12, 0.00012),
    "100_warm_40_0.12": (40_000, "constant", 0.12, 0.0012),
    "100_walin_40_0.12": (40_000, "constant", 0.12, 0.00012),
    "100_const_40_0.12": (40_000, "constant", 0.12, 0.12),
}


def test_thesis_dir_holds_exactly_the_24_runs():
    assert sorted(p.stem for p in THESIS_DIR.glob("*.toml")) == sorted(THESIS_TABLE)


@pytest.mark.parametrize("name", sorted(THESIS_TABLE))
def test_thesis_config_dry_run(name, capsys, tmp_path):
    """`fastadv train --config F --dry-run` validates F and prints the thesis' name; values match the table."""
    code = main(["train", "--config", str(THESIS_DIR / f"{name}.toml"), "--dry-run", "--out-dir", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["name"] == name
    cfg = out["config"]
    iterations, momentum, lr_max, lr_min = THESIS_TABLE[name]
    assert (cfg["dataset"], cfg["model"], cfg["depth"], cfg["width"]) == (
        "cifar10" if name.startswith("10_") else "cifar100", "wide-resnet", 32, 10)
    assert (cfg["method"], cfg["replays"], cfg["batch_size"], cfg["weight_decay"]) == ("free", 8, 128, 2e-4)
    assert cfg["eps"] == pytest.approx(8 / 255) and cfg["iterations"] == iterations
    assert cfg["momentum_schedule"].split(":")[0] == momentum and cfg["lr_max"] == lr_max
    lr = schedules.build(cfg["lr_schedule"], iterations, lr_max=cfg["lr_max"])
    values = [lr(s) for s in range(0, iterations + 1, 50)]
    assert max(values) == pytest.approx(lr_max) and min(values) == pytest.approx(lr_min, rel=1e-6)
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize("changes,name", [
    ({"dataset": "fashion-mnist", "lr_schedule": "one-cycle", "momentum_schedule": "one-cycle",
      "iterations": 4000, "lr_max": 0.05}, "fmnist_1cyc2_4_0.05"),
    ({"dataset": "mnist", "lr_schedule": "linear-warm-restarts:period=0.5", "iterations": 2500,
      "lr_max": 0.005}, "mnist_walin_2.5_0.005"),
    ({"dataset": "cifar10", "lr_schedule": "piecewise", "epochs": 3}, "10_FAT_3ep_0.10"),
    ({"dataset": "cifar100", "lr_schedule": "cyclical", "momentum_schedule": "cyclical", "iterations": 500},
     "100_cyc2cyc_0.5_0.10"),
])
def test_thesis_name_for_other_settings(changes, name):
    assert thesis_name(TrainConfig.from_dict(changes)) == name


def test_strip_seed():
    assert strip_seed("fmnist_1cyc_4_0.05_s2") == "fmnist_1cyc_4_0.05"
    assert strip_seed("10_FAT_80_0.10-3") == "10_FAT_80_0.10"
    assert strip_seed("10_FAT_80_0.10") == "10_FAT_80_0.10"


def test_lr_max_auto_dry_run_names_the_lr_auto(capsys, tmp_path):
    """`--lr-max auto --dry-run`: exit 0 and a name whose LR part says the range test will pick it."""
    code = main(["train", "--dataset", "cifar10", "--lr-max", "auto", "--dry-run", "--out-dir", str(tmp_path)])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 0 and "Traceback" not in captured.err
    assert out["config"]["lr_max"] is None and out["name"].startswith("10_") and out["name"].endswith("_auto")
    assert not list(tmp_path.iterdir())


def test_grid_names_a_config_with_lr_max_auto(tmp_path, capsys):
    (tmp_path / "auto.toml").write_text('dataset = "synthetic"\nlr_schedule = "one-cycle"\niterations = 16\n'
                                        'lr_max = "auto"\n')
    runs = plan_grid([tmp_path / "auto.toml"], seeds=2, out_dir=tmp_path / "runs")
    assert [r.name for r in runs] == ["synth_1cyc_0.016_auto_s0", "synth_1cyc_0.016_auto_s1"]
    assert main(["grid", str(tmp_path / "auto.toml"), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert "synth_1cyc_0.016_auto_s0" in capsys.readouterr().out


def test_iterations_field(synthetic, tmp_path):
    """`iterations` counts optimizer steps with Free-m replays and overrides epochs; it must be >= 0."""
    import fastadv

    res = fastadv.train({"dataset": "synthetic", "method": "free", "replays": 4, "iterations": 24, "epochs": 50,
                         "eval_every": 8, "final_limit": 50, "out_dir": str(tmp_path), "progress": False},
                        data=synthetic)
    assert res.summary["steps"] == 24 and res.summary["minibatches"] == 6
    assert res.run_dir.name == thesis_name(res.config)  # the default run directory name
    with pytest.raises(ConfigError, match="iterations must be >= 0"):
        TrainConfig.from_dict({"iterations": -1})


def test_scaled_grid_configs_are_valid_and_distinct():
    runs = plan_grid([SCALED_DIR], seeds=3, out_dir="runs/x")
    names = [strip_seed(r.name) for r in runs]
    assert len(set(names)) == len(runs) // 3 >= 8
    techniques = {n.split("_")[1] for n in names}
    assert {"FAT", "1cyc", "1cyc2", "lin", "exp", "warm", "walin", "const"} <= techniques
    base = next(r.config for r in runs if "_FAT_" in r.name)
    for r in runs:  # the baseline gets twice the shaped runs' iterations, as in the thesis (80k vs 40k)
        if r.config is not base and "_FAT_" not in r.name:
            assert 2 * r.config.iterations == base.iterations


# ----------------------------------------------------------------------------- grid runner
TOY = {"dataset": "synthetic", "method": "free", "replays": 2, "iterations": 16, "eval_every": 8,
       "final_limit": 50, "eval_size": 50, "lr_max": 0.05}
TOY_SHAPES = ["piecewise", "one-cycle", "linear", "constant"]


def write_toy_grid(folder: Path, iterations: int = 16) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for shape in TOY_SHAPES:
        lines = [f"{k} = {json.dumps(v)}" for k, v in {**TOY, "iterations": iterations, "lr_schedule": shape}.items()]
        (folder / f"{shape}.toml").write_text("\n".join(lines) + "\n")
    return folder


def test_grid_plan_names_and_errors(tmp_path):
    cfgs = write_toy_grid(tmp_path / "cfg")
    runs = plan_grid([cfgs], seeds=2, out_dir=tmp_path / "runs", first_seed=3)
    assert [r.name for r in runs][:2] == ["synth_const_0.016_0.05_s3", "synth_lin_0.016_0.05_s3"]
    assert [r.name for r in runs][4] == "synth_const_0.016_0.05_s4"
    assert all(r.run_dir.parent == tmp_path / "runs" and r.config.seed in (3, 4) for r in runs)
    (cfgs / "copy.toml").write_text((cfgs / "linear.toml").read_text())
    with pytest.raises(ConfigError, match="both name their runs"):
        plan_grid([cfgs], out_dir=tmp_path / "runs")
    with pytest.raises(ConfigError, match="no such config file or directory"):
        plan_grid([tmp_path / "nothing"])
    with pytest.raises(ConfigError, match="the grid sets seed"):
        plan_grid([cfgs / "linear.toml"], overrides={"seed": 1})


def test_grid_goes_on_past_a_failure(tmp_path):
    runs = plan_grid([write_toy_grid(tmp_path / "cfg")], seeds=1, out_dir=tmp_path / "runs")
    trained = []

    def fake_train(cfg, run_dir, data=None):
        if cfg.lr_schedule == "linear":
            raise RuntimeError("boom\nsecond line")
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text("{}")
        trained.append(run_dir.name)
        summary = {"clean_acc": 0.5, "robust_acc": 0.2, "attack": "x", "train_seconds": 1.0}
        return type("R", (), {"summary": summary})()

    outcome = run_grid(runs, progress=False, train_fn=fake_train, echo=lambda m: None)
    assert len(trained) == 3 and [n for n, _ in outcome.failed] == ["synth_lin_0.016_0.05_s0"]
    assert outcome.failed[0][1] == "RuntimeError: boom"
    again = run_grid(runs, progress=False, train_fn=fake_train, echo=lambda m: None)
    assert sorted(again.skipped) == sorted(trained) and len(again.failed) == 1


def test_an_interrupted_run_stops_the_grid_instead_of_counting_as_failed(tmp_path):
    """SIGTERM / Ctrl-C reach the grid as the training loop's TrainingInterrupted (after its checkpoint):
    the grid stops there and starts no further run; the rerun resumes it."""
    from fastadv.training.loop import TrainingInterrupted

    runs = plan_grid([write_toy_grid(tmp_path / "cfg")], seeds=1, out_dir=tmp_path / "runs")
    started = []

    def interrupted_train(cfg, run_dir, data=None):
        started.append(run_dir.name)
        raise TrainingInterrupted("interrupted at step 3 of 9; resume with: fastadv train --resume X", 143)

    with pytest.raises(TrainingInterrupted) as info:
        run_grid(runs, progress=False, train_fn=interrupted_train, echo=lambda m: None)
    assert info.value.code == 143 and len(started) == 1


def test_grid_cli_exit_code_lists_failures(tmp_path, capsys):
    cfgs = write_toy_grid(tmp_path / "cfg")
    (cfgs / "linear.toml").write_text((cfgs / "linear.toml").read_text().replace('"synthetic"', '"nosuch"'))
    assert main(["grid", str(cfgs), "--out", str(tmp_path / "runs")]) == 2  # a bad name fails before training
    assert "unknown dataset 'nosuch'" in capsys.readouterr().err


def _grid_cmd(cfgs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "fastadv", "grid", str(cfgs), "--seeds", "1", "--out", str(out), "--no-progress"]


def test_grid_killed_and_rerun_finishes_without_redoing(tmp_path):
    """Acceptance 1: kill `fastadv grid` mid-way; the rerun trains only what was not finished."""
    cfgs = write_toy_grid(tmp_path / "cfg", iterations=160)
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_grid_cmd(cfgs, out), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    # kill once 2 of the 4 runs are finished and the third has started writing its metrics
    while time.time() < deadline and (len(list(out.glob("*/summary.json"))) < 2
                                      or len(list(out.glob("*/metrics.csv"))) < 3):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up: the third run is left half-written
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    assert 2 <= len(finished) < 4
    partial = [d for d in out.iterdir() if d.is_dir() and not (d / "summary.json").exists()]

    rerun = subprocess.run(_grid_cmd(cfgs, out), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}
    assert len(after) == 4 and sorted(d.name for d in out.iterdir() if d.is_dir()) == sorted(after)  # no "-2" copies
    assert all(after[n] == t for n, t in finished.items())  # finished runs untouched
    assert f"trained {4 - len(finished)}, skipped {len(finished)} finished, 0 failed" in rerun.stdout
    assert "resuming" in rerun.stdout + rerun.stderr  # the interrupted run went on from its checkpoint
    for d in partial:  # ... to a full, consistent metrics.csv (no row twice, none missing)
        rows = (d / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + 160 // 8


def test_grid_dataclass_reports_state(tmp_path):
    cfg = TrainConfig.from_dict({**TOY, "out_dir": str(tmp_path)})
    run = GridRun(cfg, tmp_path / "a_s0", tmp_path / "a.toml")
    assert not run.finished
    (tmp_path / "a_s0").mkdir()
    (tmp_path / "a_s0" / "summary.json").write_text("{}")
    assert run.finished


HOLD_LOCK = """
import sys, time
from fastadv.experiments.grid import grid_lock
with grid_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_grid_into_the_same_folder_stops_and_a_killed_one_leaves_no_stuck_lock(tmp_path, capsys):
    cfgs = write_toy_grid(tmp_path / "cfg")
    out = tmp_path / "runs"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["grid", str(cfgs), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"another fastadv grid (pid {holder.pid}) is training into {out}" in err
        assert err.count("\n") == 1 and not any(p.name.startswith("synth") for p in out.iterdir())
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs
        holder.wait()
    assert (out / ".grid.lock").exists()  # the file stays, the lock does not
    assert main(["grid", str(cfgs / "linear.toml"), "--out", str(out), "--no-progress"]) == 0
