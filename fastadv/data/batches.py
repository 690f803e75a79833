"""Minibatches of a dataset held on the device: a random permutation sliced, augmentation as batched tensor ops."""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from fastadv.errors import UserError


class DataError(UserError, RuntimeError):
    """A dataset could not be found or read; the message is one line for the user."""


# ----------------------------------------------------------------------------- batches
def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float32 [0,1]."""
    return x_u8.float().div_(255.0)


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a float N x C x H x W batch.

    Batched on x's device: one offset pair and one flip bit per image, drawn from the
    CPU ``generator`` so the data order is reproducible on any device.
    """
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (offsets[0][:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # n,1,h,1
    cols = (offsets[1][:, None] + torch.arange(w, device=x.device))  # n,w
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]  # n,1,1,w
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    idx_c = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[idx_n, idx_c, rows, cols]


def batches(x_u8: torch.Tensor, y: torch.Tensor, batch_size: int, *, generator: torch.Generator,
            augment: bool = False, shard: Callable[[int], slice] | None = None
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over the data: slices of a random permutation, as float [0,1] batches.

    ``shard(n)`` (``fastadv.core.distributed.rows`` under DDP) picks this process's rows of each global
    batch of n, after augmentation, so every process draws the same random numbers; a batch whose
    shard is empty is skipped.
    """
    stream = BatchStream(x_u8, y, batch_size, generator=generator, augment=augment, shard=shard)
    for _ in range(batches_per_epoch(len(y), batch_size)):
        if stream.perm is not None and stream.start >= len(y):
            return  # skipped empty shards used up the epoch
        yield next(stream)


class BatchStream:
    """Endless minibatches, epoch after epoch, with a position that can be saved and restored.

    Draws the same numbers as ``batches`` called once per epoch with ``generator``: each
    epoch's permutation is drawn when its first batch is asked for, augmentation draws come
    right before each batch is handed out. ``state_dict()`` taken between two batches (the
    current permutation, the offset into it, the generator state) lets a resumed run get
    the very batches an uninterrupted one would.
    """

    def __init__(self, x_u8: torch.Tensor, y: torch.Tensor, batch_size: int, *, generator: torch.Generator,
                 augment: bool = False, shard: Callable[[int], slice] | None = None):
        self.x, self.y, self.batch_size, self.generator, self.augment = x_u8, y, batch_size, generator, augment
        self.shard = shard  # as in ``batches``: this process's rows of each global batch
        self.perm: torch.Tensor | None = None  # this epoch's order (CPU, int64)
        self.start = 0  # offset of the next batch in perm
        self.perm_on_device: torch.Tensor | None = None  # perm moved once per epoch, not per batch
        self.last_index: torch.Tensor | None = None  # training-set indices of the batch handed out last

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.y)
        if self.perm is None or self.start >= n:
            self.perm, self.start = torch.randperm(n, generator=self.generator), 0
            self.perm_on_device = None
        if self.perm_on_device is None:
            self.perm_on_device = self.perm.to(self.y.device)
        idx = self.perm_on_device[self.start:self.start + self.batch_size]
        self.start += self.batch_size
        xb = to_float(self.x[idx])
        if self.augment:
            xb = augment_batch(xb, self.generator)
        if self.shard is not None:
            part = self.shard(len(idx))
            if part.stop <= part.start:  # as in ``batches``: every process skips this batch
                return next(self)
            xb, idx = xb[part], idx[part]
        self.last_index = idx
        return xb, self.y[idx]

    def state_dict(self) -> dict:
        perm = None if self.perm is None else self.perm.to(torch.int32)  # half the bytes; n < 2**31
        return {"perm": perm, "start": self.start, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        perm = state["perm"]
        if perm is not None and len(perm) != len(self.y):
            raise DataError(f"saved data order covers {len(perm)} training images, this dataset has {len(self.y)}")
        self.perm = None if perm is None else perm.long()
        self.perm_on_device = None
        self.start = int(state["start"])
        self.generator.set_state(state["generator"])


def batches_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
