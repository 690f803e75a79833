"""L-inf attacks as plain functions of (model, x, y).

Contract: inputs in [0,1]; the result ``x_adv`` satisfies ``|x_adv - x| <= eps`` and
``x_adv in [0,1]``. Gradients are taken with ``torch.autograd.grad`` with respect to the
perturbation only, so parameter ``.grad`` is never touched, and ``model.training`` is
left as the caller set it (training-time attacks run in train mode, evaluation in eval).

The loops run on the device with no host synchronization (no ``.item()``, no printing,
no data-dependent Python branches), so a batch of K PGD steps costs K forward-backward
passes plus elementwise work.

``autoattack`` wraps the standard AutoAttack of the ``pyautoattack`` package (the optional
extra ``fastadv[eval]``); it is an outside attack, run as its authors wrote it.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from fastadv.errors import UserError

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


def feasible_box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds (lo, hi) on delta: the eps-ball intersected with x + delta in [0,1].

    Computed once per batch so that each PGD step projects with a single clamp.
    """
    return (-x).clamp(min=-eps), (1.0 - x).clamp(max=eps)


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
    """Projected gradient descent (L-inf), returning x_adv (same shape as x, N x C x H x W).

    Every example takes all ``steps`` signed-gradient steps of size ``alpha`` (no early
    stop). With several ``restarts`` the per-example worst case is kept: a misclassifying
    perturbation beats one that is not, and among equals the higher loss wins.
    At ``eps = 0`` (or no steps) the result is ``x`` clipped to [0,1] with no work and no
    random numbers drawn: inputs outside [0,1] then show up in the "robust at eps=0
    equals clean" sanity check instead of passing silently.
    """
    if eps == 0 or steps == 0:
        return x.detach().clamp(0.0, 1.0)
    loss_fn = LOSSES[loss]
    lo, hi = feasible_box(x, eps)
    view = (-1, *([1] * (x.dim() - 1)))
    best_delta = None
    for _ in range(restarts):
        delta = random_delta(x, eps, generator) if random_start else torch.zeros_like(x)
        for _ in range(steps):
            grad, _, _ = input_gradient(model, x, delta, y, loss_fn)
            delta = torch.clamp(delta.add(grad.sign(), alpha=alpha), lo, hi)  # step, then project: 3 ops
        if restarts == 1:
            best_delta = delta  # nothing to compare: skip the extra forward pass
            break
        with torch.no_grad():
            logits = model(x + delta)
            losses = loss_fn(logits, y)
            wrong = logits.argmax(1) != y
        if best_delta is None:
            best_delta, best_wrong, best_loss = delta, wrong, losses
            continue
        better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (losses > best_loss))
        best_delta = torch.where(better.view(view), delta, best_delta)
        best_wrong, best_loss = best_wrong | wrong, torch.where(better, losses, best_loss)
    return (x + best_delta).detach()


def fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
         alpha: float | None = None, random_start: bool = False, loss: str = "ce",
         generator: torch.Generator | None = None, **_: object) -> torch.Tensor:
    """Fast gradient sign method: one step of size ``alpha`` (default eps), from 0 or a random start."""
    return pgd(model, x, y, eps=eps, alpha=eps if alpha is None else alpha, steps=1, restarts=1,
               random_start=random_start, loss=loss, generator=generator)


# ----------------------------------------------------------------------------- AutoAttack
AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")  # the standard version's attacks, in order


class MissingDependency(UserError, ImportError):
    """An optional package is needed for this feature; the message says how to install it."""


def require_pyautoattack():
    """The ``pyautoattack`` module, or a one-line error naming the extra that installs it."""
    try:
        import pyautoattack
    except ImportError:
        raise MissingDependency("AutoAttack needs the pyautoattack package: pip install 'fastadv[eval]' "
                                "(or pip install pyautoattack)") from None
    return pyautoattack


@contextmanager
def autoattack_progress(log: Callable[[str], None] | None) -> Iterator[None]:
    """Send pyautoattack's own progress messages (it logs them at DEBUG level) to ``log``.

    With ``log=None`` they stay silent; the logger's level and handlers are restored after.
    """
    logger = logging.getLogger("auto-attack")
    if log is None:
        handler: logging.Handler = logging.NullHandler()
    else:
        handler = logging.Handler(logging.DEBUG)
        handler.emit = lambda record: log(f"autoattack: {record.getMessage()}")  # type: ignore[method-assign]
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if log is not None else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def autoattack(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
               generator: torch.Generator | None = None, version: str = "standard",
               log: Callable[[str], None] | None = None, **_: object) -> torch.Tensor:
    """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; L-inf) from ``pyautoattack``: x_adv.

    Points that the model already misclassifies are returned unchanged (AutoAttack's rule);
    the seed of its random starts is drawn from ``generator``. ``log`` receives its progress.
    """
    pyautoattack = require_pyautoattack()
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator, device=_gen_device(generator)))
    with autoattack_progress(log):
        adversary = pyautoattack.AutoAttack(model, eps=eps, norm="Linf", version=version, seed=seed,
                                            device=x.device)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    return x_adv.detach()


def _gen_device(generator: torch.Generator | None) -> torch.device | str:
    return generator.device if generator is not None else "cpu"


ATTACKS = {"pgd": pgd, "fgsm": fgsm, "autoattack": autoattack}
