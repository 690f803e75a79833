"""What a run tells: metrics.csv rows, TensorBoard scalars, the progress bar (or one line per check in a log).

``metrics.csv`` has one row per held-out check (``METRIC_FIELDS``); TensorBoard gets the same
scalars when tensorboard is installed; on a terminal a tqdm bar shows the steps, and when stderr is
not a terminal each held-out check is one line instead of a stream of carriage returns.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from fastadv.io import atomic_write

METRIC_FIELDS = ["step", "epoch", "seconds", "lr", "momentum", "train_loss", "train_acc",
                 "clean_loss", "clean_acc", "adv_loss", "adv_acc", "grad_computations",
                 "avg_clean_acc", "avg_adv_acc", "event"]
SCALARS = METRIC_FIELDS[2:-1]  # what goes to TensorBoard ("event" is text, empty on most rows)
# clean_* and adv_*: the raw weights on the validation split; avg_*: the averaged weights there (empty before
# averaging begins or without it)


class RunLog:
    """metrics.csv rows, TensorBoard scalars (when tensorboard is installed), progress bar.

    ``rows``/``step`` resume a log: metrics.csv keeps its first ``rows`` rows and TensorBoard
    hides events from ``step`` on, so rows written after the checkpoint are not duplicated.
    """

    def __init__(self, run_dir: Path, total: int, progress: bool, rows: int | None = None, step: int = 0):
        self.path = run_dir / "metrics.csv"
        if rows is None:
            with open(self.path, "w", newline="") as f:
                csv.writer(f).writerow(METRIC_FIELDS)
        else:
            keep_rows(self.path, rows)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir), purge_step=step if rows is not None else None)
        except ImportError:  # a base install has it; an install without dependencies may not
            print("TensorBoard events are off: the tensorboard package is not installed (pip install tensorboard "
                  "turns them on); metrics.csv has every figure", file=sys.stderr)
        from tqdm.auto import tqdm

        # A progress bar only on a terminal; in a log file (stderr not a tty) one line per held-out check instead.
        self.lines = progress and not stream_is_terminal(sys.stderr)
        self.total = total
        self.bar = tqdm(total=total, initial=step, unit="step", disable=not progress or self.lines,
                        dynamic_ncols=True, leave=True)

    def row(self, values: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([fmt(values.get(k, "")) for k in METRIC_FIELDS])
        if self.tb is not None:
            for key in SCALARS:
                if values.get(key, "") != "":
                    self.tb.add_scalar(tb_tag(key), values[key], values["step"])
            self.tb.flush()
        self.bar.set_postfix(loss=f"{values['train_loss']:.3f}", acc=f"{values['train_acc']:.3f}",
                             lr=f"{values['lr']:.3g}", rob=f"{values['adv_acc']:.3f}", refresh=False)
        if self.lines:
            print(f"step {values['step']}/{self.total} (epoch {values['epoch']:.2f}, {values['seconds']:.0f} s): "
                  f"train loss {values['train_loss']:.3f} acc {values['train_acc']:.3f}, validation clean "
                  f"{values['clean_acc']:.3f} robust {values['adv_acc']:.3f}"
                  + (f" (averaged {values['avg_clean_acc']:.3f} / {values['avg_adv_acc']:.3f})"
                     if values.get("avg_adv_acc", "") != "" else "") + f", lr {values['lr']:.3g}"
                  + (f"; {values['event']}" if values.get("event") else ""), file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        """One line above the progress bar (stderr), also when the bar is off."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


def stream_is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def keep_rows(path: Path, rows: int) -> None:
    """Cut metrics.csv back to its header and first ``rows`` rows (those a checkpoint knows of)."""
    with open(path, newline="") as f:
        lines = list(csv.reader(f))[:rows + 1]

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(lines)

    atomic_write(path, write)


def tb_tag(key: str) -> str:
    group = {"train": "train", "clean": "clean", "adv": "adversarial", "avg": "averaged"}.get(key.split("_")[0],
                                                                                        "hparams")
    return f"{group}/{key}"


def fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def metrics_row(s, totals: list[float], check, event: str, averaged=None) -> dict:
    """One metrics.csv row at a held-out check of a ``Setup``; ``totals``: loss sum, correct, count since the
    last row (over every process); ``averaged``: the averaged weights' check, if any."""
    loss_sum, correct, count = totals
    step = max(s.ctx.iteration - 1, 0)  # the step just taken
    return {"step": s.ctx.iteration, "epoch": s.loop.mb_done / s.per_epoch, "seconds": s.loop.train_seconds,
            "lr": s.lr_fn(step) * s.loop.lr_scale, "momentum": s.mom_fn(step),
            "train_loss": loss_sum / count, "train_acc": correct / count,
            "clean_loss": check.clean_loss, "clean_acc": check.clean_acc,
            "adv_loss": check.robust_loss, "adv_acc": check.robust_acc,
            "grad_computations": s.loop.passes, "event": event,
            "avg_clean_acc": averaged.clean_acc if averaged is not None else "",
            "avg_adv_acc": averaged.robust_acc if averaged is not None else ""}
