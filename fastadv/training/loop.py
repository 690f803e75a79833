"""The one training loop shared by every method: ``train(config)`` -> a run directory.

config -> ``build`` (data, model, optimizer, schedules, step) -> minibatch steps with held-out
checks and checkpoints -> final evaluation (PGD-K, AA-lite, sanity checks) -> summary.json.

Nothing lost, nothing silent: a resume checkpoint is written at step 0, at every held-out check and
every ``checkpoint_every`` steps (0: at least every 4 minutes), so ``train(resume=run_dir)``
continues a killed run to the very numbers of an unbroken one. A non-finite loss stops the run
(``TrainingDiverged``), so does a run still at chance after a quarter of its budget
(``NotLearning``); Ctrl-C or SIGTERM checkpoints at the next step boundary and stops
(``TrainingInterrupted``; a second Ctrl-C stops at once). For single-step methods a
catastrophic-overfitting guard watches the held-out PGD check.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastadv.config import ConfigError, TrainConfig
from fastadv.core import distributed, perf
from fastadv.data import Dataset, as_dataset
from fastadv.evaluation import AALite, AttackSpec, evaluate_distributed
from fastadv.models.store import save_weights
from fastadv.training.checkpoint import (
    Saver,
    latest_checkpoint,
    read_checkpoint,
    restore_training,
)
from fastadv.training.finder import auto_lr_max
from fastadv.training.budget import TimeBudget
from fastadv.training.guard import NotLearning, guard_check, make_guard, not_learning, robustness_collapse
from fastadv.training.log import RunLog, log_training, metrics_row
from fastadv.training.run_dir import new_run, resume_config, rewrite_config
from fastadv.training.setup import Setup, build, check_config, load_data
from fastadv.training.summary import build_summary, figures, write_summary


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; the run stopped (summary.json says so)."""


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM: the run wrote a checkpoint at a step boundary and stopped; ``code`` is 130 or 143."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    model: nn.Module
    config: TrainConfig


def train(config: TrainConfig | dict | None = None, *, data: Dataset | tuple | None = None,
          model: nn.Module | None = None, resume: str | Path | None = None) -> RunResult:
    """Train as ``config`` says and write a run directory.

    Arguments:
        config: a ``TrainConfig`` or a dict of its fields (``{"preset": "cifar10-cpu"}`` takes a preset).
        data: a ``fastadv.data.Dataset`` to use instead of loading ``config.dataset``, or a ``(train, test)`` pair
            of torch Datasets or DataLoaders of ``(image, label)`` (images in [0, 1] or uint8, or PIL), read once
            into memory (``fastadv.data.from_torch``: up to 4 GiB as uint8); the run's dataset is then named
            ``torch:<ClassName>`` and eps defaults to 8/255.
        model: one's own ``nn.Module`` (takes normalized input, returns logits); the run's Normalize
            layer goes in front of it. Reload it with ``fastadv.load_model(run_dir, model=...)``.
        resume: an unfinished run directory (killed, interrupted: no summary.json); training goes on
            from its newest intact checkpoint with its own config.json (``config`` may then be None).

    Returns:
        ``RunResult``: ``run_dir``, ``summary`` (summary.json), ``model`` (eval mode), ``config``.
    """
    if resume is None and config is None:
        raise ConfigError("train() needs a config, or resume= a run directory")
    cfg = resume_config(resume, config) if resume is not None else (
        config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config))
    check_config(cfg, model)
    if data is not None and not isinstance(data, Dataset):  # torch Datasets / DataLoaders -> fastadv's Dataset
        data = as_dataset(data)
        cfg = cfg.replace(dataset=data.name)
    with distributed.session(perf.resolve_device(cfg.device)):  # torchrun: one process per device
        return run(cfg, data, model, resume)


