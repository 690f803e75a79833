"""Evaluation figures: robust accuracy against eps (written atomically)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from fastadv.io import save_figure


def plot_eps_curve(curve: Sequence[tuple[float, float]], path: str | Path, *, title: str, clean_acc: float | None = None,
                   eps_mark: float | None = None) -> Path:
    """Robust accuracy (%) against eps as a PNG; eps is shown as a fraction and in /255 units."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [e for e, _ in curve]
    acc = [100 * a for _, a in curve]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(eps, acc, marker="o", color="tab:blue", label="robust accuracy")
    for e, a in zip(eps, acc):
        ax.annotate(f"{a:.1f}", (e, a), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    if clean_acc is not None:
        ax.axhline(100 * clean_acc, color="tab:green", linestyle="--", linewidth=1,
                   label=f"clean {100 * clean_acc:.1f}%")
    if eps_mark is not None:
        k = eps_mark * 255  # name radii like 8/255 as such
        name = f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and eps_mark < 1 else f"{eps_mark:.4g}"
        ax.axvline(eps_mark, color="grey", linestyle=":", linewidth=1, label=f"eps = {name}")
    ax.set_xlabel("eps (L-inf, pixels in [0,1])")
    ax.set_ylabel("accuracy under attack (%)")
    ax.set_ylim(-3, 110)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    if eps and max(eps) <= 64 / 255:  # small radii read better in /255 units
        secondary = ax.secondary_xaxis("top", functions=(lambda e: e * 255, lambda v: v / 255))
        secondary.set_xlabel("eps x 255")
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path)
    plt.close(fig)
    return path
