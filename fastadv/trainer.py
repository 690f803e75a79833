"""The one training loop shared by every method.

config -> data + model -> (method step + schedules) per minibatch -> held-out checks ->
final PGD evaluation -> run directory (config.json, metrics.csv, summary.json, weights,
TensorBoard events).
"""
from __future__ import annotations

import csv
import json
import math
import platform
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastadv import perf, schedules
from fastadv.checkpoint import arch_of, model_from_arch, save_weights, write_json
from fastadv.config import ConfigError, TrainConfig, resolve_eps
from fastadv.data import DATASETS, Dataset, batches, batches_per_epoch, load_dataset, unknown_name
from fastadv.evaluation import AttackSpec, evaluate
from fastadv.methods import METHODS, StepContext
from fastadv.models import MODELS
from fastadv.precision import make_precision

METRIC_FIELDS = ["step", "epoch", "seconds", "lr", "momentum", "train_loss", "train_acc",
                 "clean_loss", "clean_acc", "adv_loss", "adv_acc", "grad_computations"]


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; the run stopped."""


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    model: nn.Module
    config: TrainConfig


# ----------------------------------------------------------------------------- set-up helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (valid: auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here")
    return device


def check_names(cfg: TrainConfig) -> None:
    """Registry names checked up front, so a typo fails before any work is done."""
    for kind, name, registry in (("dataset", cfg.dataset, DATASETS), ("model", cfg.model, MODELS),
                                 ("method", cfg.method, METHODS)):
        if name not in registry:
            raise ConfigError(unknown_name(kind, name, registry))
    schedules.build(cfg.lr_schedule, 1, lr_max=cfg.lr_max)
    schedules.build_momentum(cfg.momentum_schedule, 1, momentum=cfg.momentum)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_name(cfg: TrainConfig, eps: float) -> str:
    sched = re.sub(r"[^A-Za-z0-9.=_-]+", "_", cfg.lr_schedule.split(":")[0])
    method = f"free{cfg.replays}" if cfg.method == "free" else cfg.method
    return f"{cfg.dataset}_{cfg.model}_{method}_{sched}_e{cfg.epochs:g}_eps{eps:.3g}_s{cfg.seed}"


def fresh_run_dir(out_dir: str, name: str) -> Path:
    """out_dir/name, or name-2, name-3... when it exists: never overwrite a finished run."""
    base = Path(out_dir) / name
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{name}-{i}")
    path.mkdir(parents=True)
    return path


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and BN
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr_max, betas=(cfg.momentum, 0.999))
    return torch.optim.SGD(groups, lr=cfg.lr_max, momentum=cfg.momentum, nesterov=cfg.nesterov)


def hyperparam_setter(optimizer: torch.optim.Optimizer, lr_fn, momentum_fn):
    """Return ``iteration -> None`` writing LR and momentum (Adam: beta1) into every group."""
    is_adam = isinstance(optimizer, torch.optim.Adam)

    def set_hyperparams(iteration: int) -> None:
        lr, mom = lr_fn(iteration), momentum_fn(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
            if is_adam:
                group["betas"] = (mom, group["betas"][1])
            else:
                group["momentum"] = mom

    return set_hyperparams


def versions() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__}


# ----------------------------------------------------------------------------- logging
class RunLog:
    """metrics.csv rows, TensorBoard scalars (when tensorboard is installed), progress bar."""

    def __init__(self, run_dir: Path, total: int, progress: bool):
        self.path = run_dir / "metrics.csv"
        with open(self.path, "w", newline="") as f:
            csv.writer(f).writerow(METRIC_FIELDS)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir))
        except (ImportError, ModuleNotFoundError):
            pass
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="step", disable=not progress, dynamic_ncols=True, leave=True)

    def row(self, values: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([fmt(values[k]) for k in METRIC_FIELDS])
        if self.tb is not None:
            for key in METRIC_FIELDS[2:]:
                self.tb.add_scalar(tb_tag(key), values[key], values["step"])
            self.tb.flush()
        self.bar.set_postfix(loss=f"{values['train_loss']:.3f}", acc=f"{values['train_acc']:.3f}",
                             lr=f"{values['lr']:.3g}", rob=f"{values['adv_acc']:.3f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


def tb_tag(key: str) -> str:
    group = {"train": "train", "clean": "clean", "adv": "adversarial"}.get(key.split("_")[0], "hparams")
    return f"{group}/{key}"


def fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def observe_schedules(fns, step: int, check) -> None:
    """Give held-out results to schedules that adapt to them (those with an ``observe`` method)."""
    for fn in fns:
        observe = getattr(fn, "observe", None)
        if observe is not None:
            observe(step, {"clean_acc": check.clean_acc, "adv_acc": check.robust_acc,
                           "clean_loss": check.clean_loss, "adv_loss": check.robust_loss})


def eps_ramp(progress: float, warmup: float) -> float:
    """Multiplier of eps and alpha: linear from 0 to 1 over the first ``warmup`` of training."""
    return 1.0 if warmup <= 0 else min(1.0, progress / warmup)


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig | dict, *, data: Dataset | None = None) -> RunResult:
    """Train a model as ``config`` says and write its run directory; returns a RunResult."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    check_names(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, device=device)
    data = data.limit_train(cfg.train_limit).to(device)

    method = METHODS[cfg.method]
    eps = resolve_eps(cfg)
    alpha = cfg.alpha if cfg.alpha is not None else method.default_alpha(eps, cfg.attack_steps)
    minibatches = max(1, round(cfg.epochs * batches_per_epoch(len(data.y_train), cfg.batch_size)))
    steps_per_mb = method.steps_per_minibatch(cfg.replays, cfg.attack_steps)
    total_steps = minibatches * steps_per_mb
    lr_fn = schedules.build(cfg.lr_schedule, total_steps, lr_max=cfg.lr_max)
    mom_fn = schedules.build_momentum(cfg.momentum_schedule, total_steps, momentum=cfg.momentum)
    eval_every = cfg.eval_every or max(1, total_steps // 10)
    augment = data.augment if cfg.augment is None else cfg.augment

    arch = arch_of(cfg, data)
    model = model_from_arch(arch).to(device)
    speed = {**perf.configure_backends(device), "channels_last": cfg.channels_last, "compile": cfg.compile}
    train_model = perf.prepare_model(model, channels_last=cfg.channels_last, compile=cfg.compile)  # shares model's weights
    optimizer = make_optimizer(cfg, model)
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # attack random starts
    data_gen = torch.Generator().manual_seed(cfg.seed)  # data order and augmentation
    ctx = StepContext(train_model, optimizer, eps, alpha, cfg.replays, cfg.attack_steps,
                      hyperparam_setter(optimizer, lr_fn, mom_fn), generator,
                      precision=make_precision(cfg.precision, device))
    speed["precision"] = ctx.precision.mode

    run_dir = fresh_run_dir(cfg.out_dir, cfg.name or run_name(cfg, eps))
    resolved = {**cfg.to_dict(), "eps": eps, "alpha": alpha, "augment": augment, "total_steps": total_steps,
                "minibatches": minibatches, "eval_every": eval_every, "device": str(device),
                "data_source": data.source, "train_size": len(data.y_train), "arch": arch, "speed": speed,
                "versions": versions()}
    write_json(run_dir / "config.json", resolved)

    # Held-out check: fixed test points (the same for every run), quick PGD at eps/4.
    monitor_idx = torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(0))[:cfg.eval_size]
    monitor = (data.x_test[monitor_idx.to(device)], data.y_test[monitor_idx.to(device)])
    monitor_attack = AttackSpec("pgd", eps=eps, steps=cfg.eval_attack_steps, restarts=1)

    log = RunLog(run_dir, total_steps, cfg.progress)
    acc = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct since last row (no host sync)
    passes, train_seconds, next_eval, mb_done, count = 0, 0.0, eval_every, 0, 0
    model.train()
    t0 = time.perf_counter()
    try:
        while mb_done < minibatches:
            for x, y in batches(data.x_train, data.y_train, cfg.batch_size, generator=data_gen, augment=augment):
                ramp = eps_ramp(mb_done / minibatches, cfg.eps_warmup)
                ctx.eps, ctx.alpha = eps * ramp, alpha * ramp
                stats = method.step(ctx, perf.prepare_batch(x, cfg.channels_last), y)
                acc[0] += stats.loss_sum
                acc[1] += stats.correct
                count += stats.count  # a host int: no tensor built from it per step
                passes += stats.passes
                mb_done += 1
                log.bar.update(steps_per_mb)
                last = mb_done >= minibatches
                if ctx.iteration >= next_eval or last:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    train_seconds += time.perf_counter() - t0
                    loss_sum, correct = acc.tolist()
                    if not math.isfinite(loss_sum):
                        raise TrainingDiverged(f"training loss became non-finite at step {ctx.iteration}; "
                                               f"lower lr_max (now {cfg.lr_max})")
                    check = evaluate(model, monitor, attack=monitor_attack, batch_size=cfg.eval_batch_size,
                                     seed=cfg.seed)
                    log.row({"step": ctx.iteration, "epoch": mb_done / batches_per_epoch(len(data.y_train), cfg.batch_size),
                             "seconds": train_seconds, "lr": lr_fn(max(ctx.iteration - 1, 0)),
                             "momentum": mom_fn(max(ctx.iteration - 1, 0)),
                             "train_loss": loss_sum / count, "train_acc": correct / count,
                             "clean_loss": check.clean_loss, "clean_acc": check.clean_acc,
                             "adv_loss": check.robust_loss, "adv_acc": check.robust_acc,
                             "grad_computations": passes})
                    observe_schedules((lr_fn, mom_fn), ctx.iteration, check)
                    acc.zero_()
                    count = 0
                    next_eval += eval_every
                    t0 = time.perf_counter()
                if last:
                    break
    finally:
        log.close()

    save_weights(model, run_dir, arch)
    final = AttackSpec("pgd", eps=eps, alpha=cfg.final_alpha, steps=cfg.final_attack_steps,
                       restarts=cfg.final_restarts)
    t_eval = time.perf_counter()
    result = evaluate(model, data, attack=final, limit=cfg.final_limit, batch_size=cfg.eval_batch_size,
                      seed=cfg.seed)
    n_train = len(data.y_train)
    summary = {
        "name": run_dir.name, "dataset": cfg.dataset, "model": cfg.model, "method": cfg.method,
        "clean_acc": result.clean_acc, "robust_acc": result.robust_acc,
        "clean_loss": result.clean_loss, "robust_loss": result.robust_loss,
        "attack": result.attack, "attack_params": final.to_dict(), "eval_points": result.points,
        "eps": eps, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t_eval,
        "steps": ctx.iteration, "epochs": mb_done / batches_per_epoch(n_train, cfg.batch_size),
        "minibatches": mb_done, "grad_computations": passes,
        "compute_epochs": passes * cfg.batch_size / n_train,  # fwd-bwd work in passes over the data
        "seed": cfg.seed, "device": str(device),
    }
    write_json(run_dir / "summary.json", summary)
    return RunResult(run_dir, summary, model.eval(), cfg)


def read_summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())
