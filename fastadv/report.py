"""Reports from run directories: curves, schedule shapes and a summary table. Never retrains.

``write_report(paths, out_dir)`` reads every run directory under ``paths`` (a directory holding
``metrics.csv``; runs without ``summary.json`` are unfinished and left out), groups the seeds of
one config (run names equal apart from the ``_s<seed>`` suffix), and writes:

- ``accuracy_vs_iterations.png`` / ``accuracy_vs_seconds.png``: natural and adversarial accuracy of
  the periodic held-out check for every run, raw (thin) and EMA-smoothed (bold), baseline in black;
- ``versus_baseline.png``: one small panel per config, its adversarial accuracy against the baseline's;
- ``loss_vs_iterations.png``: train, clean and adversarial loss;
- ``schedules.png``: LR and momentum of each config in small multiples, recomputed from
  ``config.json`` with ``fastadv.schedules.build`` (the logged values are drawn on top as dots);
- ``report.md`` and a self-contained ``report.html`` (PNGs embedded as data URIs) with the table:
  final clean and robust accuracy (mean ± std over seeds), iterations, gradient computations,
  training time, time-to-target and speed-up against the baseline.

Time-to-target: the first held-out check at which a config's adversarial accuracy curve (seed mean,
EMA-smoothed with the report's smoothing weight) reaches the target: the baseline's final value of
that same curve (the same check on the same points), unless a target is given. Smoothing, because a
single check on a few hundred points is noisy enough that a raw curve can touch the target by chance
long before it holds it; the EMA's lag is the same number of checks, so the same number of
iterations, for every config with the same ``eval_every``.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastadv.errors import UserError, first_line
from fastadv.experiment import strip_seed

CURVE_FIELDS = ("step", "seconds", "lr", "momentum", "train_loss", "train_acc", "clean_loss", "clean_acc",
                "adv_loss", "adv_acc", "grad_computations")


class ReportError(UserError, ValueError):
    """No usable runs, a bad baseline name or target; one line for the user."""


@dataclass
class Run:
    """One run directory: its config, summary and held-out curves (1-D float arrays, one entry per check)."""

    path: Path
    name: str
    config: dict
    summary: dict
    curves: dict[str, np.ndarray]

    @property
    def label(self) -> str:
        return strip_seed(self.name)


@dataclass
class Group:
    """The seeds of one config."""

    label: str
    runs: list[Run] = field(default_factory=list)

    def final(self, key: str) -> np.ndarray:
        return np.array([float(r.summary[key]) for r in self.runs])

    def mean_curve(self, key: str) -> np.ndarray:
        """Seed mean of a curve, over the checks every seed has (same eval_every: same steps)."""
        n = min(len(r.curves[key]) for r in self.runs)
        return np.mean([r.curves[key][:n] for r in self.runs], axis=0)


# ----------------------------------------------------------------------------- reading
def read_metrics(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [k for k in CURVE_FIELDS if rows and k not in rows[0]]
    if missing:
        raise ReportError(f"{path}: metrics.csv lacks column(s) {', '.join(missing)}")
    return {k: np.array([float(r[k]) for r in rows], dtype=float) for k in CURVE_FIELDS}


def find_run_dirs(paths) -> list[Path]:
    """Run directories (holding metrics.csv) at or below each path, sorted, without duplicates."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ReportError(f"no such run directory or folder: {p}")
        found.extend(sorted(m.parent for m in p.rglob("metrics.csv")) if p.is_dir() else [])
    return sorted(set(found))


def load_runs(paths) -> tuple[list[Run], list[Path]]:
    """(finished runs, unfinished run directories) under ``paths``."""
    runs, unfinished = [], []
    for d in find_run_dirs(paths):
        if not (d / "summary.json").is_file() or not (d / "config.json").is_file():
            unfinished.append(d)
            continue
        try:
            summary = json.loads((d / "summary.json").read_text())
            config = json.loads((d / "config.json").read_text())
        except ValueError as exc:
            raise ReportError(f"{d}: unreadable JSON ({first_line(exc)})") from None
        curves = read_metrics(d / "metrics.csv")
        if len(curves["step"]) == 0:
            unfinished.append(d)
            continue
        runs.append(Run(d, summary.get("name", d.name), config, summary, curves))
    return runs, unfinished


