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


def resolve_mode(mode: str, device: torch.device) -> str:
    """``auto`` is bf16 on CUDA devices that support it (else fp16) and fp32 elsewhere."""
    if mode != "auto":
        return mode
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def make_precision(mode: str, device: torch.device) -> Precision:
    """The Precision for a config's ``precision`` field on ``device``."""
    if mode not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {mode!r}")
    mode = resolve_mode(mode, device)
    scaler = torch.amp.GradScaler(device.type) if mode == "fp16" and device.type == "cuda" else None
    return Precision(mode, device.type, scaler)


FP32 = Precision("fp32", "cpu")
