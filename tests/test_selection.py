"""The validation split, weight averaging, the kept weights, label smoothing, the time budget and the
robustness-collapse warning: every decision made during training reads the validation split, never the test set."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastadv
from fastadv.config import ConfigError, TrainConfig
from fastadv.core.methods import METHODS, StepContext, hyperparam_setter, train_loss
from fastadv.data import Dataset, stratified_pick
from fastadv.training.averaging import Averager, Selection, ema_decay
from fastadv.training.budget import FIRST_FIT, TimeBudget
from fastadv.training.guard import COLLAPSE_FLOOR, robustness_collapse
from fastadv.training.state import LoopState

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"preset": "none", "dataset": "synthetic", "model": "small-cnn", "method": "fgsm-rs", "epochs": 2,
         "batch_size": 64, "lr_max": 0.05, "val_size": 200, "eval_size": 100, "eval_every": 16,
         "final_limit": 128, "final_aa_points": 0, "final_attack_steps": 3, "eval_attack_steps": 3,
         "progress": False, "stop_if_not_learning": False}


def tiny_dataset(n: int = 500, classes: int = 5) -> Dataset:
    """Images that carry their own index (pixel 0 = index % 256, pixel 1 = index // 256), labels of uneven counts."""
    idx = torch.arange(n)
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = (idx % 256).to(torch.uint8), (idx // 256).to(torch.uint8)
    y = (idx * idx) % classes
    return Dataset("tiny", x, y, x[:10], y[:10], classes, (0.5,), (0.5,), False, "test")


def image_ids(x: torch.Tensor) -> set[int]:
    return set((x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()).tolist())


# ----------------------------------------------------------------------------- the validation split
def test_validation_split_is_stratified_fixed_and_never_in_training():
    data = tiny_dataset()
    split = data.with_validation(100)
    assert split.val_size == 100 and len(split.y_train) == 400 and len(split.y_test) == len(data.y_test)
    assert not image_ids(split.x_val) & image_ids(split.x_train)  # no validation image is trained on
    assert image_ids(split.x_val) | image_ids(split.x_train) == set(range(500))
    for c in range(5):  # each class gives its share (within one image)
        share = (data.y_train == c).sum().item() * 100 / 500
        assert abs((split.y_val == c).sum().item() - share) < 1
    again = data.with_validation(100)
    assert torch.equal(again.x_val, split.x_val)  # the same split for every run
    assert split.with_validation(50) is split  # a dataset that has one keeps it
    assert data.with_validation(10_000).val_size == 100  # at most a fifth of the training split
    assert len(stratified_pick(data.y_train, 0, 0)) == 0


def train_quick(tmp_path, name, data=None, **overrides) -> fastadv.training.loop.RunResult:
    return fastadv.train({**QUICK, **overrides, "out_dir": str(tmp_path), "name": name}, data=data)


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_test_labels_do_not_steer_training(tmp_path):
    """Train twice with one seed, once with the test labels permuted: the weights and every in-training figure are
    identical, so nothing during training (checks, guard, averaging, the kept weights) read the test set; only
    the final test figures differ."""
    data = fastadv.load_dataset("synthetic")
    flipped = replace(data, y_test=(data.y_test + 1) % data.num_classes)
    settings = {"average": "ema", "keep": "best", "eps_warmup": 0.2}
    a = train_quick(tmp_path, "a", data=data, **settings)
    b = train_quick(tmp_path, "b", data=flipped, **settings)
    for name in ("model.pt", "model-raw.pt", "model-average.pt"):
        wa, wb = (torch.load(r.run_dir / name, weights_only=True) for r in (a, b))
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert metrics(a.run_dir) == metrics(b.run_dir)
    assert a.summary["kept"] == b.summary["kept"] and a.summary["events"] == b.summary["events"]
    assert a.summary["clean_acc"] != b.summary["clean_acc"]  # the test set is read at the end, and only there
    for s in (a.summary, b.summary):
        assert (s["train_size"], s["val_size"], s["test_size"]) == (2048 - 200, 200, 512)
    config = json.loads((a.run_dir / "config.json").read_text())
    assert (config["train_size"], config["val_images"], config["test_size"]) == (1848, 200, 512)


def test_no_training_module_reads_the_test_split():
    """Only the final evaluation (fastadv.evaluation, called by the loop's ``finish``) reads x_test / y_test."""
    for path in sorted((ROOT / "fastadv" / "training").glob("*.py")) + sorted((ROOT / "fastadv" / "core").rglob("*.py")):
        text = path.read_text()
        assert "x_test" not in text and "y_test" not in text, path.name


# ----------------------------------------------------------------------------- weight averaging
def test_ema_equals_its_closed_form_on_a_toy_model():
    model = nn.Linear(3, 2)
    decay = 0.9
    avg = Averager(model, "ema", decay=decay, start_step=0, steps_per_update=1)
    expected = None
    for k in range(25):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
        avg.update(model, k)
        now = torch.cat([p.detach().flatten() for p in model.parameters()])
        d = ema_decay(decay, k)  # the (k+1)-th update folds in with min(decay, (1 + k) / (10 + k))
        expected = now.clone() if expected is None else d * expected + (1 - d) * now
        got = torch.cat([p.flatten() for p in avg.weights().values()])
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert ema_decay(decay, 1) == pytest.approx(2 / 11) and ema_decay(decay, 1000) == decay


def test_swa_is_the_equal_average_from_its_start_and_recomputes_bn():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 2))
    avg = Averager(model, "swa", decay=0.9, start_step=3, steps_per_update=1)
    seen = []
    for step in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn_like(p))
        avg.update(model, step)
        if step >= 3:
            seen.append(model[3].weight.detach().clone())
    assert avg.updates == 3
    torch.testing.assert_close(avg.weights()["3.weight"], torch.stack(seen).mean(0))
    x = (torch.rand(64, 1, 4, 4) * 255).to(torch.uint8)
    averaged = avg.ready(x, channels_last=False)
    assert averaged.module[1].running_mean.abs().sum() > 0 and not averaged.training


