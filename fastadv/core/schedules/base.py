"""The one protocol every schedule follows (as timm's schedulers do): a value per step, ``observe``, state.

``schedule(step) -> float`` is the value for an optimizer step; ``observe(step, metrics)`` hands it a
held-out check (a no-op for the pure shapes; ``PlateauSchedule`` adapts to it); ``state_dict()`` /
``load_state_dict()`` carry what a resume checkpoint must keep (nothing, for the pure shapes).
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

from fastadv.core.schedules.shapes import Shape


class Schedule:
    """Base of every schedule: the loop calls ``schedule(step)``, ``observe`` at held-out checks.

    Subclasses have a ``name`` (the spec's shape) and a ``total_steps`` (the run's optimizer steps).
    """

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def observe(self, step: int, metrics: dict) -> None:
        """A held-out check at ``step`` (``metrics``: clean_acc, adv_acc, clean_loss, adv_loss)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@functools.cache  # a signature costs tens of microseconds, and schedules are called at every step
def takes_total(fn: Shape) -> bool:
    """Whether a shape needs the run's total steps (the TF constructions that count steps, not progress)."""
    return "total_steps" in inspect.signature(fn).parameters


@dataclass(frozen=True)
class ShapeSchedule(Schedule):
    """A named pure shape with bound parameters, evaluated at integer steps of a run."""

    name: str
    fn: Shape
    params: dict
    total_steps: int

    def __call__(self, step: int) -> float:
        p = min(max(step / max(self.total_steps, 1), 0.0), 1.0)
        extra = {"total_steps": self.total_steps} if takes_total(self.fn) else {}
        return float(self.fn(p, **self.params, **extra))
