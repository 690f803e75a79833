"""What an attack is, as data: ``AttackSpec`` (frozen, hashable: results are cached by it) and the attack
presets of ``fastadv eval --preset`` (``ATTACK_PRESETS``; training recipes are ``fastadv.presets.PRESETS``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from fastadv.config import NORMS, ConfigError, TrainConfig
from fastadv.threat import resolve_eps
from fastadv.core.attacks import ATTACKS


@dataclass(frozen=True)
class AttackSpec:
    """What attack produced a robust number; ``describe()`` is the line reports quote.

    Frozen and hashable, so results can be cached by spec. ``alpha=None`` means the attack's
    default step (``fastadv.core.attacks.ATTACKS``: eps/4 for PGD, the thesis' PGD-20 step; eps for
    FGSM; APGD and AutoAttack set their own). For APGD ``steps`` counts iterations and
    ``targets`` the target classes of APGD-T. ``norm``: the threat model, ``"linf"`` or ``"l2"`` (every attack
    takes both; eps and alpha are in its units).
    """

    name: str = "pgd"  # a key of fastadv.core.attacks.ATTACKS
    eps: float = 0.3
    alpha: float | None = None  # None = the attack's default step
    steps: int = 20
    restarts: int = 1
    loss: str = "ce"
    random_start: bool = True
    targets: int = 9  # apgd-t only
    norm: str = "linf"  # "linf" | "l2"

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ConfigError(f"unknown norm {self.norm!r} for the {self.name} attack (valid: {', '.join(NORMS)})")

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
ATTACK_PRESETS: dict[str, dict] = {
    "pgd20": {"steps": 20, "restarts": 1},  # the thesis' evaluation
    "pgd50-10": {"steps": 50, "restarts": 10},  # Wong et al.'s final evaluation
}


def dataset_eps(dataset: str, norm: str = "linf") -> float:
    """A dataset's standard radius in ``norm``, the one training uses when a config sets no eps
    (``fastadv.threat.resolve_eps``: L-inf MNIST 0.3, Fashion-MNIST 0.1, CIFAR 8/255 ...; L2 MNIST 2.0, CIFAR 0.5)."""
    return resolve_eps(TrainConfig(dataset=dataset, norm=norm))


def spec_from(attack: "AttackSpec | str", eps: float | None = None, alpha: float | None = None,
              steps: int | None = None, restarts: int | None = None, loss: str | None = None, *,
              dataset: str | None = None, norm: str | None = None) -> AttackSpec:
    """The attack ``evaluate`` runs: ``attack`` itself when it is an ``AttackSpec`` (then it says everything,
    and giving any of eps, alpha, steps, restarts, loss, norm as well is a ConfigError), else the attack of that
    name with those settings (None: ``AttackSpec``'s defaults, L-inf; eps: the ``dataset``'s standard radius in
    the norm, which an (x, y) pair without a dataset name must give)."""
    given = {"eps": eps, "alpha": alpha, "steps": steps, "restarts": restarts, "loss": loss, "norm": norm}
    given = {k: v for k, v in given.items() if v is not None}
    if isinstance(attack, AttackSpec):
        if given:
            raise ConfigError(f"attack={attack.short()} is an AttackSpec, which sets {', '.join(given)} itself; "
                              f"give them in the AttackSpec only (e.g. AttackSpec({attack.name!r}, eps=...))")
        return attack
    if attack not in ATTACKS:
        raise ConfigError(f"unknown attack {attack!r} (valid: {', '.join(sorted(ATTACKS))})")
    if "eps" not in given:
        if dataset is None:
            raise ConfigError(f"give eps for the {attack} attack: an (x, y) pair has no dataset to take "
                              f"the standard radius from")
        given["eps"] = dataset_eps(dataset, norm or "linf")
    return AttackSpec(name=attack, **given)
