"""Training configuration: one frozen dataclass, typed overrides, one-line errors.

Every field has a default and a comment with its unit. A config comes from defaults,
then a TOML/JSON file, then ``--key value`` overrides; unknown keys and wrong types are
errors (``ConfigError``), which the CLI prints as one line with exit code 2.
"""
from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from fastadv.errors import UserError


class ConfigError(UserError, ValueError):
    """A bad configuration value; the message is one line meant for the user."""


@dataclass(frozen=True)
class TrainConfig:
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
    method: str = "free"  # standard | free | fgsm-rs | pgd
    eps: float | None = None  # L-inf radius; None = dataset standard (MNIST 0.3, CIFAR 8/255)
    alpha: float | None = None  # attack step; None = method default (free: eps, fgsm-rs: 1.25 eps)
    replays: int = 8  # Free-m's m: times each minibatch is replayed
    attack_steps: int = 7  # PGD training's K
    eps_warmup: float = 0.0  # fraction of training over which eps and alpha ramp up from 0
    # --- optimisation
    epochs: float = 10.0  # passes over the training data (Free-m: real passes, not replays)
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam
    lr_schedule: str = "one-cycle"  # schedule spec "name:key=value,..."; see fastadv.schedules
    lr_max: float = 0.1  # peak learning rate the schedule scales
    momentum_schedule: str = "constant"  # constant | one-cycle (the inverse 0.95-0.85 mirror)
    momentum: float = 0.9  # SGD momentum, or Adam beta1, for the constant schedule
    nesterov: bool = False
    weight_decay: float = 2e-4
    # --- speed
    precision: str = "fp32"  # fp32 | bf16 | fp16 (with a GradScaler on CUDA) | auto (bf16 on CUDA, fp32 on CPU)
    channels_last: bool = False  # NHWC memory layout for model and batches (faster convolutions on CPU and GPU)
    compile: bool = False  # torch.compile the model for training (first steps pay the compilation)

    # --- evaluation
    eval_every: int = 0  # optimizer steps between held-out checks (0 = about 10 per run)
    eval_size: int = 1000  # fixed held-out test points for the periodic check
    eval_attack_steps: int = 10  # PGD steps of the periodic check (step eps/4, 1 restart)
    final_attack_steps: int = 20  # final PGD-K on the test set (the thesis' PGD-20)
    final_restarts: int = 1
    final_alpha: float | None = None  # None = eps/4
    final_limit: int = 0  # final evaluation on the first N test points (0 = all)
    eval_batch_size: int = 500

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
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(unknown)} "
                              f"(valid: {', '.join(known)})")
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
        """Check values that need no registry lookup; registries check names when used."""
        checks = [
            (self.eps is None or 0.0 <= self.eps <= 1.0, f"eps must be in [0, 1], got {self.eps}"),
            (self.alpha is None or self.alpha > 0, f"alpha must be > 0, got {self.alpha}"),
            (self.final_alpha is None or self.final_alpha > 0,
             f"final_alpha must be > 0, got {self.final_alpha}"),
            (0.0 <= self.eps_warmup <= 1.0, f"eps_warmup must be in [0, 1], got {self.eps_warmup}"),
            (self.replays >= 1, f"replays must be >= 1, got {self.replays}"),
            (self.attack_steps >= 1, f"attack_steps must be >= 1, got {self.attack_steps}"),
            (self.epochs > 0 and math.isfinite(self.epochs), f"epochs must be > 0, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (self.lr_max > 0, f"lr_max must be > 0, got {self.lr_max}"),
            (0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}"),
            (self.eval_size >= 1, f"eval_size must be >= 1, got {self.eval_size}"),
            (self.eval_attack_steps >= 1, f"eval_attack_steps must be >= 1, got {self.eval_attack_steps}"),
            (self.final_attack_steps >= 1,
             f"final_attack_steps must be >= 1, got {self.final_attack_steps}"),
            (self.final_restarts >= 1, f"final_restarts must be >= 1, got {self.final_restarts}"),
            (self.final_limit >= 0, f"final_limit must be >= 0, got {self.final_limit}"),
            (self.train_limit >= 0, f"train_limit must be >= 0, got {self.train_limit}"),
            (self.width >= 1, f"width must be >= 1, got {self.width}"),
            (self.optimizer in ("sgd", "adam"), f"optimizer must be one of sgd, adam, got {self.optimizer!r}"),
            (self.precision in ("fp32", "bf16", "fp16", "auto"),
             f"precision must be one of fp32, bf16, fp16, auto, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


def parse_number(text: str) -> float:
    """Parse '0.3', '8/255' or '2e-4' into a float; ValueError otherwise."""
    text = text.strip()
    if "/" in text:
        num, _, den = text.partition("/")
        value = float(num) / float(den)
    else:
        value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert ``value`` (a string from the CLI, or a TOML/JSON value) to the field's type."""
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
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return parse_number(value) if isinstance(value, str) else float(value)
        if base is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    raise ConfigError(f"{key} expects {getattr(base, '__name__', base)}, got {value!r}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config into a flat dict; one-line ConfigError on failure."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            import tomllib

            data = tomllib.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"cannot parse config file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of key = value pairs")
    return data


# Each dataset's standard threat model, used when eps is not given.
DEFAULT_EPS = {"mnist": 0.3, "digits": 0.3, "fashion-mnist": 0.1, "synthetic": 0.1}
CIFAR_EPS = 8 / 255


def resolve_eps(cfg: TrainConfig) -> float:
    """The attack radius of a run: the config's, else the dataset's standard one."""
    if cfg.eps is not None:
        return cfg.eps
    return DEFAULT_EPS.get(cfg.dataset, CIFAR_EPS)


__all__ = ["TrainConfig", "ConfigError", "parse_number", "read_config_file", "resolve_eps"]
