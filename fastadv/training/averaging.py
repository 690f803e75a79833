"""Weight averaging and the choice of the weights a run keeps.

``Averager``: an average of the weights during training through ``torch.optim.swa_utils.AveragedModel``.
- ``ema``: exponential moving average of weights and BN buffers, updated after every minibatch with
  decay ``ema_decay`` per optimizer step (Free-m's m replays: decay ** m), warmed up as
  ``min(decay, (1 + n) / (10 + n))`` after n updates, so that a short run's average is not dominated
  by its random initial weights;
- ``swa``: the equal average of the weights from ``average_start`` on (Izmailov et al. 2018), BN
  statistics recomputed on training images before each use (``torch.optim.swa_utils.update_bn``).

``Selection``: which weights the run keeps, judged on the validation split only. ``keep = "last"``
takes the better of the raw and the averaged weights at the last check; ``keep = "best"`` the best
of both over every check (Rice et al. 2020's early stopping against robust overfitting). The
criterion is the validation robust accuracy, then the clean accuracy; on a tie the later check, and
the averaged weights over the raw ones.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from fastadv.config import TrainConfig
from fastadv.core import perf
from fastadv.data import to_float

EMA_WARMUP = 10  # decay warm-up: (1 + n) / (EMA_WARMUP + n)
BN_BATCHES = 20  # swa: minibatches of training images that recompute the BN statistics
BN_BATCH_SIZE = 256


def ema_decay(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th EMA update (0-based) after the warm-up."""
    return min(decay, (1.0 + updates) / (EMA_WARMUP + updates))


class Averager:
    """The run's averaged weights (an ``AveragedModel`` of the model that is saved and evaluated)."""

    def __init__(self, model: nn.Module, mode: str, *, decay: float, start_step: int, steps_per_update: int):
        self.mode, self.decay, self.start_step, self.steps_per_update = mode, decay, start_step, steps_per_update
        self.updates = 0  # a host count: no device read in the training loop
        ema = mode == "ema"
        self.model = AveragedModel(model, multi_avg_fn=self._ema if ema else None, use_buffers=ema)
        self.model.eval()
        self.bn_fresh = False  # swa: BN statistics recomputed since the last update

    @classmethod
    def for_config(cls, cfg: TrainConfig, model: nn.Module, total_steps: int, steps_per_minibatch: int
                   ) -> "Averager | None":
        if cfg.average == "none":
            return None
        return cls(model, cfg.average, decay=cfg.ema_decay, start_step=round(cfg.average_start * total_steps),
                   steps_per_update=steps_per_minibatch)

    @torch.no_grad()
    def _ema(self, averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        keep = ema_decay(self.decay, self.updates - 1) ** self.steps_per_update
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - keep)  # what get_ema_multi_avg_fn does, decay warmed up
        else:  # integer buffers (BN's num_batches_tracked): the current value
            for a, c in zip(averaged, current):
                a.copy_(c)

    @property
    def started(self) -> bool:
        return self.updates > 0

    def update(self, model: nn.Module, step: int) -> None:
        """After a minibatch that ended at optimizer step ``step``: fold the weights in once averaging has begun."""
        if step < self.start_step:
            return
        self.updates += 1
        self.model.update_parameters(model)
        self.bn_fresh = False

    def ready(self, x_train_u8: torch.Tensor, channels_last: bool) -> nn.Module:
        """The averaged model to evaluate (eval mode); swa first recomputes its BN statistics."""
        if self.mode == "swa" and not self.bn_fresh:
            n = min(len(x_train_u8), BN_BATCHES * BN_BATCH_SIZE)
            batches = [perf.prepare_batch(to_float(x_train_u8[i:i + BN_BATCH_SIZE]), channels_last)
                       for i in range(0, n, BN_BATCH_SIZE)]
            update_bn(batches, self.model)
            self.bn_fresh = True
        return self.model.eval()

    def weights(self) -> dict:
        """The averaged weights as the model's own state_dict (keys without AveragedModel's ``module.``)."""
        return self.model.module.state_dict()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates, "bn_fresh": self.bn_fresh}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates, self.bn_fresh = int(state["updates"]), bool(state["bn_fresh"])


class Selection:
    """The kept weights' candidate so far: which ("raw" or "average"), at which check, with what validation figures."""

    def __init__(self, keep: str):
        self.keep = keep
        self.best: dict | None = None  # {"which", "step", "val_clean_acc", "val_adv_acc", "weights" (CPU state_dict)}

    def offer(self, which: str, step: int, check, model: nn.Module) -> bool:
        """A validation check of some weights; True when they become the candidate. With keep = "last", every
        check of a newer step replaces the candidate, then the averaged weights compete with it."""
        score = (check.robust_acc, check.clean_acc)
        best = self.best
        newer = best is not None and step > best["step"]
        if best is not None and not (self.keep == "last" and newer) and score < (best["val_adv_acc"],
                                                                               best["val_clean_acc"]):
            return False
        self.best = {"which": which, "step": step, "val_clean_acc": check.clean_acc, "val_adv_acc": check.robust_acc,
                     "weights": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
        return True

    def record(self) -> dict | None:
        """What summary.json says of the kept weights (without the weights)."""
        if self.best is None:
            return None
        return {k: v for k, v in self.best.items() if k != "weights"} | {"keep": self.keep}

    def state_dict(self) -> dict:
        return {"keep": self.keep, "best": copy.copy(self.best)}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
