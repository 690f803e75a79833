"""A grid runner over configs x seeds, with one lock per output folder.

A grid is every config file x seed. Each run's directory is ``OUT/<name>_s<seed>`` (names:
``fastadv.naming``); a run is finished when its directory holds ``summary.json``. ``run_grid``
skips finished runs, resumes an unfinished one from its last checkpoint (``start_or_resume``;
restarted cleanly when it has none), goes on past a failing run and returns the failures.
"""
from __future__ import annotations

import os
import shutil
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from fastadv.config import ConfigError, TrainConfig
from fastadv.errors import UserError, first_line
from fastadv.naming import run_label, seed_dir_name

FINISHED_MARKER = "summary.json"  # written last by the trainer: its presence means the run finished



# ----------------------------------------------------------------------------- grid planning
@dataclass(frozen=True)
class GridRun:
    """One config x seed of a grid: the resolved config and the run directory it writes."""

    config: TrainConfig
    run_dir: Path
    source: Path  # the config file it came from

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def finished(self) -> bool:
        return is_finished(self.run_dir)


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / FINISHED_MARKER).is_file()


def config_files(paths: Iterable[str | Path]) -> list[Path]:
    """Config files named by ``paths``: files as given, directories as their *.toml / *.json, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in (".toml", ".json") and q.is_file())
            if not found:
                raise ConfigError(f"no .toml or .json config files in directory {p}")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"no such config file or directory: {p}")
    if not out:
        raise ConfigError("no config files given")
    return out


GRID_KEYS = ("seed", "out_dir")  # set by the grid for each run


def plan_grid(paths: Iterable[str | Path], seeds: int = 1, out_dir: str | Path = "runs", *,
              first_seed: int = 0, overrides: Mapping | None = None) -> list[GridRun]:
    """Every config file x seed (first_seed .. first_seed+seeds-1): all configs with the first seed, then the next.

    ``overrides`` (config fields) apply to every config, e.g. ``{"device": "cuda"}``.
    Raises ConfigError for bad files, bad values, or two runs that would share a directory.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if first_seed < 0:
        raise ConfigError(f"--first-seed must be >= 0, got {first_seed}")
    bad = sorted(set(overrides or {}) & set(GRID_KEYS))
    if bad:
        raise ConfigError(f"the grid sets {', '.join(bad)} itself (use --seeds, --first-seed, --out)")
    bases = [(path, TrainConfig.from_file(path, overrides)) for path in config_files(paths)]
    runs, seen = [], {}
    for seed in range(first_seed, first_seed + seeds):  # seed-major: a cut-short grid has every config once
        for path, base in bases:
            cfg = base.replace(seed=seed, out_dir=str(out_dir), progress=False)
            run = GridRun(cfg, Path(out_dir) / seed_dir_name(cfg), path)
            if run.run_dir in seen:
                raise ConfigError(f"{path} and {seen[run.run_dir]} both name their runs {run_label(cfg)!r}; "
                                  f"set a distinct `name` in one of them")
            seen[run.run_dir] = path
            runs.append(run)
    return runs


# ----------------------------------------------------------------------------- running
def start_or_resume(cfg: TrainConfig, run_dir: Path, *, data=None, warn=None):
    """Train ``cfg`` into ``run_dir``; an unfinished directory there is resumed from its checkpoint.

    When the directory cannot be resumed (no intact checkpoint, or it was started with other
    settings) it is removed and the run restarts cleanly; ``warn`` gets one line saying why.
    """
    from fastadv.config import ConfigError
    from fastadv.errors import CheckpointError
    from fastadv.training import train

    run_dir = Path(run_dir)
    cfg = cfg.replace(out_dir=str(run_dir.parent), name=run_dir.name)
    if run_dir.exists():  # unfinished: no summary.json
        try:
            return train(cfg, data=data, resume=run_dir)
        except (CheckpointError, ConfigError) as exc:
            (warn or tqdm_write)(f"{run_dir.name}: cannot resume ({exc}); restarting it")
            shutil.rmtree(run_dir)
    return train(cfg, data=data)


def tqdm_write(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message)


@dataclass
class GridOutcome:
    """What ``run_grid`` did: run names trained, skipped (already finished) and failed (name, error)."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class DataCache:
    """Each dataset read once per grid (runs of one grid mostly share it)."""

    def __init__(self):
        self._data = {}

    def get(self, cfg: TrainConfig):
        from fastadv.core.perf import resolve_device
        from fastadv.data import load_dataset

        device = resolve_device(cfg.device)
        key = (cfg.dataset, cfg.data_dir, str(device))
        if key not in self._data:
            self._data[key] = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, device=device)
        return self._data[key]


LOCK_NAME = ".grid.lock"


class GridBusy(UserError):
    """Another grid is writing into the same folder."""


@contextmanager
def grid_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold ``OUT/.grid.lock`` while a grid runs: a second grid into the same folder stops with one line.

    The lock is an ``fcntl.flock`` on the file, which the kernel drops when the process ends in
    any way (crash, SIGKILL), so it cannot be left stuck; the file itself may stay. The holder's pid
    is written into it for the message. Where ``fcntl`` does not exist (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise GridBusy(f"another fastadv grid (pid {holder}) is training into {out}; wait for it to finish or "
                           f"use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def run_grid(runs: list[GridRun], *, progress: bool = True,
             train_fn: Callable = start_or_resume, echo: Callable[[str], None] | None = None) -> GridOutcome:
    """Run every unfinished run in order; a failure is recorded and the grid goes on.

    ``train_fn(cfg, run_dir, data=...)`` trains one run (default ``start_or_resume``).
    KeyboardInterrupt, and Ctrl-C or SIGTERM caught by the training loop (``TrainingInterrupted``, after
    its checkpoint), stop the grid: the interrupted run is resumed next time, and no further run starts.
    """
    from tqdm.auto import tqdm

    from fastadv.training.loop import TrainingInterrupted

    outcome, data = GridOutcome(), DataCache()
    t0 = time.perf_counter()
    bar = tqdm(runs, unit="run", disable=not progress, dynamic_ncols=True)
    say = echo or tqdm_write
    for run in bar:
        bar.set_postfix_str(run.name, refresh=True)
        if run.finished:
            outcome.skipped.append(run.name)
            continue
        try:
            result = train_fn(run.config, run.run_dir, data=data.get(run.config))
        except (KeyboardInterrupt, TrainingInterrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - one failed run must not stop the grid
            message = first_line(exc)
            outcome.failed.append((run.name, f"{type(exc).__name__}: {message}"))
            say(f"FAILED {run.name}: {type(exc).__name__}: {message}")
            if not isinstance(exc, (ConfigError, RuntimeError)):
                say(traceback.format_exc(limit=3).rstrip())
            continue
        outcome.trained.append(run.name)
        s = result.summary
        say(f"done {run.name}: clean {100 * s['clean_acc']:.2f}%, robust {100 * s['robust_acc']:.2f}% "
            f"({s['attack']}), {s['train_seconds']:.0f} s training")
    bar.close()
    outcome.seconds = time.perf_counter() - t0
    return outcome


__all__ = ["grid_lock", "GridBusy", "GridRun", "GridOutcome", "plan_grid", "run_grid", "start_or_resume",
           "is_finished", "config_files"]
