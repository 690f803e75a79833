"""`fastadv report`: reads run directories only; table figures, HTML rendering, TensorBoard scalars."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fastadv
from fastadv.cli import main
from fastadv.experiments.report import (
    ema,
    first_reaching,
    group_runs,
    load_runs,
    pick_baseline,
    resolve_target,
    schedule_values,
    table_rows,
    write_report,
)
from fastadv.naming import thesis_name

BASE = {"dataset": "synthetic", "method": "free", "replays": 2, "eval_every": 4, "eval_size": 64,
        "final_limit": 128, "lr_max": 0.05, "progress": False}


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory, synthetic):
    """2 configs x 2 seeds of tiny Free-m runs: a 3-steps baseline (twice the iterations) and 1cycle."""
    out = tmp_path_factory.mktemp("runs")
    for shape, iters in (("piecewise", 48), ("one-cycle", 24)):
        for seed in (0, 1):
            cfg = fastadv.TrainConfig.from_dict({**BASE, "lr_schedule": shape, "iterations": iters, "seed": seed,
                                                 "out_dir": str(out)})
            fastadv.train(cfg.replace(name=f"{thesis_name(cfg)}_s{seed}"), data=synthetic)
    (out / "unfinished_s0").mkdir()  # a killed run: metrics.csv but no summary.json
    shutil.copy(next(out.glob("*_s0")) / "metrics.csv", out / "unfinished_s0" / "metrics.csv")
    return out


@pytest.fixture(scope="module")
def report(toy_runs, tmp_path_factory):
    return write_report([toy_runs], tmp_path_factory.mktemp("report"))


def test_report_files_and_table(report, toy_runs):
    names = {p.name for p in report.out_dir.iterdir()}
    assert {"report.html", "report.md", "accuracy_vs_iterations.png", "accuracy_vs_seconds.png",
            "versus_baseline.png", "loss_vs_iterations.png", "schedules.png"} <= names
    assert report.baseline == "synth_FAT_0.048_0.05"  # the only 3-steps config is picked
    assert [r.label for r in report.rows] == ["synth_FAT_0.048_0.05", "synth_1cyc_0.024_0.05"]
    assert [p.name for p in report.unfinished] == ["unfinished_s0"]
    runs, _ = load_runs([toy_runs])
    for row in report.rows:
        group = [r for r in runs if r.label == row.label]
        robust = np.array([100 * r.summary["robust_acc"] for r in group])
        assert row.seeds == 2 and row.robust == f"{robust.mean():.2f} ± {robust.std(ddof=1):.2f}"
        assert row.iterations == group[0].summary["steps"] and row.grads == group[0].summary["grad_computations"]
    md = report.markdown.read_text()
    assert "**synth_FAT_0.048_0.05** (baseline)" in md and "![Loss curves](loss_vs_iterations.png)" in md
    # the target is the end of the baseline's seed-mean held-out adversarial accuracy, EMA-smoothed
    base_mean = np.mean([r.curves["adv_acc"] for r in runs if r.label == report.baseline], axis=0)
    assert report.target == pytest.approx(ema(base_mean, 0.6)[-1])


def test_report_reads_only(toy_runs, tmp_path):
    """A report changes nothing in the run directories."""
    before = {p: p.stat().st_mtime_ns for p in toy_runs.rglob("*")}
    write_report([toy_runs], tmp_path / "r", baseline="synth_1cyc_0.024_0.05_s1", target=0.2)
    assert {p: p.stat().st_mtime_ns for p in toy_runs.rglob("*")} == before


def write_fake_run(folder: Path, name: str, adv: list[float], seconds: list[float], steps: list[int]) -> None:
    """A run directory with hand-made curves, to check time-to-target exactly."""
    d = folder / name
    d.mkdir(parents=True)
    fields = ["step", "epoch", "seconds", "lr", "momentum", "train_loss", "train_acc", "clean_loss", "clean_acc",
              "adv_loss", "adv_acc", "grad_computations"]
    with open(d / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for s, t, a in zip(steps, seconds, adv):
            w.writerow([s, s / 10, t, 0.1, 0.9, 1.0, 0.5, 1.0, 0.8, 1.5, a, s])
    (d / "config.json").write_text(json.dumps({"lr_schedule": "constant", "momentum_schedule": "constant",
                                               "lr_max": 0.1, "momentum": 0.9, "total_steps": steps[-1],
                                               "seed": 0, "eps": 0.1, "eval_size": 10, "eval_attack_steps": 3}))
    (d / "summary.json").write_text(json.dumps({"name": name, "clean_acc": 0.8, "robust_acc": adv[-1],
                                                "steps": steps[-1], "grad_computations": steps[-1],
                                                "train_seconds": seconds[-1], "attack": "PGD-20", "eps": 0.1,
                                                "eval_points": 10}))


def test_time_to_target_and_speedup(tmp_path):
    runs = tmp_path / "runs"
    write_fake_run(runs, "d_FAT_8_0.10_s0", [0.1, 0.2, 0.3, 0.4], [10, 20, 30, 40], [2, 4, 6, 8])
    write_fake_run(runs, "d_1cyc_4_0.10_s0", [0.2, 0.4], [5, 10], [2, 4])
    write_fake_run(runs, "d_const_4_0.10_s0", [0.1, 0.3], [5, 10], [2, 4])
    groups = group_runs(load_runs([runs])[0], "d_FAT_8_0.10")
    assert pick_baseline(groups, None) == "d_FAT_8_0.10"
    target = resolve_target(groups, "d_FAT_8_0.10", None)
    assert target == pytest.approx(0.4)  # the baseline's final held-out adversarial accuracy
    rows = {r.label: r for r in table_rows(groups, "d_FAT_8_0.10", target)}
    assert (rows["d_FAT_8_0.10"].steps_to_target, rows["d_FAT_8_0.10"].seconds_to_target) == ("8", "40")
    assert (rows["d_1cyc_4_0.10"].steps_to_target, rows["d_1cyc_4_0.10"].speedup) == ("4", "4.00×")
    assert rows["d_const_4_0.10"].steps_to_target == "not reached" and rows["d_const_4_0.10"].speedup == "–"
    rows = table_rows(groups, "d_FAT_8_0.10", resolve_target(groups, "d_FAT_8_0.10", 0.2))
    assert {r.label: r.steps_to_target for r in rows} == {"d_FAT_8_0.10": "4", "d_1cyc_4_0.10": "2",
                                                          "d_const_4_0.10": "4"}


def test_time_to_target_ignores_a_lone_spike(tmp_path):
    """With smoothing, one lucky check does not count as reaching the target; the raw curve would."""
    runs = tmp_path / "runs"
    write_fake_run(runs, "d_FAT_8_0.10_s0", [0.1, 0.2, 0.3, 0.4, 0.4, 0.4], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    write_fake_run(runs, "d_lin_4_0.10_s0", [0.1, 0.5, 0.1, 0.1, 0.1, 0.1], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])
    groups = group_runs(load_runs([runs])[0], "d_FAT_8_0.10")
    raw = {r.label: r.steps_to_target for r in table_rows(groups, "d_FAT_8_0.10", 0.4, smoothing=0.0)}
    target = resolve_target(groups, "d_FAT_8_0.10", None, smoothing=0.5)  # the smoothed baseline's end
    assert 0.37 < target < 0.4
    smooth = {r.label: r.steps_to_target for r in table_rows(groups, "d_FAT_8_0.10", target, smoothing=0.5)}
    assert raw["d_lin_4_0.10"] == "2" and smooth["d_lin_4_0.10"] == "not reached"
    assert smooth["d_FAT_8_0.10"] == "6"


def test_ema_and_first_reaching():
    x = np.array([0.0, 1.0, 1.0, 1.0])
    assert np.allclose(ema(x, 0.0), x)
    smooth = ema(x, 0.5)
    assert smooth[0] == 0.0 and np.all(np.diff(smooth) > 0) and smooth[-1] < 1.0
    assert first_reaching(np.array([0.1, 0.5, 0.4, 0.6]), 0.45) == 1
    assert first_reaching(np.array([0.1, 0.2]), 0.45) is None


def test_schedule_values_match_logged_lr(toy_runs):
    """The LR shapes drawn in the report (recomputed from config.json) equal what the trainer logged."""
    runs, _ = load_runs([toy_runs])
    for r in runs:
        steps, lr, _ = schedule_values(r.config, points=10_000)
        logged = dict(zip(r.curves["step"].astype(int) - 1, r.curves["lr"]))  # the LR of the last step taken
        for s, value in logged.items():
            assert lr[np.searchsorted(steps, s)] == pytest.approx(value, rel=1e-4)


@pytest.mark.parametrize("lr_schedule,momentum_schedule,peak", [
    ("one-cycle:peak=0.3", "one-cycle", 0.3), ("one-cycle-tf:end_cycle=0.8", "one-cycle", 0.4),
    ("cyclical:cycles=2", "cyclical", 0.25)])
def test_report_draws_a_mirrored_momentum_where_the_trainer_has_it(lr_schedule, momentum_schedule, peak):
    """The momentum mirror follows the LR spec's peak / cycles: the report draws it from the same function
    the trainer uses (it used to rebuild the momentum without the LR spec, so its trough sat at 45%)."""
    from fastadv.core import schedules

    total = 1000
    config = {"total_steps": total, "lr_schedule": lr_schedule, "lr_max": 0.1, "momentum_schedule": momentum_schedule,
              "momentum": 0.9}
    steps, lr, momentum = schedule_values(config, points=total + 1)
    trained = schedules.build_momentum(momentum_schedule, total, lr_spec=lr_schedule, momentum=0.9)
    assert np.allclose(momentum, [trained(int(s)) for s in steps])
    assert steps[int(np.argmin(momentum))] == round(peak * total) == steps[int(np.argmax(lr))]


def test_report_cli_errors(tmp_path, capsys, toy_runs):
    assert main(["report", str(tmp_path / "none")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no finished runs" in capsys.readouterr().err
    assert main(["report", str(toy_runs), "--baseline", "nope", "--out", str(tmp_path / "r")]) == 2
    assert "baseline 'nope' is not among the runs" in capsys.readouterr().err
    assert main(["report", str(toy_runs), "--target", "3", "--out", str(tmp_path / "r")]) == 2
    assert "--target is a fraction" in capsys.readouterr().err
    assert main(["report", str(toy_runs), "--out", str(tmp_path / "r")]) == 0
    assert "synth_1cyc_0.024_0.05" in capsys.readouterr().out


def test_tensorboard_events_hold_every_scalar(toy_runs):
    """Every run's scalars land in its events file, one point per metrics.csv row, same values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs, _ = load_runs([toy_runs])
    tags = {"train/train_loss": "train_loss", "train/train_acc": "train_acc", "clean/clean_loss": "clean_loss",
            "clean/clean_acc": "clean_acc", "adversarial/adv_loss": "adv_loss", "adversarial/adv_acc": "adv_acc",
            "hparams/lr": "lr", "hparams/momentum": "momentum", "hparams/seconds": "seconds"}
    for r in runs:
        acc = EventAccumulator(str(r.path))
        acc.Reload()
        assert set(tags) <= set(acc.Tags()["scalars"])
        for tag, key in tags.items():
            events = acc.Scalars(tag)
            assert [e.step for e in events] == r.curves["step"].astype(int).tolist()
            assert np.allclose([e.value for e in events], r.curves[key], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- browser rendering
def chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_report_html_renders_in_headless_chromium(report, tmp_path):
    """Acceptance 2: report.html opens in headless Chromium, every embedded figure decodes, a screenshot is taken."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium not installed (apt-get install chromium); .ci/run installs it")
    html = report.html.read_text()
    assert "src=\"data:image/png;base64," in html and "<img" in html
    assert not re.search(r'src="(?!data:)', html)  # self-contained: no external resources
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]
    url = report.html.resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    check = re.search(r'id="image-check" data-total="(\d+)" data-loaded="(\d+)"', dom)
    assert check, dom[-2000:]
    total, loaded = map(int, check.groups())
    assert total == len(report.figures) == 5 and loaded == total

    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1400,2400", url], capture_output=True,
                   timeout=120)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1400) and pixels.std() > 10  # a page with content, not a blank canvas
