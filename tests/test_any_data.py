"""Any data: a (train, test) pair of torch Datasets or DataLoaders, a folder in ImageFolder layout, SVHN and
Tiny-ImageNet in their published layouts, all on small data the tests make. Each converts to fastadv's uint8
Dataset, trains, saves, evaluates and exports; bad input is one line (exit 2 from the CLI)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import fastadv
from fastadv.cli import main
from fastadv.config import ConfigError, TrainConfig
from fastadv.data import DataError, from_torch, load_dataset
from fastadv.training.setup import check_config

QUICK = {"preset": "none", "method": "fgsm-rs", "model": "small-cnn", "epochs": 1, "batch_size": 32, "val_size": 30,
         "eval_size": 16, "eval_attack_steps": 1, "final_limit": 24, "final_attack_steps": 2, "final_aa_points": 0,
         "progress": False, "lr_max": 0.01, "stop_if_not_learning": False}


def images(n: int, shape=(3, 16, 16), classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images on the 1/255 grid (so quantizing them is exact) whose class sets their brightness."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = (torch.randint(0, 128, (n, *shape), generator=g) + 60 * y.view(n, *[1] * len(shape))).clamp(0, 255)
    return x.float() / 255, y


class PilDigits(torch.utils.data.Dataset):
    """A user's own Dataset: PIL images, int labels, a ``classes`` attribute naming one class no item has."""

    classes = ["zero", "one", "two", "three"]

    def __init__(self, n: int, seed: int = 0):
        self.x, self.y = images(n, shape=(16, 16), classes=3, seed=seed)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return Image.fromarray((self.x[i] * 255).round().byte().numpy(), mode="L"), int(self.y[i])


