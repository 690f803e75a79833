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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from fastadv.errors import UserError, first_line


class ConfigError(UserError, ValueError):
    """A bad configuration value; the message is one line meant for the user."""


def option(default: Any, help: str):
    """A config field: its default and the one line ``--help`` shows (read from the field's metadata)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    # --- recipe
    preset: str | None = option(None, "a preset whose values sit under these (fastadv.presets; fastadv train picks "
                                      "one by dataset); none = off")
    # --- data and model
    dataset: str = option("mnist", "registry name (fastadv.data.DATASETS: mnist, fashion-mnist, cifar10, cifar100, svhn, "
                                   "tiny-imagenet, ...) or folder:PATH (PATH/train/<class>/*, PATH/test/<class>/*)")
    data_dir: str | None = option(None, "looked up first, then $FASTADV_DATA, then ~/.cache/fastadv")
    download: bool = option(True, "torchvision download into ~/.cache/fastadv when nothing is found")
    model: str = option("small-cnn", "a fastadv.models.MODELS name, torchvision:NAME or timm:NAME")
    width: int = option(10, "wide-resnet only: width factor")
    depth: int = option(34, "wide-resnet only: depth (32 gives Free-m's WRN-32-10 layout)")
    augment: bool | None = option(None, "crop+flip on the device; None = dataset default (CIFAR yes)")
    train_limit: int = option(0, "use only the first N training images (0 = all), after the validation split")
    val_size: int = option(1000, "validation images carved from the training split (stratified by class, fixed "
                                 "seed), never trained on: every in-training decision reads them; at most a fifth "
                                 "of the split")
    # --- adversary (pixel units on [0,1]; "8/255" accepted)
    method: str = option("free", "a training method: fastadv train --help lists them (fastadv.core.methods.METHODS)")
    method_args: str = option("", "the method's own settings as key=value,... (e.g. grad-align: lam=0.2); "
                                  "fastadv train --help lists each method's")
    norm: str = option("linf", "threat model of training and evaluation: linf | l2")
    eps: float | None = option(None, "radius in the norm; None = dataset standard (L-inf: MNIST 0.3, CIFAR 8/255; L2: "
                                     "MNIST 2.0, CIFAR 0.5)")
    alpha: float | None = option(None, "attack step; None = method default (free, fgsm, n-fgsm: eps; fgsm-rs: 1.25 "
                                       "eps)")
    replays: int = option(8, "Free-m's m: times each minibatch is replayed")
    attack_steps: int = option(7, "PGD training's K")
    noise: float = option(2.0, "n-fgsm only: uniform noise radius in multiples of eps (the paper's k = 2)")
    eps_warmup: float = option(0.0, "fraction of training over which eps and alpha ramp up from 0")
    # --- optimisation
    epochs: float = option(10.0, "passes over the training data (Free-m: real passes, not replays)")
    iterations: int = option(0, "total optimizer steps, Free-m replays included (the thesis' unit); > 0 overrides "
                                "epochs")
    batch_size: int = option(128, "minibatch size (the global batch under torchrun)")
    optimizer: str = option("sgd", "sgd | adam | adamw | torch:NAME (any torch.optim optimizer, e.g. torch:RAdam)")
    optimizer_args: str = option("", "its other arguments as key=value,... (eps=1e-6,amsgrad=true; beta2=0.99); lr, "
                                     "momentum, beta1 and weight_decay come from their own fields")
    lr_schedule: str = option("one-cycle", "schedule spec name:key=value,...; fastadv schedule --list names them")
    lr_max: float | None = option(0.1, "peak learning rate the schedule scales; auto = LR range test first "
                                       "(fastadv.training.finder)")
    momentum_schedule: str = option("constant", "constant | one-cycle (the inverse 0.95-0.85 mirror)")
    momentum: float = option(0.9, "momentum (SGD, RMSprop), or beta1 (Adam, AdamW, ...), for the constant schedule; "
                                  "an optimizer with neither (Adagrad) ignores it")
    nesterov: bool = option(False, "Nesterov momentum (sgd only)")
    weight_decay: float = option(2e-4, "L2 weight decay on conv and linear weights (not on biases and BN)")
    label_smoothing: float = option(0.0, "label smoothing of the training loss (never of an attack's loss), in [0, 1)")
    time_budget: float | None = option(None, "seconds of training ('10m', '90s', '1h' accepted): the step count is "
                                             "fitted to the measured speed and overrides epochs; None = off")
    # --- weight averaging and the weights kept (torch.optim.swa_utils)
    average: str = option("none", "weight averaging: none | ema (exponential, with decay warm-up) | swa (equal "
                                  "average from average_start, BN statistics recomputed)")
    ema_decay: float = option(0.999, "ema: decay per optimizer step, warmed up as min(decay, (1+n)/(10+n))")
    average_start: float = option(0.0, "fraction of training after which averaging starts (swa: 0.75 is usual)")
    keep: str = option("last", "weights kept: last | best (the validation check with the best robust accuracy); "
                               "with averaging, the better of raw and averaged by that check")
    # --- speed
    precision: str = option("auto", "fp32 | bf16 | fp16 (GradScaler on CUDA) | auto (bf16 on CUDA and on CPUs with "
                                    "native bf16, else fp32 / fp16)")
    channels_last: bool | None = option(None, "NHWC layout for model and batches; None = auto (on for CPU and CUDA: "
                                              "faster convolutions)")
    compile: bool = option(False, "torch.compile the model for training (first steps pay the compilation)")

    # --- evaluation
    eval_every: int = option(0, "optimizer steps between held-out checks (0 = about 10 per run)")
    eval_size: int = option(1000, "validation points of the periodic check (at most val_size)")
    eval_attack_steps: int = option(10, "PGD steps of the periodic check (step eps/4, 1 restart)")
    final_attack_steps: int = option(20, "final PGD-K on the test set (the thesis' PGD-20)")
    final_restarts: int = option(1, "restarts of the final PGD (per-example worst case kept)")
    final_alpha: float | None = option(None, "None = eps/4")
    final_limit: int = option(0, "final evaluation on the first N test points (0 = all)")
    final_aa_points: int = option(1000, "AA-lite (worst case of the final PGD, APGD-CE, APGD-T) on the first N test "
                                        "points (0 = off)")
    final_aa_targets: int = option(3, "APGD-T target classes in AA-lite (AutoAttack standard: 9; 0 = APGD-CE only); "
                                      "cost ~ targets x 100 passes per robust point")
    eval_batch_size: int = option(500, "batch size of every evaluation")

    # --- safety: resume checkpoints, catastrophic-overfitting guard
    checkpoint_every: int = option(0, "optimizer steps between resume checkpoints (0 = at held-out checks and every 4 "
                                      "min)")
    co_guard: bool | None = option(None, "catastrophic-overfitting guard; None = on for single-step methods (fgsm, "
                                         "fgsm-rs, n-fgsm, free, ...)")
    co_drop: float = option(0.2, "guard trips when validation PGD accuracy falls by more than this below its best "
                                 "while clean accuracy holds (within 2 points)")
    co_remedy: str = option("alpha", "after restoring the last good weights: stop | alpha | lr (scaled by co_factor)")
    co_factor: float = option(0.5, "what the alpha and lr remedies multiply their value by")
    stop_if_not_learning: bool = option(True, "stop (exit 1) when held-out clean accuracy is within 5 points of "
                                              "chance after 25% of the budget")

    # --- run
    seed: int = option(0, "seed of weights, data order and attack random starts")
    device: str = option("auto", "auto | cpu | cuda | cuda:N | mps")
    out_dir: str = option("runs", "folder that holds the run directories")
    name: str | None = option(None, "run directory name; None = generated from the config")
    progress: bool = option(True, "tqdm progress bar")
    # --- tracking (fastadv.training.log)
    log_every: int = option(50, "optimizer steps between training scalars (loss, accuracy, LR, momentum, eps, "
                                "images/s) to TensorBoard, W&B, MLflow; 0 = off")
    wandb: bool = option(False, "log to Weights & Biases (pip install 'fastadv[wandb]'); offline under "
                                "WANDB_MODE=offline or with no API key")
    wandb_project: str = option("fastadv", "the W&B project")
    mlflow: str | None = option(None, "log to this MLflow tracking URI, e.g. file:./mlruns (pip install "
                                      "'fastadv[mlflow]'); None = off")

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
        if isinstance(values.get("time_budget"), str):
            values = {**values, "time_budget": parse_duration(values["time_budget"])}
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
        ``fastadv.training.setup.check_config``; those that need the data when the model is built.
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
            (self.norm in NORMS, f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}"),
            (self.eps is None or 0.0 <= self.eps <= (1.0 if self.norm == "linf" else math.inf),
             f"eps must be in [0, 1] for L-inf (>= 0 for L2), got {self.eps}"),
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
            (self.val_size >= 1, f"val_size must be >= 1, got {self.val_size}"),
            (0.0 <= self.label_smoothing < 1.0, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.time_budget is None or self.time_budget > 0, f"time_budget must be > 0 seconds, got {self.time_budget}"),
            (self.average in AVERAGES, f"average must be one of {', '.join(AVERAGES)}, got {self.average!r}"),
            (0.0 < self.ema_decay < 1.0, f"ema_decay must be in (0, 1), got {self.ema_decay}"),
            (0.0 <= self.average_start < 1.0, f"average_start must be in [0, 1), got {self.average_start}"),
            (self.keep in KEEPS, f"keep must be one of {', '.join(KEEPS)}, got {self.keep!r}"),
            (self.width >= 1, f"width must be >= 1, got {self.width}"),
            (self.depth >= 1, f"depth must be >= 1, got {self.depth}"),
            (0 <= self.seed < 2**32, f"seed must be in [0, 2**32), got {self.seed}"),
            (DEVICE_PATTERN.fullmatch(self.device) is not None,
             f"unknown device {self.device!r} (valid: auto, cpu, cuda, cuda:N, mps)"),
            (self.name is None or valid_run_name(self.name),
             f"name must be a plain folder name (no '/', not '.' or '..'), got {self.name!r}"),
            (self.out_dir != "", "out_dir cannot be empty"),
            (self.optimizer in OPTIMIZERS or OUTSIDE_OPTIMIZER.fullmatch(self.optimizer) is not None,
             f"optimizer must be one of {', '.join(OPTIMIZERS)} or torch:NAME (e.g. torch:RAdam), got {self.optimizer!r}"),
            (self.log_every >= 0, f"log_every must be >= 0 (0 = off), got {self.log_every}"),
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


AVERAGES, KEEPS, NORMS = ("none", "ema", "swa"), ("last", "best"), ("linf", "l2")  # training.averaging, core.norms
OPTIMIZERS = ("sgd", "adam", "adamw")  # and torch:NAME (fastadv.training.setup.make_optimizer)
OUTSIDE_OPTIMIZER = re.compile(r"torch:[A-Za-z_]\w*")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # fastadv.core.precision: autocast dtypes, auto = by device
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


DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*", re.IGNORECASE)
UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """'10m' -> 600.0, '90s' / '90' -> 90.0, '1.5h' -> 5400.0, 'none' -> None; ConfigError otherwise."""
    match = DURATION.fullmatch(text)
    if match is None and text.strip().lower() not in ("", "none", "null", "off"):
        raise ConfigError(f"time_budget expects seconds or a duration such as 10m, 90s or 1h, got {text!r}")
    return None if match is None else float(match.group(1)) * UNIT_SECONDS[(match.group(2) or "s").lower()]


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
    """``values`` over the preset they name (``fastadv.presets``); ConfigError for an unknown preset. A preset's
    radii (eps, alpha, final_alpha) are in its norm: under another norm they are dropped unless ``values`` give them."""
    from fastadv import presets

    name = values.get("preset")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"preset expects a string, got {name!r}")
    try:
        merged = presets.apply(values)
        other = name not in (None, "none") and merged.get("norm", "linf") != presets.load(name).get("norm", "linf")
        return {k: v for k, v in merged.items() if not other or k in values or k not in ("eps", "alpha", "final_alpha")}
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


__all__ = ["NORMS", "TrainConfig", "ConfigError", "parse_number", "read_config_file"]
