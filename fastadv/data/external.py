"""Anyone's data as fastadv's ``Dataset``: a (train, test) pair of torch Datasets or DataLoaders.

The pair is read once and held as uint8 tensors, like every fastadv dataset, so training draws its
batches by slicing a permutation on the device. Items are ``(image, label)``: an image is a tensor
C x H x W (or H x W), float in [0, 1] or uint8, a PIL image, or a numpy array H x W (x C) as PIL gives;
a label an int (or a one-element integer tensor). DataLoaders give batches ``(N x C x H x W, N)``.

Float images are quantized to uint8 (``round(255 x)``): ε in pixel units is unaffected, the images
move by at most half of 1/255. The data must fit in ``MAX_BYTES`` as uint8 (4 GiB: e.g. Tiny-ImageNet's
100,000 64 x 64 RGB images take 1.2 GiB); larger data is refused in one line, since streaming it from
disk is not supported. Mean and std per channel come from the training images; the number of classes
from a ``classes`` attribute or the largest label. Crop + flip is off unless asked for (``augment``).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from fastadv.data.batches import DataError
from fastadv.data.dataset import Dataset
from fastadv.errors import first_line

MAX_BYTES = 4 * 2**30  # uint8 pixels of train + test held in memory (and on the device)
TORCH = "torch:"  # the name prefix of data given as torch Datasets or DataLoaders
READ_ERRORS = (TypeError, ValueError, RuntimeError, IndexError, KeyError, OSError, AttributeError)


def is_torch_data(data: Any) -> bool:
    return isinstance(data, (torch.utils.data.Dataset, DataLoader))


def as_dataset(data: Any, *, max_bytes: int = MAX_BYTES) -> Dataset:
    """``data`` as fastadv's ``Dataset``: itself, or a converted (train, test) pair of torch Datasets/DataLoaders."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(is_torch_data(d) for d in data):
        return from_torch(*data, max_bytes=max_bytes)
    what = type(data).__name__ + (f" of {len(data)} ({', '.join(type(d).__name__ for d in data)})"
                                  if isinstance(data, (tuple, list)) else "")
    raise DataError(f"data must be a fastadv Dataset or a (train, test) pair of torch Datasets or DataLoaders, "
                    f"got a {what}")


def from_torch(train, test, *, name: str | None = None, source: str | None = None, classes=None,
               augment: bool = False, max_bytes: int = MAX_BYTES) -> Dataset:
    """A (train, test) pair of torch Datasets or DataLoaders as fastadv's ``Dataset`` (on the CPU).

    Arguments:
        train, test: ``torch.utils.data.Dataset`` of ``(image, label)`` items or ``DataLoader`` of batches.
        name (str, optional): the dataset's name in the run's record (default ``torch:<ClassName>``).
        source (str, optional): where it came from (default: the class and the numbers of images).
        classes (optional): class names; default: the train set's ``classes`` attribute, else the largest label + 1.
        augment (bool): whether crop+flip is this dataset's default. (Default: False)
        max_bytes (int): the most uint8 bytes train and test may take together. (Default: ``MAX_BYTES``, 4 GiB)

    Raises ``DataError`` (one line) for items that are not (image, label), images outside [0, 1], images of
    different sizes or not square, and data over ``max_bytes``.
    """
    cls = inner_name(train)
    budget = [max_bytes]  # what is left of the limit, shared by the two splits
    xtr, ytr = read_split(train, "training", cls, budget, max_bytes)
    xte, yte = read_split(test, "test", cls, budget, max_bytes)
    if xtr.shape[1:] != xte.shape[1:]:
        xtr, xte = same_channels(xtr, xte)
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(f"{cls}: training images are {shape_text(xtr[0])} and test images "
                        f"{shape_text(xte[0])}; resize them to one size (e.g. torchvision.transforms.Resize)")
    num_classes = class_count(train, classes, ytr, yte, cls)
    kind = "DataLoader over" if isinstance(train, DataLoader) else "Dataset"
    source = source or f"torch {kind} {cls} ({len(ytr):,} training + {len(yte):,} test images)"
    mean, std = channel_stats(xtr)
    return Dataset(name=name or f"{TORCH}{cls}", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
                   num_classes=num_classes, mean=mean, std=std, augment=augment, source=source)


def inner_name(data) -> str:
    """The class name of the dataset under DataLoaders and Subsets (what a user would call it)."""
    ds = data.dataset if isinstance(data, DataLoader) else data
    while isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    return type(ds).__name__


