"""Run names: the thesis' code ``D_F2_E_M`` (e.g. ``10_1cyc2_40_0.15``), from a config alone.

- **D** the dataset: ``10`` / ``100`` for CIFAR-10 / CIFAR-100 as in the thesis; other datasets
  use a short word (``fmnist``, ``mnist``, ``digits``, ``synth``; any other name with its
  non-alphanumeric characters removed), so a name never hides which data a run used.
- **F** the LR technique (``FAT`` for the original piecewise 3 steps, ``1cyc``, ``1tru``,
  ``1half``, ``lin``, ``exp``, ``warm``, ``walin``, ``const``; ``poly`` and ``cyc`` for the
  polynomial and cyclical shapes the thesis discusses but did not name), then **2** when the
  momentum follows the 1cycle mirror (``2cyc`` for the cyclical momentum mirror).
- **E** the budget: optimizer steps in thousands, Free-m replays included (the thesis'
  "epochs (x1000)"), when the config sets ``iterations``; otherwise ``<epochs>ep``.
- **M** the peak LR, with two decimals like the thesis (``0.10``) when that is exact; ``auto`` when
  ``lr_max = "auto"`` (None): the LR range test picks it when the run starts, so a name made before
  (``--dry-run``, a grid's run directories) cannot know it.
"""
from __future__ import annotations

import re

from fastadv.config import TrainConfig
from fastadv.specs import parse_spec

# D: dataset code. The thesis only had CIFAR-10 (10) and CIFAR-100 (100).
DATASET_CODES = {"cifar10": "10", "cifar100": "100", "fashion-mnist": "fmnist", "mnist": "mnist",
                 "digits": "digits", "synthetic": "synth"}
# F: LR schedule name -> the thesis' technique code.
TECHNIQUE_CODES = {"piecewise": "FAT", "one-cycle": "1cyc", "one-cycle-tf": "1cyc", "one-cycle-truncated": "1tru",
                   "one-cycle-half": "1half", "linear": "lin", "exponential": "exp", "warm-restarts": "warm",
                   "linear-warm-restarts": "walin", "constant": "const", "polynomial": "poly",
                   "cyclical": "cyc"}
# The "2" suffix: momentum schedule name -> suffix (the thesis only used constant and 1cycle).
MOMENTUM_CODES = {"constant": "", "one-cycle": "2", "cyclical": "2cyc"}

def _word(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "", text)


def dataset_code(dataset: str) -> str:
    return DATASET_CODES.get(dataset, _word(dataset))


def technique_code(lr_schedule: str, momentum_schedule: str) -> str:
    """F2: the LR technique, plus '2' when momentum follows the 1cycle mirror."""
    lr_name, _ = parse_spec(lr_schedule)
    mom_name, _ = parse_spec(momentum_schedule)
    return (TECHNIQUE_CODES.get(lr_name, _word(lr_name))
            + MOMENTUM_CODES.get(mom_name, "2" + _word(mom_name)))


def budget_code(iterations: int, epochs: float) -> str:
    """E: thousands of optimizer steps (replays included), or '<epochs>ep' for an epoch budget."""
    return f"{iterations / 1000:g}" if iterations > 0 else f"{epochs:g}ep"


AUTO_LR = "auto"  # M of a config whose lr_max the LR range test will choose


def lr_code(lr_max: float | None) -> str:
    """M: '0.10' style (two decimals, as the thesis writes it) when exact, else the shortest form;
    'auto' for lr_max None (``lr_max = "auto"``)."""
    if lr_max is None:
        return AUTO_LR
    cents = lr_max * 100
    return f"{lr_max:.2f}" if abs(cents - round(cents)) < 1e-9 and lr_max >= 0.01 else f"{lr_max:g}"


def thesis_name(cfg: TrainConfig) -> str:
    """The thesis' D_F2_E_M code of a config, e.g. ``10_1cyc2_40_0.15``."""
    return "_".join((dataset_code(cfg.dataset), technique_code(cfg.lr_schedule, cfg.momentum_schedule),
                     budget_code(cfg.iterations, cfg.epochs), lr_code(cfg.lr_max)))


def run_label(cfg: TrainConfig) -> str:
    """The name of a config's runs without the seed: ``cfg.name`` if set, else the thesis name."""
    return cfg.name or thesis_name(cfg)


def seed_dir_name(cfg: TrainConfig) -> str:
    return f"{run_label(cfg)}_s{cfg.seed}"


_SEED_SUFFIX = re.compile(r"(_s\d+)?(-\d+)?$")


def strip_seed(name: str) -> str:
    """'fmnist_1cyc_3_0.05_s2' -> 'fmnist_1cyc_3_0.05' (also drops fresh_run_dir's '-2' suffix)."""
    return _SEED_SUFFIX.sub("", name)
