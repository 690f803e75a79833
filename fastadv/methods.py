"""Training methods: one step function per method, sharing one loop (``fastadv.trainer``).

A step function takes a ``StepContext`` and one minibatch (x in [0,1], y) and does all the
optimizer steps that minibatch gets (Free-m: ``replays``; the others: one). Each optimizer
step goes through ``ctx.optimizer_step()``, which sets LR and momentum for the current
iteration first. Statistics stay on the device (no host syncs).

Costs in forward-backward computations per minibatch: standard 1, free m, fgsm-rs / fgsm / n-fgsm 2,
pgd K+1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from fastadv.attacks import n_fgsm, pgd
from fastadv.distributed import unwrap
from fastadv.precision import FP32, Precision


@dataclass
class StepContext:
    """What a step function needs; ``state`` holds method state that must be checkpointed."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    eps: float
    alpha: float
    replays: int
    attack_steps: int
    set_hyperparams: Callable[[int], None]  # iteration -> writes LR/momentum into the optimizer
    generator: torch.Generator | None = None  # random starts
    iteration: int = 0  # optimizer steps taken so far
    state: dict = field(default_factory=dict)
    precision: Precision = field(default_factory=lambda: FP32)  # autocast, scaled backward and optimizer step
    noise: float = 2.0  # n-fgsm: uniform noise radius in multiples of eps

    def optimizer_step(self) -> None:
        self.set_hyperparams(self.iteration)
        self.precision.step(self.optimizer)
        self.iteration += 1

    def attack(self, x: torch.Tensor, y: torch.Tensor, steps: int, random_start: bool = True) -> torch.Tensor:
        """PGD-``steps`` (from a random start, or from x) at the current eps and alpha, under the step's autocast.

        Runs on the plain module inside a DDP wrapper: input gradients only, no gradient all-reduce.
        At eps 0 (the start of an eps ramp) ``pgd`` returns x without drawing random numbers.
        """
        with self.precision.autocast():
            return pgd(unwrap(self.model), x, y, eps=self.eps, alpha=self.alpha, steps=steps,
                       random_start=random_start, generator=self.generator)


@dataclass
class StepStats:
    """Sums over the examples seen in a step (device tensors) and the work done."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int
    passes: int  # forward-backward computations


def sgd_on(ctx: StepContext, x_in: torch.Tensor, y: torch.Tensor) -> StepStats:
    """One ordinary optimizer step on inputs x_in (already perturbed)."""
    with ctx.precision.autocast():
        logits = ctx.model(x_in)
    loss = F.cross_entropy(logits.float(), y)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.precision.backward(loss)
    ctx.optimizer_step()
    return StepStats(loss.detach() * len(y), (logits.argmax(1) == y).sum(), len(y), 1)


@dataclass(frozen=True)
class Method:
    step: Callable[[StepContext, torch.Tensor, torch.Tensor], StepStats]
    steps_per_minibatch: Callable[[int, int], int]  # (replays, attack_steps) -> optimizer steps
    passes_per_minibatch: Callable[[int, int], int]  # (replays, attack_steps) -> fwd-bwd passes
    default_alpha: Callable[[float, int], float]  # (eps, attack_steps) -> attack step size
    description: str


METHODS: dict[str, Method] = {}


def register_method(name: str, *, description: str, steps=lambda m, k: 1, passes=lambda m, k: 1,
                    alpha=lambda eps, k: eps):
    def wrap(fn):
        METHODS[name] = Method(fn, steps, passes, alpha, description)
        return fn

    return wrap


@register_method("standard", description="no attack: ordinary training on clean images")
def standard_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    return sgd_on(ctx, x, y)


@register_method("fgsm-rs", description="FGSM from a uniform random start, step alpha=1.25 eps (Wong et al. 2020)",
                 passes=lambda m, k: 2, alpha=lambda eps, k: 1.25 * eps)
def fgsm_rs_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    stats = sgd_on(ctx, ctx.attack(x, y, steps=1), y)
    stats.passes = 2
    return stats


@register_method("fgsm", description="FGSM from x itself, step alpha=eps (Goodfellow et al. 2015): the single-step "
                                     "method that overfits catastrophically; kept as the reference case",
                 passes=lambda m, k: 2, alpha=lambda eps, k: eps)
def fgsm_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    stats = sgd_on(ctx, ctx.attack(x, y, steps=1, random_start=False), y)
    stats.passes = 2
    return stats


@register_method("n-fgsm", description="N-FGSM (de Jorge et al. 2022): one FGSM step alpha=eps from uniform noise "
                                       "of radius 2 eps, no projection to the eps-ball (only to [0,1])",
                 passes=lambda m, k: 2, alpha=lambda eps, k: eps)
def n_fgsm_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    with ctx.precision.autocast():
        x_adv = n_fgsm(unwrap(ctx.model), x, y, eps=ctx.eps, alpha=ctx.alpha, noise=ctx.noise,
                       generator=ctx.generator)
    stats = sgd_on(ctx, x_adv, y)
    stats.passes = 2
    return stats


@register_method("pgd", description="Madry PGD-K training (random start, K=attack_steps, alpha=2.5 eps/K)",
                 passes=lambda m, k: k + 1, alpha=lambda eps, k: 2.5 * eps / k)
def pgd_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    stats = sgd_on(ctx, ctx.attack(x, y, steps=ctx.attack_steps), y)
    stats.passes = ctx.attack_steps + 1
    return stats


@register_method("free", description="Free-m (Shafahi et al. 2019): replay each minibatch m times, "
                                     "one backward pass updates weights and delta",
                 steps=lambda m, k: m, passes=lambda m, k: m, alpha=lambda eps, k: eps)
def free_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """Algorithm 1 of the thesis for one minibatch; delta persists in ``ctx.state['delta']``.

    Each replay: one forward/backward on clip(x + delta, 0, 1), an optimizer step with the
    weight gradient, then delta <- clip(delta + alpha * sign(grad_x), -eps, eps) (alpha = eps
    in the paper). The stored delta has the largest batch's shape; a smaller batch uses
    its first rows.
    """
    n = len(y)
    full = ctx.state.get("delta")
    if full is None or full.shape[1:] != x.shape[1:] or len(full) < n:
        grown = torch.zeros((max(n, 0 if full is None else len(full)),) + tuple(x.shape[1:]), device=x.device)
        if full is not None and full.shape[1:] == x.shape[1:]:
            grown[:len(full)] = full
        full = grown
    delta = full[:n].clone()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for _ in range(ctx.replays):
        delta.requires_grad_(True)
        with ctx.precision.autocast():
            logits = ctx.model((x + delta).clamp(0.0, 1.0))
        loss = F.cross_entropy(logits.float(), y)
        ctx.optimizer.zero_grad(set_to_none=True)
        ctx.precision.backward(loss)  # one pass: weight gradients and the input gradient (sign is scale-free)
        ctx.optimizer_step()
        delta = (delta.detach() + ctx.alpha * delta.grad.sign()).clamp(-ctx.eps, ctx.eps)
        loss_sum += loss.detach() * n
        correct += (logits.argmax(1) == y).sum()
    full[:n] = delta
    ctx.state["delta"] = full
    return StepStats(loss_sum, correct, n * ctx.replays, ctx.replays)

