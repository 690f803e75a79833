"""Guards of a running training: the catastrophic-overfitting guard and the not-learning stop.

The catastrophic-overfitting guard (single-step methods) watches the held-out PGD check: when robust
accuracy falls more than ``co_drop`` below its best while clean accuracy holds, it restores the best
weights and applies a remedy. The not-learning stop ends a run whose held-out clean accuracy is still
within ``NOT_LEARNING_MARGIN`` of chance after ``NOT_LEARNING_AT`` of its budget: hours of a dead run,
silently, are worse than a one-line stop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastadv import presets
from fastadv.config import TrainConfig
from fastadv.core.methods import METHODS, StepContext
from fastadv.training.checkpoint import (
    CHECKPOINT_DIR,
    checkpoint_name,
    read_checkpoint,
    restore_weights,
)
from fastadv.training.state import LoopState

CLEAN_SLACK = 0.02  # guard: clean accuracy counts as "not falling" within 2 points (noise of 1,000 points)
NOT_LEARNING_AT = 0.25  # fraction of the budget after which a run must be above chance
NOT_LEARNING_MARGIN = 0.05  # within this of chance (1 / classes) counts as not learning
NOT_LEARNING_MIN_STEPS = 200  # and only once this many optimizer steps have run (short test runs may sit at chance)
COLLAPSE_AT = 0.5  # fraction of the budget after which robust accuracy near zero counts as a collapse
COLLAPSE_FLOOR = 0.25  # "near zero": validation robust accuracy below this fraction of chance (2.5% for 10 classes)


class NotLearning(RuntimeError):
    """The run stayed at chance; it stopped (summary.json: status "not learning", checkpoint kept)."""


@dataclass(frozen=True)
class Guard:
    """Held-out PGD accuracy falls by more than ``drop`` below the best check so far while clean accuracy holds.

    Measured against the best check, not the previous one, so a collapse spread over several
    checks (0.28 -> 0.16 -> 0.10 -> 0.06 on MNIST with FGSM training) still trips it.
    """

    drop: float  # absolute fall of robust accuracy (fraction) that counts as a collapse
    remedy: str  # key of REMEDIES
    factor: float  # multiplier for the alpha and lr remedies

    def collapsed(self, good: dict | None, check) -> bool:
        return (good is not None and check.robust_acc < good["adv_acc"] - self.drop
                and check.clean_acc >= good["clean_acc"] - CLEAN_SLACK)


def remedy_stop(loop: LoopState, factor: float) -> str:
    loop.stopped = True
    return "training stopped"


def remedy_alpha(loop: LoopState, factor: float) -> str:
    loop.alpha_scale *= factor
    return f"alpha now x{loop.alpha_scale:g}"


def remedy_lr(loop: LoopState, factor: float) -> str:
    loop.lr_scale *= factor
    return f"lr now x{loop.lr_scale:g}"


REMEDIES = {"stop": remedy_stop, "alpha": remedy_alpha, "lr": remedy_lr}


def make_guard(cfg: TrainConfig) -> Guard | None:
    """The guard of a run: on by default for single-step methods (a method's ``single_step``), or as co_guard says."""
    on = METHODS[cfg.method].single_step if cfg.co_guard is None else cfg.co_guard
    return Guard(cfg.co_drop, cfg.co_remedy, cfg.co_factor) if on else None


def guard_check(guard: Guard, loop: LoopState, check, ctx: StepContext, run_dir: Path, warn) -> str:
    """Judge a held-out check: remember it if it is the best so far, or restore the best weights and apply the remedy.

    Returns the metrics.csv event text ("" when nothing happened).
    """
    if not guard.collapsed(loop.good, check):
        if loop.good is None or check.robust_acc >= loop.good["adv_acc"]:
            loop.good = {"step": ctx.iteration, "clean_acc": check.clean_acc, "adv_acc": check.robust_acc,
                         "checkpoint": checkpoint_name(ctx.iteration)}  # written right after this check
        return ""
    good = loop.good
    restore_weights(read_checkpoint(run_dir / CHECKPOINT_DIR / good["checkpoint"]), ctx, good["checkpoint"])
    action = REMEDIES[guard.remedy](loop, guard.factor)
    loop.events.append({"event": "catastrophic_overfitting", "step": ctx.iteration, "clean_acc": check.clean_acc,
                        "adv_acc": check.robust_acc, "good_step": good["step"], "good_clean_acc": good["clean_acc"],
                        "good_adv_acc": good["adv_acc"], "remedy": guard.remedy, "action": action})
    warn(f"catastrophic overfitting at step {ctx.iteration}: held-out PGD accuracy {check.robust_acc:.3f} "
         f"(step {good['step']}: {good['adv_acc']:.3f}), clean {check.clean_acc:.3f}; "
         f"restored step {good['step']}, {action}")
    return f"catastrophic overfitting: restored step {good['step']}, {action}"


def not_learning(cfg: TrainConfig, check, progress: float, steps: int, num_classes: int) -> str | None:
    """The one-line reason to stop when a held-out check after NOT_LEARNING_AT of the budget (and at least
    NOT_LEARNING_MIN_STEPS optimizer steps) is at chance, else None."""
    chance = 1.0 / max(num_classes, 1)
    if (not cfg.stop_if_not_learning or progress < NOT_LEARNING_AT or steps < NOT_LEARNING_MIN_STEPS
            or check.clean_acc > chance + NOT_LEARNING_MARGIN):
        return None
    return (f"not learning: validation clean accuracy {check.clean_acc:.3f} is at chance ({chance:.2f}) after "
            f"{progress:.0%} of the budget; likely causes: lr_max too high for the method and optimizer "
            f"(now {cfg.lr_max:g} with {cfg.optimizer}), eps too large for the data, or Free-m at MNIST's eps 0.3 "
            f"(try the preset: fastadv train --dataset {cfg.dataset}); --no-stop-if-not-learning runs on")


def robustness_collapse(cfg: TrainConfig, eps: float, checks: list, progress: float, num_classes: int) -> str | None:
    """The one-line warning when robustness has collapsed, else None: after COLLAPSE_AT of the budget, an
    adversarial run whose validation robust accuracy is near zero (below COLLAPSE_FLOOR x chance, for the raw
    and the averaged weights alike) while its clean accuracy is clearly above chance. A collapse from the
    first checks on never trips the guard (robust accuracy never rose to fall from), so this says it."""
    chance = 1.0 / max(num_classes, 1)
    if cfg.method == "standard" or eps <= 0 or progress < COLLAPSE_AT:
        return None
    best = max(checks, key=lambda c: c.robust_acc)
    if best.robust_acc >= COLLAPSE_FLOOR * chance or best.clean_acc <= chance + NOT_LEARNING_MARGIN:
        return None
    preset = (f", or the dataset's preset (fastadv train --dataset {cfg.dataset})"
              if presets.preset_for(cfg.dataset, "cpu") else "")
    return (f"robustness collapsed: validation robust accuracy {best.robust_acc:.3f} (PGD at eps {eps:.4g}) with clean "
            f"accuracy {best.clean_acc:.3f} after {progress:.0%} of the budget: catastrophic overfitting from the "
            f"start; try a smaller alpha, an eps warm-up (eps_warmup), a multi-step method{preset}")
