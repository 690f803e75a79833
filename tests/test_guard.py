"""Catastrophic-overfitting guard: the rule, the remedies, and a real collapse it catches."""
from __future__ import annotations

import csv
import json

import pytest

import fastadv
from fastadv.cli import main
from fastadv.config import TrainConfig
from fastadv.evaluation import EvalResult
from fastadv.training.checkpoint import checkpoint_due
from fastadv.training.guard import REMEDIES, Guard, make_guard
from fastadv.training.state import LoopState


def check(clean: float, robust: float) -> EvalResult:
    return EvalResult(clean, robust, 0.0, 0.0, 1000, "PGD-10")


GOOD = {"step": 100, "clean_acc": 0.90, "adv_acc": 0.60, "checkpoint": "step-000000100.pt"}


@pytest.mark.parametrize("clean,robust,collapsed", [
    (0.93, 0.05, True),  # robust falls 0.55 while clean rises: catastrophic overfitting
    (0.89, 0.30, True),  # clean within the noise of 1,000 points (2 points) counts as holding
    (0.93, 0.45, False),  # a fall of 0.15 < co_drop 0.2
    (0.40, 0.05, False),  # both collapse: divergence or a bad LR, not overfitting to the attack
    (0.95, 0.70, False),  # better on both
])
def test_collapse_rule(clean, robust, collapsed):
    assert Guard(drop=0.2, remedy="stop", factor=0.5).collapsed(GOOD, check(clean, robust)) is collapsed


def test_first_check_has_nothing_to_compare_with():
    assert not Guard(0.2, "stop", 0.5).collapsed(None, check(0.99, 0.0))


def test_remedies_compound_and_stop():
    loop = LoopState()
    REMEDIES["alpha"](loop, 0.5)
    REMEDIES["alpha"](loop, 0.5)
    REMEDIES["lr"](loop, 0.1)
    assert (loop.alpha_scale, loop.lr_scale, loop.stopped) == (0.25, pytest.approx(0.1), False)
    REMEDIES["stop"](loop, 0.5)
    assert loop.stopped


def test_guard_on_by_default_only_for_single_step_methods():
    for method, on in (("fgsm", True), ("fgsm-rs", True), ("n-fgsm", True), ("free", True), ("pgd", False), ("standard", False)):
        assert (make_guard(TrainConfig(method=method)) is not None) is on
    assert make_guard(TrainConfig(method="pgd", co_guard=True)) is not None
    assert make_guard(TrainConfig(method="free", co_guard=False)) is None


def test_checkpoint_policy():
    assert checkpoint_due(10, 10, 0.0) and not checkpoint_due(10, 9, 1e6)  # every N steps
    assert checkpoint_due(0, 1, 240.0) and not checkpoint_due(0, 10**6, 239.0)  # 0: by the clock, 4 minutes


QUICK = {"dataset": "synthetic", "model": "small-cnn", "method": "fgsm-rs", "epochs": 2, "batch_size": 64,
         "eval_every": 8, "eval_size": 128, "eval_attack_steps": 3, "final_attack_steps": 3, "final_limit": 128,
         "progress": False, "lr_max": 0.05, "seed": 2}


def test_a_trip_restores_the_last_good_weights_and_is_recorded(tmp_path, capsys):
    """co_drop=1e-6 makes the guard trip on the first held-out check that is worse at all.

    Not catastrophic overfitting: the point is the mechanics on a real run. With the stop
    remedy the final weights must be exactly those of the last good check's checkpoint.
    """
    import torch

    result = fastadv.train({**QUICK, "co_drop": 1e-6, "co_remedy": "stop", "out_dir": str(tmp_path)})
    summary, run = result.summary, result.run_dir
    events = summary["events"]
    assert summary["status"] == "stopped by the overfitting guard" and len(events) == 1
    event = events[0]
    assert event["event"] == "catastrophic_overfitting" and event["adv_acc"] < event["good_adv_acc"]
    assert event["clean_acc"] >= event["good_clean_acc"] - 0.02
    assert summary["steps"] == event["step"] < 64  # stopped early
    good = torch.load(run / "checkpoints" / f"step-{event['good_step']:09d}.pt", weights_only=True)["model"]
    final = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(good[k], final[k]) for k in final)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    flagged = [r for r in rows if r["event"]]
    assert len(flagged) == 1 and flagged[0]["step"] == str(event["step"])
    assert f"restored step {event['good_step']}" in flagged[0]["event"]
    assert "catastrophic overfitting at step" in capsys.readouterr().err  # warned above the progress bar


