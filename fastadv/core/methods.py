"""Training methods: one step function per method, and ``AdversarialStep`` to use them in any loop.

A step function takes a ``StepContext`` and one minibatch (x in [0,1], y) and does all the
optimizer steps that minibatch gets (Free-m: ``replays``; the others: one). Each optimizer
step goes through ``ctx.optimizer_step()``, which sets LR and momentum for the current
iteration first. Statistics stay on the device (no host syncs).

Each method declares its facts once, in ``register_method``: optimizer steps and forward-backward
computations per minibatch (standard 1, free m, fgsm-rs / fgsm / n-fgsm 2, pgd K+1), its default
attack step, whether it is a single-step method (prone to catastrophic overfitting), its own settings,
how far from x its training inputs may lie and the threat models (``norms``) it has a form in: L2 for
standard, fgsm, fgsm-rs, pgd and free (``ctx.norm``), L-inf for all. The methods from the fast-AT literature (GradAlign,
FGSM-PGI, NuAT, GAT, TRADES...) live in ``fastadv.core.zoo`` and are registered here; docs/METHODS.md
lists every method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from fastadv.config import ConfigError
from fastadv.core.attacks import n_fgsm, pgd
from fastadv.core.distributed import unwrap
from fastadv.core.norms import check_norm, into_ball, steepest
from fastadv.core.precision import FP32, Precision, make_precision
from fastadv.core.step_base import StepStats, train_loss
from fastadv.core.zoo import ZOO


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
    label_smoothing: float = 0.0  # of the training loss only (``train_loss``), never of an attack's loss
    args: dict = field(default_factory=dict)  # the method's own settings (``Method.settings``), resolved
    index: torch.Tensor | None = None  # training-set indices of this minibatch's rows (per-example memories)
    train_size: int | None = None  # rows of the training set: the size of per-example memories (None: grown)
    progress: float | None = None  # fraction of training done, for ramped weights (None: the ramp is over)
    norm: str = "linf"  # threat model of the attack: "linf" | "l2" (eps and alpha in its units)

    def optimizer_step(self) -> None:
        self.set_hyperparams(self.iteration)
        self.precision.step(self.optimizer)
        self.iteration += 1

    def attack(self, x: torch.Tensor, y: torch.Tensor, steps: int, random_start: bool = True) -> torch.Tensor:
        """PGD-``steps`` (from a random start, or from x) at the current eps, alpha and norm, under the step's autocast.

        Runs on the plain module inside a DDP wrapper: input gradients only, no gradient all-reduce.
        At eps 0 (the start of an eps ramp) ``pgd`` returns x without drawing random numbers.
        """
        with self.precision.autocast():
            return pgd(unwrap(self.model), x, y, eps=self.eps, alpha=self.alpha, steps=steps,
                       random_start=random_start, generator=self.generator, norm=self.norm)


def sgd_on(ctx: StepContext, x_in: torch.Tensor, y: torch.Tensor) -> StepStats:
    """One ordinary optimizer step on inputs x_in (already perturbed)."""
    with ctx.precision.autocast():
        logits = ctx.model(x_in)
    loss = train_loss(ctx, logits, y)
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.precision.backward(loss)
    ctx.optimizer_step()
    return StepStats(loss.detach() * len(y), (logits.argmax(1) == y).sum(), len(y))


@dataclass(frozen=True)
class Method:
    step: Callable[[StepContext, torch.Tensor, torch.Tensor], StepStats]
    steps_per_minibatch: Callable[[int, int], int]  # (replays, attack_steps) -> optimizer steps
    passes_per_minibatch: Callable[[int, int], int]  # (replays, attack_steps) -> fwd-bwd passes
    default_alpha: Callable[[float, int], float]  # (eps, attack_steps) -> attack step size
    single_step: bool  # one attack step per update: prone to catastrophic overfitting (the guard is on)
    settings: dict = field(default_factory=dict)  # the method's own settings: name -> (default, help)
    bound: Callable[[float, float, float], float] = lambda eps, alpha, noise: eps  # max |x_in - x| it trains on
    norms: tuple[str, ...] = ("linf",)  # threat models it has a form in (ctx.norm)

    def resolve(self, given: dict | None = None) -> dict:
        """The method's settings: its defaults under ``given`` (name -> number); ValueError for an unknown
        name or a value that is not a finite number."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.settings))
        if unknown:
            valid = ", ".join(sorted(self.settings)) or "none"
            raise ValueError(f"unknown method setting(s) {', '.join(unknown)} (this method's: {valid})")
        out = {k: default for k, (default, _) in self.settings.items()}
        for key, value in given.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
                    or value in (float("inf"), float("-inf")):
                raise ValueError(f"method setting {key} expects a finite number, got {value!r}")
            out[key] = float(value)
        return out


