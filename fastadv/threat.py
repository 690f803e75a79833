"""Each dataset's standard threat model: the radius a run attacks with when its config gives no eps."""
from __future__ import annotations

from fastadv.config import ConfigError, TrainConfig

# Each dataset's standard threat model, used when eps is not given.
DEFAULT_EPS = {"mnist": 0.3, "digits": 0.3, "fashion-mnist": 0.1, "synthetic": 0.1,
               "svhn": 8 / 255, "tiny-imagenet": 8 / 255}  # as CIFAR in the fast-AT papers; other data: 8/255 too
CIFAR_EPS = 8 / 255
# L2 radii with a convention: CIFAR-10 0.5 (RobustBench; CIFAR-100 alike), MNIST 2.0 (Maini et al. 2020)
DEFAULT_EPS_L2 = {"mnist": 2.0, "cifar10": 0.5, "cifar100": 0.5}


def resolve_eps(cfg: TrainConfig) -> float:
    """The attack radius of a run: the config's, else the dataset's standard one in the config's norm
    (ConfigError for an L2 run on a dataset without an L2 convention)."""
    if cfg.eps is not None:
        return cfg.eps
    if cfg.norm == "l2" and cfg.dataset not in DEFAULT_EPS_L2:
        raise ConfigError(f"no standard L2 radius for {cfg.dataset}: give eps (MNIST's is 2.0, CIFAR's 0.5)")
    if cfg.norm == "l2":
        return DEFAULT_EPS_L2[cfg.dataset]
    return DEFAULT_EPS.get(cfg.dataset, CIFAR_EPS)


__all__ = ["CIFAR_EPS", "DEFAULT_EPS", "DEFAULT_EPS_L2", "resolve_eps"]
