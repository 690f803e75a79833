"""What a run tells: metrics.csv rows, TensorBoard scalars, W&B and MLflow, the progress bar (or one line per check).

``metrics.csv`` has one row per held-out check (``METRIC_FIELDS``); TensorBoard gets the same
scalars when tensorboard is installed, the training scalars every ``log_every`` optimizer steps
(``log_training``: loss and accuracy since the last log point, LR, momentum, eps, images per second)
and the final summary (headline, clean and PGD accuracy, the kept weights). ``--wandb`` and ``--mlflow URI``
(optional extras) get the config as parameters at the start and then the same figures. On a terminal a tqdm
bar shows the steps; when stderr is not a terminal each held-out check is one line instead.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fastadv.config import ConfigError
from fastadv.core import distributed
from fastadv.errors import first_line
from fastadv.io import atomic_write, read_json_object, write_json

METRIC_FIELDS = ["step", "epoch", "seconds", "lr", "momentum", "train_loss", "train_acc",
                 "clean_loss", "clean_acc", "adv_loss", "adv_acc", "grad_computations",
                 "avg_clean_acc", "avg_adv_acc", "event"]
SCALARS = METRIC_FIELDS[2:-1]  # what goes to TensorBoard ("event" is text, empty on most rows)
# clean_* and adv_*: the raw weights on the validation split; avg_*: the averaged weights there (empty before
# averaging begins or without it)
TRACKING_FILE = "tracking.json"  # the W&B and MLflow run ids: a resumed run logs into the same runs
EXTRAS = {"wandb": ("wandb", "--wandb"), "mlflow": ("mlflow", "--mlflow")}  # config field: (module, flag)


def check_tracking(cfg) -> None:
    """One-line ConfigError when W&B or MLflow is asked for and not installed."""
    for field, (module, flag) in EXTRAS.items():
        if getattr(cfg, field) and importlib.util.find_spec(module) is None:
            raise ConfigError(f"{flag} needs {module}: pip install 'fastadv[{module}]'")


class RunLog:
    """metrics.csv rows, TensorBoard scalars (when tensorboard is installed), W&B and MLflow, progress bar.

    ``rows``/``step`` resume a log: metrics.csv keeps its first ``rows`` rows and TensorBoard
    hides events from ``step`` on, so rows written after the checkpoint are not duplicated. ``setup``
    (the run's ``Setup``) turns on the training scalars and the trackers its config asks for.
    """

    def __init__(self, run_dir: Path, total: int, progress: bool, rows: int | None = None, step: int = 0,
                 setup=None):
        self.path, self.run_dir = run_dir / "metrics.csv", run_dir
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
        # Training scalars: the totals (loss sum, correct, count) at the last log point, less those the loop has
        # zeroed since (after a resume: from the last held-out check), and the clock then (wall, aside seconds).
        self.mark = [0.0, 0.0, 0.0]
        self.clock = (time.perf_counter(), aside_seconds(setup.loop)) if setup is not None else None
        self.status, self.trackers = None, []
        if setup is not None:
            self.trackers = open_trackers(setup.cfg, run_dir)

    def scalars(self, s, totals: list[float]) -> None:
        """The training scalars at a log point (``log_training``): loss and accuracy since the last one, LR,
        momentum (beta1), eps, images per second of training (held-out checks and checkpoints not counted)."""
        loss, correct, count = (t - m for t, m in zip(totals, self.mark))
        self.mark = list(totals)
        now, aside = time.perf_counter(), aside_seconds(s.loop)
        seconds = (now - self.clock[0]) - (aside - self.clock[1])
        self.clock = (now, aside)
        group = s.optimizer.param_groups[0]
        values = {"steps/lr": float(group["lr"]), "steps/eps": float(s.ctx.eps)}
        if group_momentum(group) is not None:
            values["steps/momentum"] = group_momentum(group)
        if count > 0:  # images trained on: Free-m's replays each count
            values.update({"steps/train_loss": loss / count, "steps/train_acc": correct / count})
            if seconds > 0:
                values["steps/images_per_s"] = count / seconds
        self.write(values, s.ctx.iteration)

    def write(self, values: dict, step: int) -> None:
        if self.tb is not None:
            for tag, value in values.items():
                self.tb.add_scalar(tag, value, step)
            self.tb.flush()
        self.each("log", values, step)

    def row(self, values: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([fmt(values.get(k, "")) for k in METRIC_FIELDS])
        if values.get("totals") is not None:  # the loop zeroes its sums after a row; the next log point adds them
            self.mark = [m - t for m, t in zip(self.mark, values["totals"])]
        self.write({tb_tag(k): values[k] for k in SCALARS if values.get(k, "") != "" and not is_nan(values[k])},
                   values["step"])
        self.bar.set_postfix(loss=f"{values['train_loss']:.3f}", acc=f"{values['train_acc']:.3f}",
                             lr=f"{values['lr']:.3g}", rob=f"{values['adv_acc']:.3f}", refresh=False)
        if self.lines:
            print(f"step {values['step']}/{self.total} (epoch {values['epoch']:.2f}, {values['seconds']:.0f} s): "
                  f"train loss {values['train_loss']:.3f} acc {values['train_acc']:.3f}, validation clean "
                  f"{values['clean_acc']:.3f} robust {values['adv_acc']:.3f}"
                  + (f" (averaged {values['avg_clean_acc']:.3f} / {values['avg_adv_acc']:.3f})"
                     if values.get("avg_adv_acc", "") != "" else "") + f", lr {values['lr']:.3g}"
                  + (f"; {values['event']}" if values.get("event") else ""), file=sys.stderr, flush=True)

    def summary(self, summary: dict) -> None:
        """summary.json's figures (``final/...``): numbers as scalars at the last step, the words (the headline's
        attack, the kept weights' choice, the status) as TensorBoard text, W&B summary and MLflow tags."""
        numbers, words = final_figures(summary)
        if self.tb is not None:
            for tag, value in numbers.items():
                self.tb.add_scalar(tag, value, summary["steps"])
            self.tb.add_text("final/summary", summary_text(summary), summary["steps"])
            self.tb.flush()
        self.status = summary.get("status")
        self.each("summary", numbers, words, summary["steps"], self.run_dir / "summary.json")

    def each(self, method: str, *args) -> None:
        """Call every tracker; one that fails is warned about once and left out for the rest of the run."""
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as exc:  # noqa: BLE001 -- a tracker's outage must not stop training
                self.trackers.remove(tracker)
                self.warn(f"fastadv: warning: {tracker.NAME} logging failed ({first_line(exc)}); it is off for "
                          f"the rest of this run")

    def warn(self, message: str) -> None:
        """One line above the progress bar (stderr), also when the bar is off."""
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        """Closes the bar, TensorBoard and the trackers: finished (evaluated), failed (diverged, not learning) or
        killed (interrupted or crashed: a resume logs into the same runs)."""
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
        state = "killed" if self.status is None else "failed" if self.status in ("diverged", "not learning") \
            else "finished"
        self.each("close", state)


def log_training(s, log) -> None:
    """Every ``log_every`` optimizer steps: the training scalars (``RunLog.scalars``). Call it on every process
    after each minibatch: at a log point the sums are summed over the processes and read (one host sync)."""
    every, step = s.cfg.log_every, s.ctx.iteration
    if every <= 0 or step // every == (step - s.steps_per_minibatch) // every:
        return
    local = torch.cat([s.loop.sums, s.loop.sums.new_tensor([float(s.loop.count)])])
    log.scalars(s, distributed.all_reduce_sum(local).tolist())


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def aside_seconds(loop) -> float:
    return loop.check_seconds + loop.checkpoint_seconds


def group_momentum(group: dict) -> float | None:
    """A param group's momentum, or beta1; None for an optimizer with neither (Adagrad)."""
    if "betas" in group:
        return float(group["betas"][0])
    return float(group["momentum"]) if "momentum" in group else None


def final_figures(summary: dict) -> tuple[dict, dict]:
    """summary.json's numbers and words, keyed ``final/...`` (missing ones left out: a diverged run has no figures)."""
    head, kept = summary.get("headline") or {}, summary.get("kept") or {}
    numbers = {"final/headline_robust_acc": head.get("robust_acc"), "final/headline_points": head.get("points"),
               "final/clean_acc": summary.get("clean_acc"), "final/pgd_robust_acc": summary.get("robust_acc"),
               "final/eval_points": summary.get("eval_points"), "final/train_seconds": summary.get("train_seconds"),
               "final/kept_step": kept.get("step"), "final/kept_val_adv_acc": kept.get("val_adv_acc")}
    words = {"final/status": summary.get("status"), "final/headline": head.get("name"),
             "final/headline_attack": head.get("attack"), "final/pgd_attack": summary.get("attack"),
             "final/kept_which": kept.get("which"), "final/kept_why": kept.get("why")}
    return ({k: float(v) for k, v in numbers.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            {k: str(v) for k, v in words.items() if v is not None})


def summary_text(summary: dict) -> str:
    """The final record as a few Markdown lines (TensorBoard's text tab)."""
    head, kept = summary.get("headline"), summary.get("kept") or {}
    lines = [f"**status**: {summary.get('status')}"]
    if head:
        lines.append(f"**{head['name']}** (the headline): {100 * head['robust_acc']:.2f}% robust, {head['attack']} "
                     f"on the first {head['points']} test points")
    if summary.get("clean_acc") is not None:
        lines.append(f"**clean**: {100 * summary['clean_acc']:.2f}%; **PGD**: {100 * summary['robust_acc']:.2f}% "
                     f"({summary['attack']}) on {summary['eval_points']} test points")
    if kept:
        lines.append(f"**kept weights**: {kept.get('which')} at step {kept.get('step')}: {kept.get('why', '')}")
    return "  \n".join(lines)


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
    last row (over every process; the loop zeroes them after the row); ``averaged``: the averaged weights' check,
    if any. The momentum is nan for an optimizer with neither momentum nor betas (Adagrad)."""
    loss_sum, correct, count = totals
    step = max(s.ctx.iteration - 1, 0)  # the step just taken
    return {"step": s.ctx.iteration, "epoch": s.loop.mb_done / s.per_epoch, "seconds": s.loop.train_seconds,
            "lr": s.lr_fn(step) * s.loop.lr_scale,
            "momentum": s.mom_fn(step) if group_momentum(s.optimizer.param_groups[0]) is not None else math.nan,
            "train_loss": loss_sum / count, "train_acc": correct / count,
            "clean_loss": check.clean_loss, "clean_acc": check.clean_acc,
            "adv_loss": check.robust_loss, "adv_acc": check.robust_acc,
            "grad_computations": s.loop.passes, "event": event,
            "avg_clean_acc": averaged.clean_acc if averaged is not None else "",
            "avg_adv_acc": averaged.robust_acc if averaged is not None else "", "totals": totals}


# ----------------------------------------------------------------------------- W&B and MLflow (optional extras)
def open_trackers(cfg, run_dir: Path) -> list:
    """The trackers ``cfg`` asks for, each logging the config as parameters; their run ids go to tracking.json,
    so that a resumed run logs into the same runs. One-line ConfigError when one cannot start."""
    check_tracking(cfg)
    path = run_dir / TRACKING_FILE
    ids = read_json_object(path) if path.is_file() else {}
    trackers = []
    for field, kind in (("wandb", WandbRun), ("mlflow", MlflowRun)):
        if getattr(cfg, field):
            try:
                trackers.append(kind(cfg, run_dir, ids.get(field)))
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the library's own errors, as one line
                raise ConfigError(f"{EXTRAS[field][1]}: {kind.NAME} did not start: {first_line(exc)}") from None
            ids[field] = trackers[-1].id
    if trackers:
        write_json(path, ids)
    return trackers


class WandbRun:
    """A Weights & Biases run in ``run_dir/wandb``: offline under WANDB_MODE=offline or with no API key
    (``wandb sync`` uploads it later)."""

    NAME = "W&B"

    def __init__(self, cfg, run_dir: Path, run_id: str | None):
        import wandb

        mode = None if os.environ.get("WANDB_MODE") or wandb_key_known() else "offline"
        self.run = wandb.init(project=cfg.wandb_project, name=run_dir.name, dir=str(run_dir), config=cfg.to_dict(),
                              id=run_id, resume="allow" if run_id else None, mode=mode, reinit="create_new",
                              settings=wandb.Settings(console="off"))
        self.id = self.run.id

    def log(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def summary(self, numbers: dict, words: dict, step: int, summary_file: Path) -> None:
        self.run.summary.update({**numbers, **words})

    def close(self, state: str) -> None:
        self.run.finish(exit_code=0 if state == "finished" else 1)


def wandb_key_known() -> bool:
    """An API key in WANDB_API_KEY or from ``wandb login`` (the netrc entry of the W&B host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class MlflowRun:
    """An MLflow run in the experiment MLFLOW_EXPERIMENT_NAME (default "fastadv") at the tracking URI ``cfg.mlflow``.

    A ``file:`` URI or a plain path is MLflow's file store, which MLflow 3 keeps only on request: fastadv makes
    that request (MLFLOW_ALLOW_FILE_STORE=true) unless the environment already says otherwise."""

    NAME = "MLflow"
    BATCH = 100  # MLflow takes at most 100 parameters per call

    def __init__(self, cfg, run_dir: Path, run_id: str | None):
        if cfg.mlflow.startswith("file:") or "://" not in cfg.mlflow:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=cfg.mlflow)
        if run_id is not None:
            self.id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "fastadv")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in cfg.to_dict().items()]
        for i in range(0, len(params), self.BATCH):
            self.client.log_batch(self.id, params=params[i:i + self.BATCH])

    def log(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def summary(self, numbers: dict, words: dict, step: int, summary_file: Path) -> None:
        self.log(numbers, step)
        for key, value in words.items():
            self.client.set_tag(self.id, key, value[:5000])  # MLflow's limit on a tag's length
        if summary_file.is_file():
            self.client.log_artifact(self.id, str(summary_file))

    def close(self, state: str) -> None:
        self.client.set_terminated(self.id, status=state.upper())
