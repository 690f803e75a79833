"""fastadv: fast adversarial training (Free-m, FGSM-RS, N-FGSM, PGD) with honest robustness numbers.

Public API (imported on first use, so ``import fastadv`` and ``fastadv --help`` stay fast)::

    import fastadv
    result = fastadv.train({"preset": "cifar10-cpu"})   # or {"dataset": "mnist", "method": "fgsm-rs", ...}
    model = fastadv.load_model(result.run_dir)          # nn.Module, eval mode, [0,1] input
    print(fastadv.evaluate(model, data, eps=8/255, steps=20))
    step = fastadv.AdversarialStep("free", model, optimizer, eps=8/255, replays=8)   # in your own loop
"""
from __future__ import annotations

import importlib

from fastadv._version import __version__

# public name -> module that defines it
_API = {
    "train": "fastadv.training.loop", "RunResult": "fastadv.training.loop",
    "TrainingDiverged": "fastadv.training.loop", "TrainingInterrupted": "fastadv.training.loop",
    "build": "fastadv.training.setup", "Setup": "fastadv.training.setup",
    "NotLearning": "fastadv.training.guard",
    "lr_range_test": "fastadv.training.finder", "find_weight_decay": "fastadv.training.finder",
    "RangeTest": "fastadv.training.finder",
    "evaluate": "fastadv.evaluation.evaluate", "evaluate_suite": "fastadv.evaluation.evaluate",
    "EvalResult": "fastadv.evaluation.evaluate", "AALite": "fastadv.evaluation.evaluate",
    "AttackSpec": "fastadv.evaluation.spec",
    "AdversarialStep": "fastadv.core.methods",
    "pgd": "fastadv.core.attacks", "fgsm": "fastadv.core.attacks",
    "load_model": "fastadv.models.store", "build_model": "fastadv.models", "export_checkpoint": "fastadv.models.export",
    "load_dataset": "fastadv.data", "DataError": "fastadv.data",
    "TrainConfig": "fastadv.config", "ConfigError": "fastadv.config",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastadv' has no attribute {name!r}")


def __dir__():
    return __all__