def test_selection_keeps_the_best_validation_check_and_last_means_the_last_check():
    class Check:
        def __init__(self, robust, clean):
            self.robust_acc, self.clean_acc = robust, clean

    weights = [nn.Linear(2, 2) for _ in range(4)]
    best = Selection("best")
    for step, (robust, clean) in enumerate([(0.3, 0.8), (0.5, 0.7), (0.4, 0.9), (0.5, 0.6)]):
        best.offer("raw", step, Check(robust, clean), weights[step])
    assert best.best["step"] == 1  # 0.5 robust twice: the better clean accuracy wins
    assert torch.equal(best.best["weights"]["weight"], weights[1].weight)
    last = Selection("last")
    last.offer("raw", 5, Check(0.5, 0.8), weights[0])
    last.offer("raw", 6, Check(0.2, 0.8), weights[1])  # a newer check replaces a better older one
    last.offer("average", 6, Check(0.2, 0.8), weights[2])  # a tie at the same check: the averaged weights
    assert (last.best["which"], last.best["step"]) == ("average", 6)


def test_keep_best_returns_the_best_validation_checks_weights(tmp_path):
    result = train_quick(tmp_path, "best", keep="best", epochs=3)
    rows = metrics(result.run_dir)
    best = max(rows, key=lambda r: (float(r["adv_acc"]), float(r["clean_acc"]), int(r["step"])))
    kept = result.summary["kept"]
    assert (kept["which"], kept["step"], kept["val_adv_acc"]) == ("raw", int(best["step"]), float(best["adv_acc"]))
    checkpoint = torch.load(result.run_dir / "checkpoints" / f"step-{kept['step']:09d}.pt", weights_only=True)
    weights = torch.load(result.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], checkpoint["model"][k].to(weights[k].dtype)) for k in weights)


def test_averaging_with_keep_best_resumes_bit_for_bit(tmp_path):
    """A run killed in the middle of its 3rd checkpoint write and resumed ends with the unbroken run's weights,
    averaged weights and kept choice."""
    settings = {**QUICK, "average": "ema", "ema_decay": 0.95, "keep": "best", "label_smoothing": 0.1,
                "out_dir": str(tmp_path)}
    unbroken = fastadv.train({**settings, "name": "unbroken"})
    env = {**os.environ, "FASTADV_CHECKPOINT_KILL": "3", "PYTHONPATH": str(ROOT)}
    killed = json.dumps({**settings, "name": "killed"})
    code = f"import fastadv, json; fastadv.train(json.loads({killed!r}))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and not (tmp_path / "killed" / "summary.json").exists()
    resumed = fastadv.train(resume=tmp_path / "killed")
    for name in ("model.pt", "model-raw.pt", "model-average.pt"):
        wa = torch.load(unbroken.run_dir / name, weights_only=True)
        wb = torch.load(resumed.run_dir / name, weights_only=True)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert unbroken.summary["kept"] == resumed.summary["kept"]
    assert metrics(unbroken.run_dir) == metrics(resumed.run_dir)