def group_runs(runs: list[Run], baseline: str | None) -> list[Group]:
    """Groups by label, baseline first, then by label."""
    groups: dict[str, Group] = {}
    for r in runs:
        groups.setdefault(r.label, Group(r.label)).runs.append(r)
    for g in groups.values():
        g.runs.sort(key=lambda r: r.config.get("seed", 0))
    return sorted(groups.values(), key=lambda g: (g.label != baseline, g.label))


def pick_baseline(groups: list[Group], requested: str | None) -> str | None:
    """The baseline label: the requested one (a group label or run name), else the only FAT (3 steps) config."""
    labels = [g.label for g in groups]
    if requested:
        for name in (requested, strip_seed(requested)):
            if name in labels:
                return name
        raise ReportError(f"baseline {requested!r} is not among the runs (configs: {', '.join(labels)})")
    fat = [lab for lab in labels if re.search(r"_FAT(2\w*)?_", lab)]
    return fat[0] if len(fat) == 1 else None


# ----------------------------------------------------------------------------- numbers
def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style debiased exponential moving average (weight in [0, 1); 0 = raw): the LR
    range test's smoothing (``fastadv.finder.smooth``) on an array."""
    from fastadv.finder import smooth

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
            robust=mean_std(g.final("robust_acc"), 100), iterations=int(round(g.final("steps").mean())),
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


TABLE_HEAD = ("config", "seeds", "clean acc %", "robust acc % (final)", "iterations", "grad computations",
              "train s", "iterations to target", "s to target", "speed-up (s)")


