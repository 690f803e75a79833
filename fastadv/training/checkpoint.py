"""Resume checkpoints: atomic, sha256-checked files of the whole training state, and putting one back.

A run directory keeps its resume checkpoints in checkpoints/: step-<optimizer steps>.pt, a
torch.save'd dict of tensors and plain values (read back with weights_only=True, so nothing
else is unpickled), and step-<...>.pt.sha256 beside it ("<hex>  <name>", the format
`sha256sum -c` reads). The sidecar is written last: a checkpoint counts only when both files
exist and the hash matches, so a write cut short at any point leaves the previous one in use.

The state (``training_state``): model, optimizer, loss scaler, schedules, method state (Free-m's
delta), data order, every RNG, the loop's counters (``LoopState``) and, under torchrun, every
process's own part; ``restore_training`` puts it back so a resumed run gets an unbroken run's numbers.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastadv.config import TrainConfig
from fastadv.core import distributed
from fastadv.core.methods import StepContext
from fastadv.errors import CheckpointError, first_line
from fastadv.io import atomic_write

CHECKPOINT_DIR = "checkpoints"
KILL_HOOK = "FASTADV_CHECKPOINT_KILL"  # test hook: "N" = SIGKILL this process on its N-th checkpoint write,
_writes = 0  # after the temporary file is complete and fsynced but before it is renamed


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}.pt"


def checkpoint_step(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


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


# ----------------------------------------------------------------------------- the state of a run
RESUME_MAY_CHANGE = ("progress", "device", "data_dir", "download", "out_dir", "name")  # do not change the numbers


def run_defining(cfg: TrainConfig) -> dict:
    """The config fields that change a run's numbers (checked when a checkpoint is loaded)."""
    return {k: v for k, v in cfg.to_dict().items() if k not in RESUME_MAY_CHANGE}


def rng_state(attack_generator: torch.Generator) -> dict:
    """Every random stream the loop draws from, except the data generator (BatchStream saves it)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "attack": attack_generator.get_state(), "attack_device": attack_generator.device.type}


def set_rng_state(rng: dict, attack_generator: torch.Generator) -> str | None:
    """Restore ``rng_state``; returns a warning when the attack stream cannot move to this device type."""
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if rng["cuda"] and torch.cuda.is_available() and torch.cuda.device_count() == len(rng["cuda"]):
        torch.cuda.set_rng_state_all(rng["cuda"])
    if rng["attack_device"] != attack_generator.device.type:
        return (f"checkpoint was written on {rng['attack_device']}, this run is on {attack_generator.device.type}: "
                f"attack random starts continue from a fresh stream (numbers will differ from an unbroken run)")
    attack_generator.set_state(rng["attack"])
    return None


def training_state(s) -> dict:
    """A resume checkpoint of a ``Setup``: tensors and plain values only (loads with ``weights_only=True``)."""
    ctx, scaler = s.ctx, s.ctx.precision.scaler
    return {"format": 2, "step": ctx.iteration, "arch": s.arch, "config": run_defining(s.cfg),
            "model": plain_module(ctx.model).state_dict(), "optimizer": ctx.optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "schedules": [s.lr_fn.state_dict(), s.mom_fn.state_dict()],
            "method": ctx.state, "data": s.stream.state_dict(), "rng": rng_state(ctx.generator),
            "loop": s.loop.state_dict(), "ranks": rank_states(ctx),
            "average": s.averager.state_dict() if s.averager is not None else None,
            "selection": s.selection.state_dict() if s.selection is not None else None}


def check_same_run(ckpt: dict, cfg: TrainConfig, arch: dict, name: str) -> None:
    """One-line CheckpointError naming what differs when a checkpoint belongs to another run."""
    saved = ckpt.get("arch") or {}
    if (saved.get("model"), saved.get("dataset")) != (arch["model"], arch["dataset"]):
        raise CheckpointError(f"checkpoint {name} holds model {saved.get('model')!r} on dataset "
                              f"{saved.get('dataset')!r}, but this run trains {arch['model']!r} on {arch['dataset']!r}")
    want = run_defining(cfg)
    diffs = [f"{k}={saved_v!r} (this run: {want.get(k)!r})" for k, saved_v in (ckpt.get("config") or {}).items()
             if want.get(k) != saved_v]
    diffs += [f"{k}={saved[k]!r} (this run: {arch[k]!r})" for k in arch if k in saved and saved[k] != arch[k]]
    if diffs:
        raise CheckpointError(f"checkpoint {name} belongs to another run: {', '.join(diffs)}")


def restore_weights(ckpt: dict, ctx: StepContext, name: str) -> None:
    """Model, optimizer, loss scaler and method state (Free-m's delta) from a checkpoint."""
    try:
        plain_module(ctx.model).load_state_dict(ckpt["model"])
        ctx.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {name} does not fit this model: {first_line(exc)[:200]}") from None
    if ctx.precision.scaler is not None and ckpt["scaler"] is not None:
        ctx.precision.scaler.load_state_dict(ckpt["scaler"])
    device = next(ctx.model.parameters()).device
    method = own_rank(ckpt).get("method", ckpt["method"])
    ctx.state = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in method.items()}


