"""Numeric precision of the training step: fp32, or autocast to bf16 / fp16.

A ``Precision`` gives the three things a step needs: ``autocast()`` around forward passes
(training and attack), ``backward(loss)`` (scaled by a ``torch.amp.GradScaler`` for fp16)
and ``step(optimizer)`` (unscales, skips steps with inf/nan gradients, updates the scale).
Sign-based attack updates (FGSM, PGD, Free-m's delta) are unaffected by the loss scale.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from fastadv.config import PRECISIONS, ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    mode: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda | mps
    scaler: torch.amp.GradScaler | None = None

    def autocast(self):
        if self.mode == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.mode])

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX tiles: oneDNN's fast bf16 convolutions).

    Without either, CPU bf16 autocast is emulated and slower than fp32.
    """
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def cpu_bf16_path() -> str:
    """This CPU's bf16 path in words: "AMX" (tiles, the fastest), "AVX512-BF16", or "fp32" (bf16 emulated)."""
    cpu = getattr(torch, "cpu", None)

    def has(name: str) -> bool:
        probe = getattr(cpu, name, None)
        return bool(probe()) if probe is not None else False

    return "AMX" if has("_is_amx_tile_supported") else "AVX512-BF16" if has("_is_avx512_bf16_supported") else "fp32"


def resolve_mode(mode: str, device: torch.device) -> str:
    """``auto``: the fastest precision the device computes natively.

    CUDA: bf16 where supported, else fp16 (with a GradScaler). CPU: bf16 when the CPU has native
    bf16 (measured on a 2-core AVX512-BF16/AMX machine: 2.0x the fp32 speed of a CIFAR conv net,
    see docs/PERFORMANCE.md), else fp32. Other devices: fp32.
    """
    if mode != "auto":
        return mode
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def make_precision(mode: str, device: torch.device) -> Precision:
    """The Precision for a config's ``precision`` field on ``device``."""
    if mode not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {mode!r}")
    mode = resolve_mode(mode, device)
    scaler = torch.amp.GradScaler(device.type) if mode == "fp16" and device.type == "cuda" else None
    return Precision(mode, device.type, scaler)


FP32 = Precision("fp32", "cpu")
