"""The threat models' geometry: a norm's ball, its projection, its random start and its steepest-ascent step.

``norm`` is ``"linf"`` (``|delta|_inf <= eps``: sign steps, a clamp) or ``"l2"`` (``|delta|_2 <= eps`` per
example: steps along the gradient scaled to unit L2 norm, rescaling onto the ball). Every perturbation is
also clipped so that ``x + delta`` stays in [0,1]; for L2 that clip only shrinks coordinates of delta, so
it never leaves the ball. Shapes: ``x`` and ``delta`` (N, ...); norms per example, (N,).
"""
from __future__ import annotations

import torch

from fastadv.config import NORMS

TINY = 1e-12  # below this L2 norm a gradient (or delta) counts as zero: no division by it


def check_norm(norm: str) -> str:
    """``norm`` itself, or a one-line ValueError naming the valid ones."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r} (valid: {', '.join(NORMS)})")
    return norm


def per_example(t: torch.Tensor, norm: str) -> torch.Tensor:
    """Each example's norm of ``t`` (N, ...): shape (N,), float32."""
    flat = t.flatten(1).float()
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def _view(t: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return n.view(-1, *([1] * (t.dim() - 1))).to(t.dtype)


def into_ball(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``delta`` projected onto the eps-ball of ``norm`` (L2: each example scaled down to norm eps if longer)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    length = per_example(delta, "l2")
    return delta * _view(delta, (eps / length.clamp_min(TINY)).clamp(max=1.0))


def project(x: torch.Tensor, delta: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """``delta`` into the eps-ball of ``norm``, then clipped so that ``x + delta`` is in [0,1]."""
    return (x + into_ball(delta, eps, norm)).clamp(0.0, 1.0) - x


def steepest(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit step that raises the loss most to first order: sign(grad) (L-inf), grad / |grad|_2 (L2; a zero
    gradient gives a zero step)."""
    if norm == "linf":
        return grad.sign()
    return grad / _view(grad, per_example(grad, "l2").clamp_min(TINY))


def uniform_ball(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A point drawn uniformly from the eps-ball of ``norm`` for each example (L-inf: U[-eps, eps] per coordinate;
    L2: a Gaussian direction at radius eps * U^(1/d), d coordinates), not yet clipped to [0,1]."""
    device = x.device if generator is None else generator.device
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=device)
        return (noise.to(x.device, x.dtype) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=generator, device=device).to(x.device, torch.float32)
    radius = torch.rand(len(x), generator=generator, device=device).to(x.device) ** (1.0 / x[0].numel())
    unit = direction / _view(direction, per_example(direction, "l2").clamp_min(TINY))
    return (unit * _view(unit, radius * eps)).to(x.dtype)
