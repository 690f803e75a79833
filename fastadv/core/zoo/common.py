"""Shared parts of the zoo's step functions: their registration facts, settings, starts and memories.

A step function here takes the registry's ``StepContext`` (``fastadv.core.methods``) as ``ctx``; it is
not imported, so that the registry can import the zoo. Conventions of every step:

- attack forwards run on ``unwrap(ctx.model)`` and the training loss's main forward on ``ctx.model``,
  so under DistributedDataParallel each backward follows exactly one wrapped forward; a second
  forward whose output enters the training loss (clean logits, a prior's logits) runs unwrapped, and
  its parameter gradients join the same accumulation before the all-reduce.
- cost (``passes``) counts backward traversals of the model: each time a gradient flows back into
  the output of one of the model's forward passes. An ordinary forward-backward is one; a forward
  whose graph is traversed twice (kept for a regularizer, or differentiated twice: double backprop)
  counts twice, though its second traversal has no forward of its own (a double backprop's second
  traversal costs more than an ordinary backward: it runs through the backward graph too).
- no host syncs: statistics stay on the device, and no Python branch reads a tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from fastadv.core.attacks import project

ZOO: dict[str, "Facts"] = {}


@dataclass(frozen=True)
class Facts:
    """A zoo method's registration facts (see ``fastadv.core.methods.register_method``)."""

    step: Callable
    passes: Callable[[int, int], int]
    alpha: Callable[[float, int], float]
    single_step: bool
    settings: dict = field(default_factory=dict)
    bound: Callable[[float, float, float], float] = lambda eps, alpha, noise: eps
    norms: tuple[str, ...] = ("linf",)  # the zoo's methods are L-inf methods: none has an L2 form here

    def registration(self) -> dict:
        return {"passes": self.passes, "alpha": self.alpha, "single_step": self.single_step,
                "settings": self.settings, "bound": self.bound, "norms": self.norms}


def method(name: str, *, passes, alpha, single_step: bool, settings: dict | None = None):
    """Decorator: file a step function under ``name`` with its facts (one optimizer step per minibatch)."""
    def wrap(fn):
        ZOO[name] = Facts(fn, passes, alpha, single_step, dict(settings or {}))
        return fn

    return wrap


def args_of(ctx, name: str) -> dict:
    """The method's settings: ``ctx.args`` over its defaults (a context built by hand may carry none)."""
    return {key: ctx.args.get(key, default) for key, (default, _) in ZOO[name].settings.items()}


def needs_index(ctx, name: str) -> torch.Tensor:
    """``ctx.index``, or a one-line ValueError saying the method needs the rows' training-set indices."""
    if ctx.index is None:
        raise ValueError(f"method {name} keeps a per-example memory: pass the minibatch's training-set indices "
                         f"(step(x, y, index=...))")
    return ctx.index


def _draw_device(ctx, x: torch.Tensor) -> torch.device:
    return x.device if ctx.generator is None else ctx.generator.device


def bernoulli_delta(ctx, x: torch.Tensor, magnitude: float) -> torch.Tensor:
    """Bernoulli start: every pixel +-``magnitude`` with probability 1/2, projected to the eps-ball and [0,1]."""
    bits = torch.randint(0, 2, x.shape, generator=ctx.generator, device=_draw_device(ctx, x))
    return project(x, (bits.to(x.device, x.dtype) * 2 - 1) * magnitude, ctx.eps)


def gaussian_delta(ctx, x: torch.Tensor, std: float) -> torch.Tensor:
    """TRADES' start: N(0, std^2) per pixel, projected to the eps-ball and [0,1]."""
    noise = torch.randn(x.shape, generator=ctx.generator, device=_draw_device(ctx, x))
    return project(x, noise.to(x.device, x.dtype) * std, ctx.eps)


def signed_step(x: torch.Tensor, delta: torch.Tensor, grad: torch.Tensor, alpha: float, eps: float) -> torch.Tensor:
    """delta + alpha * sign(grad), projected to the eps-ball and so that x + delta is in [0,1]."""
    return project(x, delta.detach() + alpha * grad.sign(), eps)


def ramp(ctx, weight: float, fraction: float) -> float:
    """``weight`` times min(1, progress / fraction): linear from 0 over the first ``fraction`` of training.

    ``ctx.progress`` None (a context without a training length) or ``fraction`` 0: the full weight.
    """
    if ctx.progress is None or fraction <= 0:
        return weight
    return weight * min(1.0, ctx.progress / fraction)


# ----------------------------------------------------------------------------- per-example memories
def memory(ctx, key: str, x: torch.Tensor, index: torch.Tensor, dtype: torch.dtype,
           init: Callable[[tuple, torch.device, torch.dtype], torch.Tensor]) -> torch.Tensor:
    """A per-example memory ``ctx.state[key]`` of shape (rows, *x.shape[1:]), grown when rows are missing.

    Its rows number ``ctx.train_size``; a context without it reads the largest index once a step (a
    host sync: the trainer sets ``train_size``). New rows are ``init(shape, device, dtype)``.
    """
    rows = ctx.train_size if ctx.train_size is not None else int(index.max()) + 1
    mem = ctx.state.get(key)
    if mem is None or mem.shape[1:] != x.shape[1:] or len(mem) < rows:
        grown = init((rows,) + tuple(x.shape[1:]), x.device, dtype)
        if mem is not None and mem.shape[1:] == x.shape[1:]:
            grown[:len(mem)] = mem
        mem = grown
        ctx.state[key] = mem
    return mem


def to_eps_units(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """delta in int8 units of eps/127 (4x smaller than fp32; resolution eps/254): a CIFAR-10 memory
    of 50,000 x 3 x 32 x 32 is 154 MB."""
    scale = 127.0 / eps if eps > 0 else 0.0
    return (delta.float() * scale).round().clamp(-127, 127).to(torch.int8)


def from_eps_units(stored: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of ``to_eps_units`` at the current eps (a memory follows an eps ramp in proportion)."""
    return stored.to(dtype) * (eps / 127.0)


def uniform_eps_units(ctx):
    """``init`` of a memory in eps units: U{-127..127} (a uniform start in the eps-ball, drawn from ctx.generator)."""
    def init(shape: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        draw = torch.randint(-127, 128, shape, generator=ctx.generator, dtype=dtype,
                             device=device if ctx.generator is None else ctx.generator.device)
        return draw.to(device)

    return init


def zeros(shape: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(shape, device=device, dtype=dtype)


def smooth_convergence(ctx, loss: torch.Tensor, gamma: float) -> torch.Tensor:
    """Zhao et al.'s (ICCV 2023) convergence-stability term as read here: ``gamma * |loss - previous loss|``.

    ``previous loss`` is the training loss of the previous minibatch, kept (detached, on the device)
    in ``ctx.state['cs_previous_loss']``; the first minibatch has none and gets no term.
    """
    previous = ctx.state.get("cs_previous_loss")
    ctx.state["cs_previous_loss"] = loss.detach().float()
    if previous is None:
        return torch.zeros((), device=loss.device)
    return gamma * (loss.float() - previous).abs()
