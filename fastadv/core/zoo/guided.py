"""Guided single-step methods of Sriramanan et al.: GAT (NeurIPS 2020) and NuAT (NeurIPS 2021).

Both start from Bernoulli noise, take one signed step on CE plus a term that pulls the outputs at the
attack point away from those at x, and train with that term as a regularizer. The clean forward is
taken first, with gradients: its logits are the attack's (detached) reference and enter the loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastadv.core.distributed import unwrap
from fastadv.core.step_base import StepStats, stats_of, train_loss, update
from fastadv.core.zoo.common import args_of, bernoulli_delta, method, ramp, signed_step


def softmax_gap(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-example squared L2 distance between the softmax of ``logits`` and of ``reference``: shape (N,)."""
    return (logits.float().softmax(1) - reference.float().softmax(1)).pow(2).sum(1)


def nuclear_gap(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Nuclear norm of the (N, classes) matrix logits - reference, divided by N (a batch-size-free scale)."""
    return torch.linalg.matrix_norm(logits.float() - reference.float(), ord="nuc") / len(logits)


def guided_attack(ctx, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, init: float, term) -> torch.Tensor:
    """One signed step of size alpha from a Bernoulli start of +-``init`` * eps, up the CE loss plus
    ``term(logits)`` (a scalar); the perturbation, in the eps-ball and with x + delta in [0,1]."""
    start = bernoulli_delta(ctx, x, init * ctx.eps).requires_grad_(True)
    with torch.enable_grad():
        logits = unwrap(ctx.model)(x + start)
        objective = F.cross_entropy(logits.float(), y, reduction="sum") + term(logits)
        (grad,) = torch.autograd.grad(objective, start)
    return signed_step(x, start, grad, ctx.alpha, ctx.eps)


@method("gat", passes=lambda m, k: 3, alpha=lambda eps, k: eps, single_step=True,
        settings={"lam": (10.0, "weight of the squared L2 distance between softmax outputs at x and x + delta "
                                "(attack and training)"),
                  "init": (0.5, "magnitude of the Bernoulli start, in multiples of eps")})
def gat_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """GAT, Guided Adversarial Training (Sriramanan et al., NeurIPS 2020, "Guided Adversarial Attack for
    Evaluating and Enhancing Adversarial Defenses").

    Attack: from x + b, b in {-init eps, +init eps} per pixel (Bernoulli), one step of alpha (eps) up
    CE(f(x + delta), y) + lam * ||softmax f(x + delta) - softmax f(x)||^2 (summed over the batch).
    Loss: CE(f(x), y) + lam * mean_i ||softmax f(x_i + delta_i) - softmax f(x_i)||^2: the clean loss
    and the regularizer, as TRADES with an L2 term. lam 10, init 0.5 (4/255 at eps 8/255), alpha eps.
    Cost, 3 backward traversals: the attack (1), the clean and the adversarial forward (2).
    """
    args = args_of(ctx, "gat")
    with ctx.precision.autocast():
        clean = ctx.model(x)
        reference = clean.detach()
        delta = guided_attack(ctx, x, y, reference, args["init"],
                              lambda out: args["lam"] * softmax_gap(out, reference).sum())
        logits = unwrap(ctx.model)(x + delta)
    loss = train_loss(ctx, clean, y) + args["lam"] * softmax_gap(logits, clean).mean()
    update(ctx, loss)
    return stats_of(loss, logits, y)


@method("nu-at", passes=lambda m, k: 3, alpha=lambda eps, k: eps, single_step=True,
        settings={"lam": (4.0, "weight of the nuclear norm of the logit difference (adversarial minus clean) in "
                               "the training loss, after its ramp"),
                  "lam_attack": (4.0, "weight of the same term in the attack"),
                  "ramp": (0.5, "fraction of training over which lam rises linearly from 0 (needs ctx.progress)"),
                  "init": (0.5, "magnitude of the Bernoulli start, in multiples of eps")})
def nu_at_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """NuAT, Nuclear-norm Adversarial Training (Sriramanan et al., NeurIPS 2021, "Towards Efficient and
    Effective Adversarial Training").

    Attack: from a Bernoulli start (+-init eps per pixel), one step of alpha (eps) up
    CE + lam_attack * ||f(x + delta) - f(x)||_* / N (nuclear norm of the batch's (N, classes) logit
    difference). Loss: CE(f(x + delta), y) + lam_t * ||f(x + delta) - f(x)||_* / N, lam_t rising
    linearly from 0 to lam over the first ``ramp`` of training (``ctx.progress``, which the trainer
    sets; without it, lam throughout). Cost, 3 backward traversals: the attack (1), the adversarial
    and the clean forward (2).
    """
    args = args_of(ctx, "nu-at")
    lam = ramp(ctx, args["lam"], args["ramp"])
    with ctx.precision.autocast():
        clean = unwrap(ctx.model)(x)
        reference = clean.detach()
        delta = guided_attack(ctx, x, y, reference, args["init"],
                              lambda out: args["lam_attack"] * nuclear_gap(out, reference))
        logits = ctx.model(x + delta)
    loss = train_loss(ctx, logits, y) + lam * nuclear_gap(logits, clean)
    update(ctx, loss)
    return stats_of(loss, logits, y)
