"""L-inf attacks as plain functions of (model, x, y).

Contract: inputs in [0,1]; the result ``x_adv`` satisfies ``|x_adv - x| <= eps`` and
``x_adv in [0,1]``. Gradients are taken with ``torch.autograd.grad`` with respect to the
perturbation only, so parameter ``.grad`` is never touched, and ``model.training`` is
left as the caller set it (training-time attacks run in train mode, evaluation in eval).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> per-example loss


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def cw_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: best other logit minus the true logit (higher = worse for the model)."""
    logits = logits.float()
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return other - true


LOSSES: dict[str, LossFn] = {"ce": ce_loss, "cw": cw_loss}


def project(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip delta to the eps-ball, then so that x + delta stays in [0,1]."""
    delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0) - x


def random_delta(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform start in [-eps, eps], projected so x + delta is in [0,1]."""
    noise = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    return project(x, (noise.to(x.device, x.dtype) * 2 - 1) * eps, eps)


def input_gradient(model: torch.nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor,
                   loss_fn: LossFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of the summed loss w.r.t. delta, with per-example loss and logits at x + delta."""
    delta = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x + delta)
        losses = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(losses.sum(), delta)
    return grad, losses.detach(), logits.detach()


def pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
        steps: int, restarts: int = 1, random_start: bool = True, loss: str = "ce",
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent (L-inf), returning x_adv.

    Every example takes all ``steps`` steps of size ``alpha`` (no early stop). With several
    ``restarts`` the per-example worst case is kept: a misclassifying perturbation beats
    one that is not, and among equals the higher loss wins.
    """
    if eps == 0 or steps == 0:
        return x.detach().clone()
    loss_fn = LOSSES[loss]
    best_delta = torch.zeros_like(x)
    best_wrong = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), float("-inf"), device=x.device)
    for _ in range(restarts):
        delta = random_delta(x, eps, generator) if random_start else torch.zeros_like(x)
        for _ in range(steps):
            grad, _, _ = input_gradient(model, x, delta, y, loss_fn)
            delta = project(x, delta + alpha * grad.sign(), eps)
        with torch.no_grad():
            logits = model(x + delta)
            losses = loss_fn(logits, y)
            wrong = logits.argmax(1) != y
        better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (losses > best_loss))
        best_delta = torch.where(better.view(-1, *([1] * (x.dim() - 1))), delta, best_delta)
        best_wrong, best_loss = best_wrong | wrong, torch.where(better, losses, best_loss)
    return (x + best_delta).detach()


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         alpha: float | None = None, random_start: bool = False, loss: str = "ce",
         generator: torch.Generator | None = None, **_: object) -> torch.Tensor:
    """Fast gradient sign method: one step of size ``alpha`` (default eps), from 0 or a random start."""
    return pgd(model, x, y, eps=eps, alpha=eps if alpha is None else alpha, steps=1, restarts=1,
               random_start=random_start, loss=loss, generator=generator)


ATTACKS = {"pgd": pgd, "fgsm": fgsm}
