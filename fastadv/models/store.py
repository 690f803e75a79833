"""A trained model on disk and back: the architecture record, safe weights files, ``load_model``.

Weights are written twice: ``model.safetensors`` (with the architecture in its metadata) and
``model.pt``, a plain ``state_dict`` that loads with ``torch.load(weights_only=True)``: no pickled
objects either way. The architecture record (``arch``) holds ``ARCH_KEYS``: enough to rebuild a
registered or ``torchvision:`` / ``timm:`` model; a user's own module (``arch["model"] == "custom"``)
is rebuilt by the user and passed to ``load_model(path, model=...)``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from fastadv.errors import CheckpointError, first_line
from fastadv.io import atomic_write, read_json_object
from fastadv.models import build_model

BUILD_KEYS = ("num_classes", "channels", "size", "mean", "std", "depth", "width")  # build_model's arguments
ARCH_KEYS = ("model", *BUILD_KEYS, "dataset")  # the architecture record of a run
CUSTOM = "custom"  # arch["model"] of a user's own nn.Module


def arch_of(cfg, data, model: nn.Module | None = None) -> dict:
    """The facts needed to rebuild a run's model (``model``: a user's own module, recorded by class name)."""
    values = {"model": cfg.model, "num_classes": data.num_classes, "channels": data.channels, "size": data.size,
              "mean": list(data.mean), "std": list(data.std), "depth": cfg.depth, "width": cfg.width,
              "dataset": data.name}
    arch = {k: values[k] for k in ARCH_KEYS}
    if model is not None:
        arch.update(model=CUSTOM, module=f"{type(model).__module__}.{type(model).__qualname__}")
    return arch


def model_from_arch(arch: dict) -> nn.Module:
    if arch["model"] == CUSTOM:
        raise CheckpointError(f"this run trained its own module ({arch.get('module', '?')}): build it and pass "
                              f"it, e.g. fastadv.load_model(run_dir, model=MyNet())")
    return build_model(arch["model"], **{k: arch[k] for k in BUILD_KEYS if k in arch})


def save_weights(model: nn.Module, run_dir: Path, arch: dict, stem: str = "model") -> None:
    """``stem``.pt (plain state_dict) and ``stem``.safetensors (architecture in the metadata); the run's kept
    weights are ``model.*``, the others (``model-raw``, ``model-average``) load with ``load_model(path)``."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(run_dir / f"{stem}.pt", lambda tmp: torch.save(state, tmp))
    meta = {"fastadv_arch": json.dumps(arch)}
    atomic_write(run_dir / f"{stem}.safetensors", lambda tmp: save_file(state, tmp, metadata=meta))


def read_arch(path: Path) -> tuple[dict, Path]:
    """Architecture and weights file for a run directory or a weights file."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "model.pt"):
            if (path / name).is_file():
                return read_arch(path / name)
        raise CheckpointError(f"no model.safetensors or model.pt in {path}")
    if not path.is_file():
        raise CheckpointError(f"no such run directory or weights file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            raise CheckpointError(f"cannot read {path}: {first_line(exc)}") from None
        if "fastadv_arch" in meta:
            return json.loads(meta["fastadv_arch"]), path
    config = path.parent / "config.json"
    if config.is_file():
        resolved = read_json_object(config)
        if "arch" in resolved:
            return resolved["arch"], path
    raise CheckpointError(f"{path} does not say which model it holds: pass a run directory, a fastadv "
                          f".safetensors file, or a .pt file with the run's config.json beside it")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weights from {path}: {first_line(exc)[:200]}") from None


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu", *, model: nn.Module | None = None
               ) -> nn.Module:
    """An ``nn.Module`` in eval mode from a run directory or weights file; it takes [0,1] images.

    Arguments:
        path: a run directory, or its ``model.safetensors`` / ``model.pt``.
        device: where the model goes. (Default: ``"cpu"``)
        model: for a run that trained one's own module, that module, freshly built: it is wrapped
            in the run's ``Normalize`` layer and gets the weights. Registered models need nothing.

    Returns:
        ``nn.Sequential(Normalize, net)`` in eval mode, ready for any attack library.
    """
    from fastadv.models import Normalize, wrap_model

    arch, weights = read_arch(Path(path))
    if model is None:
        net = model_from_arch(arch)
    else:  # the user's net, or the whole Normalize + net they trained
        wrapped = isinstance(model, nn.Sequential) and len(model) == 2 and isinstance(model[0], Normalize)
        net = model if wrapped else wrap_model(model, arch["channels"])
    state = load_state(weights)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise CheckpointError(f"{weights} does not match model {arch.get('module', arch['model'])!r}: "
                              f"{lines[1].strip() if len(lines) > 1 else exc}") from None
    return net.to(device).eval()


__all__ = ["ARCH_KEYS", "BUILD_KEYS", "CUSTOM", "arch_of", "load_model", "load_state", "model_from_arch",
           "read_arch", "save_weights"]
