"""Dataset look-up, formats, clear errors, on-device batches and augmentation."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from fastadv.data import DATASETS, DataError, augment_batch, batches, load_dataset


def write_npz(path, n=20, shape=(28, 28), classes=10, **overrides):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
              "y_train": rng.integers(0, classes, n), "x_test": rng.integers(0, 256, (n // 2,) + shape, dtype=np.uint8),
              "y_test": rng.integers(0, classes, n // 2)}
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_npz_from_data_dir_first(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    first = write_npz(a / "mnist.npz", n=20)
    write_npz(b / "mnist.npz", n=40)
    monkeypatch.setenv("FASTADV_DATA", str(b))
    ds = load_dataset("mnist", str(a), download=False)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_train.dtype == torch.uint8
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(first["x_train"]))
    assert load_dataset("mnist", None, download=False).x_train.shape[0] == 40  # then $FASTADV_DATA


def test_rgb_npz_becomes_nchw(tmp_path):
    write_npz(tmp_path / "cifar10.npz", shape=(32, 32, 3))
    ds = load_dataset("cifar10", str(tmp_path), download=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.augment and ds.channels == 3


def test_torchvision_mnist_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 12), ("t10k", 6)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    ds = load_dataset("mnist", str(tmp_path), download=False)
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (6, 1, 28, 28)
    assert "torchvision" in ds.source


def test_missing_dataset_names_what_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTADV_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", str(tmp_path), download=False)
    msg = str(err.value)
    assert "\n" not in msg and "fashion-mnist.npz" in msg and str(tmp_path) in msg


@pytest.mark.parametrize("overrides,expected", [
    ({"y_test": None}, r"lacks array\(s\) y_test"),
    ({"x_train": np.zeros((20, 28, 28), dtype=np.float32)}, "expected uint8"),
    ({"y_train": np.full(20, 11)}, "labels outside"),
    ({"y_train": np.zeros(3, dtype=np.int64)}, "y_train has shape"),
])
def test_malformed_npz_is_one_clear_line(tmp_path, overrides, expected):
    write_npz(tmp_path / "mnist.npz", **overrides)
    with pytest.raises(DataError, match=expected) as err:
        load_dataset("mnist", str(tmp_path), download=False)
    assert "\n" not in str(err.value)


def test_corrupt_file_is_one_clear_line(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(DataError, match="cannot read") as err:
        load_dataset("mnist", str(tmp_path), download=False)
    assert "\n" not in str(err.value)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match="valid: cifar10, cifar100, digits, fashion-mnist, folder:PATH, mnist, svhn, synthetic, tiny-imagenet"):
        load_dataset("imagenet")


def test_digits_and_synthetic_need_no_files():
    pytest.importorskip("sklearn")
    digits = load_dataset("digits")
    assert digits.x_train.shape[1:] == (1, 28, 28) and len(digits.y_train) + len(digits.y_test) == 1797
    assert set(DATASETS) >= {"mnist", "fashion-mnist", "cifar10", "cifar100", "digits", "synthetic"}


def test_batches_are_a_permutation():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    y = torch.arange(10)
    seen = [yb for _, yb in batches(x, y, 3, generator=torch.Generator().manual_seed(0))]
    assert [len(b) for b in seen] == [3, 3, 3, 1]
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    xb, yb = next(batches(x, y, 4, generator=torch.Generator().manual_seed(0)))
    assert xb.dtype == torch.float32 and torch.allclose(xb[:, 0, 0, 0] * 255, yb.float())


def test_augmentation_is_a_shifted_or_flipped_crop():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(64):
        crops = [padded[i, :, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in crops)
    assert not torch.equal(out, x)  # something moved


def test_incomplete_torchvision_folder_is_reported_not_raised(tmp_path, monkeypatch):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)  # e.g. left by a download that failed
    monkeypatch.setenv("FASTADV_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="MNIST unreadable") as err:
        load_dataset("mnist", str(tmp_path), download=False)
    assert "\n" not in str(err.value)


def test_a_partial_training_split_says_so():
    import torch

    from fastadv.data import Dataset

    x, y = torch.zeros(3, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.long)
    part = Dataset("cifar10", x, y, x, y, 10, (0.5,) * 3, (0.25,) * 3, True, "test", published_train=50000)
    assert part.split_note == "partial training split: 3 of 50,000 images"
    assert Dataset("synthetic", x, y, x, y, 10, (0.5,), (0.25,), False, "test").split_note == ""
    full = Dataset("cifar10", x, y, x, y, 10, (0.5,) * 3, (0.25,) * 3, True, "test", published_train=3)
    assert full.split_note == ""
