"""Datasets as uint8 tensors on the device; batches are slices of a random permutation.

The whole dataset is moved to the device once (uint8, N x C x H x W). Augmentation
(random crop with 4-pixel zero padding, horizontal flip) runs as batched tensor ops on
the device. Look-up order for files: ``data_dir``, ``$FASTADV_DATA``, ``~/.cache/fastadv``;
each root may hold ``<name>.npz`` (``x_train, y_train, x_test, y_test``, uint8) or
torchvision's own on-disk layout. Failing that, torchvision downloads into the cache.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fastadv.data.dataset import VAL_SEED, Dataset, stratified_pick  # the Dataset and its validation carve
from fastadv.data.files import NPZ_KEYS, cache_dir, read_npz  # the cache folder, .npz files
from fastadv.data.external import MAX_BYTES, TORCH, as_dataset, from_torch  # torch Datasets and DataLoaders
from fastadv.data.folders import FOLDER, load_folder, svhn_loader, tiny_imagenet_loader  # image folders, .mat
from fastadv.data.batches import (  # the batch half of this package
    BatchStream,
    DataError,
    augment_batch,
    batches,
    batches_per_epoch,
    to_float,
)
from fastadv.errors import first_line


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class DatasetInfo:
    loader: Callable[[list[Path], bool], tuple[np.ndarray, ...] | tuple[tuple[np.ndarray, ...], str]]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    description: str
    published_train: int | None = None  # images in the published training split


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, **info):
    def wrap(fn):
        DATASETS[name] = DatasetInfo(loader=fn, **info)
        return fn

    return wrap


def unknown_name(kind: str, name: str, valid) -> str:
    return f"unknown {kind} {name!r} (valid: {', '.join(sorted(valid))})"


def is_dataset_name(name: str) -> bool:
    """A registered name, ``folder:PATH`` or ``torch:NAME`` (data given in Python, recorded by its class)."""
    return name in DATASETS or (name.startswith((FOLDER, TORCH)) and len(name.split(":", 1)[1]) > 0)


def search_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Directories searched for files, in order: data_dir, $FASTADV_DATA, the cache."""
    roots = [data_dir, os.environ.get("FASTADV_DATA") or None, cache_dir()]
    seen, out = set(), []
    for r in roots:
        if r is None:
            continue
        p = Path(r).expanduser()
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def load_dataset(name: str, data_dir: str | None = None, *, download: bool = True,
                 device: torch.device | str = "cpu") -> Dataset:
    """Find, read and check a dataset; raises ``DataError`` with one line on failure.

    Arguments:
        name (str): ``mnist``, ``fashion-mnist``, ``cifar10``, ``cifar100``, ``svhn``, ``tiny-imagenet``,
            ``digits``, ``synthetic``, or ``folder:PATH`` (``PATH/train/<class>/*``, ``PATH/test/<class>/*``).
        data_dir (str, optional): looked in first, then ``$FASTADV_DATA``, then ``~/.cache/fastadv``
            (``<name>.npz`` or torchvision's layout).
        download (bool): a torchvision download into the cache when nothing is found. (Default: True)
        device: where the arrays go. (Default: ``"cpu"``)

    Returns:
        ``Dataset``: uint8 :math:`(N, C, H, W)` train and test images, int64 labels, the per-channel mean
        and std, whether crop+flip is the default, where it was read from (``split_note`` says when the
        training split is partial).

    Example::

        data = fastadv.load_dataset("cifar10")
    """
    if name.startswith(FOLDER):
        return load_folder(name).to(device)
    if name.startswith(TORCH):
        raise DataError(f"dataset {name!r} was a torch Dataset given in Python: give it again "
                        f"(fastadv.train(cfg, data=(train, test)), fastadv.data.from_torch(train, test))")
    if name not in DATASETS:
        raise DataError(unknown_name("dataset", name, [*DATASETS, f"{FOLDER}PATH"]))
    info = DATASETS[name]
    (xtr, ytr, xte, yte), source = info.loader(search_roots(data_dir), download)
    xtr, xte = to_nchw(xtr, name), to_nchw(xte, name)
    check_arrays(name, source, xtr, ytr, xte, yte, info.num_classes)
    return Dataset(
        name=name,
        x_train=torch.from_numpy(xtr), y_train=torch.from_numpy(ytr.astype(np.int64)),
        x_test=torch.from_numpy(xte), y_test=torch.from_numpy(yte.astype(np.int64)),
        num_classes=info.num_classes, mean=info.mean, std=info.std, augment=info.augment,
        source=source, published_train=info.published_train,
    ).to(device)


