"""One setup step for every training job: ``build(cfg, data=None, model=None) -> Setup``.

The loop, the LR and weight-decay finders, the grid and the benchmarks all start here, so the
data, the augmentation rule, the model, the optimizer, the schedules, the step context and the
generators are made in one place. ``check_config`` is everything that can be checked before any
data is read (registry names, schedule specs, model arguments).
"""
from __future__ import annotations

import inspect
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fastadv.config import ConfigError, TrainConfig
from fastadv.threat import resolve_eps
from fastadv.core import distributed, perf, schedules
from fastadv.core.methods import METHODS, Method, StepContext, check_method_norm, hyperparam_setter
from fastadv.core.precision import make_precision
from fastadv.data import (
    DATASETS,
    BatchStream,
    Dataset,
    batches_per_epoch,
    is_dataset_name,
    load_dataset,
    unknown_name,
)
from fastadv.errors import first_line
from fastadv.models import MODELS, build_model, is_known, model_value, wrap_model
from fastadv.models.store import arch_of
from fastadv.specs import parse_spec
from fastadv.training.averaging import Averager, Selection
from fastadv.training.budget import FIRST_FIT
from fastadv.training.log import check_tracking
from fastadv.training.state import LoopState

SCHEDULE_SAMPLES = 1000  # steps at which a schedule is evaluated to check its values


