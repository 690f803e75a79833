"""Catastrophic-overfitting guard: the rule, the remedies, and a real collapse it catches."""
from __future__ import annotations

import csv
import json

import pytest

import fastadv
from fastadv.evaluation import EvalResult
from fastadv.trainer import REMEDIES, Guard, LoopState, checkpoint_due, make_guard
from fastadv.config import TrainConfig


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
    for method, on in (("fgsm-rs", True), ("free", True), ("pgd", False), ("standard", False)):
        assert (make_guard(TrainConfig(method=method)) is not None) is on
    assert make_guard(TrainConfig(method="pgd", co_guard=True)) is not None
    assert make_guard(TrainConfig(method="free", co_guard=False)) is None


def test_checkpoint_policy():
    assert checkpoint_due(10, 10, 0.0) and not checkpoint_due(10, 9, 1e6)  # every N steps
    assert checkpoint_due(0, 1, 240.0) and not checkpoint_due(0, 10**6, 239.0)  # 0: by the clock, 4 minutes
