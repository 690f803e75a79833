"""Clean and adversarial accuracy of a model on [0,1] images, batched on the device."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from fastadv.attacks import ATTACKS
from fastadv.data import DataError, Dataset, to_float


@dataclass(frozen=True)
class AttackSpec:
    """What attack produced a robust number; ``describe()`` is the line reports quote."""

    name: str = "pgd"  # pgd | fgsm
    eps: float = 0.3
    alpha: float | None = None  # None = eps/4 for PGD, eps for FGSM
    steps: int = 20
    restarts: int = 1
    loss: str = "ce"
    random_start: bool = True

    def resolved_alpha(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return self.eps if self.name == "fgsm" else self.eps / 4

    def describe(self) -> str:
        if self.name == "fgsm":
            return f"FGSM (eps={self.eps:.4g})"
        return (f"PGD-{self.steps} ({self.restarts} restart{'s' if self.restarts != 1 else ''}, "
                f"eps={self.eps:.4g}, alpha={self.resolved_alpha():.4g}, {self.loss} loss)")

    def to_dict(self) -> dict:
        return {**asdict(self), "alpha": self.resolved_alpha(), "description": self.describe()}


@dataclass(frozen=True)
class EvalResult:
    clean_acc: float
    robust_acc: float
    clean_loss: float
    robust_loss: float
    points: int
    attack: str

    def to_dict(self) -> dict:
        return asdict(self)


def test_split(data, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) from a Dataset's test split or an (x, y) pair; the first ``limit`` points if > 0."""
    if isinstance(data, Dataset):
        x, y = data.x_test, data.y_test
    else:
        try:
            x, y = data
        except (TypeError, ValueError):
            raise DataError("evaluate() takes a fastadv Dataset or an (x, y) pair of tensors") from None
    if limit > 0:
        x, y = x[:limit], y[:limit]
    return x, y


def evaluate(model: torch.nn.Module, data, *, attack: AttackSpec | str = "pgd", eps: float | None = None,
             alpha: float | None = None, steps: int = 20, restarts: int = 1, loss: str = "ce",
             limit: int = 0, batch_size: int = 500, seed: int = 0,
             device: torch.device | str | None = None) -> EvalResult:
    """Clean and robust accuracy (fractions in [0,1]) over the test split or an (x, y) pair.

    Runs in eval mode and restores the model's previous mode. Images may be uint8 [0,255]
    or float [0,1]. A point counts as robust only if the attack fails on it; every point
    is attacked for all steps, and with restarts the per-example worst case is kept.
    """
    if isinstance(attack, str):
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r} (valid: {', '.join(sorted(ATTACKS))})")
        attack = AttackSpec(name=attack, eps=0.3 if eps is None else eps, alpha=alpha, steps=steps,
                            restarts=restarts, loss=loss)
    x_all, y_all = test_split(data, limit)
    device = device or next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # clean ok, robust ok, clean loss, robust loss
    try:
        for start in range(0, len(y_all), batch_size):
            x = x_all[start:start + batch_size].to(device)
            x = to_float(x) if x.dtype == torch.uint8 else x.float()
            y = y_all[start:start + batch_size].to(device)
            x_adv = run_attack(model, x, y, attack, generator)
            with torch.no_grad():
                for i, inputs in enumerate((x, x_adv)):
                    logits = model(inputs).float()
                    sums[i] += (logits.argmax(1) == y).sum()
                    sums[2 + i] += F.cross_entropy(logits, y, reduction="sum")
    finally:
        model.train(was_training)
    n = max(len(y_all), 1)
    clean, robust, closs, rloss = (sums / n).tolist()
    return EvalResult(clean, robust, closs, rloss, len(y_all), attack.describe())


def run_attack(model, x, y, attack: AttackSpec, generator=None) -> torch.Tensor:
    fn = ATTACKS[attack.name]
    return fn(model, x, y, eps=attack.eps, alpha=attack.resolved_alpha(), steps=attack.steps,
              restarts=attack.restarts, random_start=attack.random_start if attack.name == "pgd" else False,
              loss=attack.loss, generator=generator)