@dataclass
class Setup:
    """Everything a training job works with, made from a config by ``build``."""

    cfg: TrainConfig
    device: torch.device
    data: Dataset  # on the device, limited to train_limit
    model: nn.Module  # Normalize + net: what is saved and evaluated (shares weights with ctx.model)
    ctx: StepContext  # the step context: its model is the prepared (NHWC / compiled / DDP) module
    stream: BatchStream  # the training minibatches (data order and augmentation generator)
    method: Method
    lr_fn: schedules.Schedule
    mom_fn: schedules.Schedule
    loop: LoopState
    eps: float
    alpha: float
    per_epoch: int  # minibatches per pass over the training data
    minibatches: int  # minibatches of the run
    total_steps: int  # optimizer steps of the run (Free-m's replays included)
    eval_every: int  # optimizer steps between held-out checks
    arch: dict  # how to rebuild the model (fastadv.models.store)
    channels_last: bool
    speed: dict  # what perf and precision switched on, for config.json
    lr_finder: dict | None = None  # the LR range test's record when lr_max was "auto"
    averager: Averager | None = None  # the averaged weights (average = ema | swa)
    selection: Selection | None = None  # the kept weights' candidate (with averaging or keep = "best")

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.ctx.optimizer

    @property
    def steps_per_minibatch(self) -> int:
        return self.method.steps_per_minibatch(self.cfg.replays, self.cfg.attack_steps)

    @property
    def passes_per_minibatch(self) -> int:
        return self.method.passes_per_minibatch(self.cfg.replays, self.cfg.attack_steps)

    def refit(self, minibatches: int) -> None:
        """Give the run ``minibatches`` in all (the time budget's fit): the schedules stretch over the new
        total (they are functions of progress), the held-out checks and the averaging start move with it."""
        self.minibatches = max(minibatches, self.loop.mb_done, 1)
        self.total_steps = self.minibatches * self.steps_per_minibatch
        lr_fn, mom_fn = schedules.for_config(self.cfg, self.total_steps)
        for new, old in ((lr_fn, self.lr_fn), (mom_fn, self.mom_fn)):
            new.load_state_dict(old.state_dict())
        self.lr_fn, self.mom_fn = lr_fn, mom_fn
        self.ctx.set_hyperparams = hyperparam_setter(self.optimizer, lr_fn, mom_fn, lambda: self.loop.lr_scale)
        self.eval_every = self.cfg.eval_every or max(1, self.total_steps // 10)
        self.loop.next_eval = max((self.loop.rows + 1) * self.eval_every, self.ctx.iteration + 1)
        self.loop.planned_minibatches = self.minibatches
        if self.averager is not None:
            self.averager.start_step = round(self.cfg.average_start * self.total_steps)


def build(cfg: TrainConfig, data: Dataset | None = None, model: nn.Module | None = None) -> Setup:
    """The setup of a run of ``cfg``: data, model, optimizer, schedules, step context, data stream, generators.

    Seeds everything first. ``lr_max`` must be set: "auto" (None) is resolved before, by
    ``fastadv.training.finder.auto_lr_max`` (``fastadv.train`` does that).

    Arguments:
        cfg (TrainConfig): the run's config.
        data (Dataset, optional): instead of loading ``cfg.dataset``.
        model (nn.Module, optional): one's own net (normalized input, logits out) instead of ``cfg.model``.

    Returns:
        ``Setup``: everything a training job works with (``s.ctx`` steps, ``s.stream`` draws batches).

    Example::

        s = fastadv.build(fastadv.TrainConfig(dataset="cifar10", model="airbench-half", method="fgsm-rs"))
        x, y = next(s.stream)
        stats = s.method.step(s.ctx, x, y)
    """
    if cfg.lr_max is None:
        raise ConfigError("build() needs lr_max; resolve lr_max = auto with fastadv.training.finder.auto_lr_max")
    device = distributed.local_device(perf.resolve_device(cfg.device))
    distributed.per_rank_batch(cfg.batch_size)  # the global batch must split evenly across processes
    seed_everything(cfg.seed)
    data = (data if data is not None else load_data(cfg, device)).with_validation(cfg.val_size)
    data = data.limit_train(cfg.train_limit).to(device)
    arch = arch_of(cfg, data, model)
    net = own_model(model, data) if model is not None else build_checked(cfg, data)
    net = net.to(device)
    method = METHODS[cfg.method]
    check_method_norm(cfg.method, cfg.norm)
    eps = resolve_eps(cfg)
    alpha = cfg.alpha if cfg.alpha is not None else method.default_alpha(eps, cfg.attack_steps)
    per_epoch = batches_per_epoch(len(data.y_train), cfg.batch_size)
    steps_per_mb = method.steps_per_minibatch(cfg.replays, cfg.attack_steps)
    minibatches = max(1, round(cfg.iterations / steps_per_mb) if cfg.iterations > 0  # thesis unit: steps
                      else round(cfg.epochs * per_epoch))
    if cfg.time_budget:  # a provisional length until the budget's first fit (fastadv.training.budget)
        minibatches = max(minibatches, FIRST_FIT + 1)
    total_steps = minibatches * steps_per_mb
    lr_fn, mom_fn = schedules.for_config(cfg, total_steps)
    channels_last = perf.resolve_channels_last(cfg.channels_last, device)
    train_model = perf.prepare_model(net, channels_last=channels_last, compile=cfg.compile)  # shares net's weights
    optimizer = make_optimizer(cfg, net)
    loop = LoopState(next_eval=cfg.eval_every or max(1, total_steps // 10)).start(device)
    ctx = StepContext(distributed.wrap(train_model, device), optimizer, eps, alpha, cfg.replays, cfg.attack_steps,
                      hyperparam_setter(optimizer, lr_fn, mom_fn, lambda: loop.lr_scale),
                      torch.Generator(device=device).manual_seed(distributed.rank_seed(cfg.seed + 1)),  # random starts
                      precision=make_precision(cfg.precision, device), noise=cfg.noise,
                      label_smoothing=cfg.label_smoothing, args=method_settings(cfg), train_size=len(data.y_train),
                      norm=cfg.norm)
    augment = data.augment if cfg.augment is None else cfg.augment
    stream = BatchStream(data.x_train, data.y_train, cfg.batch_size, augment=augment, shard=distributed.rows,
                         generator=torch.Generator().manual_seed(cfg.seed))  # data order and augmentation
    speed = {**perf.configure_backends(device), "channels_last": channels_last, "compile": cfg.compile,
             "precision": ctx.precision.mode}
    averager = Averager.for_config(cfg, net, total_steps, steps_per_mb)
    selection = Selection(cfg.keep) if averager is not None or cfg.keep == "best" else None
    return Setup(cfg, device, data, net, ctx, stream, method, lr_fn, mom_fn, loop, eps, alpha, per_epoch,
                 minibatches, total_steps, loop.next_eval, arch, channels_last, speed, averager=averager,
                 selection=selection)


def load_data(cfg: TrainConfig, device: torch.device) -> Dataset:
    """The config's dataset on ``device``, its validation split carved; under torchrun rank 0 fills the download
    cache before the others read it."""
    with distributed.main_first():
        return load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, device=device
                            ).with_validation(cfg.val_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over two param groups, weight decay on weights only (not on biases and BN).

    sgd (momentum, Nesterov), adam, adamw or ``torch:NAME`` (any ``torch.optim`` class) with ``cfg.optimizer_args``.
    The schedules write ``lr`` and momentum, or beta1 where the optimizer has ``betas``, before every step
    (``hyperparam_setter``); one with neither (Adagrad, Rprop) keeps a constant momentum schedule out of it.
    One-line ConfigError for an unknown name or an argument the constructor rejects.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    cls = optimizer_class(cfg.optimizer)
    kwargs = optimizer_kwargs(cfg, cls)
    try:
        return cls(groups, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"optimizer {cfg.optimizer} (optimizer_args {cfg.optimizer_args!r}): {first_line(exc)}"
                          ) from None


OPTIMIZER_CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}  # the rest: torch:NAME
OWN_FIELDS = {"lr": "lr_max and lr_schedule", "momentum": "momentum and momentum_schedule",
              "betas": "momentum and momentum_schedule (beta1) and beta2=", "weight_decay": "weight_decay (weights "
              "only)", "nesterov": "nesterov", "params": "the model"}


def optimizer_class(name: str) -> type:
    """The torch.optim class of an ``optimizer`` value; ConfigError naming the valid ones."""
    cls = getattr(torch.optim, OPTIMIZER_CLASSES.get(name, name.removeprefix("torch:")), None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)) or cls is torch.optim.Optimizer:
        valid = sorted(n for n, c in vars(torch.optim).items() if isinstance(c, type)
                       and issubclass(c, torch.optim.Optimizer) and c is not torch.optim.Optimizer)
        raise ConfigError(f"unknown optimizer {name!r} (valid: sgd, adam, adamw, or torch:NAME with NAME one of "
                          f"{', '.join(valid)})")
    return cls


def optimizer_kwargs(cfg: TrainConfig, cls: type) -> dict:
    """The constructor's keyword arguments: ``cfg.optimizer_args`` ('key=value,...', values as for model
    arguments) and the fields' lr, momentum (or beta1) and nesterov."""
    given: dict = {}
    for item in filter(None, (i.strip() for i in cfg.optimizer_args.split(","))):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key.isidentifier() or not value or key in given:
            raise ConfigError(f"optimizer_args {cfg.optimizer_args!r}: expected key=value,... with each key once, "
                              f"got {item!r}")
        if key in OWN_FIELDS:
            raise ConfigError(f"optimizer_args: {key} is set by {OWN_FIELDS[key]}")
        given[key] = model_value(value)
    params = inspect.signature(cls).parameters
    kwargs = {"lr": cfg.lr_max if cfg.lr_max is not None else 1e-3}  # None: auto, found before build
    if "betas" in params:
        kwargs["betas"] = (cfg.momentum, given.pop("beta2", params["betas"].default[1]))
    elif "momentum" in params:
        kwargs["momentum"] = cfg.momentum
    if cfg.nesterov:
        if "nesterov" not in params:
            raise ConfigError(f"nesterov = true is for sgd; {cfg.optimizer} has no Nesterov option")
        kwargs["nesterov"] = True
    if "beta2" in given:
        raise ConfigError(f"optimizer_args: beta2 is for optimizers with betas, and {cls.__name__} has none")
    return {**kwargs, **given}


def check_optimizer(cfg: TrainConfig) -> None:
    """``make_optimizer`` on a stand-in parameter and one step of it: an unknown name, an argument the constructor
    rejects or an optimizer that cannot step without a closure (LBFGS) fail here, in one line."""
    probe = nn.ParameterList([nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))])  # a weight, a bias; no RNG
    optimizer = make_optimizer(cfg, probe)
    has_momentum = any(k in optimizer.param_groups[0] for k in ("momentum", "betas"))
    if not has_momentum and parse_spec(cfg.momentum_schedule)[0] != "constant":
        raise ConfigError(f"momentum_schedule {cfg.momentum_schedule!r}: {cfg.optimizer} has neither momentum nor "
                          f"betas for it to set (use the constant schedule)")
    sum(p.square().sum() for p in probe).backward()
    try:
        optimizer.step()
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"optimizer {cfg.optimizer} cannot take fastadv's steps: {first_line(exc)}") from None