# ----------------------------------------------------------------------------- label smoothing
def test_label_smoothing_changes_the_training_loss_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))

    def context(smoothing):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        return StepContext(model, optimizer, 0.1, 0.025, 1, 3, hyperparam_setter(optimizer),
                           torch.Generator().manual_seed(1), label_smoothing=smoothing)

    plain, smooth = context(0.0), context(0.3)
    logits = model(x)
    assert torch.equal(train_loss(smooth, logits, y), F.cross_entropy(logits, y, label_smoothing=0.3))
    assert torch.equal(train_loss(plain, logits, y), F.cross_entropy(logits, y))
    assert torch.equal(plain.attack(x, y, steps=3), smooth.attack(x, y, steps=3))  # attacks keep plain CE


def test_config_checks_the_new_fields():
    for bad in ({"label_smoothing": 1.0}, {"average": "mean"}, {"keep": "first"}, {"ema_decay": 1.0},
                {"val_size": 0}, {"time_budget": "ten minutes"}, {"time_budget": 0}):
        with pytest.raises(ConfigError):
            TrainConfig.from_dict(bad)
    assert TrainConfig.from_dict({"time_budget": "10m"}).time_budget == 600
    assert TrainConfig.from_dict({"time_budget": "1.5h"}).time_budget == 5400
    assert TrainConfig.from_dict({"time_budget": "90"}).time_budget == 90


# ----------------------------------------------------------------------------- the time budget
class FakeSetup:
    """What ``TimeBudget.fit`` uses of a Setup: the loop and ``refit``."""

    def __init__(self):
        self.loop, self.minibatches = LoopState(), 10 ** 6

    def refit(self, minibatches):
        self.minibatches = self.loop.planned_minibatches = minibatches


def test_time_budget_fits_the_length_to_the_measured_speed_twice():
    s, budget = FakeSetup(), TimeBudget(100.0)
    seconds = 0.0
    while s.loop.mb_done < s.minibatches:
        s.loop.mb_done += 1
        seconds += (2.0 if s.loop.mb_done <= 3 else 0.1 if s.loop.fits == 0 else 0.2)  # slow start, then slower
        if budget.due(s.loop):
            budget.fit(s, seconds)
            if s.loop.fits == 1:  # 12 timed minibatches at 0.1 s: the rest of the 100 s at that speed
                assert s.minibatches == FIRST_FIT + round((100 - seconds) / 0.1)
    assert s.loop.fits == 2
    assert seconds == pytest.approx(100.0, abs=0.3)  # ends on the budget at the speed measured second


def test_a_time_budget_run_records_its_fitted_length_and_a_resume_keeps_it(tmp_path):
    result = train_quick(tmp_path, "budget", time_budget=2.0, epochs=100)
    s = result.summary
    config = json.loads((result.run_dir / "config.json").read_text())
    assert s["time_budget"] == 2.0 and config["minibatches"] == s["minibatches"] < 100 * 29
    last = torch.load(sorted((result.run_dir / "checkpoints").glob("step-*.pt"))[-1], weights_only=True)
    assert last["loop"]["planned_minibatches"] == s["minibatches"] and last["loop"]["fits"] == 2


# ----------------------------------------------------------------------------- robustness collapse
def test_robustness_collapse_needs_near_zero_robust_and_rising_clean():
    class Check:
        def __init__(self, robust, clean):
            self.robust_acc, self.clean_acc = robust, clean

    cfg = TrainConfig(method="fgsm-rs", dataset="mnist")
    floor = COLLAPSE_FLOOR * 0.1
    assert robustness_collapse(cfg, 0.3, [Check(0.0, 0.95)], 0.6, 10).startswith("robustness collapsed")
    assert robustness_collapse(cfg, 0.3, [Check(0.0, 0.95)], 0.4, 10) is None  # too early to say
    assert robustness_collapse(cfg, 0.3, [Check(0.0, 0.95), Check(floor, 0.9)], 0.5, 10) is None  # averaged holds
    assert robustness_collapse(cfg, 0.3, [Check(0.0, 0.12)], 0.5, 10) is None  # not learning: another stop
    assert robustness_collapse(TrainConfig(method="standard"), 0.3, [Check(0.0, 0.95)], 0.5, 10) is None


def test_a_collapsed_run_says_so_and_is_not_trusted(tmp_path, capsys):
    """FGSM without a random start at eps 0.3 on the synthetic set: robust accuracy near 0 from the start."""
    result = train_quick(tmp_path, "collapse", method="fgsm", eps=0.3, epochs=3, lr_max=0.1)
    s = result.summary
    assert [e["event"] for e in s["events"]].count("robustness_collapse") == 1  # said once
    assert s["status"] == "robustness collapsed" and s["trusted"] is False
    assert "robustness collapsed" in capsys.readouterr().err
