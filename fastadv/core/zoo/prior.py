"""Prior-guided initialization (FGSM-PGI, Jia et al. ECCV 2022) and its smooth-convergence variant FGSM-MEP-CS."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastadv.core.attacks import project
from fastadv.core.distributed import unwrap
from fastadv.core.step_base import StepStats, stats_of, train_loss, update
from fastadv.core.zoo.common import (args_of, from_eps_units, memory, method, needs_index, smooth_convergence,
                                     to_eps_units, uniform_eps_units, zeros)

PGI_SETTINGS = {
    "lam": (10.0, "weight of the prior-guided regularizer: mean squared difference of the logits at x + delta and x + prior"),
    "momentum": (0.3, "decay of the per-example gradient momentum (0: FGSM-EP, the previous epoch's delta alone)"),
}


def pgi_update(ctx, name: str, x: torch.Tensor, y: torch.Tensor, gamma: float | None) -> StepStats:
    """One FGSM-MEP minibatch; ``gamma``: the weight of Zhao et al.'s convergence term (None: without it).

    Memories in ``ctx.state``: ``pgi_delta`` (int8, units of eps/127: each example's last perturbation)
    and ``pgi_momentum`` (fp16: each example's gradient momentum, every gradient scaled to mean
    |coordinate| 1 before it is added). Examples never seen start from U[-eps, eps] and zero momentum.
    """
    args, index = args_of(ctx, name), needs_index(ctx, name)
    deltas = memory(ctx, "pgi_delta", x, index, torch.int8, uniform_eps_units(ctx))
    moments = memory(ctx, "pgi_momentum", x, index, torch.float16, zeros)
    prior = project(x, from_eps_units(deltas[index], ctx.eps, x.dtype), ctx.eps).requires_grad_(True)
    with ctx.precision.autocast():
        prior_logits = unwrap(ctx.model)(x + prior)  # its graph is kept: the regularizer's second traversal
        (grad,) = torch.autograd.grad(F.cross_entropy(prior_logits.float(), y, reduction="sum"), prior,
                                      retain_graph=True)
        grad = grad.float() / grad.float().abs().mean(dim=tuple(range(1, x.dim())), keepdim=True).clamp_min(1e-30)
        momentum = grad + args["momentum"] * moments[index].float()
        delta = project(x, prior.detach() + ctx.alpha * momentum.sign(), ctx.eps)
        logits = ctx.model(x + delta)
    ce = train_loss(ctx, logits, y)
    loss = ce + args["lam"] * F.mse_loss(logits.float(), prior_logits.float())
    if gamma is not None:
        loss = loss + smooth_convergence(ctx, ce, gamma)
    update(ctx, loss)
    deltas[index] = to_eps_units(delta, ctx.eps)
    moments[index] = momentum.to(torch.float16)
    return stats_of(loss, logits, y)


@method("fgsm-pgi", passes=lambda m, k: 3, alpha=lambda eps, k: eps, single_step=True, settings=PGI_SETTINGS)
def fgsm_pgi_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """FGSM-PGI (Jia et al., ECCV 2022, "Prior-Guided Adversarial Initialization for Fast Adversarial
    Training"), its FGSM-MEP form: each example starts from its own perturbation of the previous epoch.

    For example i with stored perturbation eta_i (the prior) and momentum m_i:
    g = grad_x CE(f(x + eta), y) / mean|.|, m_i <- g + momentum * m_i,
    delta = clip(eta + alpha * sign(m_i), -eps, eps) (and x + delta in [0,1]);
    loss = CE(f(x + delta), y) + lam * mean((f(x + delta) - f(x + eta))^2) (mean over logits and batch,
    as torch's MSELoss). delta is stored as the next epoch's prior. lam 10, momentum 0.3, alpha eps.
    Needs ``index`` (the rows' training-set indices); memory: 1 byte (delta) + 2 bytes (momentum) per
    input coordinate of the training set, 460 MB for CIFAR-10's 50,000 images.

    Cost, 3 backward traversals: the gradient at the prior (1), the training loss through x + delta (1)
    and again through the prior's forward, kept for the regularizer (1).
    """
    return pgi_update(ctx, "fgsm-pgi", x, y, gamma=None)


@method("fgsm-mep-cs", passes=lambda m, k: 3, alpha=lambda eps, k: eps, single_step=True,
        settings={**PGI_SETTINGS, "gamma": (0.5, "weight of the convergence-stability term |CE - previous minibatch's CE|")})
def fgsm_mep_cs_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """FGSM-MEP-CS (Zhao et al., ICCV 2023, "Fast Adversarial Training with Smooth Convergence"): ``fgsm-pgi``
    (FGSM-MEP) plus gamma * |CE - CE of the previous minibatch| (that loss kept in ``ctx.state``).

    Settings as fgsm-pgi's, and gamma 0.5 (our choice; see docs/METHODS.md). Cost 3, memory as fgsm-pgi's.
    """
    return pgi_update(ctx, "fgsm-mep-cs", x, y, gamma=args_of(ctx, "fgsm-mep-cs")["gamma"])