def own_model(model: nn.Module, data: Dataset) -> nn.Module:
    """One's own net in the Normalize layout (unless it already is), checked on one of the data's images."""
    from fastadv.models import Normalize

    wrapped = isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[0], Normalize)
    net = model if wrapped else wrap_model(model, data.channels, data.mean, data.std)
    try:
        with torch.no_grad():
            out = net.eval()(torch.zeros(2, data.channels, data.size, data.size,
                                         device=next(net.parameters()).device))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(f"the model given cannot take {data.name}'s {data.channels}x{data.size}x{data.size} "
                          f"images: {first_line(exc)}") from None
    if out.dim() != 2 or out.shape[1] != data.num_classes:
        raise ConfigError(f"the model given returns {tuple(out.shape)} for 2 images; it must return "
                          f"(N, {data.num_classes}) logits for {data.name}")
    return net


def build_checked(cfg: TrainConfig, data: Dataset) -> nn.Module:
    """The registry's model for the data, after ``check_model_args`` has tried it on the meta device."""
    check_model_args(cfg, data)
    return build_model(cfg.model, num_classes=data.num_classes, channels=data.channels, size=data.size,
                       mean=data.mean, std=data.std, depth=cfg.depth, width=cfg.width)


# ----------------------------------------------------------------------------- checks needing registries
def check_config(cfg: TrainConfig, model: nn.Module | None = None) -> None:
    """Everything that can be checked before any data is read: registry names (with the valid
    ones), schedule specs (parameter types, contradictions, the values they produce), the model's
    own arguments (e.g. wide-resnet depth), and that a given ``data_dir`` exists. ``model``: one's
    own net, which replaces the registry's. Raises ConfigError with one line.
    """
    if not is_dataset_name(cfg.dataset):
        raise ConfigError(unknown_name("dataset", cfg.dataset, [*DATASETS, "folder:PATH"]))
    if cfg.method not in METHODS:
        raise ConfigError(unknown_name("method", cfg.method, METHODS))
    if model is None and not is_known(cfg.model):
        raise ConfigError(unknown_name("model", cfg.model, MODELS) + " or torchvision:NAME, timm:NAME")
    method_settings(cfg)
    check_method_norm(cfg.method, cfg.norm)
    resolve_eps(cfg)  # an L2 run on a dataset without a standard L2 radius must give eps
    check_schedules(cfg)
    check_optimizer(cfg)
    check_tracking(cfg)
    if model is None:
        check_model_args(cfg)
    if cfg.data_dir is not None and not Path(cfg.data_dir).expanduser().is_dir():
        raise ConfigError(f"data_dir not found: {cfg.data_dir}")


