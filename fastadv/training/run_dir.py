"""The run directory: a fresh folder with the resolved config.json, or an unfinished one to resume.

``new_run(s)`` makes ``out_dir/<name>`` (never over a finished run: ``name-2``, ``name-3`` ...) and
writes ``config.json``: the config as resolved (eps, alpha, total steps, the device, the data's
size and source, the architecture, the speed switches, versions). ``resume_config`` reads it back.
"""
from __future__ import annotations

import platform
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from fastadv.config import ConfigError, TrainConfig
from fastadv.core import distributed
from fastadv.errors import CheckpointError
from fastadv.io import read_json_object, write_json
from fastadv.naming import thesis_name
from fastadv.training.checkpoint import RESUME_MAY_CHANGE


def fresh_run_dir(out_dir: str, name: str) -> Path:
    """out_dir/name, or name-2, name-3... when it exists: never overwrite a finished run."""
    base = Path(out_dir) / name
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{name}-{i}")
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    return path


def versions() -> dict:
    return {"torch": torch.__version__, "python": platform.python_version(), "numpy": np.__version__}


def resolved(s) -> dict:
    """config.json of a ``Setup``: every config field as resolved, plus the facts the run was made of."""
    cfg = s.cfg
    return {**cfg.to_dict(), "eps": s.eps, "alpha": s.alpha, "augment": s.stream.augment,
            "total_steps": s.total_steps, "minibatches": s.minibatches, "eval_every": s.eval_every,
            "device": str(s.device), "data_source": s.data.source, "train_size": len(s.data.y_train),
            "data_note": s.data.split_note, "val_images": s.data.val_size, "test_size": s.data.test_size,
            "arch": s.arch, "speed": s.speed, "versions": versions(),
            "world_size": distributed.world_size(), **({"lr_finder": s.lr_finder} if s.lr_finder else {})}


def new_run(s) -> Path:
    """A fresh run directory for a ``Setup`` with its config.json (made by rank 0 only); the ``Setup``'s
    config becomes the one read back from it, exactly what a resume reads."""
    cfg = s.cfg

    def make() -> Path:
        run_dir = fresh_run_dir(cfg.out_dir, cfg.name or thesis_name(cfg))
        write_json(run_dir / "config.json", resolved(s))
        return run_dir

    run_dir = distributed.from_main(make)
    s.cfg = run_config(run_dir)
    return run_dir


def rewrite_config(s, run_dir: Path) -> None:
    """config.json again after the time budget changed the run's length (rank 0 writes; the config is the same)."""
    if distributed.is_main():
        write_json(run_dir / "config.json", resolved(s))


def run_config(run_dir: Path) -> TrainConfig:
    """The config a run directory was trained with (its config.json, values as resolved)."""
    try:
        resolved = read_json_object(Path(run_dir) / "config.json")
    except CheckpointError as exc:
        raise CheckpointError(f"{run_dir} is not a readable fastadv run directory ({exc})") from None
    return TrainConfig.from_dict({f.name: resolved[f.name] for f in fields(TrainConfig) if f.name in resolved})


def resume_config(run_dir: str | Path, config: TrainConfig | dict | None) -> TrainConfig:
    """The run's own config; ``config`` (if given) may differ only in RESUME_MAY_CHANGE or by None (= default)."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").is_file():
        raise CheckpointError(f"{run_dir} has finished (summary.json exists); nothing to resume")
    stored = run_config(run_dir)
    if config is None:
        return stored
    given = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    changed = [f"{k}={v!r} (run: {getattr(stored, k)!r})" for k, v in given.to_dict().items()
               if k not in RESUME_MAY_CHANGE and v is not None and v != getattr(stored, k)]
    if changed:
        raise ConfigError(f"cannot resume {run_dir.name} with other settings: {', '.join(changed)}; a resumed run "
                          f"keeps its config.json, only {', '.join(RESUME_MAY_CHANGE)} may change")
    return stored.replace(**{k: getattr(given, k) for k in RESUME_MAY_CHANGE})