def to_nchw(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise DataError(f"dataset {name!r}: images must be N x H x W or N x H x W x C, got shape {x.shape}")
    return np.ascontiguousarray(x)


def check_arrays(name, source, xtr, ytr, xte, yte, num_classes) -> None:
    problems = []
    for split, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.dtype != np.uint8:
            problems.append(f"x_{split} is {x.dtype}, expected uint8")
        if y.ndim != 1 or len(y) != len(x):
            problems.append(f"y_{split} has shape {y.shape} for {len(x)} images")
        elif len(y) and (y.min() < 0 or y.max() >= num_classes):
            problems.append(f"y_{split} labels outside 0..{num_classes - 1}")
    if xtr.shape[1:] != xte.shape[1:]:
        problems.append(f"train images {xtr.shape[1:]} and test images {xte.shape[1:]} differ")
    if problems:
        raise DataError(f"dataset {name!r} from {source} is malformed: {'; '.join(problems)}")


# ----------------------------------------------------------------------------- file loaders
def torchvision_loader(name: str, tv_class: str, layout: str):
    """Loader reading ``<name>.npz`` or torchvision's layout, downloading into the cache last."""

    def load(roots: list[Path], download: bool):
        unreadable = []  # torchvision folders that exist but are incomplete
        for root in roots:
            if (root / f"{name}.npz").is_file():
                return read_npz(root / f"{name}.npz"), str(root / f"{name}.npz")
            if (root / layout).exists():
                try:
                    return read_torchvision(tv_class, root, download=False), f"{root / layout} (torchvision)"
                except (RuntimeError, OSError, ValueError, EOFError) as exc:
                    unreadable.append(f"{root / layout} unreadable: {first_line(exc)[:80]}")
        looked = f"looked for {name}.npz or {layout}/ in {', '.join(str(r) for r in roots)}"
        looked += "".join(f"; {u}" for u in unreadable)
        if download:
            try:
                return read_torchvision(tv_class, cache_dir(), download=True), f"{cache_dir()} (downloaded)"
            except Exception as exc:  # network errors come in many types
                raise DataError(f"dataset {name!r} not found: {looked}; download failed ({first_line(exc)[:120]})") from None
        raise DataError(f"dataset {name!r} not found: {looked}")

    return load


def read_torchvision(tv_class: str, root: Path, download: bool) -> tuple[np.ndarray, ...]:
    import torchvision

    cls = getattr(torchvision.datasets, tv_class)
    out = []
    for train in (True, False):
        ds = cls(str(root), train=train, download=download)
        data = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
        targets = ds.targets.numpy() if torch.is_tensor(ds.targets) else np.asarray(ds.targets)
        out += [data.astype(np.uint8), targets]
    return tuple(out)


MNIST_STATS = dict(mean=(0.1307,), std=(0.3081,))
CIFAR10_STATS = dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
CIFAR100_STATS = dict(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))

register_dataset("mnist", num_classes=10, augment=False, description="MNIST digits, 28x28 grey",
                 published_train=60000, **MNIST_STATS)(torchvision_loader("mnist", "MNIST", "MNIST"))
register_dataset("fashion-mnist", num_classes=10, augment=False, mean=(0.2860,), std=(0.3530,),
                 description="Zalando Fashion-MNIST, 28x28 grey", published_train=60000)(
    torchvision_loader("fashion-mnist", "FashionMNIST", "FashionMNIST"))
register_dataset("cifar10", num_classes=10, augment=True, description="CIFAR-10, 32x32 RGB",
                 published_train=50000, **CIFAR10_STATS)(torchvision_loader("cifar10", "CIFAR10", "cifar-10-batches-py"))
register_dataset("cifar100", num_classes=100, augment=True, description="CIFAR-100, 32x32 RGB",
                 published_train=50000, **CIFAR100_STATS)(torchvision_loader("cifar100", "CIFAR100", "cifar-100-python"))


# SVHN: no crop+flip (flips turn digits into others; GradAlign crops without flipping, fastadv has crop+flip as
# one switch); Tiny-ImageNet: crop+flip as CIFAR. Normalization: the usual published per-channel figures.
register_dataset("svhn", num_classes=10, augment=False, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
                 description="SVHN street-view digits, 32x32 RGB (train and test, not extra)",
                 published_train=73257)(svhn_loader)
register_dataset("tiny-imagenet", num_classes=200, augment=True, mean=(0.4802, 0.4481, 0.3975),
                 std=(0.2302, 0.2265, 0.2262), description="Tiny-ImageNet, 200 classes, 64x64 RGB (val as test)",
                 published_train=100000)(tiny_imagenet_loader)


@register_dataset("digits", num_classes=10, augment=False, mean=(0.3,), std=(0.4,),
                  description="scikit-learn's bundled 8x8 digits, upsampled to 28x28 (offline fallback)")
def load_digits(roots: list[Path], download: bool):
    """1,797 bundled digits: a deterministic 80/20 split, upsampled to MNIST's 28x28."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from None
    d = sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    tr, te = order[:cut], order[cut:]
    return (x[tr], y[tr], x[te], y[te]), "scikit-learn load_digits (bundled)"


@register_dataset("synthetic", num_classes=10, augment=False, mean=(0.5,), std=(0.25,),
                  description="tiny generated 1x16x16 set for tests (class templates plus noise)")
def load_synthetic(roots: list[Path], download: bool):
    """Ten fixed random templates plus noise: learnable in a few steps, no files needed."""
    rng = np.random.default_rng(1234)
    templates = rng.uniform(0.0, 1.0, size=(10, 16, 16))

    def split(n):
        y = rng.integers(0, 10, size=n)
        x = 0.6 * templates[y] + 0.4 * rng.uniform(0.0, 1.0, size=(n, 16, 16))
        return (x * 255).round().astype(np.uint8), y

    xtr, ytr = split(2048)
    xte, yte = split(512)
    return (xtr, ytr, xte, yte), "generated (synthetic)"