def plain_module(model: nn.Module) -> nn.Module:
    """The module whose state_dict keys are the model's own: inside DDP and torch.compile wrappers."""
    model = distributed.unwrap(model)
    return getattr(model, "_orig_mod", model)


def rank_states(ctx: StepContext) -> list | None:
    """Under torchrun, every process's own state (Free-m's delta for its rows, attack random stream)."""
    if not distributed.active():
        return None
    mine = {"method": {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in ctx.state.items()},
            "attack": ctx.generator.get_state()}
    return distributed.gather_objects(mine)


def own_rank(ckpt: dict) -> dict:
    """This process's entry of a checkpoint's per-process states ({} when saved with another world size)."""
    ranks = ckpt.get("ranks")
    return ranks[distributed.rank()] if ranks and len(ranks) == distributed.world_size() else {}


def restore_training(s, ckpt: dict, name: str) -> str | None:
    """Put a checkpoint back into a ``Setup``'s live objects; returns a warning line or None."""
    if ckpt.get("format") != 2:
        raise CheckpointError(f"checkpoint {name} was written by an older fastadv (format {ckpt.get('format')}); "
                              f"start the run again")
    check_same_run(ckpt, s.cfg, s.arch, name)
    restore_weights(ckpt, s.ctx, name)
    planned = ckpt["loop"].get("planned_minibatches", 0)
    if planned:  # the time budget's fit, kept: the resumed run has the very length of the unbroken one
        s.refit(planned)
    for part, state in ((s.averager, ckpt.get("average")), (s.selection, ckpt.get("selection"))):
        if part is not None and state is not None:
            part.load_state_dict(state)
    for fn, state in zip((s.lr_fn, s.mom_fn), ckpt["schedules"]):
        fn.load_state_dict(state or {})
    s.stream.load_state_dict(ckpt["data"])
    s.loop.load_state_dict(ckpt["loop"])
    s.ctx.iteration = ckpt["step"]
    note = set_rng_state(ckpt["rng"], s.ctx.generator)
    if "attack" in own_rank(ckpt):
        s.ctx.generator.set_state(own_rank(ckpt)["attack"])
    return note


# ----------------------------------------------------------------------------- when to write them
CHECKPOINT_SECONDS = 240.0  # checkpoint_every = 0: at most 4 minutes of training lost to a crash


def checkpoint_due(every: int, steps_since: int, seconds_since: float) -> bool:
    """Whether a checkpoint is due between two held-out checks (``checkpoint_every``; 0 = by the clock).

    Under torchrun the processes' clocks differ, and a checkpoint is a collective step: there
    checkpoint_every = 0 means at held-out checks only.
    """
    if every > 0:
        return steps_since >= every
    return not distributed.active() and seconds_since >= CHECKPOINT_SECONDS


class Saver:
    """The resume checkpoints of a ``Setup``'s run: ``save()`` writes one, ``due()`` says when the next is due.

    It keeps the newest two and the guard's best check (``loop.good``); every process takes part
    (the per-rank states are gathered), rank 0 writes, and all wait until the file is complete.
    """

    def __init__(self, s, run_dir: Path):
        self.s, self.run_dir, self.last = s, run_dir, None
        self.mark()

    def mark(self) -> None:
        """Start counting steps and seconds towards the next checkpoint from now."""
        self.step, self.time = self.s.ctx.iteration, time.perf_counter()

    def due(self) -> bool:
        return checkpoint_due(self.s.cfg.checkpoint_every, self.s.ctx.iteration - self.step,
                              time.perf_counter() - self.time)

    def save(self) -> str:
        t = time.perf_counter()
        loop = self.s.loop
        state = training_state(self.s)
        if distributed.is_main():
            write_checkpoint(self.run_dir, self.s.ctx.iteration, state,
                             keep=(loop.good["checkpoint"],) if loop.good else ())
        distributed.barrier()  # every rank may read the checkpoint (guard) once it is complete
        loop.checkpoint_seconds += time.perf_counter() - t
        self.last = checkpoint_name(self.s.ctx.iteration)
        self.mark()
        return self.last
