"""The one training loop shared by every method.

config -> data + model -> (method step + schedules) per minibatch -> held-out checks ->
final PGD evaluation -> run directory (config.json, metrics.csv, summary.json, weights,
TensorBoard events, checkpoints/).

Nothing lost, nothing silent: a resume checkpoint (model, optimizer, schedule and method
state, data order, every RNG, the loop's counters) is written at every held-out check and
every ``checkpoint_every`` optimizer steps (0: at least every 4 minutes of training), so
``train(cfg, resume=run_dir)`` continues a killed run with the very numbers an uninterrupted
one gets. A non-finite loss stops the run and says so in summary.json. For single-step
methods a catastrophic-overfitting guard watches the held-out PGD check.
"""
from __future__ import annotations

import csv
import json
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastadv import distributed, perf, schedules
from fastadv.checkpoint import (CHECKPOINT_DIR, CheckpointError, arch_of, atomic_write, checkpoint_name,
                                latest_checkpoint, model_from_arch, read_checkpoint, read_json_object, save_weights,
                                write_checkpoint, write_json)
from fastadv.config import ConfigError, TrainConfig, check_config, check_model_args, resolve_eps
from fastadv.data import BatchStream, Dataset, batches_per_epoch, load_dataset
from fastadv.errors import first_line
from fastadv.evaluation import AALite, AttackSpec
from fastadv.methods import METHODS, StepContext
from fastadv.precision import make_precision

METRIC_FIELDS = ["step", "epoch", "seconds", "lr", "momentum", "train_loss", "train_acc",
                 "clean_loss", "clean_acc", "adv_loss", "adv_acc", "grad_computations", "event"]
SCALARS = METRIC_FIELDS[2:-1]  # what goes to TensorBoard ("event" is text, empty on most rows)
CHECKPOINT_SECONDS = 240.0  # checkpoint_every = 0: at most 4 minutes of training lost to a crash
SINGLE_STEP = ("fgsm", "fgsm-rs", "n-fgsm", "free")  # methods prone to catastrophic overfitting: the guard is on by default
CLEAN_SLACK = 0.02  # guard: clean accuracy counts as "not falling" within 2 points (noise of 1,000 points)
RESUME_MAY_CHANGE = ("progress", "device", "data_dir", "download", "out_dir", "name")  # do not change the numbers


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; the run stopped (summary.json says so)."""


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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} requested but MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r} (valid: auto, cpu, cuda, cuda:N, mps)")
    return device


def check_names(cfg: TrainConfig) -> None:
    """Names, schedules and model arguments checked up front, so a mistake fails before any work is done."""
    check_config(cfg)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_name(cfg: TrainConfig) -> str:
    """The default run directory name: the thesis' D_F2_E_M code (see fastadv.experiment)."""
    from fastadv.experiment import thesis_name

    return thesis_name(cfg)


def fresh_run_dir(out_dir: str, name: str) -> Path:
    """out_dir/name, or name-2, name-3... when it exists: never overwrite a finished run."""
    base = Path(out_dir) / name
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{name}-{i}")
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    return path


def new_run_dir(out_dir: str, name: str, resolved: dict) -> Path:
    """A fresh run directory holding the resolved config (config.json)."""
    run_dir = fresh_run_dir(out_dir, name)
    write_json(run_dir / "config.json", resolved)
    return run_dir


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on biases and BN
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr_max, betas=(cfg.momentum, 0.999))
    return torch.optim.SGD(groups, lr=cfg.lr_max, momentum=cfg.momentum, nesterov=cfg.nesterov)


