"""Evaluation: attack specs, per-point passes, sanity checks, the evaluation suite, plots.

``spec`` (what an attack is) <- ``points`` (one pass over points) <- ``sanity`` (checks that a
robust number can be believed) <- ``evaluate`` (``evaluate``, AA-lite, ``evaluate_suite``) ; ``plots``.
"""
from fastadv.evaluation.evaluate import (
                                         AALite,
                                         EvalReport,
                                         EvalResult,
                                         evaluate,
                                         evaluate_distributed,
                                         evaluate_suite,
)
from fastadv.evaluation.plots import plot_eps_curve
from fastadv.evaluation.points import (
                                         PointResults,
                                         eval_mode,
                                         predict_points,
                                         test_split,
)
from fastadv.evaluation.spec import ATTACK_PRESETS, AttackSpec

__all__ = ["AALite", "ATTACK_PRESETS", "AttackSpec", "EvalReport", "EvalResult", "PointResults", "eval_mode", "evaluate",
           "evaluate_distributed", "evaluate_suite", "plot_eps_curve", "predict_points", "test_split"]
