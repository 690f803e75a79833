"""Datasets read from image folders and .mat files: ``folder:PATH`` (ImageFolder layout), SVHN, Tiny-ImageNet.

``folder:PATH`` reads ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (or ``PATH/val/<class>/*``) with
torchvision's ``ImageFolder`` and PIL, classes named by their training folders, and converts them as
``fastadv.data.external`` does (uint8, mean and std from the training images, crop+flip off). The SVHN and
Tiny-ImageNet readers return numpy arrays for the registry (``fastadv.data.register_dataset``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastadv.data.batches import DataError
from fastadv.data.dataset import Dataset
from fastadv.data.external import MAX_BYTES, from_torch
from fastadv.data.files import cache_dir, read_npz
from fastadv.errors import first_line

FOLDER = "folder:"  # the name prefix of an ImageFolder-layout directory
LAYOUT = "PATH/train/<class>/*.png and PATH/test/<class>/* (or PATH/val/<class>/*)"


# ----------------------------------------------------------------------------- folder:PATH
def load_folder(name: str, *, max_bytes: int = MAX_BYTES) -> Dataset:
    """``folder:PATH`` as a ``Dataset`` (on the CPU); one-line ``DataError`` for a layout it cannot read."""
    from torchvision.datasets import ImageFolder

    given = name[len(FOLDER):]
    root = Path(given).expanduser()
    if not given or not root.is_dir():
        raise DataError(f"dataset {name!r}: no such folder" + (f" {root}" if given else " (give folder:PATH)"))
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        missing = "train/" if not (root / "train").is_dir() else "test/ or val/"
        raise DataError(f"dataset {name!r} has no {missing} folder; the layout is {LAYOUT}")
    splits = []
    for split_dir in (root / "train", test_dir):
        try:
            splits.append(ImageFolder(str(split_dir), loader=open_image))
        except (FileNotFoundError, OSError, RuntimeError) as exc:  # no class folders, or one without images
            why = first_line(exc).split(". Supported")[0].rstrip(".")[:160]
            raise DataError(f"dataset {name!r}: {split_dir.name}/: {why} (images: .png, .jpg, ...); the layout is "
                            f"{LAYOUT}") from None
    train, test = splits
    unknown = sorted(set(test.classes) - set(train.classes))
    if unknown:
        raise DataError(f"dataset {name!r}: {test_dir.name}/ has classes that train/ lacks: {', '.join(unknown[:5])}")
    # the test folder may lack a class: its labels follow the training folder's class order
    test.samples = [(path, train.class_to_idx[test.classes[i]]) for path, i in test.samples]
    test.targets = [i for _, i in test.samples]
    source = f"{root.resolve()} (ImageFolder layout, {len(train.classes)} classes)"
    return from_torch(train, test, name=name, source=source, classes=train.classes, max_bytes=max_bytes)


def open_image(path: str):
    """A PIL image, grey ones kept grey (fastadv's conversion turns a mix of grey and colour into colour)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("L" if im.mode in ("1", "L", "LA") else "RGB")
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {first_line(exc)}") from None


def read_rgb(paths: list[Path], what: str) -> np.ndarray:
    """uint8 N x H x W x 3 images (grey ones as colour); one size for all, else a one-line error."""
    from PIL import Image

    out, first = None, None
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                a = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise DataError(f"{what}: cannot read image {path}: {first_line(exc)}") from None
        if out is None:
            out, first = np.empty((len(paths), *a.shape), dtype=np.uint8), path
        elif a.shape != out.shape[1:]:
            raise DataError(f"{what}: images differ in size: {first.name} is {out.shape[1]}x{out.shape[2]}, "
                            f"{path.name} {a.shape[0]}x{a.shape[1]}; resize them to one size")
        out[i] = a
    if out is None:
        raise DataError(f"{what}: no images found")
    return out


# ----------------------------------------------------------------------------- SVHN
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")  # torchvision's and the SVHN site's names ("extra" is not read)


def svhn_loader(roots: list[Path], download: bool):
    """``svhn.npz``, or SVHN's ``train_32x32.mat`` + ``test_32x32.mat`` in a root or its ``svhn/``; else a
    torchvision download into the cache's ``svhn/``. Labels 0-9 (the files' 10 for the digit 0 becomes 0)."""
    for root in roots:
        if (root / "svhn.npz").is_file():
            return read_npz(root / "svhn.npz"), str(root / "svhn.npz")
        for folder in (root / "svhn", root):
            if all((folder / f).is_file() for f in SVHN_FILES):
                return read_svhn_mat(folder), f"{folder} (SVHN .mat files)"
    looked = f"looked for svhn.npz or {' + '.join(SVHN_FILES)} in {', '.join(str(r) for r in roots)} (and their svhn/)"
    if not download:
        raise DataError(f"dataset 'svhn' not found: {looked}")
    target = cache_dir() / "svhn"
    try:
        import torchvision

        for split in ("train", "test"):
            torchvision.datasets.SVHN(str(target), split=split, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataError(f"dataset 'svhn' not found: {looked}; download failed ({first_line(exc)[:120]})") from None
    return read_svhn_mat(target), f"{target} (downloaded)"


def read_svhn_mat(folder: Path) -> tuple[np.ndarray, ...]:
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("reading SVHN's .mat files needs scipy: pip install scipy (or give svhn.npz)") from None
    out = []
    for name in SVHN_FILES:
        try:
            mat = loadmat(str(folder / name))
            x, y = mat["X"], mat["y"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read {folder / name}: {first_line(exc)}") from None
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or y.size != x.shape[3]:
            raise DataError(f"{folder / name}: X is {x.shape} and y {y.shape}; SVHN has X 32x32x3xN and y Nx1")
        y = y.reshape(-1).astype(np.int64)
        out += [np.ascontiguousarray(x.transpose(3, 0, 1, 2)).astype(np.uint8), np.where(y == 10, 0, y)]
    return tuple(out)


# ----------------------------------------------------------------------------- Tiny-ImageNet
TINY = "tiny-imagenet-200"  # the folder of the official zip
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def tiny_imagenet_loader(roots: list[Path], download: bool):
    """``tiny-imagenet.npz``, or the official ``tiny-imagenet-200/`` folder (``train/<wnid>/images/*.JPEG``,
    ``val/images/*`` labelled by ``val/val_annotations.txt``: the labelled val split is the test split, as in the
    fast-AT papers); else the official zip downloaded into the cache."""
    for root in roots:
        if (root / "tiny-imagenet.npz").is_file():
            return read_npz(root / "tiny-imagenet.npz"), str(root / "tiny-imagenet.npz")
        if (root / TINY / "train").is_dir():
            return read_tiny_imagenet(root / TINY), f"{root / TINY} (Tiny-ImageNet folders)"
    looked = f"looked for tiny-imagenet.npz or {TINY}/ in {', '.join(str(r) for r in roots)}"
    if not download:
        raise DataError(f"dataset 'tiny-imagenet' not found: {looked}")
    try:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(TINY_URL, str(cache_dir()))
    except Exception as exc:  # network errors come in many types
        raise DataError(f"dataset 'tiny-imagenet' not found: {looked}; download failed "
                        f"({first_line(exc)[:120]})") from None
    return read_tiny_imagenet(cache_dir() / TINY), f"{cache_dir() / TINY} (downloaded)"


def read_tiny_imagenet(root: Path) -> tuple[np.ndarray, ...]:
    """Arrays of the Tiny-ImageNet folder layout; classes are the sorted wnids of ``train/``."""
    what = f"Tiny-ImageNet at {root}"
    wnids = sorted(d.name for d in (root / "train").iterdir() if (d / "images").is_dir())
    if not wnids:
        raise DataError(f"{what}: train/ has no <wnid>/images/ folders")
    index = {w: i for i, w in enumerate(wnids)}
    train = [(p, index[w]) for w in wnids for p in sorted((root / "train" / w / "images").iterdir()) if p.is_file()]
    notes = root / "val" / "val_annotations.txt"
    if not notes.is_file():
        raise DataError(f"{what}: no val/val_annotations.txt (the labels of val/images/)")
    val = []
    for n, line in enumerate(notes.read_text().splitlines(), 1):
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DataError(f"{notes}:{n}: expected 'FILE<tab>WNID...' with a wnid of train/, got {line[:60]!r}")
        val.append((root / "val" / "images" / parts[0], index[parts[1]]))
    x_train, x_val = read_rgb([p for p, _ in train], what), read_rgb([p for p, _ in val], what)
    return (x_train, np.array([c for _, c in train], dtype=np.int64),
            x_val, np.array([c for _, c in val], dtype=np.int64))
