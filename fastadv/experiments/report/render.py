"""Reports from run directories: curves, schedule shapes and a summary table. Never retrains.

``write_report(paths, out_dir)`` reads every run directory under ``paths`` (a directory holding
``metrics.csv``; runs without ``summary.json`` are unfinished and left out), groups the seeds of
one config (run names equal apart from the ``_s<seed>`` suffix), and writes:

- ``accuracy_vs_iterations.png`` / ``accuracy_vs_seconds.png``: natural and adversarial accuracy of
  the periodic held-out check for every run, raw (thin) and EMA-smoothed (bold), baseline in black;
- ``versus_baseline.png``: one small panel per config, its adversarial accuracy against the baseline's;
- ``loss_vs_iterations.png``: train, clean and adversarial loss;
- ``schedules.png``: LR and momentum of each config in small multiples, recomputed from
  ``config.json`` with ``fastadv.core.schedules.build`` (the logged values are drawn on top as dots);
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
import html
from dataclasses import dataclass
from pathlib import Path

from fastadv.experiments.report.figures import (
    _check_desc,
    plot_accuracy,
    plot_losses,
    plot_schedules,
    plot_versus_baseline,
)
from fastadv.experiments.report.runs import (
    ReportError,
    group_runs,
    load_runs,
    pick_baseline,
)
from fastadv.experiments.report.table import (
    TABLE_HEAD,
    Row,
    markdown_table,
    resolve_target,
    row_cells,
    table_rows,
)

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
             "AA-lite: " + ("; ".join(sorted({f"{r.summary['aa_lite']['attack']} on the first "
                                              f"{r.summary['aa_lite']['points']} test points"
                                              for g in groups for r in g.runs if r.summary.get("aa_lite")}))
                            or "not run (final_aa_points = 0)") + ".",
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


__all__ = ["Report", "write_report"]