def hyperparam_setter(optimizer: torch.optim.Optimizer, lr_fn, momentum_fn, lr_scale=lambda: 1.0):
    """Return ``iteration -> None`` writing LR (times ``lr_scale()``) and momentum (Adam: beta1) into every group."""
    is_adam = isinstance(optimizer, torch.optim.Adam)

    def set_hyperparams(iteration: int) -> None:
        lr, mom = lr_fn(iteration) * lr_scale(), momentum_fn(iteration)
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
        except (ImportError, ModuleNotFoundError):
            pass
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
                self.tb.add_scalar(tb_tag(key), values[key], values["step"])
            self.tb.flush()
        self.bar.set_postfix(loss=f"{values['train_loss']:.3f}", acc=f"{values['train_acc']:.3f}",
                             lr=f"{values['lr']:.3g}", rob=f"{values['adv_acc']:.3f}", refresh=False)
        if self.lines:
            print(f"step {values['step']}/{self.total} (epoch {values['epoch']:.2f}, {values['seconds']:.0f} s): "
                  f"train loss {values['train_loss']:.3f} acc {values['train_acc']:.3f}, held-out clean "
                  f"{values['clean_acc']:.3f} robust {values['adv_acc']:.3f}, lr {values['lr']:.3g}"
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


def elapsed(t0: float, device: torch.device) -> float:
    """Seconds since ``t0``, after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def all_finite(acc: torch.Tensor, model: nn.Module) -> bool:
    """Loss sums and every parameter finite (one host sync: called at checks and checkpoints only)."""
    return bool(torch.stack([torch.isfinite(acc).all()] + [torch.isfinite(p).all() for p in model.parameters()]).all())


def checkpoint_due(every: int, steps_since: int, seconds_since: float) -> bool:
    """Whether a checkpoint is due between two held-out checks (``checkpoint_every``; 0 = by the clock).

    Under torchrun the processes' clocks differ, and a checkpoint is a collective step: there
    checkpoint_every = 0 means at held-out checks only.
    """
    if every > 0:
        return steps_since >= every
    return not distributed.active() and seconds_since >= CHECKPOINT_SECONDS


# ----------------------------------------------------------------------------- loop state and resume
@dataclass
class LoopState:
    """The loop's counters, remedies and guard memory: plain values, saved in every checkpoint."""

    mb_done: int = 0  # minibatches trained
    passes: int = 0  # forward-backward computations
    train_seconds: float = 0.0  # training time; held-out checks and checkpoints excluded
    checkpoint_seconds: float = 0.0  # time spent writing checkpoints
    next_eval: int = 0  # optimizer step of the next held-out check
    rows: int = 0  # metrics.csv rows written
    count: int = 0  # training examples seen since the last metrics row
    lr_scale: float = 1.0  # product of the guard's lr remedies
    alpha_scale: float = 1.0  # product of the guard's alpha remedies
    stopped: bool = False  # the guard's stop remedy ended training early
    good: dict | None = None  # guard: the best check so far {step, clean_acc, adv_acc, checkpoint}
    events: list = field(default_factory=list)  # guard events, for summary.json

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            setattr(self, f.name, state[f.name])


def run_config(run_dir: Path) -> TrainConfig:
    """The config a run directory was trained with (its config.json, values as resolved)."""
    try:
        resolved = read_json_object(Path(run_dir) / "config.json")
    except CheckpointError as exc:
        raise CheckpointError(f"{run_dir} is not a readable fastadv run directory ({exc})") from None
    return TrainConfig.from_dict({f.name: resolved[f.name] for f in fields(TrainConfig) if f.name in resolved})


def resume_config(run_dir: str | Path, config: TrainConfig | dict | None) -> TrainConfig:
    """The run's own config; ``config`` (if given) may differ only in RESUME_MAY_CHANGE or by None (= default)."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").is_file():
        raise CheckpointError(f"{run_dir} has finished (summary.json exists); nothing to resume")
    stored = run_config(run_dir)
    if config is None:
        return stored
    given = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    changed = [f"{k}={v!r} (run: {getattr(stored, k)!r})" for k, v in given.to_dict().items()
               if k not in RESUME_MAY_CHANGE and v is not None and v != getattr(stored, k)]
    if changed:
        raise ConfigError(f"cannot resume {run_dir.name} with other settings: {', '.join(changed)}; a resumed run "
                          f"keeps its config.json, only {', '.join(RESUME_MAY_CHANGE)} may change")
    return stored.replace(**{k: getattr(given, k) for k in RESUME_MAY_CHANGE})


def run_defining(cfg: TrainConfig) -> dict:
    """The config fields that change a run's numbers (checked when a checkpoint is loaded)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in RESUME_MAY_CHANGE}


def rng_state(attack_generator: torch.Generator) -> dict:
    """Every random stream the loop draws from, except the data generator (BatchStream saves it)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "attack": attack_generator.get_state(), "attack_device": attack_generator.device.type}


def set_rng_state(rng: dict, attack_generator: torch.Generator) -> str | None:
    """Restore ``rng_state``; returns a warning when the attack stream cannot move to this device type."""
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if rng["cuda"] and torch.cuda.is_available() and torch.cuda.device_count() == len(rng["cuda"]):
        torch.cuda.set_rng_state_all(rng["cuda"])
    if rng["attack_device"] != attack_generator.device.type:
        return (f"checkpoint was written on {rng['attack_device']}, this run is on {attack_generator.device.type}: "
                f"attack random starts continue from a fresh stream (numbers will differ from an unbroken run)")
    attack_generator.set_state(rng["attack"])
    return None


def training_state(cfg: TrainConfig, arch: dict, ctx: StepContext, stream: BatchStream, fns, loop: LoopState,
                   acc: torch.Tensor) -> dict:
    """A resume checkpoint: tensors and plain values only (loads with ``weights_only=True``)."""
    scaler = ctx.precision.scaler
    return {"format": 1, "step": ctx.iteration, "arch": arch, "config": run_defining(cfg),
            "model": plain_module(ctx.model).state_dict(), "optimizer": ctx.optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "schedules": [fn.state_dict() if hasattr(fn, "state_dict") else None for fn in fns],
            "method": ctx.state, "data": stream.state_dict(), "rng": rng_state(ctx.generator),
            "loop": asdict(loop), "acc": acc}


def check_same_run(ckpt: dict, cfg: TrainConfig, arch: dict, name: str) -> None:
    """One-line CheckpointError naming what differs when a checkpoint belongs to another run."""
    saved = ckpt.get("arch") or {}
    if (saved.get("model"), saved.get("dataset")) != (arch["model"], arch["dataset"]):
        raise CheckpointError(f"checkpoint {name} holds model {saved.get('model')!r} on dataset "
                              f"{saved.get('dataset')!r}, but this run trains {arch['model']!r} on {arch['dataset']!r}")
    want = run_defining(cfg)
    diffs = [f"{k}={saved_v!r} (this run: {want.get(k)!r})" for k, saved_v in (ckpt.get("config") or {}).items()
             if want.get(k) != saved_v]
    diffs += [f"{k}={saved[k]!r} (this run: {arch[k]!r})" for k in arch if k in saved and saved[k] != arch[k]]
    if diffs:
        raise CheckpointError(f"checkpoint {name} belongs to another run: {', '.join(diffs)}")


def restore_weights(ckpt: dict, ctx: StepContext, name: str) -> None:
    """Model, optimizer, loss scaler and method state (Free-m's delta) from a checkpoint."""
    try:
        plain_module(ctx.model).load_state_dict(ckpt["model"])
        ctx.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {name} does not fit this model: {first_line(exc)[:200]}") from None
    if ctx.precision.scaler is not None and ckpt["scaler"] is not None:
        ctx.precision.scaler.load_state_dict(ckpt["scaler"])
    device = next(ctx.model.parameters()).device
    method = own_rank(ckpt).get("method", ckpt["method"])
    ctx.state = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in method.items()}


def plain_module(model: nn.Module) -> nn.Module:
    """The module whose state_dict keys are the model's own: inside DDP and torch.compile wrappers."""
    model = distributed.unwrap(model)
    return getattr(model, "_orig_mod", model)


def rank_states(ctx: StepContext) -> list | None:
    """Under torchrun, every process's own state (Free-m's delta for its rows, attack random stream)."""
    if not distributed.active():
        return None
    mine = {"method": {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in ctx.state.items()},
            "attack": ctx.generator.get_state()}
    return distributed.gather_objects(mine)


def own_rank(ckpt: dict) -> dict:
    """This process's entry of a checkpoint's per-process states ({} when saved with another world size)."""
    ranks = ckpt.get("ranks")
    return ranks[distributed.rank()] if ranks and len(ranks) == distributed.world_size() else {}


def restore_training(ckpt: dict, cfg, arch, ctx, stream, fns, loop: LoopState, acc: torch.Tensor, name: str):
    """Put a checkpoint back into the live objects; returns a warning line or None."""
    check_same_run(ckpt, cfg, arch, name)
    restore_weights(ckpt, ctx, name)
    for fn, state in zip(fns, ckpt["schedules"]):
        if state is not None and hasattr(fn, "load_state_dict"):
            fn.load_state_dict(state)
    stream.load_state_dict(ckpt["data"])
    loop.load_state_dict(ckpt["loop"])
    acc.copy_(ckpt["acc"])
    ctx.iteration = ckpt["step"]
    note = set_rng_state(ckpt["rng"], ctx.generator)
    if "attack" in own_rank(ckpt):
        ctx.generator.set_state(own_rank(ckpt)["attack"])
    return note


# ----------------------------------------------------------------------------- catastrophic-overfitting guard
@dataclass(frozen=True)
class Guard:
    """Held-out PGD accuracy falls by more than ``drop`` below the best check so far while clean accuracy holds.

    Measured against the best check, not the previous one, so a collapse spread over several
    checks (0.28 -> 0.16 -> 0.10 -> 0.06 on MNIST with FGSM training) still trips it.
    """

    drop: float  # absolute fall of robust accuracy (fraction) that counts as a collapse
    remedy: str  # key of REMEDIES
    factor: float  # multiplier for the alpha and lr remedies

    def collapsed(self, good: dict | None, check) -> bool:
        return (good is not None and check.robust_acc < good["adv_acc"] - self.drop
                and check.clean_acc >= good["clean_acc"] - CLEAN_SLACK)


def remedy_stop(loop: LoopState, factor: float) -> str:
    loop.stopped = True
    return "training stopped"


def remedy_alpha(loop: LoopState, factor: float) -> str:
    loop.alpha_scale *= factor
    return f"alpha now x{loop.alpha_scale:g}"


def remedy_lr(loop: LoopState, factor: float) -> str:
    loop.lr_scale *= factor
    return f"lr now x{loop.lr_scale:g}"


REMEDIES = {"stop": remedy_stop, "alpha": remedy_alpha, "lr": remedy_lr}


def make_guard(cfg: TrainConfig) -> Guard | None:
    on = cfg.method in SINGLE_STEP if cfg.co_guard is None else cfg.co_guard
    return Guard(cfg.co_drop, cfg.co_remedy, cfg.co_factor) if on else None


def guard_check(guard: Guard, loop: LoopState, check, ctx: StepContext, run_dir: Path, warn) -> str:
    """Judge a held-out check: remember it if it is the best so far, or restore the best weights and apply the remedy.

    Returns the metrics.csv event text ("" when nothing happened).
    """
    if not guard.collapsed(loop.good, check):
        if loop.good is None or check.robust_acc >= loop.good["adv_acc"]:
            loop.good = {"step": ctx.iteration, "clean_acc": check.clean_acc, "adv_acc": check.robust_acc,
                         "checkpoint": checkpoint_name(ctx.iteration)}  # written right after this check
        return ""
    good = loop.good
    restore_weights(read_checkpoint(run_dir / CHECKPOINT_DIR / good["checkpoint"]), ctx, good["checkpoint"])
    action = REMEDIES[guard.remedy](loop, guard.factor)
    loop.events.append({"event": "catastrophic_overfitting", "step": ctx.iteration, "clean_acc": check.clean_acc,
                        "adv_acc": check.robust_acc, "good_step": good["step"], "good_clean_acc": good["clean_acc"],
                        "good_adv_acc": good["adv_acc"], "remedy": guard.remedy, "action": action})
    warn(f"catastrophic overfitting at step {ctx.iteration}: held-out PGD accuracy {check.robust_acc:.3f} "
         f"(step {good['step']}: {good['adv_acc']:.3f}), clean {check.clean_acc:.3f}; "
         f"restored step {good['step']}, {action}")
    return f"catastrophic overfitting: restored step {good['step']}, {action}"


# ----------------------------------------------------------------------------- the loop
def train(config: TrainConfig | dict | None = None, *, data: Dataset | None = None,
          resume: str | Path | None = None) -> RunResult:
    """Train a model as ``config`` says and write its run directory; returns a RunResult.

    ``resume``: a run directory left unfinished (killed, crashed: no summary.json); training
    goes on from its newest intact checkpoint with the run's own config.json, to the same
    numbers an unbroken run gets. ``config`` may then be None; if given it must agree with
    config.json except in RESUME_MAY_CHANGE fields. Raises CheckpointError (one line) when
    the directory has no usable checkpoint, TrainingDiverged when the loss becomes non-finite.
    """
    if resume is None and config is None:
        raise ConfigError("train() needs a config, or resume= a run directory")
    cfg = resume_config(resume, config) if resume is not None else (
        config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config))
    check_names(cfg)
    with distributed.session(resolve_device(cfg.device)):  # torchrun: one process per device
        return train_run(cfg, data, resume)


