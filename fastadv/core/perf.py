"""Device-level speed settings: memory format, cuDNN autotuning, TF32, ``torch.compile``.

None of these change what is computed, only how fast (TF32 on CUDA rounds fp32 matmul and
convolution inputs to 10 mantissa bits, which is standard for training; bf16/fp16 autocast
lives in ``fastadv.core.precision``). The trainer calls :func:`configure_backends` once,
:func:`prepare_model` on the freshly built model and :func:`prepare_batch` on every
minibatch, and records :func:`configure_backends`' answer in the run's ``config.json``.

Usable in one's own loop::

    flags = perf.configure_backends(device)
    fast = perf.prepare_model(model, channels_last=True, compile=False)  # train with ``fast``
    x = perf.prepare_batch(x, channels_last=True)                         # N x C x H x W
"""
from __future__ import annotations

import torch
from torch import nn

from fastadv.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """The device a config names: auto (CUDA when there is one, else CPU), cpu, cuda, cuda:N, mps;
    one-line ConfigError when it is not there."""
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


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def resolve_channels_last(flag: bool | None, device: torch.device | str) -> bool:
    """``channels_last = None`` (auto): NHWC on CPU and CUDA, where convolutions run faster in it.

    Measured on 2 CPU cores (forward + backward, batch 128, fast-cnn): 1.5x in fp32 and 1.6x in
    bf16 over NCHW; on MNIST's small CNN 1.3x (docs/PERFORMANCE.md). Other devices keep NCHW.
    """
    if flag is not None:
        return flag
    return torch.device(device).type in ("cpu", "cuda")


def configure_backends(device: torch.device | str) -> dict:
    """Process-wide switches for ``device``; returns what was set (for the run record).

    On CUDA: cuDNN autotuning (``cudnn.benchmark``: input shapes are fixed within a run,
    so the one-off search per shape pays back within a few steps) and TF32 matmul and
    convolutions. On other devices nothing is changed.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return {"cudnn_benchmark": False, "tf32": False}
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return {"cudnn_benchmark": True, "tf32": True}


def prepare_model(model: nn.Module, *, channels_last: bool = False, compile: bool = False,
                  compile_options: dict | None = None) -> nn.Module:
    """The module to train with: ``model`` in channels-last layout, optionally compiled.

    ``model`` itself is converted in place (parameters keep their values; 4-D conv weights
    get NHWC strides), so saving or evaluating ``model`` sees the trained weights. With
    ``compile`` the result is a ``torch.compile`` wrapper sharing those parameters: keep
    ``model`` for ``state_dict()``, whose keys the wrapper would prefix with ``_orig_mod.``.
    ``compile_options`` go to ``torch.compile`` (e.g. ``{"mode": "max-autotune"}``).
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        return torch.compile(model, **(compile_options or {}))
    return model


def prepare_batch(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """A 4-D N x C x H x W batch in the layout the model was prepared for (no copy if it already is)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


__all__ = ["configure_backends", "memory_format", "prepare_batch", "prepare_model", "resolve_channels_last",
           "resolve_device"]
