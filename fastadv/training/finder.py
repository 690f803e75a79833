"""LR range test and weight-decay finder (thesis sections 4.2.1 and 4.2.3).

The range test trains from the current weights while the LR grows exponentially, one LR per
minibatch, from ``start_lr`` to ``end_lr`` (default 1e-5 -> 10, six orders of magnitude), under
the chosen training method's own step function (``fastadv.core.methods``): for FGSM-RS, PGD and
Free-m the recorded loss is the loss on the perturbed inputs the method trains on, not the clean
loss. The loss is smoothed by an exponential moving average with bias correction; the sweep stops
when the smoothed loss exceeds ``diverge`` (4) times its minimum or a loss is not finite. The
model and optimizer are restored afterwards, so the test can run in one's own loop.

Suggestions: (a) the thesis' rule, one order of magnitude below the LR at the smoothed-loss
minimum (``suggestion``); (b) the steepest descent of the smoothed loss against log10(LR)
before that minimum (``steepest_lr``).

The weight-decay finder repeats the test (same initial weights, same data order) for several
weight decays and picks the one whose suggestion is highest: the decay that lets training use
the highest maximum LR. ``fastadv find-lr`` / ``fastadv find-wd`` are the command-line faces.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable

import torch

from fastadv.config import ConfigError, TrainConfig
from fastadv.core.schedules import interp
from fastadv.io import save_figure
from fastadv.stats import smooth

DEFAULT_WEIGHT_DECAYS = (1e-3, 5e-4, 2e-4, 1e-4, 0.0)


@dataclass
class RangeTest:
    """One LR range test: the LRs tried (one per minibatch), raw and smoothed losses, suggestions."""

    lrs: list[float]
    losses: list[float]  # mean training loss of each minibatch (adversarial for adversarial methods)
    smoothed: list[float]  # bias-corrected EMA of ``losses``
    min_lr: float  # LR at the smoothed-loss minimum
    suggestion: float  # thesis' rule: min_lr / 10
    steepest_lr: float  # LR of the steepest descent of the smoothed loss (vs log10 LR) before the minimum
    stop_reason: str
    seconds: float
    settings: dict = field(default_factory=dict)  # start_lr, end_lr, num_steps, beta, diverge, method ...

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """The figures without the curves (for config.json and one-line reports)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("lrs", "losses", "smoothed")} | {
            "steps": len(self.lrs), "min_smoothed_loss": min(self.smoothed) if self.smoothed else math.nan}

    def plot(self, path: str, title: str = "LR range test") -> None:
        """Loss against LR (log x axis): raw, smoothed, and both suggestions marked."""
        plot_range_tests({"": self}, path, title)


# ----------------------------------------------------------------------------- pure pieces
def exponential_lrs(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """``num_steps`` LRs growing geometrically from start_lr to end_lr (both included)."""
    if not (0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ConfigError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if num_steps < 2:
        raise ConfigError(f"num_steps must be >= 2, got {num_steps}")
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / (num_steps - 1)) for i in range(num_steps)]


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float, float]:
    """(LR at the smoothed minimum, that / 10, LR of the steepest descent before the minimum).

    The steepest point is the most negative finite difference of the smoothed loss against
    log10(LR) over the points up to the minimum (the minimum's own LR when there is only one point).
    """
    i_min = min(range(len(smoothed)), key=smoothed.__getitem__)
    slopes = [(smoothed[i + 1] - smoothed[i]) / (math.log10(lrs[i + 1]) - math.log10(lrs[i]))
              for i in range(i_min)]
    i_steep = min(range(len(slopes)), key=slopes.__getitem__) if slopes else i_min
    return lrs[i_min], lrs[i_min] / 10, lrs[i_steep]


# ----------------------------------------------------------------------------- the test
def check_sweep(method: str, beta: float, diverge: float) -> None:
    """One-line ConfigError for a bad range-test setting."""
    from fastadv.core.methods import METHODS

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r} (valid: {', '.join(sorted(METHODS))})")
    if not 0 <= beta < 1:
        raise ConfigError(f"beta must be in [0, 1), got {beta}")
    if diverge <= 1:
        raise ConfigError(f"diverge must be > 1, got {diverge}")


