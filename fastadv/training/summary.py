"""summary.json: the one place a run's final record is made, whatever way the run ended.

``status`` is "completed", "stopped by the overfitting guard", "diverged" or "not learning"; a run
that stopped early has no evaluation figures (None) but says why and which checkpoint it kept. The
figures of a finished run: the headline (AA-lite's per-point worst case when it ran, else the final
PGD), the final PGD-K alone as ``robust_acc`` (the thesis' standard), clean accuracy, the sanity
checks' verdicts, the costs in seconds, steps and forward-backward computations.
"""
from __future__ import annotations

from pathlib import Path

from fastadv.core import distributed
from fastadv.io import write_json


def headline(result) -> dict:
    """The figure to quote first: AA-lite's per-point worst case when it ran, else the final PGD-K."""
    if result.aa_lite:
        return {"robust_acc": result.aa_lite["robust_acc"], "attack": result.aa_lite["attack"],
                "points": result.aa_lite["points"], "name": "AA-lite"}
    return {"robust_acc": result.robust_acc, "attack": result.attack, "points": result.points, "name": "PGD"}


def figures(result, final, eval_seconds: float) -> dict:
    """The evaluation part of a summary (``result``: an EvalResult of the final attack ``final``)."""
    return {"headline": headline(result),
            "clean_acc": result.clean_acc, "robust_acc": result.robust_acc,  # robust_acc: the final PGD-K alone
            "clean_loss": result.clean_loss, "robust_loss": result.robust_loss,
            "attack": result.attack, "attack_params": final.to_dict(), "eval_points": result.points,
            "aa_lite": result.aa_lite,
            "trusted": result.trusted, "sanity": [c.to_dict() for c in result.sanity],  # the sanity checks
            "eval_seconds": eval_seconds}


def build_summary(s, run_dir: Path, status: str, *, evaluation: dict | None = None, message: str | None = None,
                  last_checkpoint: str | None = None) -> dict:
    """The summary of a ``Setup``'s run: its costs and state, plus ``evaluation`` (``figures``) when it ran."""
    cfg, loop, n_train = s.cfg, s.loop, len(s.data.y_train)
    summary = {"name": run_dir.name, "dataset": cfg.dataset, "model": cfg.model, "method": cfg.method,
               "status": status, **({"message": message} if message else {}),
               **(evaluation or {"clean_acc": None, "robust_acc": None, "last_checkpoint": last_checkpoint}),
               "eps": s.eps, "train_seconds": loop.train_seconds, "checkpoint_seconds": loop.checkpoint_seconds,
               "check_seconds": loop.check_seconds,
               "steps": s.ctx.iteration, "epochs": loop.mb_done / s.per_epoch, "minibatches": loop.mb_done,
               "grad_computations": loop.passes,
               "compute_epochs": loop.passes * cfg.batch_size / n_train,  # fwd-bwd work in passes over the data
               "co_guard": cfg.co_guard if cfg.co_guard is not None else s.method.single_step,
               "events": loop.events, "train_size": n_train, "val_size": s.data.val_size,
               "test_size": s.data.test_size, "data_note": s.data.split_note,
               **({"time_budget": cfg.time_budget} if cfg.time_budget else {}),
               "seed": cfg.seed, "device": str(s.device)}
    return summary


def write_summary(run_dir: Path, summary: dict) -> None:
    if distributed.is_main():
        write_json(run_dir / "summary.json", summary)