def run(cfg: TrainConfig, data: Dataset | None, model: nn.Module | None, resume: str | Path | None) -> RunResult:
    """The body of ``train`` (inside the process group when there is one): read it top to bottom."""
    s = setup_run(cfg, data, model)
    run_dir = new_run(s) if resume is None else Path(resume)
    saver = Saver(s, run_dir)
    log = open_log(s, run_dir, resume, saver)
    check = HeldOut(s, run_dir, log)
    stop = Interrupts()
    timer = Timer(s.device)
    budget = TimeBudget(s.cfg.time_budget) if s.cfg.time_budget else None
    s.model.train()
    try:
        with stop:
            while s.loop.mb_done < s.minibatches and not s.loop.stopped:
                # one minibatch: eps ramp, the method's optimizer step(s), the average, statistics on the device
                train_minibatch(s)
                log.bar.update(s.steps_per_minibatch)
                log_training(s, log)  # every log_every steps: loss, accuracy, LR, ... (one host sync there)
                # time budget: fit the run's length to the measured speed, twice early on
                if budget is not None and budget.due(s.loop):
                    budget.fit(s, s.loop.train_seconds + timer.lap())
                    log.bar.total = s.total_steps
                    rewrite_config(s, run_dir)
                # held-out check and checkpoint when due; their time is not training time
                at_check = s.ctx.iteration >= s.loop.next_eval or s.loop.mb_done >= s.minibatches
                if at_check or saver.due():
                    s.loop.train_seconds += timer.lap()
                    totals = finite_totals(s, saver.last)
                    if at_check:
                        reason = check(totals)
                        if reason:
                            saver.save()
                            raise NotLearning(reason)
                    saver.save()
                    timer.restart()
                # a signal asked to stop: checkpoint at this step boundary and say how to go on
                if stop.requested():
                    s.loop.train_seconds += timer.lap()
                    saver.save()
                    raise stop.exception(s, run_dir)
        return finish(s, run_dir, log)
    except (TrainingDiverged, NotLearning) as exc:
        status = "diverged" if isinstance(exc, TrainingDiverged) else "not learning"
        s.loop.events.append({"event": status.replace(" ", "_"), "step": s.ctx.iteration, "message": str(exc)})
        summary = build_summary(s, run_dir, status, message=str(exc), last_checkpoint=saver.last)
        write_summary(run_dir, summary)
        log.summary(summary)
        raise
    finally:
        log.close()  # TensorBoard, W&B and MLflow runs end here, also when interrupted


# ----------------------------------------------------------------------------- pieces of the loop
def setup_run(cfg: TrainConfig, data: Dataset | None, model: nn.Module | None) -> Setup:
    """``build``, after the LR range test when lr_max is "auto" (the test leaves the RNG state as it found it)."""
    if cfg.lr_max is not None:
        return build(cfg, data, model)
    data = data if data is not None else load_data(cfg, distributed.local_device(perf.resolve_device(cfg.device)))
    cfg, record = auto_lr_max(cfg, data, model=model)
    s = build(cfg, data, model)
    s.lr_finder = record
    return s


def train_minibatch(s: Setup) -> None:
    """One minibatch: eps and alpha at the ramp's value, the method's step(s), the sums on the device."""
    x, y = next(s.stream)
    ramp = eps_ramp(s.loop.mb_done / s.minibatches, s.cfg.eps_warmup)
    s.ctx.eps, s.ctx.alpha = s.eps * ramp, s.alpha * s.loop.alpha_scale * ramp
    s.ctx.index = s.stream.last_index  # the rows' training-set indices, for per-example memories
    s.ctx.progress = s.loop.mb_done / s.minibatches  # for methods whose weights ramp up
    stats = s.method.step(s.ctx, perf.prepare_batch(x, s.channels_last), y)
    s.loop.add(stats, s.passes_per_minibatch)
    if s.averager is not None:
        s.averager.update(s.model, s.ctx.iteration)