def one_line_error(fn) -> str:
    with pytest.raises(DataError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message and message
    return message


# ----------------------------------------------------------------------------- conversion
def test_a_tensor_dataset_pair_converts_exactly_with_its_own_statistics():
    x, y = images(90)
    data = from_torch(TensorDataset(x[:60], y[:60]), TensorDataset(x[60:], y[60:]))
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (60, 3, 16, 16)
    assert torch.equal(data.x_train.float() / 255, x[:60]) and torch.equal(data.x_test.float() / 255, x[60:])
    assert torch.equal(data.y_train, y[:60]) and data.num_classes == 3 and data.channels == 3 and data.size == 16
    per_channel = x[:60].transpose(0, 1).reshape(3, -1)
    assert data.mean == pytest.approx(per_channel.mean(1).tolist(), abs=1e-4)
    assert data.std == pytest.approx(per_channel.std(1, unbiased=False).tolist(), abs=1e-4)
    assert data.name == "torch:TensorDataset" and "TensorDataset" in data.source and "60 training" in data.source
    assert data.augment is False


def test_floats_off_the_grid_are_rounded_to_the_nearest_level():
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(40) % 2
    data = from_torch(TensorDataset(x, y), TensorDataset(x, y))
    assert (data.x_train.float() / 255 - x).abs().max() <= 0.5 / 255 + 1e-7


def test_dataloaders_and_a_custom_pil_dataset_give_the_same_arrays():
    train, test = PilDigits(48), PilDigits(12, seed=1)
    direct = from_torch(train, test)
    assert direct.channels == 1 and direct.num_classes == 4  # the classes attribute, not the largest label + 1
    as_tensors = lambda ds: TensorDataset(ds.x[:, None], ds.y)  # noqa: E731
    loaders = from_torch(DataLoader(as_tensors(train), batch_size=10), DataLoader(as_tensors(test), batch_size=5))
    assert torch.equal(direct.x_train, loaders.x_train) and torch.equal(direct.y_test, loaders.y_test)
    assert "DataLoader" in loaders.source and loaders.num_classes == 3


def test_grey_and_colour_items_become_colour():
    from PIL import Image

    grey = Image.fromarray(np.full((8, 8), 200, np.uint8), mode="L")
    colour = Image.fromarray(np.full((8, 8, 3), 10, np.uint8), mode="RGB")
    items = [(grey, 0), (colour, 1)] * 5
    data = from_torch(items, items[:4])  # any sequence of (image, label) pairs
    assert data.x_train.shape == (10, 3, 8, 8) and int(data.x_train[0].min()) == 200


class Broken(torch.utils.data.Dataset):
    def __init__(self, item, n: int = 8):
        self.item, self.n = item, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.item(i) if callable(self.item) else self.item


GOOD = TensorDataset(*images(10))


@pytest.mark.parametrize("train, message", [
    (Broken(torch.zeros(3, 8, 8)), "must be (image, label) pairs"),
    (Broken((torch.zeros(3, 8, 8), 0, "extra")), "of 3"),
    (Broken((torch.full((3, 8, 8), 2.0), 0)), "outside [0, 1]"),
    (Broken((torch.full((3, 8, 8), -0.5), 1)), "Normalize"),
    (Broken((torch.zeros(3, 8, 8, dtype=torch.int32), 0)), "int32"),
    (Broken((torch.zeros(3, 8, 12), 0)), "not square"),
    (Broken(lambda i: (torch.zeros(3, 8 + (i == 5), 8 + (i == 5)), i % 2)), "differ in size"),
    (Broken(lambda i: (torch.zeros(3, 8, 8), 0.5)), "integer class index"),
    (Broken(lambda i: ("an image", i % 2)), "got a str"),
    (TensorDataset(torch.rand(6, 3, 8, 8), torch.eye(3)[torch.arange(6) % 3]), "one-hot"),
    (TensorDataset(torch.rand(6, 3, 16, 16), torch.arange(6) - 1), "found -1"),
    (TensorDataset(torch.rand(6, 3, 12, 12), torch.arange(6) % 2), "training images are 3x12x12 and test images 3x16x16"),
])
def test_bad_datasets_are_one_line_errors(train, message):
    assert message in one_line_error(lambda: from_torch(train, GOOD))


def test_one_class_is_one_line():
    one = TensorDataset(torch.rand(6, 3, 16, 16), torch.zeros(6, dtype=torch.long))
    assert "at least 2 classes" in one_line_error(lambda: from_torch(one, one))


def test_a_dataloader_of_dicts_is_one_line():
    loader = DataLoader([{"image": torch.zeros(3, 8, 8), "label": 0}] * 4, batch_size=2)
    assert "(images, labels) pairs" in one_line_error(lambda: from_torch(loader, GOOD))


def test_data_over_the_memory_limit_is_refused_before_it_is_read():
    reads = []
    big = Broken(lambda i: reads.append(i) or (torch.zeros(3, 32, 32), i % 2), n=10_000)
    message = one_line_error(lambda: from_torch(big, GOOD, max_bytes=2**20))
    assert "(29.3 MiB as uint8)" in message and "up to 1 MiB" in message and "cannot stream" in message and "MAX_BYTES" in message
    assert len(reads) <= 256  # the first chunk, not the whole set
    # a loader over data of unknown length is stopped as it goes
    assert "too large" in one_line_error(lambda: from_torch(DataLoader(Stream(), batch_size=100), GOOD,
                                                            max_bytes=2**20))


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return ((torch.zeros(3, 32, 32), i % 2) for i in range(5000))


def test_train_refuses_other_things_as_data():
    with pytest.raises(DataError, match="pair of torch Datasets"):
        fastadv.train({**QUICK, "dataset": "synthetic"}, data=(GOOD, GOOD, GOOD))


# ----------------------------------------------------------------------------- training on it
@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    x, y = images(220, classes=3)
    out = tmp_path_factory.mktemp("runs")
    train, test = TensorDataset(x[:180], y[:180]), DataLoader(TensorDataset(x[180:], y[180:]), batch_size=16)
    return fastadv.train({**QUICK, "out_dir": str(out), "name": "torch-data"}, data=(train, test))


def test_a_torch_dataset_pair_trains_and_the_run_records_it(torch_run):
    summary, config = torch_run.summary, json.loads((torch_run.run_dir / "config.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] >= 1
    assert summary["dataset"] == config["dataset"] == "torch:TensorDataset"
    assert config["data_source"] == "torch Dataset TensorDataset (180 training + 40 test images)"
    assert summary["train_size"] + summary["val_size"] == 180 and summary["val_size"] == 30
    assert summary["test_size"] == 40 and summary["eps"] == pytest.approx(8 / 255)  # the default for own data
    assert config["arch"]["mean"] == pytest.approx(list(from_torch(*torch_run_pair()).mean))


def torch_run_pair():
    x, y = images(220, classes=3)
    return TensorDataset(x[:180], y[:180]), TensorDataset(x[180:], y[180:])


def test_a_torch_data_run_reloads_evaluates_and_exports(torch_run, tmp_path, capsys):
    model = fastadv.load_model(torch_run.run_dir)
    data = from_torch(*torch_run_pair())
    report = fastadv.evaluate(model, data, eps=8 / 255, steps=2, limit=24)
    assert report.clean_acc == pytest.approx(torch_run.summary["clean_acc"], abs=1e-6)
    assert main(["export", str(torch_run.run_dir), str(tmp_path / "m.pt")]) == 0  # RobustBench: a plain state_dict
    assert main(["export", str(torch_run.run_dir), str(tmp_path / "m.safetensors")]) == 0  # with its architecture
    again, x = fastadv.load_model(tmp_path / "m.safetensors"), data.x_test[:8].float() / 255
    assert torch.equal(again(x), model(x))
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    assert torch.equal(again(x), model(x))
    capsys.readouterr()
    assert main(["eval", str(torch_run.run_dir), "--limit", "8"]) == 2  # the data was given in Python
    assert "give it again" in capsys.readouterr().err


# ----------------------------------------------------------------------------- folder:PATH
def write_folder(root: Path, classes=("cat", "dog", "emu"), per_class=(12, 4), size=16, mode="RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(rng.integers(0, 100, (size, size, 3)) + 70 * c, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).convert(mode).save(root / split / name / f"{i}.png")
    return root


def test_folder_dataset_trains_evaluates_and_exports_from_the_cli(tmp_path, capsys):
    root = write_folder(tmp_path / "pics")
    data = load_dataset(f"folder:{root}")
    assert data.x_train.shape == (36, 3, 16, 16) and data.num_classes == 3 and data.y_test.tolist().count(2) == 4
    assert str(root.resolve()) in data.source and data.mean != (0.5, 0.5, 0.5)
    out = tmp_path / "runs"
    argv = ["train", "--dataset", f"folder:{root}", "--preset", "none", "--method", "fgsm-rs", "--epochs", "2",
            "--batch-size", "8", "--val-size", "6", "--eval-size", "6", "--final-limit", "12", "--final-aa-points",
            "0", "--lr-max", "0.01", "--no-progress", "--out-dir", str(out), "--name", "pics"]
    assert main(argv) == 0
    summary = json.loads((out / "pics" / "summary.json").read_text())
    assert summary["dataset"] == f"folder:{root}" and summary["train_size"] + summary["val_size"] == 36
    assert summary["test_size"] == 12
    capsys.readouterr()
    assert main(["eval", str(out / "pics"), "--limit", "12", "--steps", "2", "--json"]) == 0
    assert main(["export", str(out / "pics"), str(tmp_path / "pics.safetensors")]) == 0
    assert fastadv.load_model(tmp_path / "pics.safetensors")(data.x_test[:2].float() / 255).shape == (2, 3)


def test_a_test_folder_missing_a_class_keeps_the_training_labels(tmp_path):
    root = write_folder(tmp_path / "pics", mode="L")
    for f in (root / "test" / "cat").iterdir():
        f.unlink()
    (root / "test" / "cat").rmdir()
    (root / "test").rename(root / "val")
    data = load_dataset(f"folder:{root}")
    assert data.channels == 1 and sorted(set(data.y_test.tolist())) == [1, 2] and data.num_classes == 3


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "no such folder"),
    (lambda root: (root / "test" / "a").mkdir(parents=True), "no train/ folder"),
    (lambda root: (root / "train").mkdir(parents=True), "no test/ or val/ folder"),
    (lambda root: [(root / s).mkdir(parents=True) for s in ("train", "test")], "find any class folder"),
    (lambda root: (write_folder(root), (root / "test" / "yak").mkdir()), "no valid file for the classes yak"),
    (lambda root: (write_folder(root), (root / "test" / "yak").mkdir(),
                   (root / "test" / "yak" / "0.png").write_bytes((root / "test" / "dog" / "0.png").read_bytes())),
     "classes that train/ lacks: yak"),
    (lambda root: (write_folder(root), write_folder(root, classes=("dog",), per_class=(1, 1), size=20)),
     "differ in size"),
    (lambda root: (write_folder(root), (root / "train" / "dog" / "bad.png").write_text("not a png")),
     "cannot read image"),
])
def test_bad_folders_are_one_line_with_exit_2(tmp_path, capsys, make, message):
    root = tmp_path / "pics"
    make(root)
    code = main(["train", "--dataset", f"folder:{root}", "--preset", "none", "--epochs", "1",
                 "--out-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_dataset_names_accept_folders_and_reject_the_rest():
    check_config(TrainConfig(dataset="folder:/anywhere"))
    with pytest.raises(ConfigError, match="folder:PATH"):
        check_config(TrainConfig(dataset="folder"))
    with pytest.raises(ConfigError, match="svhn"):
        check_config(TrainConfig(dataset="svnh"))


# ----------------------------------------------------------------------------- SVHN and Tiny-ImageNet
def test_svhn_reads_its_mat_files(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    (tmp_path / "svhn").mkdir()
    arrays = {}
    for name, n in (("train", 30), ("test", 10)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN's layout: H x W x C x N
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # SVHN's labels are 1..10, 10 for the digit 0
        scipy_io.savemat(tmp_path / "svhn" / f"{name}_32x32.mat", {"X": x, "y": y})
        arrays[name] = x
    first = arrays["train"][:, :, :, 0]
    data = load_dataset("svhn", str(tmp_path), download=False)
    assert data.x_train.shape == (30, 3, 32, 32) and data.x_test.shape == (10, 3, 32, 32)
    assert torch.equal(data.x_train[0], torch.from_numpy(first).permute(2, 0, 1))
    assert data.y_train[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert data.num_classes == 10 and data.augment is False and data.split_note.startswith("partial")


def test_svhn_and_tiny_imagenet_say_where_they_looked(tmp_path):
    for name in ("svhn", "tiny-imagenet"):
        message = one_line_error(lambda: load_dataset(name, str(tmp_path), download=False))
        assert f"dataset {name!r} not found" in message and str(tmp_path) in message


def test_tiny_imagenet_reads_its_folder_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # classes are numbered in sorted order
    rng = np.random.default_rng(0)
    lines = []
    for w in wnids:
        (root / "train" / w / "images").mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                root / "train" / w / "images" / f"{w}_{i}.JPEG")
    (root / "val" / "images").mkdir(parents=True)
    for i, w in enumerate(wnids * 2):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L").save(
            root / "val" / "images" / f"val_{i}.JPEG")  # Tiny-ImageNet holds some grey images
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset("tiny-imagenet", str(tmp_path), download=False)
    assert data.x_train.shape == (12, 3, 64, 64) and data.x_test.shape == (6, 3, 64, 64)
    assert data.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # n01, n02, n03
    assert data.y_test.tolist() == [1, 0, 2, 1, 0, 2] and data.num_classes == 200 and data.augment is True
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    assert "wnid of train/" in one_line_error(lambda: load_dataset("tiny-imagenet", str(tmp_path), download=False))
