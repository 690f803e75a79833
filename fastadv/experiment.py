"""Experiments: the thesis' run names (D_F2_E_M) and a grid runner over configs x seeds.

Run names follow the thesis' code ``D_F2_E_M`` (e.g. ``10_1cyc2_40_0.15``):

- **D** the dataset: ``10`` / ``100`` for CIFAR-10 / CIFAR-100 as in the thesis; other datasets
  use a short word (``fmnist``, ``mnist``, ``digits``, ``synth``; any other name with its
  non-alphanumeric characters removed), so a name never hides which data a run used.
- **F** the LR technique (``FAT`` for the original piecewise 3 steps, ``1cyc``, ``1tru``,
  ``1half``, ``lin``, ``exp``, ``warm``, ``walin``, ``const``; ``poly`` and ``cyc`` for the
  polynomial and cyclical shapes the thesis discusses but did not name), then **2** when the
  momentum follows the 1cycle mirror (``2cyc`` for the cyclical momentum mirror).
- **E** the budget: optimizer steps in thousands, Free-m replays included (the thesis'
  "epochs (x1000)"), when the config sets ``iterations``; otherwise ``<epochs>ep``.
- **M** the peak LR, with two decimals like the thesis (``0.10``) when that is exact.

A grid is every config file x seed. Each run's directory is ``OUT/<name>_s<seed>``; a run is
finished when its directory holds ``summary.json``. ``run_grid`` skips finished runs, resumes an
unfinished one from its last checkpoint (``start_or_resume``; restarted cleanly when it has none),
goes on past a failing run and returns the failures.
"""
from __future__ import annotations

import os
import re
import shutil
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from fastadv.config import ConfigError, TrainConfig
from fastadv.errors import UserError, first_line
from fastadv.schedules import parse_spec

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

FINISHED_MARKER = "summary.json"  # written last by the trainer: its presence means the run finished


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


def lr_code(lr_max: float) -> str:
    """M: '0.10' style (two decimals, as the thesis writes it) when exact, else the shortest form."""
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
    from fastadv.checkpoint import CheckpointError
    from fastadv.config import ConfigError
    from fastadv.trainer import train

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
        from fastadv.data import load_dataset
        from fastadv.trainer import resolve_device

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
    KeyboardInterrupt stops the grid (the interrupted run is resumed next time).
    """
    from tqdm.auto import tqdm

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
        except KeyboardInterrupt:
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


__all__ = ["grid_lock", "GridBusy", "thesis_name", "run_label", "strip_seed", "dataset_code", "technique_code", "budget_code", "lr_code",
           "GridRun", "GridOutcome", "plan_grid", "run_grid", "start_or_resume", "is_finished", "config_files"]
