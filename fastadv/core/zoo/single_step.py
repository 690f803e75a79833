"""Single-step methods that change FGSM's gradient or add a term to its loss: GradAlign, ZeroGrad, FGSM-RS-CS."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastadv.core.attacks import input_gradient, random_delta
from fastadv.core.distributed import unwrap
from fastadv.core.step_base import StepStats, stats_of, train_loss, update
from fastadv.core.zoo.common import args_of, method, signed_step, smooth_convergence


def cosine_alignment(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of cos(g1_i, g2_i), leaving out examples where either gradient is zero (as the
    authors' code does), with no host sync: a batch of only zero gradients gives 0."""
    g1, g2 = g1.flatten(1).float(), g2.flatten(1).float()
    n1, n2 = g1.norm(dim=1), g2.norm(dim=1)
    valid = (n1 > 0) & (n2 > 0)
    cos = (g1 * g2).sum(1) / (n1 * n2).clamp_min(1e-30)
    return (cos * valid).sum() / valid.sum().clamp_min(1)


@method("grad-align", passes=lambda m, k: 4, alpha=lambda eps, k: eps, single_step=True,
        settings={"lam": (0.2, "weight of GradAlign's regularizer 1 - cos(grad at x, grad at x + eta)")})
def grad_align_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """GradAlign (Andriushchenko & Flammarion, NeurIPS 2020): FGSM from x, step alpha (default eps) plus
    the gradient alignment regularizer.

    Loss: CE(f(x + delta_fgsm), y) + lam * (1 - mean_i cos(grad_x CE(f(x_i)), grad_x CE(f(x_i + eta_i)))),
    eta ~ U[-eps, eps] (projected so that x + eta is in [0,1]). The gradient at x + eta is differentiated
    again (double backprop); the one at x is a constant, and it is the FGSM step's own gradient, so it
    costs no extra pass (the authors' code computes it separately). lam 0.2 is the paper's value for
    CIFAR-10 at eps 8/255 (it grows with eps); FGSM from x with alpha = eps is the authors' public
    code's setting for FGSM + GradAlign.

    Cost, 4 backward traversals per minibatch: the FGSM gradient (1), the gradient at x + eta with its
    graph kept (1), the training loss's backward through x + delta (1) and through the double-backprop
    graph at x + eta (1, dearer than an ordinary backward: the authors measure GradAlign at about 3x
    FGSM training's time).
    """
    lam = args_of(ctx, "grad-align")["lam"]
    net = unwrap(ctx.model)
    with ctx.precision.autocast():
        g_clean, _, _ = input_gradient(net, x, torch.zeros_like(x), y, lambda out, t: F.cross_entropy(
            out.float(), t, reduction="none"))
        x_adv = x + signed_step(x, torch.zeros_like(x), g_clean, ctx.alpha, ctx.eps)
        eta = random_delta(x, ctx.eps, ctx.generator).requires_grad_(True)
        out_eta = net(x + eta)
        (g_eta,) = torch.autograd.grad(F.cross_entropy(out_eta.float(), y), eta, create_graph=True)
        logits = ctx.model(x_adv)
    ce = train_loss(ctx, logits, y)
    loss = ce + lam * (1.0 - cosine_alignment(g_clean, g_eta))
    update(ctx, loss)
    return stats_of(loss, logits, y)


def zero_small(grad: torch.Tensor, q: float) -> torch.Tensor:
    """``grad`` with each example's floor(q * D) smallest-magnitude coordinates set to 0 (D: coordinates
    per example); ties at the threshold are zeroed too."""
    flat = grad.flatten(1)
    k = int(q * flat.shape[1])
    if k <= 0:
        return grad
    threshold = flat.abs().float().kthvalue(k, dim=1, keepdim=True).values
    return (flat * (flat.abs().float() > threshold)).view_as(grad)


@method("zero-grad", passes=lambda m, k: 2, alpha=lambda eps, k: 1.25 * eps, single_step=True,
        settings={"q": (0.35, "quantile of each example's smallest |gradient| coordinates set to 0 before the sign")})
def zero_grad_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """ZeroGrad (Golgooni et al. 2023): FGSM-RS whose step ignores each example's smallest gradient
    coordinates.

    delta = clip(eta + alpha * sign(g'), -eps, eps), eta ~ U[-eps, eps], g' = the CE gradient at
    x + eta with its q-quantile of smallest magnitudes (per example) set to 0, so those pixels keep
    their random start. Loss CE(f(x + delta), y). q 0.35, alpha 1.25 eps (FGSM-RS's step); cost 2.
    """
    q = args_of(ctx, "zero-grad")["q"]
    with ctx.precision.autocast():
        eta = random_delta(x, ctx.eps, ctx.generator)
        grad, _, _ = input_gradient(unwrap(ctx.model), x, eta, y, lambda out, t: F.cross_entropy(
            out.float(), t, reduction="none"))
        x_adv = x + signed_step(x, eta, zero_small(grad, q), ctx.alpha, ctx.eps)
        logits = ctx.model(x_adv)
    loss = train_loss(ctx, logits, y)
    update(ctx, loss)
    return stats_of(loss, logits, y)


@method("fgsm-rs-cs", passes=lambda m, k: 2, alpha=lambda eps, k: 1.25 * eps, single_step=True,
        settings={"gamma": (0.5, "weight of the convergence-stability term |loss - previous minibatch's loss|")})
def fgsm_rs_cs_step(ctx, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """FGSM-RS-CS (Zhao et al., ICCV 2023, "Fast Adversarial Training with Smooth Convergence"): FGSM-RS
    (uniform start, alpha 1.25 eps) trained on CE + gamma * |CE - CE of the previous minibatch|.

    The previous minibatch's loss lives in ``ctx.state``. gamma 0.5 is our choice (see the method
    table in docs/METHODS.md: the paper's exact term and weight were not checked against its code). Cost 2.
    """
    gamma = args_of(ctx, "fgsm-rs-cs")["gamma"]
    x_adv = ctx.attack(x, y, steps=1)
    with ctx.precision.autocast():
        logits = ctx.model(x_adv)
    ce = train_loss(ctx, logits, y)
    loss = ce + smooth_convergence(ctx, ce, gamma)
    update(ctx, loss)
    return stats_of(loss, logits, y)
