"""fastadv: fast adversarial training (Free-m, FGSM-RS, PGD) with honest robustness numbers.

Public API::

    import fastadv
    result = fastadv.train({"dataset": "mnist", "method": "fgsm-rs", "epochs": 5})
    model = fastadv.load_model(result.run_dir)          # nn.Module, eval mode, [0,1] input
    print(fastadv.evaluate(model, data, eps=0.3, steps=20))
    report = fastadv.evaluate_suite(model, data, [fastadv.AttackSpec("pgd", eps=0.3)])  # + sanity checks
"""
from fastadv.attacks import fgsm, pgd
from fastadv.checkpoint import load_model
from fastadv.config import ConfigError, TrainConfig
from fastadv.data import DataError, load_dataset
from fastadv.evaluation import AttackSpec, EvalResult, evaluate, evaluate_suite
from fastadv.export import export_checkpoint
from fastadv.finder import RangeTest, find_weight_decay, lr_range_test
from fastadv.models import build_model
from fastadv.trainer import RunResult, train

__version__ = "0.1.0"

__all__ = ["train", "evaluate", "evaluate_suite", "export_checkpoint", "load_model", "load_dataset", "build_model",
           "pgd", "fgsm", "lr_range_test", "find_weight_decay", "RangeTest", "TrainConfig", "AttackSpec", "EvalResult",
           "RunResult", "ConfigError", "DataError", "__version__"]
