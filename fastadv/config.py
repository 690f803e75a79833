"""Training configuration: one frozen dataclass, typed overrides, one-line errors.

Every field has a default and a comment with its unit. A config comes from defaults,
then a TOML/JSON file, then ``--key value`` overrides; unknown keys and wrong types are
errors (``ConfigError``), which the CLI prints as one line with exit code 2.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from fastadv.errors import UserError, first_line


class ConfigError(UserError, ValueError):
    """A bad configuration value; the message is one line meant for the user."""


@dataclass(frozen=True)
class TrainConfig:
    # --- recipe
    preset: str | None = None  # a preset whose values sit under these (fastadv.presets; fastadv train picks one by dataset); none = off
    # --- data and model
    dataset: str = "mnist"  # registry name: see fastadv.data.DATASETS
    data_dir: str | None = None  # looked up first, then $FASTADV_DATA, then ~/.cache/fastadv
    download: bool = True  # torchvision download into ~/.cache/fastadv when nothing is found
    model: str = "small-cnn"  # registry name: see fastadv.models.MODELS
    width: int = 10  # wide-resnet only: width factor
    depth: int = 34  # wide-resnet only: depth (32 gives Free-m's WRN-32-10 layout)
    augment: bool | None = None  # crop+flip on the device; None = dataset default (CIFAR yes)
    train_limit: int = 0  # use only the first N training images (0 = all)
    # --- adversary (pixel units on [0,1]; "8/255" accepted)
    method: str = "free"  # standard | free | fgsm-rs | fgsm | n-fgsm | pgd
    eps: float | None = None  # L-inf radius; None = dataset standard (MNIST 0.3, CIFAR 8/255)
    alpha: float | None = None  # attack step; None = method default (free, fgsm, n-fgsm: eps; fgsm-rs: 1.25 eps)
    replays: int = 8  # Free-m's m: times each minibatch is replayed
    attack_steps: int = 7  # PGD training's K
    noise: float = 2.0  # n-fgsm only: uniform noise radius in multiples of eps (the paper's k = 2)
    eps_warmup: float = 0.0  # fraction of training over which eps and alpha ramp up from 0
    # --- optimisation
    epochs: float = 10.0  # passes over the training data (Free-m: real passes, not replays)
    iterations: int = 0  # total optimizer steps, Free-m replays included (the thesis' unit); > 0 overrides epochs
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam
    lr_schedule: str = "one-cycle"  # schedule spec "name:key=value,..."; see fastadv.schedules
    lr_max: float | None = 0.1  # peak learning rate the schedule scales; "auto" = LR range test first (fastadv.finder)
    momentum_schedule: str = "constant"  # constant | one-cycle (the inverse 0.95-0.85 mirror)
    momentum: float = 0.9  # SGD momentum, or Adam beta1, for the constant schedule
    nesterov: bool = False
    weight_decay: float = 2e-4
    # --- speed
    precision: str = "auto"  # fp32 | bf16 | fp16 (GradScaler on CUDA) | auto (bf16 on CUDA and on CPUs with native bf16, else fp32 / fp16)
    channels_last: bool | None = None  # NHWC layout for model and batches; None = auto (on for CPU and CUDA: faster convolutions)
    compile: bool = False  # torch.compile the model for training (first steps pay the compilation)

    # --- evaluation
    eval_every: int = 0  # optimizer steps between held-out checks (0 = about 10 per run)
    eval_size: int = 1000  # fixed held-out test points for the periodic check
    eval_attack_steps: int = 10  # PGD steps of the periodic check (step eps/4, 1 restart)
    final_attack_steps: int = 20  # final PGD-K on the test set (the thesis' PGD-20)
    final_restarts: int = 1
    final_alpha: float | None = None  # None = eps/4
    final_limit: int = 0  # final evaluation on the first N test points (0 = all)
    final_aa_points: int = 1000  # AA-lite (worst case of the final PGD, APGD-CE, APGD-T) on the first N test points (0 = off)
    final_aa_targets: int = 3  # APGD-T target classes in AA-lite (AutoAttack standard: 9; 0 = APGD-CE only); cost ~ targets x 100 passes per robust point
    eval_batch_size: int = 500

    # --- safety: resume checkpoints, catastrophic-overfitting guard
    checkpoint_every: int = 0  # optimizer steps between resume checkpoints (0 = at held-out checks and every 4 min)
    co_guard: bool | None = None  # catastrophic-overfitting guard; None = on for single-step methods (fgsm-rs, free)
    co_drop: float = 0.2  # guard trips when held-out PGD accuracy falls by more than this while clean accuracy rises
    co_remedy: str = "alpha"  # after restoring the last good weights: stop | alpha | lr (scaled by co_factor)
    co_factor: float = 0.5  # what the alpha and lr remedies multiply their value by

    # --- run
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    out_dir: str = "runs"
    name: str | None = None  # run directory name; None = generated from the config
    progress: bool = True  # tqdm progress bar

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys and bad types raise ConfigError."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"a config must be a mapping of key = value pairs, got {type(values).__name__}")
        values = with_preset(values)
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known), key=str)
        if unknown:
            raise ConfigError(unknown_keys_message(unknown, list(known)))
        hints = typing.get_type_hints(cls)
        kwargs = {k: coerce(k, v, hints[k]) for k, v in values.items()}
        return cls(**kwargs).validated()

    @classmethod
    def from_file(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "TrainConfig":
        values = dict(read_config_file(path))
        values.update(overrides or {})
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---------------------------------------------------------------- checks
    def validated(self) -> "TrainConfig":
        """Check each value on its own (ranges, finiteness, formats); raise ConfigError naming the first bad one.

        Checks that need the registries (names, schedule specs, model arguments) are in
        ``check_config``; checks that need the data (image size) happen when the model is built.
        """
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # values built without from_dict (e.g. TrainConfig(eps=nan)) too
            value = getattr(self, f.name)
            if value is None:
                continue
            if hints[f.name] in (float, float | None) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
            if hints[f.name] in (int, int | None) and not INT_MIN <= value <= INT_MAX:
                raise ConfigError(f"{f.name} is out of range, got {value}")
        checks = [
            (self.eps is None or 0.0 <= self.eps <= 1.0, f"eps must be in [0, 1], got {self.eps}"),
            (self.alpha is None or self.alpha > 0, f"alpha must be > 0, got {self.alpha}"),
            (self.final_alpha is None or self.final_alpha > 0,
             f"final_alpha must be > 0, got {self.final_alpha}"),
            (0.0 <= self.eps_warmup <= 1.0, f"eps_warmup must be in [0, 1], got {self.eps_warmup}"),
            (self.replays >= 1, f"replays must be >= 1, got {self.replays}"),
            (self.noise >= 0, f"noise must be >= 0, got {self.noise}"),
            (self.attack_steps >= 1, f"attack_steps must be >= 1, got {self.attack_steps}"),
            (self.epochs > 0 and math.isfinite(self.epochs), f"epochs must be > 0, got {self.epochs}"),
            (self.iterations >= 0, f"iterations must be >= 0 (0 = use epochs), got {self.iterations}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (self.lr_max is None or self.lr_max > 0, f"lr_max must be > 0 or auto, got {self.lr_max}"),
            (0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_size >= 1, f"eval_size must be >= 1, got {self.eval_size}"),
            (self.eval_attack_steps >= 1, f"eval_attack_steps must be >= 1, got {self.eval_attack_steps}"),
            (self.final_attack_steps >= 1,
             f"final_attack_steps must be >= 1, got {self.final_attack_steps}"),
            (self.final_restarts >= 1, f"final_restarts must be >= 1, got {self.final_restarts}"),
            (self.final_limit >= 0, f"final_limit must be >= 0, got {self.final_limit}"),
            (self.final_aa_points >= 0, f"final_aa_points must be >= 0 (0 = no AA-lite), got {self.final_aa_points}"),
            (self.final_aa_targets >= 0, f"final_aa_targets must be >= 0 (0 = APGD-CE only), got {self.final_aa_targets}"),
            (self.train_limit >= 0, f"train_limit must be >= 0, got {self.train_limit}"),
            (self.width >= 1, f"width must be >= 1, got {self.width}"),
            (self.depth >= 1, f"depth must be >= 1, got {self.depth}"),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2**32), got {self.seed}"),
            (DEVICE_PATTERN.fullmatch(self.device) is not None,
             f"unknown device {self.device!r} (valid: auto, cpu, cuda, cuda:N, mps)"),
            (self.name is None or valid_run_name(self.name),
             f"name must be a plain folder name (no '/', not '.' or '..'), got {self.name!r}"),
            (self.out_dir != "", "out_dir cannot be empty"),
            (self.optimizer in ("sgd", "adam"), f"optimizer must be one of sgd, adam, got {self.optimizer!r}"),
            (self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}"),
            (0.0 < self.co_drop <= 1.0, f"co_drop must be in (0, 1], got {self.co_drop}"),
            (self.co_remedy in ("stop", "alpha", "lr"),
             f"co_remedy must be one of stop, alpha, lr, got {self.co_remedy!r}"),
            (0.0 < self.co_factor < 1.0, f"co_factor must be in (0, 1), got {self.co_factor}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # fastadv.precision: autocast dtypes, auto = by device
INT_MIN, INT_MAX = -2**63, 2**63 - 1  # what torch and NumPy accept as an integer argument
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number (e.g. 0.3 or 8/255)", str: "a string"}


def parse_fraction(text: str) -> float:
    """Parse '0.3', '8/255' or '2e-4' into a float (inf and nan pass); ValueError otherwise."""
    text = text.strip()
    if "/" in text:
        num, _, den = text.partition("/")
        return float(num) / float(den)
    return float(text)


def parse_number(text: str) -> float:
    """Parse '0.3', '8/255' or '2e-4' into a finite float; ValueError otherwise."""
    value = parse_fraction(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` (a string from the CLI, or a TOML/JSON value) to the field's type.

    Strings are accepted for every type (the CLI gives strings; a TOML file may write
    ``eps = "8/255"``); ranges are checked afterwards by ``TrainConfig.validated``.
    """
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "auto", "")):
        if optional:
            return None
        raise ConfigError(f"{key} cannot be empty")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            if isinstance(value, (int, float)):
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
            raise ValueError
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str):
                return parse_fraction(value)
            if isinstance(value, (int, float)):
                return float(value)
            raise ValueError
        if base is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        pass
    raise ConfigError(f"{key} expects {TYPE_NAMES.get(base, getattr(base, '__name__', base))}, got {value!r}")


