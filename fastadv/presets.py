"""Presets: a tested recipe per dataset and device, so that ``fastadv train --dataset X`` just works.

A preset is a TOML file in ``fastadv/recipes/`` (shipped with the package; ``configs/`` links to
the CIFAR ones). ``fastadv train`` without ``--config`` uses the preset for its dataset and device
(``--preset NAME`` picks one, ``--preset none`` switches them off); a config file or the Python API
uses one only when it names it (``preset = "cifar10-cpu"``). The preset's values sit under the
given ones: explicit values win. When the given values change the method, the preset's
method-specific values (``METHOD_FIELDS``) are dropped, since they were tuned for its own method; a
length given in epochs or iterations drops the preset's time budget.

No torch here: the config layer names a device type ("cpu", "cuda", ...) as a string.
"""
from __future__ import annotations

from importlib import resources
from typing import Any, Mapping

import tomllib

# name -> (file in fastadv/recipes, what it is): the table `fastadv train --help` prints
PRESETS: dict[str, tuple[str, str]] = {
    "mnist": ("mnist.toml", "small-cnn, PGD-3 with an eps ramp, Adam 1cycle, 1 minute of training (the demo)"),
    "fashion-mnist": ("fashion-mnist.toml", "small-cnn, Free-4, 1cycle LR + 1cycle momentum, 1,200 iterations"),
    "cifar10-cpu": ("cifar10-cpu.toml", "airbench, N-FGSM, EMA + best validation check, label smoothing, triangular "
                                        "LR, 10 minutes of training (configs/cifar10-cpu.toml)"),
    "cifar10-gpu": ("cifar10-gpu.toml", "PreAct ResNet-18, FGSM-RS, 15 epochs, bf16 + compile "
                                        "(configs/cifar10-fast.toml)"),
    "cifar100-cpu": ("cifar10-cpu.toml", "cifar10-cpu's recipe on CIFAR-100"),
    "cifar100-gpu": ("cifar10-gpu.toml", "cifar10-gpu's recipe on CIFAR-100"),
    "svhn-cpu": ("svhn-cpu.toml", "airbench, N-FGSM, eps ramp over the first third, LR 0.05, no flips, 6 epochs "
                                  "(not measured)"),
    "tiny-imagenet-cpu": ("tiny-imagenet-cpu.toml", "airbench, N-FGSM, crop+flip, 3 epochs (not measured)"),
}
# (dataset, device type) -> preset; a device type not listed takes the "cpu" entry
BY_DATASET: dict[tuple[str, str], str] = {
    ("mnist", "cpu"): "mnist", ("mnist", "cuda"): "mnist",
    ("fashion-mnist", "cpu"): "fashion-mnist", ("fashion-mnist", "cuda"): "fashion-mnist",
    ("cifar10", "cpu"): "cifar10-cpu", ("cifar10", "cuda"): "cifar10-gpu",
    ("cifar100", "cpu"): "cifar100-cpu", ("cifar100", "cuda"): "cifar100-gpu",
    ("svhn", "cpu"): "svhn-cpu", ("tiny-imagenet", "cpu"): "tiny-imagenet-cpu",
}
METHOD_FIELDS = ("alpha", "attack_steps", "replays", "noise", "eps_warmup")
NONE = "none"


def preset_for(dataset: str, device_type: str) -> str | None:
    """The preset ``fastadv train --dataset DATASET`` uses on a device of this type (None: there is none)."""
    return BY_DATASET.get((dataset, device_type)) or BY_DATASET.get((dataset, "cpu"))


def load(name: str) -> dict[str, Any]:
    """A preset's values (its ``dataset`` set to the preset's own); ValueError naming the valid presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (valid: {', '.join(PRESETS)}, {NONE})")
    text = resources.files("fastadv").joinpath("recipes", PRESETS[name][0]).read_text(encoding="utf-8")
    values = tomllib.loads(text)
    if name.startswith("cifar100"):
        values["dataset"] = "cifar100"
    return values


def apply(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` over their preset (``values["preset"]``, a name or None/"none"), with the rule above."""
    name = values.get("preset")
    if name in (None, NONE):
        return dict(values)
    base = load(name)
    if "method" in values and values["method"] != base.get("method"):
        base = {k: v for k, v in base.items() if k not in METHOD_FIELDS}
    if ("epochs" in values or "iterations" in values) and "time_budget" not in values:
        base.pop("time_budget", None)  # a length given in epochs or steps replaces the preset's time budget
    return {**base, **values}


TUNING_FIELDS = ("optimizer", "lr_schedule", "lr_max", "momentum", "momentum_schedule", "weight_decay", "epochs",
                 "batch_size", "time_budget")


def provenance(values: Mapping[str, Any]) -> str | None:
    """One line saying which settings a run takes from its preset when the given values change the preset's
    method (the preset's LR, optimizer and length were tuned for another method), else None."""
    name = values.get("preset")
    if name in (None, NONE):
        return None
    base = load(name)
    if "method" not in values or values["method"] == base.get("method"):
        return None
    dropped = [k for k in METHOD_FIELDS if k in base and k not in values]
    taken = [f"{k} {base[k]}" for k in TUNING_FIELDS if k in base and k not in values]
    return (f"preset {name} was tuned for {base.get('method')}, this run trains {values['method']}: "
            + (f"the preset's {', '.join(dropped)} dropped (the method's defaults instead); " if dropped else "")
            + (f"taken from the preset: {', '.join(taken)}" if taken else "nothing else taken from it")
            + " (a flag overrides any of them)")


def help_table() -> str:
    """One line per preset, and which dataset/device picks it, for ``fastadv train --help``."""
    picks: dict[str, list[str]] = {}
    for (dataset, device), name in BY_DATASET.items():
        picks.setdefault(name, []).append(f"{dataset} on {device}")
    return "\n".join(f"  {name:<14} {what} [{', '.join(picks.get(name, []))}]" for name, (_, what) in PRESETS.items())
