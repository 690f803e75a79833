"""Optimizers: sgd, adam, adamw and any torch.optim class as torch:NAME with its arguments; weight decay on weights
only; the schedules write LR and momentum or beta1; unknown names and rejected arguments fail in one line."""
from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

import fastadv
from fastadv.cli import main
from fastadv.config import ConfigError, TrainConfig
from fastadv.training import check_config
from fastadv.training.setup import build

BASE = {"preset": "none", "dataset": "synthetic", "model": "small-cnn", "method": "standard", "batch_size": 64,
        "iterations": 40, "lr_schedule": "constant", "val_size": 200, "progress": False}
# a learning rate that suits each (the first three: fastadv's names; the rest any torch.optim class)
OPTIMIZERS = [("sgd", 0.05), ("adam", 2e-3), ("adamw", 2e-3), ("torch:RAdam", 5e-3), ("torch:NAdam", 2e-3),
              ("torch:Adamax", 2e-3), ("torch:RMSprop", 5e-4), ("torch:Adagrad", 0.05), ("torch:SGD", 0.05)]


def fixed_batch_loss(s, x, y) -> float:
    with torch.no_grad():
        return F.cross_entropy(s.model.eval()(x), y).item()


@pytest.mark.parametrize("name, lr", OPTIMIZERS)
def test_each_optimizer_trains_and_lowers_the_loss(name, lr):
    s = build(TrainConfig.from_dict({**BASE, "optimizer": name, "lr_max": lr}))
    x, y = s.data.x_train[:256].float() / 255, s.data.y_train[:256]
    before = fixed_batch_loss(s, x, y)
    s.model.train()
    for _ in range(40):
        xb, yb = next(s.stream)
        s.method.step(s.ctx, xb, yb)
    after = fixed_batch_loss(s, x, y)
    assert after < 0.8 * before, (name, before, after)
    assert type(s.optimizer).__name__ == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}.get(name, name[6:])


@pytest.mark.parametrize("name", ["adamw", "torch:RAdam", "torch:RMSprop", "torch:Adagrad"])
def test_weight_decay_on_weights_only_and_the_schedules_write_lr_and_momentum_or_beta1(name):
    cfg = TrainConfig.from_dict({**BASE, "optimizer": name, "lr_max": 1e-3, "weight_decay": 5e-4,
                                 "lr_schedule": "one-cycle", "momentum_schedule": "constant" if name ==
                                 "torch:Adagrad" else "one-cycle"})
    s = build(cfg)
    decay, no_decay = s.optimizer.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in no_decay["params"])
    for _ in range(5):
        xb, yb = next(s.stream)
        s.method.step(s.ctx, xb, yb)
    step = s.ctx.iteration - 1  # the values the last step was taken with
    for group in s.optimizer.param_groups:
        assert group["lr"] == pytest.approx(s.lr_fn(step))
        if "betas" in group:
            assert group["betas"] == (pytest.approx(s.mom_fn(step)), 0.999)
        elif name == "torch:RMSprop":
            assert group["momentum"] == pytest.approx(s.mom_fn(step)) and s.mom_fn(step) != s.mom_fn(0)
        else:  # Adagrad has neither: nothing is written, nothing crashes
            assert "momentum" not in group and "betas" not in group


def test_optimizer_args_reach_the_constructor():
    s = build(TrainConfig.from_dict({**BASE, "optimizer": "adamw", "optimizer_args": "beta2=0.99, amsgrad=true",
                                     "momentum": 0.8, "lr_max": 1e-3}))
    group = s.optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.99) and group["amsgrad"] is True
    s = build(TrainConfig.from_dict({**BASE, "optimizer": "torch:RAdam", "lr_max": 1e-3,
                                     "optimizer_args": "eps=1e-6,decoupled_weight_decay=true"}))
    assert s.optimizer.param_groups[0]["eps"] == 1e-6 and s.optimizer.param_groups[0]["decoupled_weight_decay"]


def test_a_run_with_an_optimizer_without_momentum_writes_nan_for_it(tmp_path):
    result = fastadv.train({**BASE, "iterations": 0, "epochs": 1, "method": "fgsm-rs", "optimizer": "torch:Adagrad",
                            "lr_max": 0.05, "eval_size": 100, "final_limit": 128, "final_aa_points": 0,
                            "final_attack_steps": 3, "eval_attack_steps": 3, "stop_if_not_learning": False,
                            "out_dir": str(tmp_path)})
    with open(result.run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["momentum"] == "nan" and float(r["lr"]) > 0 for r in rows)
    assert result.summary["status"] == "completed"


@pytest.mark.parametrize("values, message", [
    ({"optimizer": "torch:Nope"}, r"unknown optimizer 'torch:Nope' \(valid: sgd, adam, adamw, or torch:NAME with "
                                  r"NAME one of .*RAdam.*\)"),
    ({"optimizer": "torch:Optimizer"}, "unknown optimizer 'torch:Optimizer'"),
    ({"optimizer": "lamb"}, r"optimizer must be one of sgd, adam, adamw or torch:NAME"),
    ({"optimizer": "torch:RAdam", "optimizer_args": "foo=1"}, r"optimizer torch:RAdam \(optimizer_args 'foo=1'\): "
                                                             r".*foo"),
    ({"optimizer": "adam", "optimizer_args": "eps=-1"}, "Invalid epsilon value"),
    ({"optimizer": "adamw", "optimizer_args": "lr=0.1"}, "lr is set by lr_max and lr_schedule"),
    ({"optimizer": "adamw", "optimizer_args": "betas=0.9"}, "betas is set by momentum and momentum_schedule"),
    ({"optimizer": "adamw", "optimizer_args": "weight_decay=0"}, r"weight_decay is set by weight_decay \(weights "
                                                                 r"only\)"),
    ({"optimizer": "sgd", "optimizer_args": "beta2=0.99"}, "beta2 is for optimizers with betas, and SGD has none"),
    ({"optimizer": "adam", "optimizer_args": "eps"}, "expected key=value"),
    ({"optimizer": "adam", "nesterov": True}, "nesterov = true is for sgd"),
    ({"optimizer": "torch:LBFGS"}, "LBFGS doesn't support per-parameter options"),
    ({"optimizer": "torch:SparseAdam"}, "cannot take fastadv's steps: .*dense"),
    ({"optimizer": "torch:Adagrad", "momentum_schedule": "one-cycle"}, "has neither momentum nor betas"),
])
def test_bad_optimizers_fail_in_one_line(values, message):
    with pytest.raises(ConfigError, match=message) as info:
        check_config(TrainConfig.from_dict({**BASE, "lr_max": 1e-3, **values}))
    assert "\n" not in str(info.value)


def test_the_cli_names_a_bad_optimizer_in_one_line_with_exit_2(capsys):
    assert main(["train", "--preset", "none", "--dataset", "synthetic", "--optimizer", "torch:Nope", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown optimizer 'torch:Nope'" in err[0]
    assert main(["train", "--preset", "none", "--dataset", "synthetic", "--optimizer", "torch:RAdam",
                 "--optimizer-args", "eps=1e-8,weight_decay=0", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weight_decay is set by weight_decay" in err[0]
    assert main(["train", "--preset", "none", "--dataset", "synthetic", "--optimizer", "torch:RAdam",
                 "--optimizer-args", "eps=1e-8", "--dry-run"]) == 0
