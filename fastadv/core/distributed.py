"""Several processes, one model: DistributedDataParallel under ``torchrun``.

    torchrun --nproc_per_node=N -m fastadv train --config run.toml

Every helper here is a no-op (or the single-process answer) when no process group is active,
so the training loop calls them unconditionally. What each rank does:

- **Process group.** ``session(device)`` initialises one when the process was started by
  torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` in the environment):
  NCCL when the run's device is CUDA (each process takes ``cuda:LOCAL_RANK``), gloo on CPU.
  It destroys the group on the way out, also on error. A group the caller initialised
  (``torch.distributed.init_process_group`` in one's own script) is used and left alone.
- **Batches.** ``batch_size`` is the *global* batch. Every rank draws the same permutation and
  augmentation (same seed), builds the same global minibatch and trains on its contiguous slice
  of ``batch_size / world_size`` rows (``rows``); ``batch_size`` must divide evenly
  (``per_rank_batch``). DDP averages the ranks' mean gradients, so with equal slices an
  optimizer step is the single-process step on the whole batch, up to float summation order.
  An epoch's last, smaller batch leaves out its last ``len % world_size`` rows (fewer than
  ``world_size`` images per epoch) so that the slices stay equal.
- **Attacks** run on the unwrapped module (``unwrap``): ``torch.autograd.grad`` w.r.t. the input
  only, so DDP's gradient hooks never fire and an attack step costs no communication. Free-m's
  replays go through DDP: each replay's backward all-reduces the weight gradients (needed for the
  weight step), while δ's gradient stays local; each rank keeps δ for its own rows.
- **Random starts** differ per rank (``rank_seed``); data order and augmentation do not.
- **BatchNorm** uses per-rank batch statistics (plain BatchNorm, not SyncBatchNorm: the attack's
  forward passes run in training mode, and SyncBatchNorm would add an all-reduce to every one of
  them). Running statistics follow rank 0: DDP broadcasts buffers before each training forward,
  and ``sync_buffers`` before every evaluation and before saving.
- **Metrics**: the loss / correct / count sums are all-reduced at logging points only
  (``all_reduce_sum``).
- **Evaluation** (held-out checks, final PGD): each rank attacks its share of the points and the
  sums are reduced (``evaluate``), so every rank sees the same figures and schedules that observe
  them, or a guard that acts on them, stay in step.
- **Files**: only rank 0 writes (``is_main``); rank 0 creates the run directory and broadcasts
  its path (``from_main``). Checkpoint code writes on rank 0 and calls ``barrier()`` when the
  others must wait for the file; per-rank state (attack generator, Free-m's δ) can be collected
  with ``gather_objects``.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from fastadv.config import ConfigError
from fastadv.errors import UserError

T = TypeVar("T")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SEED_STRIDE = 7919  # rank r's attack generator uses seed + r * SEED_STRIDE (a prime, far from the +1 offsets)


# ----------------------------------------------------------------------------- who am I
def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting its variables)."""
    return all(key in os.environ for key in TORCHRUN_ENV)


def active() -> bool:
    """Whether a process group is initialised (then every helper communicates)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank; outside a group the launcher's ``RANK`` (0 without a launcher)."""
    return dist.get_rank() if active() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Processes in the group; 1 without one."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files and prints."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


