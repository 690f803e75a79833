"""Saving and loading weights safely: atomic writes, no pickled objects.

Weights are written twice: ``model.safetensors`` (with the architecture in its metadata)
and ``model.pt``, a plain ``state_dict`` that loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastadv.errors import UserError
from fastadv.models import build_model

ARCH_KEYS = ("model", "num_classes", "channels", "size", "mean", "std", "depth", "width", "dataset")


class CheckpointError(UserError, RuntimeError):
    """A weights file or run directory that cannot be loaded; one line for the user."""


def atomic_write(path: Path, write) -> None:
    """Write via ``write(tmp_path)`` to a temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n"))


def save_weights(model: nn.Module, run_dir: Path, arch: dict) -> None:
    """model.pt (plain state_dict) and model.safetensors (architecture in the metadata)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(run_dir / "model.pt", lambda tmp: torch.save(state, tmp))
    meta = {"fastadv_arch": json.dumps(arch)}
    atomic_write(run_dir / "model.safetensors", lambda tmp: save_file(state, tmp, metadata=meta))


def arch_of(cfg, data) -> dict:
    """The facts needed to rebuild a run's model."""
    return {"model": cfg.model, "num_classes": data.num_classes, "channels": data.channels,
            "size": data.size, "mean": list(data.mean), "std": list(data.std),
            "depth": cfg.depth, "width": cfg.width, "dataset": data.name}


def model_from_arch(arch: dict) -> nn.Module:
    kwargs = {k: arch[k] for k in ("num_classes", "channels", "size", "mean", "std", "depth", "width") if k in arch}
    return build_model(arch["model"], **kwargs)


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
            raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
        if "fastadv_arch" in meta:
            return json.loads(meta["fastadv_arch"]), path
    config = path.parent / "config.json"
    if config.is_file():
        resolved = json.loads(config.read_text())
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
        raise CheckpointError(f"cannot read weights from {path}: {str(exc).splitlines()[0][:200]}") from None


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """An ``nn.Module`` in eval mode from a run directory or weights file; takes [0,1] input."""
    arch, weights = read_arch(Path(path))
    model = model_from_arch(arch)
    state = load_state(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not match model {arch['model']!r}: "
                              f"{str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}") from None
    return model.to(device).eval()
