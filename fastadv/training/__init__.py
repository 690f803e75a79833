"""Training: ``build`` (one setup step) <- the loop, its state, guards, log, run directory, checkpoints, finders.

    result = fastadv.train({"preset": "cifar10-cpu"})         # a run directory
    setup = fastadv.training.build(cfg)                         # the pieces, for one's own use
"""
from fastadv.training.loop import (
    RunResult,
    TrainingDiverged,
    TrainingInterrupted,
    train,
)
from fastadv.training.setup import Setup, build, check_config

__all__ = ["RunResult", "Setup", "TrainingDiverged", "TrainingInterrupted", "build", "check_config", "train"]