def method_settings(cfg: TrainConfig) -> dict:
    """The method's own settings: its defaults under ``cfg.method_args`` ('key=value,...'); one-line ConfigError."""
    _, given = parse_spec(f"{cfg.method}:{cfg.method_args}") if cfg.method_args.strip() else ("", {})
    try:
        return METHODS[cfg.method].resolve(given)
    except ValueError as exc:
        raise ConfigError(f"method_args {cfg.method_args!r} for {cfg.method}: {exc}") from None


def check_schedules(cfg: TrainConfig) -> None:
    """Build both schedules; their parameters must have the right types and values in range.

    The LR must be finite and >= 0 everywhere and > 0 somewhere; momentum (Adam: beta1) in [0, 1).
    Values are checked at SCHEDULE_SAMPLES + 1 evenly spaced points of training.
    """
    for field, spec, registry in (("lr_schedule", cfg.lr_schedule, schedules.SHAPES),
                                  ("momentum_schedule", cfg.momentum_schedule, schedules.MOMENTUM_SHAPES)):
        check_spec_types(field, spec, registry)
    fns = dict(zip(("lr_schedule", "momentum_schedule"), schedules.for_config(cfg, SCHEDULE_SAMPLES)))
    for field, fn in fns.items():
        spec = getattr(cfg, field)
        try:
            values = [fn(step) for step in range(SCHEDULE_SAMPLES + 1)]
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise ConfigError(f"{field} {spec!r} cannot be evaluated: {first_line(exc)}") from None
        bad = next((v for v in values if not math.isfinite(v)), None)
        if bad is not None:
            raise ConfigError(f"{field} {spec!r} gives a non-finite value ({bad})")
        if field == "lr_schedule" and (min(values) < 0 or max(values) <= 0):
            raise ConfigError(f"lr_schedule {spec!r} gives learning rates from {min(values):.3g} to "
                              f"{max(values):.3g}; they must be >= 0 and not all 0")
        if field == "momentum_schedule" and not (0 <= min(values) and max(values) < 1):
            raise ConfigError(f"momentum_schedule {spec!r} gives momenta from {min(values):.3g} to "
                              f"{max(values):.3g}; they must be in [0, 1)")


