"""Reports from run directories (never retrains): ``write_report(paths, out_dir)``; see ``render``."""
from fastadv.experiments.report.figures import schedule_values
from fastadv.experiments.report.render import Report, write_report
from fastadv.experiments.report.runs import (
           ReportError,
           group_runs,
           load_runs,
           pick_baseline,
)
from fastadv.experiments.report.table import (
           ema,
           first_reaching,
           resolve_target,
           table_rows,
)

__all__ = ["Report", "ReportError", "ema", "first_reaching", "group_runs", "load_runs", "pick_baseline",
           "resolve_target", "schedule_values", "table_rows", "write_report"]