def eps_ramp(progress: float, warmup: float) -> float:
    """Multiplier of eps and alpha: linear from 0 to 1 over the first ``warmup`` of training."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)


def finite_totals(s: Setup, last_checkpoint: str | None) -> list[float]:
    """Loss sum, correct and count since the last row over every process; TrainingDiverged when the loss
    or a weight is not finite (one host sync: at checks and checkpoints only)."""
    loop = s.loop
    total = distributed.all_reduce_sum(torch.cat([loop.sums, torch.tensor([float(loop.count)], dtype=loop.sums.dtype,
                                                                          device=loop.sums.device)]))
    finite = torch.stack([torch.isfinite(total).all()] + [torch.isfinite(p).all() for p in s.model.parameters()])
    if not bool(finite.all()):
        raise TrainingDiverged(f"training loss became non-finite before step {s.ctx.iteration}; kept checkpoint "
                               f"{last_checkpoint}; lower lr_max (now {s.cfg.lr_max})")
    return total.tolist()


class HeldOut:
    """The periodic held-out check on the validation split (never the test set): quick PGD at eps/4.

    Calling it at a check evaluates the raw weights (and the averaged ones, once averaging has begun),
    lets the guard judge, offers both to the selection of the kept weights, writes the metrics row,
    hands the result to the schedules and returns the not-learning reason (None when the run is learning).
    """

    def __init__(self, s: Setup, run_dir: Path, log: RunLog):
        self.s, self.run_dir, self.log, self.guard = s, run_dir, log, make_guard(s.cfg)
        n = min(s.cfg.eval_size, s.data.val_size)
        self.points = (s.data.x_val[:n], s.data.y_val[:n])  # the split is in random order: a random sample
        self.attack = AttackSpec("pgd", eps=s.eps, steps=s.cfg.eval_attack_steps, restarts=1, norm=s.cfg.norm)

    def evaluate(self, model: nn.Module):
        return evaluate_distributed(model, self.points, attack=self.attack, batch_size=self.s.cfg.eval_batch_size,
                                    seed=self.s.cfg.seed)

    def __call__(self, totals: list[float]) -> str | None:
        s, loop, t = self.s, self.s.loop, time.perf_counter()
        result = self.evaluate(s.model)
        averaged = None
        if s.averager is not None and s.averager.started:
            averaged = self.evaluate(s.averager.ready(s.data.x_train, s.channels_last))
        if s.selection is not None:  # before the guard, which may put earlier weights back
            s.selection.offer("raw", s.ctx.iteration, result, s.model)
            if averaged is not None:
                s.selection.offer("average", s.ctx.iteration, averaged, s.averager.model.module)
        event = guard_check(self.guard, loop, result, s.ctx, self.run_dir, self.log.warn) if self.guard else ""
        # robust accuracy near zero while clean accuracy rises: said once; the status reads the last check
        loop.collapsed = robustness_collapse(s.cfg, s.eps, [result] + ([averaged] if averaged else []),
                                             loop.mb_done / s.minibatches, s.data.num_classes)
        if loop.collapsed and not loop.collapse_warned:
            loop.collapse_warned = True
            loop.events.append({"event": "robustness_collapse", "step": s.ctx.iteration, "message": loop.collapsed})
            self.log.warn(f"fastadv: warning: {loop.collapsed}")
        self.log.row(metrics_row(s, totals, result, event, averaged))
        loop.rows += 1
        metrics = {"clean_acc": result.clean_acc, "adv_acc": result.robust_acc, "clean_loss": result.clean_loss,
                   "adv_loss": result.robust_loss}
        s.lr_fn.observe(s.ctx.iteration, metrics)
        s.mom_fn.observe(s.ctx.iteration, metrics)
        loop.reset_sums()
        loop.next_eval += s.eval_every
        loop.check_seconds += time.perf_counter() - t
        return not_learning(s.cfg, result, loop.mb_done / s.minibatches, s.ctx.iteration, s.data.num_classes)


def open_log(s: Setup, run_dir: Path, resume, saver: Saver):
    """The run's log; a new run writes its step-0 checkpoint first, a resumed one is put back from its newest."""
    def make(**kw):
        return (RunLog(run_dir, s.total_steps, s.cfg.progress, setup=s, **kw) if distributed.is_main()
                else distributed.Silent())

    if resume is None:
        saver.save()  # step 0: a run killed at any moment can be resumed
        return make()
    path = latest_checkpoint(run_dir, warn=lambda m: print(f"fastadv: {m}", file=sys.stderr))
    note = restore_training(s, read_checkpoint(path), path.name)
    saver.last = path.name
    saver.mark()
    log = make(rows=s.loop.rows, step=s.ctx.iteration)
    log.warn(f"fastadv: resuming {run_dir.name} from {path.name} (step {s.ctx.iteration} of {s.total_steps})")
    if note:
        log.warn(f"fastadv: {note}")
    return log


