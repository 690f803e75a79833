"""What every step function shares, below the method registry: its statistics, the training loss, the update.

``fastadv.core.methods`` (the registry, ``AdversarialStep``) and ``fastadv.core.zoo`` (the methods
added from the fast-AT literature) both build on these; the registry re-exports them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class StepStats:
    """Sums over the examples seen in a step (device tensors: no host sync until read)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int

    @property
    def loss(self) -> float:
        """Mean training loss of the step (reads the device: one sync)."""
        return self.loss_sum.item() / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        """Training accuracy of the step, on the inputs it trained on (one sync)."""
        return self.correct.item() / max(self.count, 1)


def train_loss(ctx, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss the weights are trained on: cross-entropy with ``ctx.label_smoothing`` (attacks keep plain CE)."""
    return F.cross_entropy(logits.float(), y, label_smoothing=ctx.label_smoothing)


def update(ctx, loss: torch.Tensor) -> None:
    """One optimizer step on ``loss``: zero the gradients, (scaled) backward, ``ctx.optimizer_step()``."""
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.precision.backward(loss)
    ctx.optimizer_step()


def stats_of(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> StepStats:
    """The step's statistics: ``loss`` (a batch mean) and the accuracy of ``logits`` over the batch."""
    return StepStats(loss.detach() * len(y), (logits.argmax(1) == y).sum(), len(y))
