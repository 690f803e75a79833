"""`torchvision:NAME?key=value,...` and `timm:NAME?key=value,...`: constructor keyword arguments in the model
name, parsed into ints, floats, booleans, None and strings, with one-line errors for bad syntax and for
arguments the constructor rejects; the name (arguments included) is what the run records and exports."""
from __future__ import annotations

import json
import re

import pytest
import torch

import fastadv
from fastadv.cli import main
from fastadv.models import ModelError, split_model_name


def test_arguments_parse_to_python_values():
    base, kwargs = split_model_name("timm:vit_tiny_patch16_224?img_size=32,patch_size=4,drop_rate=0.1,"
                                    "class_token=false,global_pool='avg',act=gelu,init=none")
    assert base == "timm:vit_tiny_patch16_224"
    assert kwargs == {"img_size": 32, "patch_size": 4, "drop_rate": 0.1, "class_token": False, "global_pool": "avg",
                      "act": "gelu", "init": None}
    assert type(kwargs["img_size"]) is int and type(kwargs["drop_rate"]) is float
    assert split_model_name("torchvision:resnet18") == ("torchvision:resnet18", {})
    assert split_model_name("small-cnn") == ("small-cnn", {})


@pytest.mark.parametrize("name,message", [
    ("torchvision:resnet18?zero_init_residual", "expected NAME?key=value"),
    ("torchvision:resnet18?", "expected NAME?key=value"),
    ("torchvision:resnet18?a=1,,b=2", "expected NAME?key=value"),
    ("torchvision:resnet18?1x=2", "expected NAME?key=value"),
    ("timm:resnet18?drop_rate=0.1,drop_rate=0.2", "drop_rate given twice"),
    ("torchvision:resnet18?num_classes=3", "num_classes is set by fastadv"),
    ("timm:resnet18?pretrained=true", "pretrained is set by fastadv"),
    ("small-cnn?width=3", "are for torchvision:NAME and timm:NAME"),
    ("torchvision:resnet18?foo=1", "torchvision:resnet18 does not take foo=1: "),
])
def test_bad_arguments_are_one_line_errors(name, message):
    with pytest.raises(ModelError, match=re.escape(message)) as info:
        fastadv.build_model(name)
    assert "\n" not in str(info.value)


def test_torchvision_arguments_reach_the_constructor():
    plain = fastadv.build_model("torchvision:resnet18", size=32)[1]
    zeroed = fastadv.build_model("torchvision:resnet18?zero_init_residual=true", size=32)[1]
    assert plain.layer1[0].bn2.weight.abs().sum() > 0 and zeroed.layer1[0].bn2.weight.abs().sum() == 0
    assert zeroed.conv1.kernel_size == (3, 3)  # the CIFAR stem as without arguments


def test_timm_vit_takes_its_image_and_patch_size():
    pytest.importorskip("timm")
    model = fastadv.build_model("timm:vit_tiny_patch16_224?img_size=32,patch_size=4", channels=3, size=32)
    assert model[1].patch_embed.patch_size == (4, 4) and model[1].patch_embed.num_patches == 64
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ModelError, match="does not take"):
        fastadv.build_model("timm:resnet18?no_such_arg=1")


def test_cli_errors_are_one_line(tmp_path, capsys):
    common = ["--dataset", "synthetic", "--epochs", "0.1", "--no-progress", "--out-dir", str(tmp_path)]
    assert main(["train", "--model", "torchvision:resnet18?zero_init_residual", "--dry-run", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected NAME?key=value" in err
    assert main(["train", "--model", "torchvision:resnet18?foo=1", *common]) == 2  # rejected when built
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not take foo=1" in err
    assert main(["train", "--model", "torchvision:nonet", *common]) == 2
    assert "unknown torchvision model 'nonet'" in capsys.readouterr().err


def test_a_run_with_arguments_trains_reloads_and_exports(tmp_path, capsys):
    name = "torchvision:resnet18?zero_init_residual=true"
    args = ["--dataset", "synthetic", "--preset", "none", "--model", name, "--method", "fgsm-rs",
            "--epochs", "0.05", "--batch-size", "64", "--eval-size", "16", "--eval-attack-steps", "1", "--eval-every", "100",
            "--final-limit", "16", "--final-attack-steps", "1", "--final-aa-points", "0", "--no-progress",
            "--out-dir", str(tmp_path), "--name", "args"]
    assert main(["train", *args]) == 0
    run = tmp_path / "args"
    assert json.loads((run / "config.json").read_text())["arch"]["model"] == name
    model = fastadv.load_model(run)
    assert main(["export", str(run), "--format", "robustbench", str(tmp_path / "args.pt")]) == 0
    capsys.readouterr()
    info = json.loads((tmp_path / "args.model_info.json").read_text())
    assert info["architecture"] == name and repr(name) in info["rebuild"]
    scope: dict = {}
    exec(info["rebuild"], scope)
    scope["model"].load_state_dict(torch.load(tmp_path / "args.pt", weights_only=True))
    x = torch.rand(2, 1, 16, 16)
    assert torch.equal(scope["model"].eval()(x), model(x))