def finish(s: Setup, run_dir: Path, log: RunLog) -> RunResult:
    """The kept weights, the final evaluation (PGD-K on the test set, AA-lite, sanity checks) and summary.json,
    which also goes to the log (TensorBoard, W&B, MLflow).

    The test set is read here for the first time: which weights are kept was decided on the validation split.
    """
    cfg = s.cfg
    log.bar.close()  # training is over
    ranks = distributed.summary_fields(s.model)  # rank 0's buffers everywhere; weights identical on all ranks
    kept = keep_weights(s, run_dir)
    if distributed.is_main():
        save_weights(s.model, run_dir, s.arch)
    final = AttackSpec("pgd", eps=s.eps, alpha=cfg.final_alpha, steps=cfg.final_attack_steps,
                       restarts=cfg.final_restarts, norm=cfg.norm)
    aa_lite = AALite(points=cfg.final_aa_points, targets=cfg.final_aa_targets) if cfg.final_aa_points else None
    t = time.perf_counter()
    result = evaluate_distributed(s.model, s.data, attack=final, limit=cfg.final_limit,
                                  batch_size=cfg.eval_batch_size, seed=cfg.seed, sanity=True, aa_lite=aa_lite)
    status = "stopped by the overfitting guard" if s.loop.stopped else "completed"
    evaluation = figures(result, final, time.perf_counter() - t)
    if s.loop.collapsed:  # robust accuracy near zero on validation at the last check: not to be trusted
        status = "robustness collapsed"
        evaluation["trusted"] = False
    summary = {**build_summary(s, run_dir, status, evaluation=evaluation), "kept": kept, **ranks}
    write_summary(run_dir, summary)
    log.summary(summary)
    return RunResult(run_dir, summary, s.model.eval(), cfg)


def keep_weights(s: Setup, run_dir: Path) -> dict:
    """Put the kept weights into ``s.model`` (the selection's, by the validation check) and write the other sets
    beside them: ``model-raw.*`` (the raw weights at the end) and ``model-average.*``. Returns summary.json's
    record of the choice."""
    if s.averager is not None and distributed.is_main():
        save_weights(s.model, run_dir, s.arch, stem="model-raw")
        save_weights(s.averager.model.module, run_dir, s.arch, stem="model-average")
    record = s.selection.record() if s.selection is not None else None
    if record is None:
        return {"which": "raw", "step": s.ctx.iteration, "keep": "last",
                "why": "no weight averaging and keep = last: the weights at the end of training"}
    s.model.load_state_dict(s.selection.best["weights"])
    record["why"] = (f"best validation robust accuracy ({record['val_adv_acc']:.4f}, PGD-{s.cfg.eval_attack_steps} on "
                     f"{min(s.cfg.eval_size, s.data.val_size)} validation points) among "
                     + ("raw and averaged weights at every check" if s.cfg.keep == "best" else
                        "the raw and averaged weights at the last check"))
    return record


class Timer:
    """Training seconds between two readings, after the device has finished its queued work."""

    def __init__(self, device: torch.device):
        self.device = device
        self.restart()

    def restart(self) -> None:
        self.t0 = time.perf_counter()

    def lap(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.t0


class Interrupts:
    """SIGINT / SIGTERM while training: the first asks the loop to stop at the next step boundary (with a
    checkpoint), a second SIGINT stops at once (KeyboardInterrupt; the previous checkpoint is intact).

    Under torchrun every process gets the signal; they agree on the step to stop at every
    ``POLL`` steps (one small all-reduce), so all of them checkpoint the same step.
    """

    POLL = 10
    CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

    def __init__(self):
        self.signal, self.calls, self.previous = None, 0, {}

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            for sig in self.CODES:
                self.previous[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, sig, frame) -> None:
        if self.signal is not None and sig == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.signal = sig

    def requested(self) -> bool:
        if not distributed.active():
            return self.signal is not None
        self.calls += 1
        if self.calls % self.POLL:
            return False
        flag = torch.tensor([1.0 if self.signal is not None else 0.0], device=distributed.comm_device())
        return bool(distributed.all_reduce_sum(flag).item() > 0)

    def exception(self, s: Setup, run_dir: Path) -> TrainingInterrupted:
        sig = self.signal if self.signal is not None else signal.SIGTERM  # another rank got it
        return TrainingInterrupted(f"interrupted at step {s.ctx.iteration} of {s.total_steps}; resume with: "
                                   f"fastadv train --resume {run_dir}", self.CODES[sig])


__all__ = ["RunResult", "TrainingDiverged", "TrainingInterrupted", "run", "train"]