def read_split(data, split: str, cls: str, budget: list[int], max_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's images (uint8 N x C x H x W) and labels (int64 N)."""
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:  # whole tensors: no loop over items
        chunks = [(data.tensors[0], data.tensors[1])]
    elif isinstance(data, DataLoader):
        chunks = iter_batches(data, split, cls)
    else:
        chunks = iter_items(data, split, cls)
    images, labels, count = [], [], 0
    for i, (x, y) in enumerate(chunks):
        x = to_uint8(x, batched=True, where=f"{cls} {split} batch {i}")
        labels.append(to_labels(y, len(x), f"{cls} {split} batch {i}"))
        if i == 0:
            check_room(data, x, split, cls, budget[0], max_bytes)
        count += x.numel()
        if count > budget[0]:
            raise DataError(too_big(cls, max_bytes))
        images.append(x)
    if not images:
        raise DataError(f"{cls}: the {split} set is empty")
    budget[0] -= count
    return stack_images(images, split, cls), torch.cat(labels)


def check_pair(obj, what: str) -> None:
    """DataError "<what> is a <type>[ of <n>]" unless ``obj`` is a 2-tuple or 2-list."""
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        size = f" of {len(obj)}" if isinstance(obj, (tuple, list)) else ""
        raise DataError(f"{what} is a {type(obj).__name__}{size}")


def iter_batches(loader: DataLoader, split: str, cls: str) -> Iterable:
    try:
        for i, batch in enumerate(loader):
            check_pair(batch, f"{cls} {split} DataLoader: batches must be (images, labels) pairs, batch {i}")
            yield batch
    except DataError:
        raise
    except READ_ERRORS as exc:
        raise DataError(f"{cls} {split} DataLoader could not be read: {first_line(exc)}") from None


def iter_items(data, split: str, cls: str, chunk: int = 256) -> Iterable:
    """Items of a map-style or iterable Dataset, ``chunk`` at a time, each chunk as a list of images and labels."""
    items = (data[i] for i in range(len(data))) if hasattr(data, "__len__") and hasattr(data, "__getitem__") \
        else iter(data)
    xs, ys, i = [], [], 0
    try:
        for i, item in enumerate(items):
            check_pair(item, f"{cls} {split} set: items must be (image, label) pairs, item {i}")
            xs.append(to_uint8(item[0], batched=False, where=f"{cls} {split} item {i}"))
            ys.append(item[1])
            if len(xs) == chunk:
                yield stack_images(xs, split, cls, first=i + 1 - chunk), ys
                xs, ys = [], []
    except DataError:
        raise
    except READ_ERRORS as exc:
        raise DataError(f"{cls} {split} set: item {i} could not be read: {first_line(exc)}") from None
    if xs:
        yield stack_images(xs, split, cls, first=i + 1 - len(xs)), ys


def to_uint8(x, *, batched: bool, where: str) -> torch.Tensor:
    """An image (C x H x W) or a batch (N x C x H x W) as uint8; floats must lie in [0, 1]."""
    if not torch.is_tensor(x):
        x = pil_or_array(x, where) if not batched else x
        if not torch.is_tensor(x):
            raise DataError(f"{where}: images must be tensors (float in [0, 1] or uint8) or PIL images, got a "
                            f"{type(x).__name__}")
    dims = 4 if batched else 3
    if x.dim() == dims - 1:
        x = x.unsqueeze(-3)  # grey images without a channel axis
    if x.dim() != dims:
        raise DataError(f"{where}: expected {'N x ' if batched else ''}C x H x W images, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.detach().cpu().contiguous()
    if not x.is_floating_point():
        raise DataError(f"{where}: images are {x.dtype}; give float in [0, 1] or uint8")
    x = x.detach().cpu().float()
    lo, hi = float(x.min()) if x.numel() else 0.0, float(x.max()) if x.numel() else 0.0
    if lo < 0 or hi > 1:
        raise DataError(f"{where}: image values run from {lo:.3g} to {hi:.3g}, outside [0, 1]; drop any Normalize "
                        f"transform (fastadv normalizes inside the model)")
    return x.mul(255).round_().to(torch.uint8)


def pil_or_array(x, where: str):
    """A PIL image or a numpy array (H x W or H x W x C, as PIL gives) as a C x H x W tensor; else ``x``."""
    if hasattr(x, "convert") and hasattr(x, "mode"):  # a PIL image
        x = np.array(x.convert("L" if x.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"))  # a writable copy
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim != 3:
            raise DataError(f"{where}: a numpy image must be H x W or H x W x C, got shape {x.shape}")
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
    return x


def to_labels(y, n: int, where: str) -> torch.Tensor:
    try:
        t = torch.as_tensor(y) if not isinstance(y, list) else torch.as_tensor([int_label(v, where) for v in y])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{where}: labels must be integers: {first_line(exc)}") from None
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dim() != 1 or len(t) != n:
        raise DataError(f"{where}: labels must be {n} integer class indices, got {t.dtype} of shape {tuple(t.shape)}"
                        + (" (one-hot labels: give the class index)" if t.dim() == 2 else ""))
    return t.long().cpu()


def int_label(v, where: str) -> int:
    if (torch.is_tensor(v) and v.numel() == 1) or (isinstance(v, np.ndarray) and v.size == 1):
        v = v.reshape(()).item()
    if isinstance(v, (bool, float)) or not isinstance(v, (int, np.integer)):
        raise DataError(f"{where}: a label must be an integer class index, got {v!r}"[:200])
    return int(v)


def stack_images(images: list[torch.Tensor], split: str, cls: str, first: int = 0) -> torch.Tensor:
    """One uint8 tensor; grey images among colour ones become colour; other size differences are an error."""
    if all(im.shape[-3:] == images[0].shape[-3:] for im in images):
        out = torch.stack(images) if images[0].dim() == 3 else torch.cat(images)
    else:
        hw = {tuple(im.shape[-2:]) for im in images}
        if len(hw) > 1 or not {im.shape[-3] for im in images} <= {1, 3}:
            a, b = next((i, im) for i, im in enumerate(images) if im.shape[-3:] != images[0].shape[-3:])
            at = (f" (item {first})", f" (item {first + a})") if images[0].dim() == 3 else ("", "")
            raise DataError(f"{cls}: {split} images differ in size: {shape_text(images[0])}{at[0]} and "
                            f"{shape_text(b)}{at[1]}; resize them to one size first (e.g. "
                            f"torchvision.transforms.Resize((32, 32)))")
        out = torch.cat([im.expand(*im.shape[:-3], 3, *im.shape[-2:]) if im.dim() == 4 else
                         im.expand(3, *im.shape[-2:])[None] for im in images])
    if out.shape[-1] != out.shape[-2]:
        raise DataError(f"{cls}: {split} images are {shape_text(out[0])}, not square; fastadv's models take square "
                        f"images: resize or crop them (e.g. torchvision.transforms.CenterCrop)")
    return out


def same_channels(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey and colour splits of one size: both colour."""
    if a.shape[2:] == b.shape[2:] and {a.shape[1], b.shape[1]} == {1, 3}:
        return a.expand(-1, 3, -1, -1).contiguous(), b.expand(-1, 3, -1, -1).contiguous()
    return a, b


def shape_text(x: torch.Tensor) -> str:
    return "x".join(str(d) for d in x.shape[-3:])


def check_room(data, first: torch.Tensor, split: str, cls: str, left: int, max_bytes: int) -> None:
    """Refuse data over the limit before reading it all, when its length is known."""
    n = len(data.dataset) if isinstance(data, DataLoader) and hasattr(data.dataset, "__len__") else \
        len(data) if not isinstance(data, DataLoader) and hasattr(data, "__len__") else None
    if n is not None and len(first) and n * first[0].numel() > left:
        raise DataError(too_big(cls, max_bytes, n * first[0].numel() + max_bytes - left))


def too_big(cls: str, max_bytes: int, need: int | None = None) -> str:
    size = f" ({amount(need)} as uint8)" if need else ""
    return (f"{cls} is too large to hold in memory{size}: fastadv holds datasets of up to {amount(max_bytes)} "
            f"(fastadv.data.external.MAX_BYTES) and cannot stream larger ones yet; use a subset or smaller images")


def amount(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def class_count(train, classes, ytr: torch.Tensor, yte: torch.Tensor, cls: str) -> int:
    """From the class names (given, or the train set's ``classes``), else the largest label + 1."""
    ds = train.dataset if isinstance(train, DataLoader) else train
    while classes is None and ds is not None:
        classes = getattr(ds, "classes", None)
        ds = getattr(ds, "dataset", None)  # through Subsets
    low = min(int(ytr.min()), int(yte.min()) if len(yte) else 0)
    high = max(int(ytr.max()), int(yte.max()) if len(yte) else 0)
    if low < 0:
        raise DataError(f"{cls}: labels must be class indices 0, 1, ...; found {low}")
    n = high + 1 if classes is None else classes if isinstance(classes, int) else len(classes)
    if high >= n:
        raise DataError(f"{cls}: label {high} for {n} classes (its classes attribute names {n})")
    if n < 2:
        raise DataError(f"{cls}: every label is {high}; training needs at least 2 classes")
    return n


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on [0, 1] of uint8 N x C x H x W images (float64 sums, chunk by chunk)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].double().div_(255)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = x.numel() / x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-3)  # a constant channel: no division by 0
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())