# ----------------------------------------------------------------------------- set-up and tear-down
@contextlib.contextmanager
def session(device: torch.device) -> Iterator[None]:
    """Initialise the process group when launched by torchrun, destroy it on exit (also on error).

    ``device`` is the run's resolved device: CUDA selects NCCL (and ``cuda:LOCAL_RANK``), anything
    else gloo. Does nothing without a launcher or when a group already exists.
    """
    created = False
    if launched() and not active():
        if device.type == "cuda":
            index = local_rank()
            if index >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK is {index} but only {torch.cuda.device_count()} CUDA device(s) "
                                  f"are visible: start at most that many processes per node")
            torch.cuda.set_device(index)
            dist.init_process_group("nccl", device_id=torch.device("cuda", index))
        else:
            dist.init_process_group("gloo")
        created = True
    try:
        yield
    finally:
        if created and active():
            dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` under a group, ``device`` otherwise."""
    if not active() or device.type != "cuda":
        return device
    if device.index is not None and device.index != local_rank():
        raise ConfigError(f"with torchrun each process uses cuda:LOCAL_RANK; give device cuda or auto, "
                          f"not {device}")
    return torch.device("cuda", local_rank())


def per_rank_batch(batch_size: int, world: int | None = None) -> int:
    """Rows each rank trains on per step; ``batch_size`` (global) must divide by the world size."""
    world = world_size() if world is None else world
    if batch_size % world:
        raise ConfigError(f"batch_size {batch_size} is not divisible by the {world} processes: it is the "
                          f"global batch, each process takes batch_size / {world} rows")
    return batch_size // world


def rank_seed(seed: int) -> int:
    """A per-rank seed for random starts (``seed`` itself on rank 0 and without a group)."""
    return seed + SEED_STRIDE * rank()


# ----------------------------------------------------------------------------- model and data
def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel under a group (the training forward/backward), else itself.

    The weights are broadcast from rank 0 at construction; buffers (BN running statistics) from
    rank 0 before every training forward.
    """
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    # DDP's default syncs buffers from rank 0 before each forward
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (attacks and evaluation use it), or ``model`` itself."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def rows(n: int, rank_: int | None = None, world: int | None = None) -> slice:
    """This rank's rows of a global minibatch of ``n``: a contiguous slice of ``n // world`` rows.

    The last ``n % world`` rows go to no rank (only in an epoch's last, smaller batch, since
    ``batch_size`` divides evenly); with ``n < world`` the slice is empty and the batch is skipped.
    ``rank_`` and ``world`` default to this process's.
    """
    r = rank() if rank_ is None else rank_
    per = n // (world_size() if world is None else world)
    return slice(r * per, (r + 1) * per)


# ----------------------------------------------------------------------------- communication
def comm_device() -> torch.device:
    """Where collective tensors must live: the current CUDA device for NCCL, the CPU for gloo."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a new tensor; ``tensor`` itself without a group)."""
    if not active():
        return tensor
    out = tensor.detach().to(comm_device(), copy=True)
    dist.all_reduce(out)
    return out.to(tensor.device)


def sync_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if not active():
        return
    for buffer in unwrap(model).buffers():
        moved = buffer.to(comm_device())
        dist.broadcast(moved, src=0)
        if moved is not buffer:
            buffer.copy_(moved)


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (picklable) on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a group."""
    if not active():
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def from_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its (picklable) result on every rank.

    A ``UserError`` on rank 0 (say, an output folder that cannot be created) is raised on every
    rank with the same one-line message, so all processes stop together.
    """
    if not active():
        return fn()
    result, error, caught = None, None, None
    if is_main():
        try:
            result = fn()
        except UserError as exc:
            caught, error = exc, str(exc)
    result, error = broadcast_object((result, error))
    if caught is not None:
        raise caught
    if error is not None:
        raise UserError(error)
    return result


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first, the others after it (e.g. a download into a shared cache)."""
    if not active():
        yield
        return
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


class Silent:
    """Stands in for rank 0's logger on the other ranks: every attribute and every call is a no-op."""

    def __getattr__(self, name: str) -> "Silent":
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "Silent":
        return self


# ----------------------------------------------------------------------------- checks of the weights
def param_digest(model: nn.Module) -> str:
    """SHA-256 of the parameters' names, dtypes, shapes and bytes: equal digests, equal weights."""
    h = hashlib.sha256()
    for name, p in unwrap(model).named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def summary_fields(model: nn.Module) -> dict:
    """``world_size``, each rank's parameter digest and whether they agree, for ``summary.json``.

    Under DDP the ranks must end with identical weights; a mismatch means they drifted apart
    (it is recorded and warned about, the run is still saved).
    """
    sync_buffers(model)
    digests = gather_objects(param_digest(model))
    in_sync = len(set(digests)) == 1
    if not in_sync and is_main():
        warnings.warn(f"the {len(digests)} processes ended with different weights; rank 0's are saved",
                      RuntimeWarning, stacklevel=2)
    return {"world_size": len(digests), "rank_param_sha256": digests, "ranks_in_sync": in_sync}


__all__ = ["launched", "active", "rank", "world_size", "is_main", "local_rank", "session", "local_device",
           "per_rank_batch", "rank_seed", "wrap", "unwrap", "rows", "all_reduce_sum", "sync_buffers", "barrier",
           "broadcast_object", "gather_objects", "from_main", "main_first", "Silent",
           "param_digest", "summary_fields"]
