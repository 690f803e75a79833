"""The report's numbers: smoothed curves, time to target, the table rows and their markdown."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastadv.experiments.report.runs import Group, ReportError
from fastadv.stats import smooth


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style debiased exponential moving average (weight in [0, 1); 0 = raw): the LR
    range test's smoothing (``fastadv.stats.smooth``) on an array."""
    return np.asarray(smooth([float(v) for v in values], weight))


def first_reaching(values: np.ndarray, target: float) -> int | None:
    """Index of the first value >= target, or None."""
    hits = np.flatnonzero(values >= target - 1e-12)
    return int(hits[0]) if len(hits) else None


def mean_std(values: np.ndarray, scale: float = 1.0, digits: int = 2) -> str:
    values = np.asarray(values, dtype=float) * scale
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


@dataclass
class Row:
    label: str
    seeds: int
    clean: str
    robust: str
    outside: str  # AA-lite: the worst case of PGD and APGD (pyautoattack), on its own points
    iterations: int
    grads: int
    seconds: str
    steps_to_target: str
    seconds_to_target: str
    speedup: str
    robust_mean: float
    raw_seconds_to_target: float | None


def target_curve(group: Group, smoothing: float) -> np.ndarray:
    """The curve time-to-target is read from: seed-mean held-out adversarial accuracy, EMA-smoothed."""
    return ema(group.mean_curve("adv_acc"), smoothing)


def table_rows(groups: list[Group], baseline: str | None, target: float | None,
               smoothing: float = 0.0) -> list[Row]:
    rows = []
    base_ttt = None
    ordered = sorted(groups, key=lambda g: g.label != baseline)  # baseline's time first, for speed-ups
    for g in ordered:
        adv, steps, secs = target_curve(g, smoothing), g.mean_curve("step"), g.mean_curve("seconds")
        hit = first_reaching(adv, target) if target is not None else None
        ttt_steps = f"{steps[hit]:.0f}" if hit is not None else ("not reached" if target is not None else "–")
        ttt_secs = float(secs[hit]) if hit is not None else None
        if g.label == baseline:
            base_ttt = ttt_secs
        speed = (f"{base_ttt / ttt_secs:.2f}×" if base_ttt and ttt_secs else "–")
        rows.append(Row(
            label=g.label, seeds=len(g.runs), clean=mean_std(g.final("clean_acc"), 100),
            robust=mean_std(g.final("robust_acc"), 100),
            outside=mean_std(g.outside(), 100) if g.outside() is not None else "–", iterations=int(round(g.final("steps").mean())),
            grads=int(round(g.final("grad_computations").mean())), seconds=mean_std(g.final("train_seconds"), 1, 0),
            steps_to_target=ttt_steps, seconds_to_target=f"{ttt_secs:.0f}" if ttt_secs is not None else "–",
            speedup=speed, robust_mean=float(g.final("robust_acc").mean()), raw_seconds_to_target=ttt_secs))
    order = {g.label: i for i, g in enumerate(groups)}
    return sorted(rows, key=lambda r: order[r.label])


def resolve_target(groups: list[Group], baseline: str | None, target: float | None,
                   smoothing: float = 0.0) -> float | None:
    """The given target, else the end of the baseline's target curve, else None."""
    if target is not None:
        if not 0 < target <= 1:
            raise ReportError(f"--target is a fraction in (0, 1], got {target}")
        return target
    if baseline is None:
        return None
    return float(target_curve(next(g for g in groups if g.label == baseline), smoothing)[-1])


TABLE_HEAD = ("config", "seeds", "clean acc %", "robust acc % (final PGD)", "AA-lite %", "iterations",
              "grad computations", "train s", "iterations to target", "s to target", "speed-up (s)")


def row_cells(r: Row) -> tuple:
    return (r.label, r.seeds, r.clean, r.robust, r.outside, r.iterations, r.grads, r.seconds, r.steps_to_target,
            r.seconds_to_target, r.speedup)


def markdown_table(rows: list[Row], baseline: str | None) -> str:
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    for r in rows:
        cells = [str(c) for c in row_cells(r)]
        if r.label == baseline:
            cells[0] = f"**{cells[0]}** (baseline)"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures
