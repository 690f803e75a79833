"""The loop's own state in one object: counters, the guard's memory and remedies, the running sums.

Like AutoAttack's ``EvaluationState``: plain values (and one small device tensor, the running loss
and accuracy sums) with ``state_dict`` / ``load_state_dict``, saved in every resume checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch


@dataclass
class LoopState:
    """Counters, remedies and guard memory of a training run."""

    mb_done: int = 0  # minibatches trained
    passes: int = 0  # forward-backward computations
    train_seconds: float = 0.0  # training time; held-out checks and checkpoints excluded
    checkpoint_seconds: float = 0.0  # time spent writing checkpoints
    check_seconds: float = 0.0  # time spent in validation checks (raw and averaged weights)
    next_eval: int = 0  # optimizer step of the next held-out check
    rows: int = 0  # metrics.csv rows written
    count: int = 0  # training examples seen since the last metrics row (a host int: no tensor per step)
    lr_scale: float = 1.0  # product of the guard's lr remedies
    alpha_scale: float = 1.0  # product of the guard's alpha remedies
    stopped: bool = False  # the guard's stop remedy ended training early
    planned_minibatches: int = 0  # the time budget's fit (0: as the config says); a resume keeps it
    fits: int = 0  # time-budget fits done
    budget_mark: list = field(default_factory=list)  # [minibatches, seconds] at the last fit
    collapsed: str | None = None  # the robustness-collapse warning at the last check (None: robust accuracy holds)
    collapse_warned: bool = False  # the warning was given (once a run)
    good: dict | None = None  # guard: the best check so far {step, clean_acc, adv_acc, checkpoint}
    events: list = field(default_factory=list)  # guard events, for summary.json
    sums: torch.Tensor | None = None  # loss sum, correct since the last row (float64, on the device)

    def start(self, device: torch.device) -> "LoopState":
        if self.sums is None:
            self.sums = torch.zeros(2, dtype=torch.float64, device=device)
        return self

    def add(self, stats, passes: int) -> None:
        """One minibatch's statistics: device sums stay on the device, counts are host ints."""
        self.sums[0] += stats.loss_sum
        self.sums[1] += stats.correct
        self.count += stats.count
        self.passes += passes
        self.mb_done += 1

    def reset_sums(self) -> None:
        self.sums.zero_()
        self.count = 0

    def state_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sums"}
        return {**out, "events": list(self.events), "sums": self.sums}

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            if f.name == "sums":
                self.sums.copy_(state["sums"])
            elif f.name in state:  # a field newer than the checkpoint keeps its default
                setattr(self, f.name, state[f.name])


__all__ = ["LoopState"]
