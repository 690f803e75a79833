"""``fastadv report``: curves and a table from run directories (reads them only, never trains)."""
from __future__ import annotations

from fastadv.cli.commands._util import number_flag

NAME = "report"
HELP = "plots and a summary table (HTML, Markdown, PNG) from run directories"
ORDER = 60


def configure(parser) -> None:
    parser.description = (
        "Read run directories (each holding metrics.csv, config.json, summary.json; folders are searched) "
        "and write report.html (self-contained), report.md and PNGs. Seeds of one config (names equal "
        "apart from _s<seed>) are grouped. Example: fastadv report runs/scaled --out report/")
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_FOLDER")
    parser.add_argument("--baseline", default=None,
                        help="config name (or run name) to compare against [default: the only *_FAT_* config]")
    parser.add_argument("--target", default=None,
                        help="adversarial accuracy (fraction, e.g. 0.45) for time-to-target "
                             "[default: the baseline's final held-out adversarial accuracy]")
    parser.add_argument("--smoothing", default="0.6", help="EMA weight of the smoothed curves, in [0, 1) [default: 0.6]")
    parser.add_argument("--out", default="report", help="output folder [default: report]")


def run(args) -> int:
    from fastadv.experiments.report import write_report

    target = number_flag("target", args.target) if args.target is not None else None
    rep = write_report(args.runs, args.out, baseline=args.baseline, target=target,
                       smoothing=number_flag("smoothing", args.smoothing))
    print(rep.markdown.read_text().split("\n\n## ")[0].replace("# Report\n\n", ""))
    print(f"\nwrote {rep.html} ({len(rep.figures)} figures embedded), {rep.markdown} and the PNGs in {rep.out_dir}")
    return 0