def with_preset(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` over the preset they name (``fastadv.presets``); ConfigError for an unknown preset."""
    from fastadv import presets

    name = values.get("preset")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"preset expects a string, got {name!r}")
    try:
        return presets.apply(values)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def unknown_keys_message(unknown: list, known: list[str]) -> str:
    """'unknown config key(s): lr (did you mean lr_max?) (valid: ...)'."""
    named = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        named.append(f"{key} (did you mean {close[0]}?)" if close else str(key))
    return f"unknown config key(s): {', '.join(named)} (valid: {', '.join(known)})"


def valid_run_name(name: str) -> bool:
    """A run name is one folder inside out_dir: no separators, not '.' or '..', no NUL."""
    return bool(name.strip()) and not set(name) & {"/", "\\", "\0"} and name not in (".", "..")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config into a flat dict; one-line ConfigError on failure.

    ``.json`` files are JSON; anything else is read as TOML. The file must be one flat table
    of ``key = value`` pairs: a ``[section]`` is an error that names it.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix.lower() in (".yaml", ".yml", ".ini", ".cfg", ".py"):
        raise ConfigError(f"config file {path}: {path.suffix} is not supported (use .toml or .json)")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"cannot parse config file {path}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of key = value pairs, "
                          f"not a {type(data).__name__}")
    known = {f.name for f in fields(TrainConfig)}
    sections = [k for k, v in data.items() if isinstance(v, dict) and k not in known]
    if sections:
        raise ConfigError(f"config file {path}: [{sections[0]}] is a section; fastadv configs are one flat "
                          f"table of key = value pairs (move its keys to the top level)")
    return data


# ----------------------------------------------------------------------------- checks needing registries
def check_config(cfg: TrainConfig) -> None:
    """Everything that can be checked before any data is read: registry names (with the valid
    ones), schedule specs (parameter types, contradictions, the values they produce), the model's
    own arguments (e.g. wide-resnet depth), and that a given ``data_dir`` exists.
    Raises ConfigError with one line.
    """
    from fastadv.data import DATASETS, unknown_name
    from fastadv.methods import METHODS
    from fastadv.models import MODELS

    for kind, name, registry in (("dataset", cfg.dataset, DATASETS), ("model", cfg.model, MODELS),
                                 ("method", cfg.method, METHODS)):
        if name not in registry:
            raise ConfigError(unknown_name(kind, name, registry))
    check_schedules(cfg)
    check_model_args(cfg)
    if cfg.data_dir is not None and not Path(cfg.data_dir).expanduser().is_dir():
        raise ConfigError(f"data_dir not found: {cfg.data_dir}")


SCHEDULE_SAMPLES = 1000  # steps at which a schedule is evaluated to check its values


def check_schedules(cfg: TrainConfig) -> None:
    """Build both schedules; their parameters must have the right types and values in range.

    The LR must be finite and >= 0 everywhere and > 0 somewhere; momentum (Adam: beta1) in [0, 1).
    Values are checked at SCHEDULE_SAMPLES + 1 evenly spaced points of training.
    """
    from fastadv import schedules

    for field, spec, registry, build in (
            ("lr_schedule", cfg.lr_schedule, schedules.SHAPES,  # lr_max None = "auto", found by the range test
             lambda: schedules.build(cfg.lr_schedule, SCHEDULE_SAMPLES, lr_max=cfg.lr_max or 1.0)),
            ("momentum_schedule", cfg.momentum_schedule, schedules.MOMENTUM_SHAPES,
             lambda: schedules.build_momentum(cfg.momentum_schedule, SCHEDULE_SAMPLES, lr_spec=cfg.lr_schedule,
                                              momentum=cfg.momentum))):
        check_spec_types(field, spec, registry)
        fn = build()
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
    import inspect

    from fastadv import schedules

    name, params = schedules.parse_spec(spec)
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


def check_model_args(cfg: TrainConfig, data=None) -> None:
    """Build the model on PyTorch's meta device (no memory, no compute) and run one image through it,
    so bad arguments (wide-resnet depth 5) or, given the ``data`` (a Dataset), images too small for
    the net fail as ConfigError before any work. Without data a 3 x 32 x 32 image is used.
    """
    import torch

    from fastadv.models import build_model

    channels, size, classes = (data.channels, data.size, data.num_classes) if data is not None else (3, 32, 10)
    try:
        with torch.device("meta"):
            model = build_model(cfg.model, num_classes=classes, channels=channels, size=size,
                                depth=cfg.depth, width=cfg.width)
            model.eval()(torch.zeros(1, channels, size, size))
    except (ValueError, RuntimeError, TypeError) as exc:
        where = f" for {data.name}'s {channels}x{size}x{size} images" if data is not None else ""
        raise ConfigError(f"model {cfg.model!r} cannot be built{where}: {first_line(exc)}") from None


# Each dataset's standard threat model, used when eps is not given.
DEFAULT_EPS = {"mnist": 0.3, "digits": 0.3, "fashion-mnist": 0.1, "synthetic": 0.1}
CIFAR_EPS = 8 / 255


def resolve_eps(cfg: TrainConfig) -> float:
    """The attack radius of a run: the config's, else the dataset's standard one."""
    if cfg.eps is not None:
        return cfg.eps
    return DEFAULT_EPS.get(cfg.dataset, CIFAR_EPS)


__all__ = ["TrainConfig", "ConfigError", "parse_number", "read_config_file", "resolve_eps", "check_config",
           "check_model_args"]
