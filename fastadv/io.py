"""Files that are never half written: atomic writes, JSON in and out, folder fsync.

Every file fastadv writes (configs, summaries, metrics, weights, checkpoints, plots) goes through
``atomic_write``: a reader, or a run killed at any moment, sees the old file or the new one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from fastadv.errors import CheckpointError, first_line


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process' umask; read from /proc where it can be (setting it to read it races other threads)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o077)
        os.umask(mask)
        return mask


def atomic_write(path: Path, write: Callable[[str], Any], *, before_rename: Callable[[], Any] | None = None) -> None:
    """Write via ``write(tmp_path)`` to a temporary file in the same folder, fsync, rename, fsync the folder.

    A reader sees the old file or the new one, never part of one. ``before_rename()`` runs
    once the temporary file is complete (the checkpoint writer's test hook).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp (and some writers) make 0600: give a plain open()'s mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(path.parent)


def read_json_object(path: Path) -> dict:
    """A JSON object from a run's file (config.json, summary.json); one-line CheckpointError otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"cannot read {path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n"))


def save_figure(fig, path: Path, **kwargs) -> Path:
    """A matplotlib figure written atomically as PNG (``kwargs`` go to ``savefig``)."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", **kwargs))
    return path
