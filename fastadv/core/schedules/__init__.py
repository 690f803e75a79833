"""Learning-rate and momentum schedules: pure shapes of progress, one protocol, specs, torch interop.

    from fastadv.core import schedules
    lr = schedules.build("one-cycle-tf", total_steps, lr_max=0.15)       # step -> LR
    sched = schedules.as_lr_scheduler(optimizer, lr)                     # a torch LRScheduler

``fastadv schedule --list`` names every shape; docs/SCHEDULES.md draws them.
"""
from fastadv.core.schedules.adaptive import ADAPTIVE, PlateauSchedule
from fastadv.core.schedules.base import Schedule, ShapeSchedule, takes_total
from fastadv.core.schedules.build import MIRRORED, build, build_momentum, for_config
from fastadv.core.schedules.lr_scheduler import ScheduleLR, as_lr_scheduler
from fastadv.core.schedules.shapes import (
                                           DESCRIPTIONS,
                                           MOMENTUM_DESCRIPTIONS,
                                           MOMENTUM_SHAPES,
                                           SHAPES,
                                           interp,
                                           shape,
)
from fastadv.specs import parse_spec, parse_value

__all__ = ["ADAPTIVE", "DESCRIPTIONS", "MIRRORED", "MOMENTUM_DESCRIPTIONS", "MOMENTUM_SHAPES", "PlateauSchedule",
           "SHAPES", "Schedule", "ScheduleLR", "ShapeSchedule", "as_lr_scheduler", "build", "build_momentum",
           "for_config", "interp", "parse_spec", "parse_value", "shape", "takes_total"]
