"""Any fastadv schedule as a ``torch.optim.lr_scheduler.LRScheduler``, for one's own training loop."""
from __future__ import annotations

import torch

from fastadv.core.schedules.base import Schedule


class ScheduleLR(torch.optim.lr_scheduler.LRScheduler):
    """A ``Schedule`` as a PyTorch LR scheduler: after the n-th ``.step()`` every param group's LR is
    ``schedule(n)`` (absolute values; the groups' initial LRs are ignored). Call ``.step()`` after
    each ``optimizer.step()``, as with any PyTorch scheduler; steps past the schedule's total hold
    its end value.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule, last_epoch: int = -1):
        self.schedule = schedule
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [self.schedule(self.last_epoch)] * len(self.optimizer.param_groups)


def as_lr_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule) -> ScheduleLR:
    """Wrap ``schedule`` (from ``build``) as a ``torch.optim.lr_scheduler.LRScheduler`` on ``optimizer``."""
    return ScheduleLR(optimizer, schedule)