def row_cells(r: Row) -> tuple:
    return (r.label, r.seeds, r.clean, r.robust, r.iterations, r.grads, r.seconds, r.steps_to_target,
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
    fig.savefig(path, dpi=100)
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
    fig.savefig(path, dpi=100)
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
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def schedule_values(config: dict, points: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, lr, momentum) of a run, recomputed from its config.json (no training)."""
    from fastadv import schedules

    total = int(config["total_steps"])
    lr_fn = schedules.build(config["lr_schedule"], total, lr_max=config["lr_max"])
    mom_fn = schedules.build_momentum(config["momentum_schedule"], total, momentum=config["momentum"])
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


# ----------------------------------------------------------------------------- documents
FIGURES = (("accuracy_vs_iterations.png", "Accuracy against iterations"),
           ("accuracy_vs_seconds.png", "Accuracy against wall-clock training time"),
           ("versus_baseline.png", "Each schedule against the baseline (adversarial accuracy)"),
           ("loss_vs_iterations.png", "Loss curves"),
           ("schedules.png", "LR and momentum shapes"))

# Written into the page: after load, records whether every image decoded (checked by the tests).
IMAGE_CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var out = document.getElementById('image-check');
  out.setAttribute('data-total', imgs.length);
  out.setAttribute('data-loaded', ok.length);
  out.textContent = ok.length + ' of ' + imgs.length + ' figures rendered';
});
</script>"""


def _notes(groups, baseline, target, target_given, unfinished, smoothing) -> list[str]:
    run = groups[0].runs[0]
    notes = [f"Runs: {sum(len(g.runs) for g in groups)} finished, {len(groups)} configs (seeds grouped by name "
             "apart from the _s<seed> suffix). Accuracies: mean ± std over seeds.",
             "Final accuracies: " + "; ".join(sorted({f"{r.summary.get('attack', '?')} on "
                                                       f"{r.summary.get('eval_points', '?')} test points"
                                                       for g in groups for r in g.runs}))
             + f". Curves: {_check_desc(run)}.",
             "Train s: training wall-clock time, held-out checks and final evaluation excluded."]
    if target is not None:
        source = ("given with --target" if target_given
                  else "the baseline's final value of the curve below")
        notes.append(f"Target: {100 * target:.2f}% adversarial accuracy on the held-out check ({source}); "
                     f"time-to-target is the first check where the seed-mean curve, EMA-smoothed with weight "
                     f"{smoothing:g}, reaches it (a raw check on a few hundred points is too noisy); "
                     "speed-up = baseline's seconds to target / the config's.")
    else:
        notes.append("No baseline or target: time-to-target not computed (use --baseline or --target).")
    if unfinished:
        notes.append(f"Left out {len(unfinished)} unfinished run(s): " + ", ".join(d.name for d in unfinished))
    return notes


def write_markdown(path: Path, rows, baseline, notes, figures: list[tuple[str, str]]) -> None:
    lines = ["# Report", "", markdown_table(rows, baseline), ""]
    lines += [f"- {n}" for n in notes] + [""]
    for fname, title in figures:
        lines += [f"## {title}", "", f"![{title}]({fname})", ""]
    path.write_text("\n".join(lines))


def write_html(path: Path, rows, baseline, notes, figures: list[tuple[Path, str]]) -> None:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in TABLE_HEAD)
    body = []
    for r in rows:
        cells = [esc(str(c)) for c in row_cells(r)]
        cls = ' class="baseline"' if r.label == baseline else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    imgs = []
    for fig_path, title in figures:
        data = base64.b64encode(fig_path.read_bytes()).decode("ascii")
        imgs.append(f'<h2>{esc(title)}</h2>\n<img alt="{esc(title)}" src="data:image/png;base64,{data}">')
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fastadv report</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #bbb; padding: 3px 7px; text-align: right; }}
th {{ background: #eee; }} td:first-child {{ text-align: left; font-family: monospace; }}
tr.baseline {{ font-weight: bold; background: #f4f4f4; }}
img {{ max-width: 100%; display: block; margin-bottom: 1em; }}
#image-check {{ color: #666; font-size: 12px; }}
</style></head><body>
<h1>fastadv report</h1>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(body)}
</tbody></table>
<ul>{''.join(f'<li>{esc(n)}</li>' for n in notes)}</ul>
{chr(10).join(imgs)}
<p id="image-check" data-total="0" data-loaded="0">figures not checked</p>
{IMAGE_CHECK}
</body></html>
"""
    path.write_text(page)


@dataclass
class Report:
    out_dir: Path
    html: Path
    markdown: Path
    figures: list[Path]
    rows: list[Row]
    baseline: str | None
    target: float | None
    unfinished: list[Path]


def write_report(paths, out_dir: str | Path = "report", *, baseline: str | None = None,
                 target: float | None = None, smoothing: float = 0.6) -> Report:
    """Read the runs under ``paths`` and write PNGs, report.md and report.html into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    if not 0 <= smoothing < 1:
        raise ReportError(f"--smoothing must be in [0, 1), got {smoothing}")
    runs, unfinished = load_runs(paths)
    if not runs:
        raise ReportError("no finished runs (directories with metrics.csv and summary.json) under "
                          + ", ".join(map(str, paths)))
    groups = group_runs(runs, None)
    base = pick_baseline(groups, baseline)
    groups = group_runs(runs, base)
    tgt = resolve_target(groups, base, target, smoothing)
    rows = table_rows(groups, base, tgt, smoothing)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = [plot_accuracy(groups, base, "step", "iterations (optimizer steps, replays included)",
                          out / FIGURES[0][0], smoothing),
            plot_accuracy(groups, base, "seconds", "training wall-clock seconds", out / FIGURES[1][0], smoothing),
            plot_versus_baseline(groups, base, out / FIGURES[2][0], smoothing),
            plot_losses(groups, base, out / FIGURES[3][0], smoothing),
            plot_schedules(groups, base, out / FIGURES[4][0])]
    figures = [(p, title) for p, (_, title) in zip(made, FIGURES) if p is not None]
    notes = _notes(groups, base, tgt, target is not None, unfinished, smoothing)
    write_markdown(out / "report.md", rows, base, notes, [(p.name, t) for p, t in figures])
    write_html(out / "report.html", rows, base, notes, figures)
    return Report(out, out / "report.html", out / "report.md", [p for p, _ in figures], rows, base, tgt, unfinished)


__all__ = ["write_report", "load_runs", "group_runs", "ema", "first_reaching", "schedule_values", "Report",
           "ReportError"]
