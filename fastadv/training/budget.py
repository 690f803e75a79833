"""A time budget instead of epochs: the run's length fitted to the speed measured in its first minibatches.

``time_budget`` (seconds of training; held-out checks and checkpoints are not counted, as for
``train_seconds``) is turned into a number of minibatches twice early on: after ``FIRST_FIT``
minibatches (the first ``WARMUP`` not counted: allocation, autotuning, compilation) and again at
``SECOND_FIT`` of the fitted length, from the minibatches in between. The schedules are functions of
progress, so they stretch over the new length; the count is saved in every checkpoint and a resumed
run keeps it, so it ends at the very step an unbroken run would.
"""
from __future__ import annotations

import torch

from fastadv.core import distributed
from fastadv.training.state import LoopState

WARMUP = 3  # minibatches not timed by the first fit
FIRST_FIT = 15  # minibatches done at the first fit
SECOND_FIT = 0.05  # fraction of the fitted run at the second fit
FITS = 2


class TimeBudget:
    """``due(loop)`` says when a fit is due; ``fit(s, seconds)`` sets the run's minibatches from the speed."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.warm: tuple[int, float] | None = None  # (minibatches, seconds) after WARMUP, this process only

    def due(self, loop: LoopState) -> bool:
        if loop.fits >= FITS:
            return False
        if loop.fits == 0:
            return loop.mb_done in (WARMUP, FIRST_FIT)
        return loop.mb_done >= max(FIRST_FIT + 10, round(SECOND_FIT * loop.planned_minibatches))

    def fit(self, s, seconds: float) -> None:
        """At a due point: ``seconds`` of training so far; refits ``s`` (a ``Setup``) to end on the budget."""
        loop = s.loop
        if loop.fits == 0 and loop.mb_done == WARMUP:
            self.warm = (loop.mb_done, seconds)
            return
        start = (loop.budget_mark or None) if loop.fits else self.warm
        mb0, t0 = start if start is not None else (0, 0.0)
        per_mb = (seconds - t0) / max(loop.mb_done - mb0, 1)
        if distributed.active():  # every process takes the same length: the mean speed
            per_mb = float(distributed.all_reduce_sum(torch.tensor([per_mb], dtype=torch.float64,
                                                                   device=distributed.comm_device()))[0])
            per_mb /= distributed.world_size()
        left = max(self.seconds - seconds, 0.0)
        loop.fits += 1
        loop.budget_mark = [loop.mb_done, seconds]
        s.refit(loop.mb_done + max(round(left / max(per_mb, 1e-9)), 0))
