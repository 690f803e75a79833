"""fastadv's ``Dataset``: train, validation and test splits as uint8 tensors, and the stratified validation carve."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class Dataset:
    """Train and test split as uint8 N x C x H x W tensors plus labels (int64)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, on [0,1]; used by the model's Normalize layer
    std: tuple[float, ...]
    augment: bool  # whether crop+flip is the default for this dataset
    source: str  # where it was read from (for the run's record)
    published_train: int | None = None  # size of the published training split (None: no published size)
    x_val: torch.Tensor | None = None  # the validation split, carved from training (``with_validation``)
    y_val: torch.Tensor | None = None

    @property
    def split_note(self) -> str:
        """'' for a complete training split, else e.g. 'partial training split: 36,947 of 50,000 images'.

        Accuracies trained on a partial split run below published figures; every result says so.
        """
        n, full = len(self.y_train) + self.val_size, self.published_train  # the validation split is training data
        if full is None or n >= full:
            return ""
        return f"partial training split: {n:,} of {full:,} images"

    @property
    def channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def size(self) -> int:
        return self.x_train.shape[2]

    def to(self, device: torch.device | str) -> "Dataset":
        keys = ("x_train", "y_train", "x_test", "y_test") + (("x_val", "y_val") if self.x_val is not None else ())
        return replace(self, **{k: getattr(self, k).to(device) for k in keys})

    def limit_train(self, n: int) -> "Dataset":
        if n <= 0 or n >= len(self.y_train):
            return self
        return replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])

    @property
    def test_size(self) -> int:
        return len(self.y_test)

    @property
    def val_size(self) -> int:
        return 0 if self.y_val is None else len(self.y_val)

    def with_validation(self, n: int) -> "Dataset":
        """The dataset with ``n`` training images moved to a validation split (none is trained on).

        Stratified by class (each class gives its share, the rest by the largest remainders), drawn
        with the fixed ``VAL_SEED`` so every run of a dataset gets the same split, and in a random order,
        so any prefix is a random sample. At most a fifth of the training split is taken. A dataset that
        already has a validation split is returned as it is.
        """
        if self.x_val is not None:
            return self
        idx = stratified_pick(self.y_train, min(n, len(self.y_train) // 5), VAL_SEED)
        keep = torch.ones(len(self.y_train), dtype=torch.bool, device=self.y_train.device)
        keep[idx.to(keep.device)] = False
        idx = idx.to(self.y_train.device)
        return replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep],
                       x_val=self.x_train[idx], y_val=self.y_train[idx])


VAL_SEED = 0  # the validation split of a dataset is the same for every run and seed


def stratified_pick(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` indices of ``y`` (CPU int64, in random order), each class in proportion to its count."""
    generator = torch.Generator().manual_seed(seed)
    y = y.cpu()
    classes, counts = torch.unique(y, return_counts=True)
    share = counts.double() * n / max(len(y), 1)
    quota = share.floor().long()
    extra = n - int(quota.sum())
    if extra > 0:  # the largest remainders get one more
        quota[torch.argsort(share - quota, descending=True, stable=True)[:extra]] += 1
    order = torch.randperm(len(y), generator=generator)
    picked = [order[y[order] == c][:int(q)] for c, q in zip(classes.tolist(), quota.tolist())]
    chosen = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)
    return chosen[torch.randperm(len(chosen), generator=generator)]
