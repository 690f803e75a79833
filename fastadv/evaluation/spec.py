"""What an attack is, as data: ``AttackSpec`` (frozen, hashable: results are cached by it) and presets."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from fastadv.core.attacks import ATTACKS


@dataclass(frozen=True)
class AttackSpec:
    """What attack produced a robust number; ``describe()`` is the line reports quote.

    Frozen and hashable, so results can be cached by spec. ``alpha=None`` means the attack's
    default step (``fastadv.core.attacks.ATTACKS``: eps/4 for PGD, the thesis' PGD-20 step; eps for
    FGSM; APGD and AutoAttack set their own). For APGD ``steps`` counts iterations and
    ``targets`` the target classes of APGD-T.
    """

    name: str = "pgd"  # a key of fastadv.core.attacks.ATTACKS
    eps: float = 0.3
    alpha: float | None = None  # None = the attack's default step
    steps: int = 20
    restarts: int = 1
    loss: str = "ce"
    random_start: bool = True
    targets: int = 9  # apgd-t only

    @property
    def info(self):
        return ATTACKS[self.name]

    def resolved_alpha(self) -> float | None:
        return self.alpha if self.alpha is not None else self.info.default_alpha(self.eps)

    def describe(self) -> str:
        return self.info.describe(self)

    def short(self) -> str:
        """A name for table rows, e.g. 'PGD-20x1' or 'FGSM'."""
        return self.info.short(self)

    def at_eps(self, eps: float) -> "AttackSpec":
        """The same attack at another radius; an explicit alpha keeps its ratio to eps."""
        alpha = None if self.alpha is None or self.eps == 0 else self.alpha * eps / self.eps
        return replace(self, eps=eps, alpha=alpha)

    def to_dict(self) -> dict:
        out = {**asdict(self), "alpha": self.resolved_alpha(), "description": self.describe(), **self.info.record}
        if not self.info.targeted:
            out.pop("targets")
        return out

    def curve_label(self) -> str:
        """The eps curve's attack without its eps, e.g. 'PGD-20, 1 restart, step eps/4, ce loss'."""
        return self.info.curve(self) if self.info.curve else self.short()


# Named attack settings for `fastadv eval --preset`; alpha stays eps/4 unless --alpha is given.
PRESETS: dict[str, dict] = {
    "pgd20": {"steps": 20, "restarts": 1},  # the thesis' evaluation
    "pgd50-10": {"steps": 50, "restarts": 10},  # Wong et al.'s final evaluation
}


def spec_from(attack: "AttackSpec | str", eps, alpha, steps, restarts, loss) -> AttackSpec:
    if isinstance(attack, AttackSpec):
        return attack
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r} (valid: {', '.join(sorted(ATTACKS))})")
    return AttackSpec(name=attack, eps=0.3 if eps is None else eps, alpha=alpha, steps=steps,
                      restarts=restarts, loss=loss)