METHODS: dict[str, Method] = {}


def register_method(name: str, *, steps=lambda m, k: 1, passes=lambda m, k: 1, alpha=lambda eps, k: eps,
                    single_step: bool = False, settings: dict | None = None,
                    bound=lambda eps, alpha, noise: eps, norms: tuple[str, ...] = ("linf",)):
    """Register a step function with its facts; ``settings``: name -> (default, one-line help) of the
    method's own hyperparameters (``method_args`` in the config, ``ctx.args`` in the step); ``bound``:
    (eps, alpha, noise) -> the largest distance from x, in the run's norm, of any input the step shows the
    model; ``norms``: the threat models the step has a form in (it reads ``ctx.norm``)."""
    def wrap(fn):
        METHODS[name] = Method(fn, steps, passes, alpha, single_step, dict(settings or {}), bound,
                               tuple(check_norm(n) for n in norms))
        return fn

    return wrap


def check_method_norm(name: str, norm: str) -> None:
    """A one-line ConfigError unless method ``name`` has a form in ``norm`` (it names the methods that have)."""
    if norm not in METHODS[name].norms:
        have = ", ".join(sorted(n for n, m in METHODS.items() if norm in m.norms))
        raise ConfigError(f"method {name} has no {norm} form (norm {norm} trains with: {have})")


BOTH = ("linf", "l2")


@register_method("standard", bound=lambda eps, alpha, noise: 0.0, norms=BOTH)
def standard_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """No attack: ordinary training on clean images."""
    return sgd_on(ctx, x, y)


@register_method("fgsm-rs", passes=lambda m, k: 2, alpha=lambda eps, k: 1.25 * eps, single_step=True, norms=BOTH)
def fgsm_rs_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """FGSM from a uniform random start, step alpha = 1.25 eps (Wong et al. 2020); in L2 a start uniform in the
    L2 ball and one normalized-gradient step, projected back onto the ball and [0,1]."""
    return sgd_on(ctx, ctx.attack(x, y, steps=1), y)


@register_method("fgsm", passes=lambda m, k: 2, alpha=lambda eps, k: eps, single_step=True, norms=BOTH)
def fgsm_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """FGSM from x itself, step alpha = eps (Goodfellow et al. 2015): the single-step method that
    overfits catastrophically, kept as the reference case."""
    return sgd_on(ctx, ctx.attack(x, y, steps=1, random_start=False), y)


@register_method("n-fgsm", passes=lambda m, k: 2, alpha=lambda eps, k: eps, single_step=True,
                 bound=lambda eps, alpha, noise: noise * eps + alpha)
def n_fgsm_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """N-FGSM (de Jorge et al. 2022): one FGSM step alpha = eps from uniform noise of radius ``noise`` eps
    (2), no projection back to the eps-ball, only to [0,1]."""
    with ctx.precision.autocast():
        x_adv = n_fgsm(unwrap(ctx.model), x, y, eps=ctx.eps, alpha=ctx.alpha, noise=ctx.noise,
                       generator=ctx.generator)
    return sgd_on(ctx, x_adv, y)