def lr_range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, method: str = "fgsm-rs",
                  eps: float = 0.3, alpha: float | None = None, replays: int = 8, attack_steps: int = 7,
                  noise: float = 2.0, label_smoothing: float = 0.0, method_args: dict | None = None,
                  start_lr: float = 1e-5, end_lr: float = 10.0, num_steps: int = 100, beta: float = 0.9,
                  diverge: float = 4.0, generator: torch.Generator | None = None, precision=None) -> RangeTest:
    """An LR range test with ``method``'s step function (thesis 4.2.1); the model and optimizer are restored after.

    Arguments:
        model, optimizer: any; momentum, weight decay and the rest are the optimizer's own settings.
        batches: (x, y) minibatches, x float in [0,1] on the model's device; one LR per minibatch (Free-m's
            ``replays`` optimizer steps all use that minibatch's LR); the test ends early if they run out.
        method (str): the training method whose loss is recorded (adversarial for adversarial methods).
        eps, alpha: the method's radius and step (alpha None = the method's default).
        replays, attack_steps, noise, label_smoothing, method_args: the method's settings, as for
            ``AdversarialStep`` (Free-m's m, PGD's K, N-FGSM's noise radius in eps, the training loss's
            smoothing, the method's own settings).
        start_lr, end_lr, num_steps: the exponential sweep. (Default: 1e-5 to 10 in 100 minibatches)
        beta (float): EMA factor of the smoothing. diverge (float): stop once smoothed loss > diverge x its minimum.

    Returns:
        ``RangeTest``: the LRs and losses, ``suggestion`` (the thesis' rule: the LR at the smoothed
        minimum / 10), ``steepest_lr``, why it stopped; ``.plot(path)`` draws it.

    Example::

        test = fastadv.lr_range_test(model, optimizer, batches, method="free", eps=8/255, replays=8)
    """
    from fastadv.core.methods import METHODS, StepContext
    from fastadv.core.precision import FP32

    check_sweep(method, beta, diverge)
    step_fn = METHODS[method]
    try:
        args = step_fn.resolve(method_args)
    except ValueError as exc:
        raise ConfigError(f"method_args {method_args!r} for {method}: {exc}") from None
    alpha = step_fn.default_alpha(eps, attack_steps) if alpha is None else alpha
    ctx = StepContext(model, optimizer, eps, alpha, replays, attack_steps, lambda _iteration: None, generator,
                      precision=precision or FP32, noise=noise, label_smoothing=label_smoothing, args=args)
    return sweep(ctx, method, batches, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, beta=beta,
                 diverge=diverge)


def sweep(ctx, method: str, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, start_lr: float,
          end_lr: float, num_steps: int, beta: float, diverge: float) -> RangeTest:
    """The range test of ``method``'s step on the step context ``ctx`` (a ``StepContext`` carrying every
    method setting: eps, alpha, replays, attack steps, noise, label smoothing, the method's own settings);
    only its LR setter is replaced, by the sweep's. ``ctx.model`` and ``ctx.optimizer`` are restored after."""
    from dataclasses import replace

    from fastadv.core.methods import METHODS

    check_sweep(method, beta, diverge)
    lrs = exponential_lrs(start_lr, end_lr, num_steps)
    step_fn = METHODS[method]
    model, optimizer = ctx.model, ctx.optimizer
    saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    current = {"lr": lrs[0]}

    def set_lr(_iteration: int) -> None:  # every optimizer step of a minibatch uses that minibatch's LR
        for group in optimizer.param_groups:
            group["lr"] = current["lr"]

    ctx = replace(ctx, set_hyperparams=set_lr)
    tried, losses, smoothed, reason = [], [], [], "end of the sweep"
    t0 = time.perf_counter()
    model.train()
    try:
        data = iter(batches)
        for lr in lrs:
            try:
                x, y = next(data)
            except StopIteration:
                reason = "ran out of batches"
                break
            current["lr"] = lr
            stats = step_fn.step(ctx, x, y)
            loss = float(stats.loss_sum) / stats.count  # one host sync per minibatch: the test must decide
            if not math.isfinite(loss):
                reason = f"loss not finite at lr={lr:.3g}"
                break
            tried.append(lr)
            losses.append(loss)
            smoothed = smooth(losses, beta)
            if smoothed[-1] > diverge * min(smoothed):
                reason = f"smoothed loss above {diverge:g}x its minimum at lr={lr:.3g}"
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        model.train(was_training)
    if not tried:
        raise ConfigError(f"LR range test got no finite loss (first lr {lrs[0]:.3g}): lower start_lr")
    min_lr, suggestion, steepest = suggest(tried, smoothed)
    settings = {"method": method, "eps": ctx.eps, "alpha": ctx.alpha, "replays": ctx.replays,
                "attack_steps": ctx.attack_steps, "noise": ctx.noise, "label_smoothing": ctx.label_smoothing,
                "method_args": dict(ctx.args), "start_lr": start_lr, "end_lr": end_lr, "num_steps": num_steps,
                "beta": beta, "diverge": diverge}
    return RangeTest(tried, losses, smoothed, min_lr, suggestion, steepest, reason,
                     time.perf_counter() - t0, settings)


# ----------------------------------------------------------------------------- from a config
def range_test_for_config(cfg: TrainConfig, data=None, *, model=None, start_lr: float = 1e-5, end_lr: float = 10.0,
                          num_steps: int = 100, beta: float = 0.9, diverge: float = 4.0) -> RangeTest:
    """The LR range test of a training config: its dataset, model (or one's own ``model``), method, eps,
    optimizer (momentum, weight decay), batch size, precision and seed, from a fresh model (``build``).
    The global RNG state is left as it was, so a run that calls this first draws the same numbers as
    one given the LR directly."""
    import copy

    from fastadv.core import perf
    from fastadv.training.setup import build, check_config

    check_config(cfg, model)
    exponential_lrs(start_lr, end_lr, num_steps)  # bad sweep settings fail before any work
    device = perf.resolve_device(cfg.device)
    fork = [torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork):
        s = build(cfg.replace(lr_max=start_lr, compile=False), data, copy.deepcopy(model) if model is not None else None)
        # the trainer's own step context (every method setting as training uses it), under the sweep's LRs
        result = sweep(s.ctx, cfg.method, s.stream, start_lr=start_lr, end_lr=end_lr, num_steps=num_steps,
                       beta=beta, diverge=diverge)
    result.settings.update({"dataset": cfg.dataset, "model": cfg.model, "optimizer": cfg.optimizer,
                            "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
                            "batch_size": cfg.batch_size, "seed": cfg.seed})
    return result


