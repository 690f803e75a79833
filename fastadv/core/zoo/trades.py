"""TRADES (Zhang et al., ICML 2019): the clean loss plus beta times the KL divergence to the adversarial outputs."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastadv.core.attacks import feasible_box
from fastadv.core.distributed import unwrap
from fastadv.core.step_base import StepStats, stats_of, train_loss, update
from fastadv.core.zoo.common import args_of, gaussian_delta, method

TRADES_SETTINGS = {"beta": (6.0, "weight of KL(f(x) || f(x + delta)) in the loss (1/lambda in the paper)")}
START_STD = 0.001  # the authors' code starts the attack at x + 0.001 * N(0, 1)


def kl_to(logits: torch.Tensor, reference: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(reference) || softmax(logits)), the TRADES term (torch's kl_div, in float32)."""
    return F.kl_div(F.log_softmax(logits.float(), 1), F.softmax(reference.float(), 1), reduction=reduction)


def trades_attack(ctx, x: torch.Tensor, reference: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` signed steps of size alpha up KL(f(x) || f(x + delta)) from x + 0.001 N(0, 1), each
    projected to the eps-ball and [0,1]; the perturbation. ``reference``: f(x), detached."""
    net = unwrap(ctx.model)
    lo, hi = feasible_box(x, ctx.eps)
    delta = gaussian_delta(ctx, x, START_STD)
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(kl_to(net(x + delta), reference, "sum"), delta)
        delta = torch.clamp(delta.detach() + ctx.alpha * grad.sign(), lo, hi)
    return delta


def trades_update(ctx, name: str, x: torch.Tensor, y: torch.Tensor, steps: int) -> StepStats:
    """Loss CE(f(x), y) + beta * KL(f(x) || f(x + delta)) (batch mean), delta from ``trades_attack``."""
    beta = args_of(ctx, name)["beta"]
    with ctx.precision.autocast():
        clean = ctx.model(x)
        delta = trades_attack(ctx, x, clean.detach(), steps)
        logits = unwrap(ctx.model)(x + delta)
    loss = train_loss(ctx, clean, y) + beta * kl_to(logits, clean)
    update(ctx, loss)
    return stats_of(loss, logits, y)


@method("trades", passes=lambda m, k: k + 2, alpha=lambda eps, k: eps / 4, single_step=False,
        settings=TRADES_SETTINGS)
def trades_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """TRADES (Zhang et al., ICML 2019, "Theoretically Principled Trade-off between Robustness and Accuracy").

    Attack: K = attack_steps signed steps of alpha (default eps/4: the paper's 2/255 at 8/255, with
    K = 10 there) up KL(f(x) || f(x + delta)) from x + 0.001 N(0, 1). Loss: CE(f(x), y) + beta *
    KL(f(x) || f(x + delta)), beta 6. The attack runs in the model's training mode, as every attack
    of a training step here (the authors' code switches to eval mode for it). The clean logits are
    computed once, with gradients, and serve as the attack's reference too. Cost K + 2: the attack's
    K, the clean and the adversarial forward-backward.
    """
    return trades_update(ctx, "trades", x, y, ctx.attack_steps)


@method("trades-fgsm", passes=lambda m, k: 3, alpha=lambda eps, k: eps, single_step=True,
        settings=TRADES_SETTINGS)
def trades_fgsm_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """Single-step TRADES: one signed step of alpha (default eps) up the KL term from x + 0.001 N(0, 1),
    then the TRADES loss CE(f(x), y) + beta * KL(f(x) || f(x + delta)), beta 6. A fastadv variant (no
    paper of its own); cost 3."""
    return trades_update(ctx, "trades-fgsm", x, y, 1)
