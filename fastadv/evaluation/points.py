"""Per-example results of one pass over a set of points: clean, or under one attack (batched, on the device).

A point counts as robust only when the model classifies it correctly *and* the attack fails on it;
every point is attacked for all steps (no early stop). Per-example results stay on the device until
the end of a pass (no host syncs inside the batch loop).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F

from fastadv.core.attacks import ATTACKS, Attack
from fastadv.data import DataError, Dataset, to_float
from fastadv.evaluation.spec import AttackSpec

Progress = Callable[[str, int], Any]  # (description, total points) -> object with update(n) and close()


def test_split(data, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) from a Dataset's test split or an (x, y) pair; the first ``limit`` points if > 0."""
    if isinstance(data, Dataset):
        x, y = data.x_test, data.y_test
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise DataError("evaluate() takes a fastadv Dataset or an (x, y) pair of tensors") from None
    if limit > 0:
        x, y = x[:limit], y[:limit]
    return x, y


def as_float(x: torch.Tensor, device) -> torch.Tensor:
    """A batch on the device as float: uint8 [0,255] becomes [0,1], float stays as given."""
    x = x.to(device)
    return to_float(x) if x.dtype == torch.uint8 else x.float()


def run_attack(model, x, y, attack: AttackSpec, generator=None, attacks: Mapping[str, Attack] = ATTACKS,
               log: Callable[[str], None] | None = None) -> torch.Tensor:
    """x_adv for one batch under ``attack``; ``attacks`` is the registry to look its name up in."""
    info = attacks[attack.name]
    return info.fn(model, x, y, **info.arguments(attack, generator, log))  # only what this attack takes


@dataclass
class PointResults:
    """Per-example outcome of one pass over the points: ``correct`` (bool, N) and CE ``loss`` (N)."""

    spec: AttackSpec | None  # None = clean
    correct: torch.Tensor
    loss: torch.Tensor
    seconds: float = 0.0

    @property
    def acc(self) -> float:
        return self.correct.float().mean().item() if len(self.correct) else 0.0


def predict_points(model: torch.nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, spec: AttackSpec | None, *,
                   batch_size: int = 500, seed: int = 0, device=None, attacks: Mapping[str, Attack] = ATTACKS,
                   progress: Progress | None = None, log: Callable[[str], None] | None = None) -> PointResults:
    """Per-example correctness and CE loss on ``x_all`` (clean if ``spec`` is None, else attacked).

    The model must already be in the mode it should be evaluated in. Random starts come
    from a generator seeded with ``seed``, so one spec gives the same numbers every time.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    n = len(y_all)
    correct = torch.zeros(n, dtype=torch.bool, device=device)
    losses = torch.zeros(n, dtype=torch.float32, device=device)
    bar = progress(spec.short() if spec is not None else "clean", n) if progress else None
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch_size):
            x = as_float(x_all[start:start + batch_size], device)
            y = y_all[start:start + batch_size].to(device)
            x_in = run_attack(model, x, y, spec, generator, attacks, log) if spec is not None else x
            with torch.no_grad():
                logits = model(x_in).float()
            correct[start:start + len(y)] = logits.argmax(1) == y
            losses[start:start + len(y)] = F.cross_entropy(logits, y, reduction="none")
            if bar is not None:
                bar.update(len(y))
    finally:
        if bar is not None:
            bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return PointResults(spec, correct, losses, time.perf_counter() - t0)


class eval_mode:
    """Context manager: the model in eval mode inside, its previous mode restored after."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def clean_pass(model, x_all, y_all, batch_size, device, progress: Progress | None = None) -> PointResults:
    return predict_points(model, x_all, y_all, None, batch_size=batch_size, device=device, progress=progress)