def train_run(cfg: TrainConfig, data: Dataset | None, resume: str | Path | None) -> RunResult:
    """The body of ``train`` (inside the process group when there is one)."""
    device = distributed.local_device(resolve_device(cfg.device))
    distributed.per_rank_batch(cfg.batch_size)  # the global batch must split evenly across processes
    seed_everything(cfg.seed)
    if data is None:
        with distributed.main_first():  # rank 0 fills the download cache before the others read it
            data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, device=device)
    data = data.limit_train(cfg.train_limit).to(device)
    check_model_args(cfg, data)
    lr_finder = None
    if cfg.lr_max is None:  # "auto": LR range test first; it leaves the RNG state as it found it
        from fastadv.finder import auto_lr_max

        cfg, lr_finder = auto_lr_max(cfg, data)

    method = METHODS[cfg.method]
    eps = resolve_eps(cfg)
    alpha = cfg.alpha if cfg.alpha is not None else method.default_alpha(eps, cfg.attack_steps)
    per_epoch = batches_per_epoch(len(data.y_train), cfg.batch_size)
    steps_per_mb = method.steps_per_minibatch(cfg.replays, cfg.attack_steps)
    minibatches = max(1, round(cfg.iterations / steps_per_mb) if cfg.iterations > 0  # thesis unit: steps
                      else round(cfg.epochs * per_epoch))
    total_steps = minibatches * steps_per_mb
    lr_fn = schedules.build(cfg.lr_schedule, total_steps, lr_max=cfg.lr_max)
    mom_fn = schedules.build_momentum(cfg.momentum_schedule, total_steps, lr_spec=cfg.lr_schedule,
                                      momentum=cfg.momentum)
    eval_every = cfg.eval_every or max(1, total_steps // 10)
    augment = data.augment if cfg.augment is None else cfg.augment

    arch = arch_of(cfg, data)
    model = model_from_arch(arch).to(device)
    channels_last = perf.resolve_channels_last(cfg.channels_last, device)
    speed = {**perf.configure_backends(device), "channels_last": channels_last, "compile": cfg.compile}
    # the module trained with (channels_last / compiled); it shares model's weights
    train_model = perf.prepare_model(model, channels_last=channels_last, compile=cfg.compile)
    optimizer = make_optimizer(cfg, model)
    generator = torch.Generator(device=device).manual_seed(distributed.rank_seed(cfg.seed + 1))  # random starts
    data_gen = torch.Generator().manual_seed(cfg.seed)  # data order and augmentation
    stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, generator=data_gen, augment=augment,
                         shard=distributed.rows)
    loop = LoopState(next_eval=eval_every)
    ctx = StepContext(distributed.wrap(train_model, device), optimizer, eps, alpha, cfg.replays, cfg.attack_steps,
                      hyperparam_setter(optimizer, lr_fn, mom_fn, lambda: loop.lr_scale), generator,
                      precision=make_precision(cfg.precision, device), noise=cfg.noise)
    speed["precision"] = ctx.precision.mode

    if resume is None:
        resolved = {**cfg.to_dict(), "eps": eps, "alpha": alpha, "augment": augment, "total_steps": total_steps,
                    "minibatches": minibatches, "eval_every": eval_every, "device": str(device),
                    "data_source": data.source, "train_size": len(data.y_train), "arch": arch,
                    "speed": speed, "versions": versions(), "world_size": distributed.world_size(),
                    **({"lr_finder": lr_finder} if lr_finder else {})}
        run_dir = distributed.from_main(lambda: new_run_dir(cfg.out_dir, cfg.name or run_name(cfg), resolved))
        cfg = run_config(run_dir)  # as resolved, exactly what a resume reads back
    else:
        run_dir = Path(resume)

    # Held-out check: fixed test points (the same for every run), quick PGD at eps/4.
    monitor_idx = torch.randperm(len(data.y_test), generator=torch.Generator().manual_seed(0))[:cfg.eval_size]
    monitor = (data.x_test[monitor_idx.to(device)], data.y_test[monitor_idx.to(device)])
    monitor_attack = AttackSpec("pgd", eps=eps, steps=cfg.eval_attack_steps, restarts=1)

    fns, guard = (lr_fn, mom_fn), make_guard(cfg)
    acc = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct since last row (count: loop.count)

    def save() -> str:
        t = time.perf_counter()
        keep = (loop.good["checkpoint"],) if loop.good else ()
        state = training_state(cfg, arch, ctx, stream, fns, loop, acc)
        state["ranks"] = rank_states(ctx)
        if distributed.is_main():
            write_checkpoint(run_dir, ctx.iteration, state, keep=keep)
        distributed.barrier()  # every rank may read the checkpoint (guard) once it is complete
        loop.checkpoint_seconds += time.perf_counter() - t
        return checkpoint_name(ctx.iteration)

    def make_log(**kw) -> RunLog:
        return RunLog(run_dir, total_steps, cfg.progress, **kw) if distributed.is_main() else distributed.Silent()

    if resume is None:
        last_saved = save()  # step 0: a run killed at any moment can be resumed
        log = make_log()
    else:
        path = latest_checkpoint(run_dir, warn=lambda m: print(f"fastadv: {m}", file=sys.stderr))
        note = restore_training(read_checkpoint(path), cfg, arch, ctx, stream, fns, loop, acc, path.name)
        last_saved = path.name
        log = make_log(rows=loop.rows, step=ctx.iteration)
        log.warn(f"fastadv: resuming {run_dir.name} from {path.name} (step {ctx.iteration} of {total_steps})")
        if note:
            log.warn(f"fastadv: {note}")

    model.train()
    t0 = last_save_time = time.perf_counter()
    saved_step = ctx.iteration
    try:
        while loop.mb_done < minibatches and not loop.stopped:
            x, y = next(stream)
            ramp = eps_ramp(loop.mb_done / minibatches, cfg.eps_warmup)
            ctx.eps, ctx.alpha = eps * ramp, alpha * loop.alpha_scale * ramp
            stats = method.step(ctx, perf.prepare_batch(x, channels_last), y)
            acc[0] += stats.loss_sum
            acc[1] += stats.correct
            loop.count += stats.count  # a host int: no tensor is built from it per step
            loop.passes += stats.passes
            loop.mb_done += 1
            log.bar.update(steps_per_mb)
            at_check = ctx.iteration >= loop.next_eval or loop.mb_done >= minibatches
            if at_check or checkpoint_due(cfg.checkpoint_every, ctx.iteration - saved_step,
                                          time.perf_counter() - last_save_time):
                loop.train_seconds += elapsed(t0, device)
                total = distributed.all_reduce_sum(  # loss sum, correct, count: this process's or all processes'
                    torch.cat([acc, torch.tensor([float(loop.count)], dtype=acc.dtype, device=device)]))
                if not all_finite(total, model):
                    raise TrainingDiverged(f"training loss became non-finite before step {ctx.iteration}; "
                                           f"kept checkpoint {last_saved}; lower lr_max (now {cfg.lr_max})")
                if at_check:
                    check = distributed.evaluate(model, monitor, attack=monitor_attack,
                                                 batch_size=cfg.eval_batch_size, seed=cfg.seed)
                    event = guard_check(guard, loop, check, ctx, run_dir, log.warn) if guard else ""
                    log.row(metrics_row(ctx, loop, total, check, fns, per_epoch, event))
                    loop.rows += 1
                    observe_schedules(fns, ctx.iteration, check)
                    acc.zero_()
                    loop.count = 0
                    loop.next_eval += eval_every
                last_saved, saved_step = save(), ctx.iteration
                t0 = last_save_time = time.perf_counter()
    except TrainingDiverged as exc:
        loop.events.append({"event": "diverged", "step": ctx.iteration, "message": str(exc)})
        if distributed.is_main():
            write_json(run_dir / "summary.json", {
                "name": run_dir.name, "dataset": cfg.dataset, "model": cfg.model, "method": cfg.method,
                "status": "diverged", "message": str(exc), "clean_acc": None, "robust_acc": None,
                "steps": ctx.iteration, "train_seconds": loop.train_seconds, "last_checkpoint": last_saved,
                "events": loop.events, "seed": cfg.seed, "device": str(device)})
        raise
    finally:
        log.close()

    ranks = distributed.summary_fields(model)  # rank 0's buffers everywhere; weights identical on all ranks
    if distributed.is_main():
        save_weights(model, run_dir, arch)
    final = AttackSpec("pgd", eps=eps, alpha=cfg.final_alpha, steps=cfg.final_attack_steps,
                       restarts=cfg.final_restarts)
    t_eval = time.perf_counter()
    aa_lite = AALite(points=cfg.final_aa_points, targets=cfg.final_aa_targets) if cfg.final_aa_points else None
    result = distributed.evaluate(model, data, attack=final, limit=cfg.final_limit,
                                  batch_size=cfg.eval_batch_size, seed=cfg.seed, sanity=True, aa_lite=aa_lite)
    n_train = len(data.y_train)
    summary = {
        "name": run_dir.name, "dataset": cfg.dataset, "model": cfg.model, "method": cfg.method,
        "status": "stopped by the overfitting guard" if loop.stopped else "completed",
        "headline": headline(result),
        "clean_acc": result.clean_acc, "robust_acc": result.robust_acc,  # robust_acc: the final PGD-K alone
        "clean_loss": result.clean_loss, "robust_loss": result.robust_loss,
        "attack": result.attack, "attack_params": final.to_dict(), "eval_points": result.points,
        "aa_lite": result.aa_lite,
        "trusted": result.trusted, "sanity": [c.to_dict() for c in result.sanity],  # fastadv.sanity checks
        "eps": eps, "train_seconds": loop.train_seconds, "eval_seconds": time.perf_counter() - t_eval,
        "checkpoint_seconds": loop.checkpoint_seconds,
        "steps": ctx.iteration, "epochs": loop.mb_done / per_epoch,
        "minibatches": loop.mb_done, "grad_computations": loop.passes,
        "compute_epochs": loop.passes * cfg.batch_size / n_train,  # fwd-bwd work in passes over the data
        "co_guard": guard is not None, "events": loop.events,
        "train_size": n_train, "data_note": data.split_note,
        "seed": cfg.seed, "device": str(device), **ranks,
    }
    if distributed.is_main():
        write_json(run_dir / "summary.json", summary)
    return RunResult(run_dir, summary, model.eval(), cfg)