@register_method("pgd", passes=lambda m, k: k + 1, alpha=lambda eps, k: 2.5 * eps / k, norms=BOTH)
def pgd_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """Madry PGD-K training: random start, K = attack_steps, alpha = 2.5 eps / K (L-inf or L2: ``ctx.norm``)."""
    return sgd_on(ctx, ctx.attack(x, y, steps=ctx.attack_steps), y)


@register_method("free", steps=lambda m, k: m, passes=lambda m, k: m, alpha=lambda eps, k: eps, single_step=True,
                 norms=BOTH)
def free_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor) -> StepStats:
    """Free-m (Shafahi et al. 2019), Algorithm 1 of the thesis for one minibatch; delta persists in
    ``ctx.state['delta']``.

    Each replay: one forward/backward on clip(x + delta, 0, 1), an optimizer step with the
    weight gradient, then delta <- clip(delta + alpha * sign(grad_x), -eps, eps) (alpha = eps
    in the paper). In L2 (fastadv's form): delta <- delta + alpha * grad_x / |grad_x|_2, scaled back
    onto the L2 eps-ball. The stored delta has the largest batch's shape; a smaller batch uses
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
        loss = train_loss(ctx, logits, y)
        ctx.optimizer.zero_grad(set_to_none=True)
        ctx.precision.backward(loss)  # one pass: weight gradients and the input gradient (sign is scale-free)
        ctx.optimizer_step()
        delta = into_ball(delta.detach() + ctx.alpha * steepest(delta.grad, ctx.norm), ctx.eps, ctx.norm)
        loss_sum += loss.detach() * n
        correct += (logits.argmax(1) == y).sum()
    full[:n] = delta
    ctx.state["delta"] = full
    return StepStats(loss_sum, correct, n * ctx.replays)


for _name, _facts in ZOO.items():  # the methods from the fast-AT literature (fastadv.core.zoo)
    register_method(_name, **_facts.registration())(_facts.step)


# ----------------------------------------------------------------------------- in one's own loop
def hyperparam_setter(optimizer: torch.optim.Optimizer, lr_fn=None, momentum_fn=None, lr_scale=lambda: 1.0):
    """``iteration -> None`` writing LR (``lr_fn(iteration)`` times ``lr_scale()``) and momentum (beta1 where a
    group has ``betas``: Adam, AdamW, RAdam...) into every param group; a group with neither (Adagrad) gets no
    momentum; a schedule left None leaves that value as the optimizer has it."""

    def set_hyperparams(iteration: int) -> None:
        for group in optimizer.param_groups:
            if lr_fn is not None:
                group["lr"] = lr_fn(iteration) * lr_scale()
            if momentum_fn is not None:
                if "betas" in group:
                    group["betas"] = (momentum_fn(iteration), group["betas"][1])
                elif "momentum" in group:
                    group["momentum"] = momentum_fn(iteration)

    return set_hyperparams


class AdversarialStep:
    """One adversarial training step of any registered method, for use inside your own training loop.

    Arguments:
        method (str): a name in ``METHODS``: ``"free"``, ``"fgsm-rs"``, ``"n-fgsm"``, ``"fgsm"``, ``"pgd"``,
            ``"standard"``, or one of ``fastadv.core.zoo`` (``"grad-align"``, ``"fgsm-pgi"``, ``"nu-at"``,
            ``"gat"``, ``"trades"``...; docs/METHODS.md).
        model (nn.Module): takes [0,1] images (normalization inside the model), returns logits.
        optimizer (torch.optim.Optimizer): over the model's parameters; the step calls ``step()`` on it
            (Free-m: ``replays`` times per minibatch).
        eps (float): radius in pixel units, e.g. ``8/255`` (L-inf) or ``0.5`` (L2).
        alpha (float, optional): attack step; default: the method's (free, fgsm, n-fgsm: eps;
            fgsm-rs: 1.25 eps; pgd: 2.5 eps / K).
        replays (int): Free-m's m. (Default: 8)
        attack_steps (int): PGD training's K. (Default: 7)
        noise (float): N-FGSM's noise radius in multiples of eps. (Default: 2)
        lr_schedule, momentum_schedule (callable, optional): ``iteration -> value`` (e.g. from
            ``fastadv.core.schedules.build``), written into the optimizer before every optimizer step;
            None leaves the optimizer's own values.
        precision (str): ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"``. (Default: ``"fp32"``)
        seed (int): seed of the attack's random starts. (Default: 0)
        label_smoothing (float): of the training loss (never of the attack's). (Default: 0)
        method_args (dict, optional): the method's own settings (``METHODS[name].settings``).
        train_size (int, optional): rows of the training set, for methods with a per-example memory
            (``fgsm-pgi``, ``fgsm-mep-cs``: pass ``index`` to each call too); without it the memory grows
            to the largest index seen, which reads the index on the host every step.
        norm (str): threat model, ``"linf"`` or ``"l2"`` (standard, fgsm, fgsm-rs, pgd, free). (Default: ``"linf"``)

    Shape:
        - x: :math:`(N, C, H, W)` float in [0, 1], on the model's device.
        - y: :math:`(N)` class indices.

    Returns:
        ``StepStats``: ``loss_sum``, ``correct`` (device tensors), ``count``; ``.loss`` and
        ``.accuracy`` read them (one host sync).

    Example::

        step = fastadv.AdversarialStep("free", model, optimizer, eps=8/255, replays=8)
        for x, y in loader:
            stats = step(x.to(device), y.to(device))
        torch.save({"model": model.state_dict(), "step": step.state_dict()}, "ckpt.pt")
    """

    def __init__(self, method: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, eps: float,
                 alpha: float | None = None, replays: int = 8, attack_steps: int = 7, noise: float = 2.0,
                 lr_schedule: Callable[[int], float] | None = None,
                 momentum_schedule: Callable[[int], float] | None = None, precision: str = "fp32", seed: int = 0,
                 label_smoothing: float = 0.0, method_args: dict | None = None, train_size: int | None = None,
                 norm: str = "linf"):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r} (valid: {', '.join(sorted(METHODS))})")
        check_method_norm(method, check_norm(norm))
        if eps < 0 or replays < 1 or attack_steps < 1:
            raise ValueError(f"need eps >= 0, replays >= 1, attack_steps >= 1; got {eps}, {replays}, {attack_steps}")
        self.method = METHODS[method]
        device = next(model.parameters()).device
        alpha = self.method.default_alpha(eps, attack_steps) if alpha is None else alpha
        self.ctx = StepContext(model, optimizer, eps, alpha, replays, attack_steps,
                               hyperparam_setter(optimizer, lr_schedule, momentum_schedule),
                               torch.Generator(device=device).manual_seed(seed),
                               precision=make_precision(precision, device), noise=noise,
                               label_smoothing=label_smoothing, args=self.method.resolve(method_args),
                               train_size=train_size, norm=norm)

    @property
    def passes(self) -> int:
        """Forward-backward computations per minibatch."""
        return self.method.passes_per_minibatch(self.ctx.replays, self.ctx.attack_steps)

    @property
    def iteration(self) -> int:
        """Optimizer steps taken so far (Free-m's replays included)."""
        return self.ctx.iteration

    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None) -> StepStats:
        """One minibatch; ``index``: the rows' indices in the training set, for methods that keep a
        per-example memory (they say so when it is missing)."""
        self.ctx.model.train()
        self.ctx.index = index
        return self.method.step(self.ctx, x, y)

    def state_dict(self) -> dict:
        """What a checkpoint needs besides model and optimizer: iteration, method state (Free-m's delta), RNG."""
        scaler = self.ctx.precision.scaler
        return {"iteration": self.ctx.iteration, "state": dict(self.ctx.state),
                "generator": self.ctx.generator.get_state(), "scaler": scaler.state_dict() if scaler else None}

    def load_state_dict(self, state: dict) -> None:
        self.ctx.iteration = int(state["iteration"])
        self.ctx.state = dict(state["state"])
        self.ctx.generator.set_state(state["generator"])
        if self.ctx.precision.scaler is not None and state.get("scaler"):
            self.ctx.precision.scaler.load_state_dict(state["scaler"])