def auto_lr_max(cfg: TrainConfig, data=None, model=None, **finder_args) -> tuple[TrainConfig, dict]:
    """For ``lr_max = "auto"`` (None): run the range test and return (config with lr_max set to the
    thesis-rule suggestion, a record of the test for config.json)."""
    result = range_test_for_config(cfg, data, model=model, **finder_args)
    record = {"requested": "auto", "rule": "LR at the smoothed-loss minimum / 10 (thesis)",
              "lr_max": result.suggestion, **result.summary()}
    return cfg.replace(lr_max=result.suggestion), record


@dataclass
class WeightDecaySearch:
    """Range tests for several weight decays and the pick: the one with the highest suggestion."""

    tests: dict[float, RangeTest]
    best: float

    def summary(self) -> dict:
        return {"best_weight_decay": self.best, "suggested_lr_max": self.tests[self.best].suggestion,
                "tests": {str(wd): t.summary() for wd, t in self.tests.items()}}

    def plot(self, path: str) -> None:
        plot_range_tests({f"wd={wd:g}" + (" (best)" if wd == self.best else ""): t
                          for wd, t in self.tests.items()}, path, "weight-decay finder: LR range test per weight decay")


def find_weight_decay(cfg: TrainConfig, weight_decays=DEFAULT_WEIGHT_DECAYS, data=None,
                      **finder_args) -> WeightDecaySearch:
    """The weight-decay finder (thesis 4.2.3): one range test per weight decay, same seed (same initial weights
    and data order); the best allows the highest maximum LR (thesis rule), ties broken by the lower minimum.

    Arguments:
        cfg (TrainConfig): the training config the tests are run for.
        weight_decays (sequence of float): the candidates. (Default: 1e-3, 5e-4, 2e-4, 1e-4, 0)
        data (Dataset, optional): instead of loading ``cfg.dataset``.

    Returns:
        ``WeightDecaySearch``: every ``RangeTest`` and ``best``; ``.plot(path)`` draws them on one figure.
    """
    from fastadv.core.perf import resolve_device
    from fastadv.data import load_dataset

    if not weight_decays:
        raise ConfigError("give at least one weight decay")
    if any(wd < 0 or not math.isfinite(wd) for wd in weight_decays):
        raise ConfigError(f"weight decays must be >= 0, got {', '.join(map(str, weight_decays))}")
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, device=resolve_device(cfg.device))
    tests = {float(wd): range_test_for_config(cfg.replace(weight_decay=float(wd)), data, **finder_args)
             for wd in weight_decays}
    best = max(tests, key=lambda wd: (tests[wd].suggestion, -min(tests[wd].smoothed)))
    return WeightDecaySearch(tests, best)


# ----------------------------------------------------------------------------- plot
def plot_range_tests(tests: dict[str, RangeTest], path: str, title: str) -> None:
    """Smoothed (and, for a single test, raw) loss vs LR on a log axis; each test's suggestion (min/10,
    circle) and steepest point (triangle) marked on its curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    single = len(tests) == 1
    for i, (label, t) in enumerate(tests.items()):
        color = f"C{i}"
        if single:
            ax.plot(t.lrs, t.losses, color="0.6", lw=0.8, label="loss per minibatch")
        ax.plot(t.lrs, t.smoothed, color=color, lw=2, label=label or f"smoothed (EMA beta={t.settings['beta']})")
        for lr, marker, name in ((t.suggestion, "o", "min/10"), (t.steepest_lr, "^", "steepest")):
            y = interp(math.log10(lr), list(zip(map(math.log10, t.lrs), t.smoothed)))
            ax.plot([lr], [y], marker=marker, color=color, ms=9, ls="none",
                    label=f"{name}: {lr:.3g}" if single else None)
            if single:
                ax.axvline(lr, color=color, ls=":", lw=1)
    if not single:  # marker legend once
        ax.plot([], [], "ko", label="suggestion (min/10)")
        ax.plot([], [], "k^", label="steepest descent")
    first = next(iter(tests.values()))
    smoothed = [v for t in tests.values() for v in t.smoothed + (t.losses if single else [])]
    ax.set_ylim(min(smoothed) * 0.95, max(max(t.smoothed[0] for t in tests.values()) * 1.3, min(smoothed) * 2))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    what = "adversarial" if first.settings.get("method") not in (None, "standard") else "clean"
    ax.set_ylabel(f"training loss ({what}, {first.settings.get('method', '')})")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