def headline(result) -> dict:
    """The figure to quote first: AA-lite's per-point worst case when it ran, else the final PGD-K."""
    if result.aa_lite:
        return {"robust_acc": result.aa_lite["robust_acc"], "attack": result.aa_lite["attack"],
                "points": result.aa_lite["points"], "name": "AA-lite"}
    return {"robust_acc": result.robust_acc, "attack": result.attack, "points": result.points, "name": "PGD"}


def metrics_row(ctx: StepContext, loop: LoopState, acc: torch.Tensor, check, fns, per_epoch: int, event: str) -> dict:
    """One metrics.csv row at a held-out check (``acc``: loss sum, correct, count since the last row)."""
    loss_sum, correct, count = acc.tolist()
    lr_fn, mom_fn = fns
    step = max(ctx.iteration - 1, 0)  # the step just taken
    return {"step": ctx.iteration, "epoch": loop.mb_done / per_epoch, "seconds": loop.train_seconds,
            "lr": lr_fn(step) * loop.lr_scale, "momentum": mom_fn(step),
            "train_loss": loss_sum / count, "train_acc": correct / count,
            "clean_loss": check.clean_loss, "clean_acc": check.clean_acc,
            "adv_loss": check.robust_loss, "adv_acc": check.robust_acc,
            "grad_computations": loop.passes, "event": event}


def read_summary(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())
