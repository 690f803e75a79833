"""Presets: `fastadv train --dataset X` gets a tested recipe; flags and --config override it."""
from __future__ import annotations

import json
from importlib import resources

import pytest
import tomllib
import torch

import fastadv
from fastadv.cli import main
from fastadv.config import ConfigError, TrainConfig
from fastadv.data import DATASETS, Dataset
from fastadv.presets import BY_DATASET, METHOD_FIELDS, PRESETS, load, preset_for


def recipe_file(name: str) -> dict:
    return tomllib.loads(resources.files("fastadv").joinpath("recipes", PRESETS[name][0]).read_text())


def fake(dataset: str, n: int = 64) -> Dataset:
    """Random uint8 images of the dataset's shape (CIFAR-100 is not available offline)."""
    shape = (1, 28, 28) if "mnist" in dataset else (3, 32, 32)
    info = DATASETS[dataset]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, info.num_classes, (n,), generator=g)
    return Dataset(dataset, x, y, x[:32], y[:32], info.num_classes, info.mean, info.std, info.augment, "fake")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_to_its_recipe_and_trains_a_few_steps(name, tmp_path):
    cfg = TrainConfig.from_dict({"preset": name})
    for key, value in recipe_file(name).items():
        if key != "dataset":
            assert getattr(cfg, key) == TrainConfig.from_dict({key: value}).__getattribute__(key), key
    assert cfg.dataset == ("cifar100" if name.startswith("cifar100") else recipe_file(name)["dataset"])
    small = cfg.replace(epochs=0.1, iterations=0, time_budget=None, batch_size=32, compile=False, eval_size=16, eval_attack_steps=1,
                        final_limit=16, final_attack_steps=1, final_aa_points=0, out_dir=str(tmp_path),
                        progress=False, device="cpu")
    result = fastadv.train(small, data=fake(cfg.dataset))
    assert result.summary["status"] == "completed" and result.summary["steps"] >= 1
    assert json.loads((result.run_dir / "config.json").read_text())["preset"] == name


def test_the_table_names_a_preset_for_each_dataset_and_device():
    assert preset_for("cifar10", "cpu") == "cifar10-cpu" and preset_for("cifar10", "cuda") == "cifar10-gpu"
    assert preset_for("cifar100", "mps") == "cifar100-cpu"  # other devices take the CPU recipe
    assert preset_for("synthetic", "cpu") is None
    assert set(BY_DATASET.values()) == set(PRESETS)
    assert load("cifar10-cpu")["model"] != "small-cnn" and load("cifar10-gpu")["model"] == "preact-resnet18"


def dry(argv, capsys) -> dict:
    assert main(["train", *argv, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_dataset_uses_the_preset_and_flags_override_it(capsys):
    out = dry(["--dataset", "cifar10", "--device", "cpu"], capsys)
    assert out["preset"] == "cifar10-cpu" and out["config"]["model"] == load("cifar10-cpu")["model"]
    out = dry(["--dataset", "cifar10", "--device", "cpu", "--epochs", "3", "--model", "fast-cnn"], capsys)
    assert out["config"]["epochs"] == 3 and out["config"]["model"] == "fast-cnn"
    out = dry(["--dataset", "mnist", "--device", "cpu", "--preset", "none"], capsys)
    assert out["preset"] is None and out["config"]["method"] == TrainConfig.method


def test_changing_the_method_drops_the_presets_method_settings(capsys):
    recipe = load("mnist")
    assert any(k in recipe for k in METHOD_FIELDS)
    out = dry(["--dataset", "mnist", "--device", "cpu", "--method", "fgsm-rs"], capsys)["config"]
    assert out["method"] == "fgsm-rs" and out["alpha"] is None and out["eps_warmup"] == 0.0
    assert out["optimizer"] == recipe["optimizer"]  # the rest of the recipe stays


def test_a_config_file_is_complete_unless_it_names_a_preset(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('dataset = "cifar10"\nmethod = "free"\n')
    out = dry(["--config", str(path)], capsys)
    assert out["preset"] is None and out["config"]["model"] == TrainConfig.model
    path.write_text('preset = "cifar10-cpu"\nepochs = 2\n')
    out = dry(["--config", str(path)], capsys)["config"]
    assert out["model"] == load("cifar10-cpu")["model"] and out["epochs"] == 2


def test_unknown_preset_is_one_line(capsys):
    assert main(["train", "--preset", "fast", "--dry-run"]) == 2
    assert "unknown preset 'fast' (valid: mnist" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"preset": 3})


def test_help_lists_the_presets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in PRESETS)


@pytest.mark.slow
def test_train_dataset_mnist_one_epoch_just_works(mnist, tmp_path, capsys):
    """`fastadv train --dataset mnist --epochs 1`: the preset's recipe, shortened, is accurate and robust."""
    assert main(["train", "--dataset", "mnist", "--epochs", "1", "--final-limit", "1000", "--final-aa-points", "300",
                 "--eval-size", "200",  # the held-out checks only watch the run; the final figures are asserted
                 "--no-progress", "--out-dir", str(tmp_path), "--name", "one"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["clean_acc"] >= 0.97 and summary["robust_acc"] >= 0.5 and summary["headline"]["robust_acc"] >= 0.5
    assert out.index("robust accuracy (AA-lite)") < out.index("clean accuracy")  # the headline comes first


def test_a_length_in_epochs_replaces_the_presets_time_budget_and_a_method_change_says_what_it_took():
    from fastadv import presets

    assert presets.load("mnist")["time_budget"] == "60s" and presets.load("cifar10-cpu")["time_budget"] == "10m"
    assert TrainConfig.from_dict({"preset": "mnist"}).time_budget == 60
    assert TrainConfig.from_dict({"preset": "mnist", "epochs": 2}).time_budget is None  # the user's length wins
    assert TrainConfig.from_dict({"preset": "mnist", "epochs": 2, "time_budget": "30s"}).time_budget == 30
    note = presets.provenance({"preset": "mnist", "method": "fgsm-rs", "epochs": 2})
    assert note.startswith("preset mnist was tuned for pgd, this run trains fgsm-rs")
    assert "alpha, attack_steps, eps_warmup dropped" in note and "optimizer adam" in note and "lr_max 0.005" in note
    assert "epochs" not in note.split("taken from the preset:")[1]  # given, not taken
    assert presets.provenance({"preset": "mnist"}) is None and presets.provenance({"method": "pgd"}) is None
