"""The report's PNG figures (written atomically): accuracy, loss and schedule curves of every run."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fastadv.experiments.report.runs import Group, Run
from fastadv.experiments.report.table import ema
from fastadv.io import save_figure


def _colors(groups: list[Group], baseline: str | None) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"] if len(groups) <= 11 else matplotlib.colormaps["tab20"]
    others = [g.label for g in groups if g.label != baseline]
    colors = {lab: cmap(i % cmap.N) for i, lab in enumerate(others)}
    if baseline:
        colors[baseline] = (0.0, 0.0, 0.0, 1.0)
    return colors


def _style(label: str, baseline: str | None) -> dict:
    return {"lw": 3.0, "zorder": 5} if label == baseline else {"lw": 1.6, "zorder": 3}


def _check_desc(run: Run) -> str:
    c = run.config
    return (f"held-out check: {c.get('eval_size', '?')} test points, "
            f"PGD-{c.get('eval_attack_steps', '?')} at eps={float(c.get('eps', float('nan'))):.4g}")


def plot_accuracy(groups, baseline, x_key: str, xlabel: str, path: Path, smoothing: float) -> Path:
    import matplotlib.pyplot as plt

    colors = _colors(groups, baseline)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharex=True)
    for ax, key, title in ((axes[0], "clean_acc", "natural accuracy"), (axes[1], "adv_acc", "adversarial accuracy")):
        for g in groups:
            for i, r in enumerate(g.runs):
                x, y = r.curves[x_key], 100 * r.curves[key]
                ax.plot(x, y, color=colors[g.label], alpha=0.25, lw=0.8)  # raw
                ax.plot(x, ema(y, smoothing), color=colors[g.label], label=g.label if i == 0 else None,
                        **_style(g.label, baseline))
        ax.set_title(f"{title} (thin: raw, bold: EMA {smoothing:g})")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy %")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(_check_desc(groups[0].runs[0]), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def small_multiples(n: int, height: float, **kw):
    """A figure of ``n`` panels, at most 4 a row: (fig, axes as a 2-D array)."""
    import matplotlib.pyplot as plt

    cols = min(4, n)
    rows = math.ceil(n / cols)
    return plt.subplots(rows, cols, figsize=(3.6 * cols, height * rows), sharex=True, squeeze=False, **kw)


def save_small_multiples(fig, axes, used: int, ylabel: str, path: Path) -> Path:
    """Hide the unused panels, label the outer axes, write the PNG."""
    import matplotlib.pyplot as plt

    for ax in axes.flat[used:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("iterations")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def plot_versus_baseline(groups, baseline, path: Path, smoothing: float) -> Path | None:
    """One panel per config: its adversarial accuracy against the baseline's (the thesis' figure style)."""
    others = [g for g in groups if g.label != baseline]
    base = next((g for g in groups if g.label == baseline), None)
    if base is None or not others:
        return None
    colors = _colors(groups, baseline)
    fig, axes = small_multiples(len(others), 2.9, sharey=True)
    for ax, g in zip(axes.flat, others):
        for grp, kw in ((base, {"color": "black", "lw": 2.2}), (g, {"color": colors[g.label], "lw": 1.8})):
            for i, r in enumerate(grp.runs):
                y = 100 * r.curves["adv_acc"]
                ax.plot(r.curves["step"], y, color=kw["color"], alpha=0.2, lw=0.7)
                ax.plot(r.curves["step"], ema(y, smoothing), label=grp.label if i == 0 else None, **kw)
        ax.set_title(g.label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return save_small_multiples(fig, axes, len(others), "adversarial acc %", path)


def plot_losses(groups, baseline, path: Path, smoothing: float) -> Path:
    import matplotlib.pyplot as plt

    colors = _colors(groups, baseline)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), sharex=True)
    for ax, key, title in zip(axes, ("train_loss", "clean_loss", "adv_loss"),
                              ("training loss (on the Free-m perturbed batches)", "held-out clean loss",
                               "held-out adversarial loss")):
        for g in groups:
            for i, r in enumerate(g.runs):
                ax.plot(r.curves["step"], r.curves[key], color=colors[g.label], alpha=0.25, lw=0.8)
                ax.plot(r.curves["step"], ema(r.curves[key], smoothing), color=colors[g.label],
                        label=g.label if i == 0 else None, **_style(g.label, baseline))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def schedule_values(config: dict, points: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, lr, momentum) of a run, recomputed from its config.json (no training) by the very function the
    training loop makes them with (``schedules.for_config``: the momentum mirror follows the LR spec)."""
    from fastadv.core.schedules.build import for_config

    total = int(config["total_steps"])
    lr_fn, mom_fn = for_config(config, total)
    steps = np.unique(np.linspace(0, total, points).round().astype(int))
    return steps, np.array([lr_fn(int(s)) for s in steps]), np.array([mom_fn(int(s)) for s in steps])


def plot_schedules(groups, baseline, path: Path) -> Path:
    colors = _colors(groups, baseline)
    fig, axes = small_multiples(len(groups), 2.7)
    lr_top = max(float(g.runs[0].config["lr_max"]) for g in groups) * 1.08
    for ax, g in zip(axes.flat, groups):
        run = g.runs[0]
        steps, lr, mom = schedule_values(run.config)
        ax.plot(steps, lr, color=colors[g.label], lw=2)
        ax.plot(run.curves["step"], run.curves["lr"], "o", ms=2.5, color=colors[g.label], alpha=0.6)
        ax.set_ylim(0, lr_top)
        ax.set_title(g.label + (" (baseline)" if g.label == baseline else ""), fontsize=9)
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        twin.plot(steps, mom, color="tab:gray", lw=1.2, ls="--")
        twin.set_ylim(0.8, 1.0)
        twin.tick_params(labelsize=7, colors="tab:gray")
    fig.suptitle("LR (solid; dots: logged values) and momentum (dashed, right axis), from each run's config.json",
                 fontsize=9)
    return save_small_multiples(fig, axes, len(groups), "learning rate", path)