def check_spec_types(field: str, spec: str, registry: dict) -> None:
    """A spec parameter whose default is a number must be given a number ('peak=abc' is an error)."""
    name, params = parse_spec(spec)
    if name not in registry:
        return  # build() names the valid shapes
    signature = inspect.signature(registry[name]).parameters
    for key, value in params.items():
        if key not in signature:
            continue  # build() names the valid parameters
        default, annotation = signature[key].default, str(signature[key].annotation)
        numeric = (isinstance(default, (int, float)) and not isinstance(default, bool)) or annotation in (
            "float", "int", "float | None", "int | None")
        if numeric and not isinstance(value, float):
            raise ConfigError(f"{field} {spec!r}: {key} expects a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{field} {spec!r}: {key} must be a finite number, got {value}")


def check_model_args(cfg: TrainConfig, data: Dataset | None = None) -> None:
    """Build the model on PyTorch's meta device (no memory, no compute) and run one image through it,
    so bad arguments (wide-resnet depth 5) or, given the ``data``, images too small for the net fail as
    ConfigError before any work. Without data a 3 x 32 x 32 image is used. Outside nets (torchvision:,
    timm:) are only looked up by name here: building them on the meta device is not supported by all.
    """
    channels, size, classes = (data.channels, data.size, data.num_classes) if data is not None else (3, 32, 10)
    if cfg.model not in MODELS:
        return
    try:
        with torch.device("meta"):
            model = build_model(cfg.model, num_classes=classes, channels=channels, size=size,
                                depth=cfg.depth, width=cfg.width)
            model.eval()(torch.zeros(1, channels, size, size))
    except (ValueError, RuntimeError, TypeError) as exc:
        where = f" for {data.name}'s {channels}x{size}x{size} images" if data is not None else ""
        raise ConfigError(f"model {cfg.model!r} cannot be built{where}: {first_line(exc)}") from None


__all__ = ["Setup", "build", "check_config", "check_model_args", "make_optimizer", "seed_everything"]
