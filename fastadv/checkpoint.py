"""Saving and loading weights safely: atomic writes, no pickled objects.

Weights are written twice: ``model.safetensors`` (with the architecture in its metadata)
and ``model.pt``, a plain ``state_dict`` that loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastadv.errors import UserError, first_line
from fastadv.models import build_model

ARCH_KEYS = ("model", "num_classes", "channels", "size", "mean", "std", "depth", "width", "dataset")


class CheckpointError(UserError, RuntimeError):
    """A weights file or run directory that cannot be loaded; one line for the user."""


def atomic_write(path: Path, write, *, before_rename=None) -> None:
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


def save_weights(model: nn.Module, run_dir: Path, arch: dict) -> None:
    """model.pt (plain state_dict) and model.safetensors (architecture in the metadata)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(run_dir / "model.pt", lambda tmp: torch.save(state, tmp))
    meta = {"fastadv_arch": json.dumps(arch)}
    atomic_write(run_dir / "model.safetensors", lambda tmp: save_file(state, tmp, metadata=meta))


def arch_of(cfg, data) -> dict:
    """The facts needed to rebuild a run's model."""
    return {"model": cfg.model, "num_classes": data.num_classes, "channels": data.channels,
            "size": data.size, "mean": list(data.mean), "std": list(data.std),
            "depth": cfg.depth, "width": cfg.width, "dataset": data.name}


def model_from_arch(arch: dict) -> nn.Module:
    kwargs = {k: arch[k] for k in ("num_classes", "channels", "size", "mean", "std", "depth", "width") if k in arch}
    return build_model(arch["model"], **kwargs)


def read_arch(path: Path) -> tuple[dict, Path]:
    """Architecture and weights file for a run directory or a weights file."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "model.pt"):
            if (path / name).is_file():
                return read_arch(path / name)
        raise CheckpointError(f"no model.safetensors or model.pt in {path}")
    if not path.is_file():
        raise CheckpointError(f"no such run directory or weights file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:
            raise CheckpointError(f"cannot read {path}: {first_line(exc)}") from None
        if "fastadv_arch" in meta:
            return json.loads(meta["fastadv_arch"]), path
    config = path.parent / "config.json"
    if config.is_file():
        resolved = read_json_object(config)
        if "arch" in resolved:
            return resolved["arch"], path
    raise CheckpointError(f"{path} does not say which model it holds: pass a run directory, a fastadv "
                          f".safetensors file, or a .pt file with the run's config.json beside it")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weights from {path}: {first_line(exc)[:200]}") from None


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """An ``nn.Module`` in eval mode from a run directory or weights file; takes [0,1] input."""
    arch, weights = read_arch(Path(path))
    model = model_from_arch(arch)
    state = load_state(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not match model {arch['model']!r}: "
                              f"{str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else exc}") from None
    return model.to(device).eval()


# ----------------------------------------------------------------------------- resume checkpoints
# A run directory keeps its resume checkpoints in checkpoints/: step-<optimizer steps>.pt, a
# torch.save'd dict of tensors and plain values (read back with weights_only=True, so nothing
# else is unpickled), and step-<...>.pt.sha256 beside it ("<hex>  <name>", the format
# `sha256sum -c` reads). The sidecar is written last: a checkpoint counts only when both files
# exist and the hash matches, so a write cut short at any point leaves the previous one in use.
CHECKPOINT_DIR = "checkpoints"
KILL_HOOK = "FASTADV_CHECKPOINT_KILL"  # test hook: "N" = SIGKILL this process on its N-th checkpoint write,
_writes = 0  # after the temporary file is complete and fsynced but before it is renamed


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def checkpoint_step(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (POSIX); a no-op where directories cannot be opened."""
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


def _maybe_kill() -> None:
    """The KILL_HOOK test hook: die like a SIGKILL'd run in the middle of a checkpoint write."""
    global _writes
    _writes += 1
    if os.environ.get(KILL_HOOK) == str(_writes):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def write_checkpoint(run_dir: Path, step: int, state: dict, *, keep: tuple[str, ...] = ()) -> tuple[Path, int]:
    """Write ``state`` as checkpoint ``step``; keep it, the one before it and the names in ``keep``.

    Returns (path, bytes written). Older checkpoints are removed only once the new one is
    complete. ``state`` holds tensors (any device: saved on the CPU) and plain values.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(to_cpu(state), buffer)
    data = buffer.getvalue()
    path = folder / checkpoint_name(step)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), before_rename=_maybe_kill)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(folder / f"{path.name}.sha256", lambda tmp: Path(tmp).write_text(f"{digest}  {path.name}\n"))
    prune_checkpoints(folder, keep=(path.name, *keep))
    return path, len(data)


def to_cpu(obj: Any) -> Any:
    """Tensors moved to the CPU inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files in ``folder`` (complete or not), newest first."""
    return sorted(Path(folder).glob("step-*.pt"), key=checkpoint_step, reverse=True)


def prune_checkpoints(folder: Path, keep: tuple[str, ...], last: int = 2) -> None:
    """Remove all but the ``last`` newest checkpoints and those named in ``keep``."""
    for i, path in enumerate(list_checkpoints(folder)):
        if i >= last and path.name not in keep:
            remove_checkpoint(path)


def remove_checkpoint(path: Path) -> None:
    """Sidecar first: a half-removed checkpoint reads as incomplete, never as valid."""
    Path(f"{path}.sha256").unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be used, or None when its sha256 matches."""
    sidecar = Path(f"{path}.sha256")
    if not sidecar.is_file():
        return "incomplete (no .sha256 beside it: the run stopped while writing it)"
    expected = sidecar.read_text().split()[:1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if expected != [digest]:
        return f"corrupted or truncated (sha256 mismatch, {path.stat().st_size} bytes)"
    return None


def latest_checkpoint(run_dir: Path, warn=print) -> Path:
    """The newest checkpoint of ``run_dir`` whose checksum holds; each one skipped is warned about in one line.

    Skipped checkpoints and stray temporary files are removed, so a resumed run writes over
    nothing stale. Raises CheckpointError when none is usable.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    for tmp in folder.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    skipped = []
    for path in list_checkpoints(folder):
        problem = checkpoint_problem(path)
        if problem is None:
            for bad in skipped:
                remove_checkpoint(bad)
            return path
        warn(f"checkpoint {CHECKPOINT_DIR}/{path.name} is {problem}; trying the previous one")
        skipped.append(path)
    where = f"{len(skipped)} damaged" if skipped else "none"
    raise CheckpointError(f"no usable checkpoint in {run_dir} ({where} in {CHECKPOINT_DIR}/); start the run again")


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's dict on the CPU; only tensors and plain values are unpickled."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip or a pickled object weights_only refuses
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(exc)[:200]}") from None