def test_alpha_remedy_goes_on_with_smaller_steps(tmp_path):
    result = fastadv.train({**QUICK, "co_drop": 1e-6, "co_remedy": "alpha", "out_dir": str(tmp_path)})
    events = result.summary["events"]
    minibatches = 2 * -(-result.summary["train_size"] // 64)  # 2 epochs: the run goes on to its end
    assert events and result.summary["status"] == "completed" and result.summary["steps"] == minibatches
    assert [e["action"] for e in events][:2] == ["alpha now x0.5", "alpha now x0.25"][:len(events[:2])]
    loop = json.loads((result.run_dir / "summary.json").read_text())
    assert loop["co_guard"] is True


def test_guard_keeps_the_best_check_not_the_last():
    """A collapse spread over several checks (each fall < co_drop) still trips against the best one."""
    guard, loop = Guard(drop=0.1, remedy="stop", factor=0.5), LoopState()
    for robust in (0.26, 0.20):  # 0.20 is no new best: the best stays 0.26
        assert not guard.collapsed(loop.good, check(0.90, robust))
        if loop.good is None or robust >= loop.good["adv_acc"]:
            loop.good = {"step": 0, "clean_acc": 0.90, "adv_acc": robust, "checkpoint": "x"}
    assert guard.collapsed(loop.good, check(0.95, 0.15))  # 0.26 - 0.15 > 0.1, though 0.20 - 0.15 is not


# FGSM from x (no random start), alpha = eps = 0.2, on 10,000 MNIST images: held-out PGD-10 accuracy rises
# to 0.26 at step 120 and then collapses (0.14 at step 160, 0.08 at 300) while clean accuracy climbs to 0.95.
# Measured: unguarded final PGD-20 4.4% (1,000 points); guarded with the stop remedy 18.4%, alpha remedy 14.6%.
COLLAPSE = {"dataset": "mnist", "method": "fgsm", "eps": 0.2, "alpha": 0.2, "epochs": 3, "train_limit": 10000,
            "optimizer": "adam", "lr_max": 0.005, "weight_decay": 0, "batch_size": 100, "eval_every": 20,
            "eval_size": 500, "final_limit": 1000, "final_aa_points": 0, "progress": False, "co_drop": 0.1,
            "co_remedy": "stop", "lr_schedule": "one-cycle:peak=0.2,end_cycle=1,div=1e9",
            "precision": "fp32"}  # measured in fp32


def test_guard_catches_a_real_catastrophic_overfitting(mnist, tmp_path):
    off = fastadv.train({**COLLAPSE, "co_guard": False, "out_dir": str(tmp_path), "name": "off"}, data=mnist)
    with open(off.run_dir / "metrics.csv") as f:
        adv = [float(r["adv_acc"]) for r in csv.DictReader(f)]
    assert max(adv) - adv[-1] > 0.1, adv  # the unguarded run really collapses: a peak, then a fall
    on = fastadv.train({**COLLAPSE, "co_guard": True, "out_dir": str(tmp_path), "name": "on"}, data=mnist)
    events = on.summary["events"]
    assert events and events[0]["event"] == "catastrophic_overfitting"
    assert on.summary["status"] == "stopped by the overfitting guard"
    assert on.summary["robust_acc"] > off.summary["robust_acc"] + 0.08, (on.summary, off.summary)


# ----------------------------------------------------------------------------- not learning
# The old defaults (Free-8, SGD, eps 0.3) on a third of MNIST. At LR 0.1, the measured case, such a short run
# collapses to chance in some seeds and recovers in others; at 0.3 it is at chance by 30-40% of the budget in
# every seed tried (0, 1, 2), so the test does not depend on the seed or the thread count.
DEAD = {"dataset": "mnist", "preset": "none", "epochs": 1, "train_limit": 20000, "lr_max": 0.3, "eval_size": 500,
        "final_limit": 500, "final_aa_points": 0, "progress": False}


def test_a_run_stuck_at_chance_stops_early_with_one_line_and_keeps_its_checkpoint(mnist, tmp_path, capsys):
    """The measured dead case: `fastadv train --dataset mnist` with the old defaults (Free-8, SGD, LR 0.1 at
    eps 0.3) trained 478 s to 11.35% clean. At a small budget it must stop after a quarter of it."""
    from fastadv.training.checkpoint import CHECKPOINT_DIR, list_checkpoints
    from fastadv.training.guard import NotLearning

    with pytest.raises(NotLearning, match="not learning: validation clean accuracy"):
        fastadv.train({**DEAD, "out_dir": str(tmp_path), "name": "dead"}, data=mnist)
    run = tmp_path / "dead"
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert summary["status"] == "not learning" and summary["clean_acc"] is None
    assert 0.25 * config["total_steps"] <= summary["steps"] < 0.6 * config["total_steps"]
    newest = list_checkpoints(run / CHECKPOINT_DIR)[0]
    assert summary["last_checkpoint"] == newest.name == f"step-{summary['steps']:09d}.pt"
    assert "lr_max too high" in summary["message"] and "Free-m at MNIST's eps 0.3" in summary["message"]
    code = main(["train", *[f"--{k.replace('_', '-')}={v}" for k, v in DEAD.items() if k != "progress"],
                 "--no-progress", "--out-dir", str(tmp_path), "--name", "dead-cli"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("fastadv train: stopped: not learning")
    on = fastadv.train({**DEAD, "epochs": 0.3, "stop_if_not_learning": False, "out_dir": str(tmp_path), "name": "on"},
                       data=mnist)
    assert on.summary["status"] in ("completed", "robustness collapsed")  # the flag turns the stop off
    assert on.summary["steps"] == json.loads((on.run_dir / "config.json").read_text())["total_steps"]
