"""Bring your own loop, your own model: the README's example runs, one's own nn.Module and torchvision /
timm models train, save, evaluate and export."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import fastadv
from fastadv.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    block = re.search(r"<!-- own-loop example -->\n```python\n(.*?)```\n<!-- end own-loop example -->", text, re.S)
    assert block, "the README's own-loop example is missing"
    return block.group(1)


def test_the_readme_own_loop_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    step, losses = scope["step"], scope["losses"]
    batches = len(scope["loader"])
    assert step.iteration == 2 * batches * 4  # Free-4: every minibatch replayed 4 times
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 / 2  # it learns, adversarially
    robust = fastadv.evaluate(scope["model"], scope["data"], eps=0.1, steps=10).robust_acc
    assert robust > 0.5
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(saved["step"]) >= {"iteration", "state", "generator"} and "delta" in saved["step"]["state"]
    assert "optimizer steps, adversarial loss" in capsys.readouterr().out


def test_adversarial_step_state_round_trip_continues_identically():
    def make():
        torch.manual_seed(0)
        model = fastadv.build_model("small-cnn", channels=1, size=16)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, opt, fastadv.AdversarialStep("fgsm-rs", model, opt, eps=0.1, seed=3)

    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(16, 1, 16, 16, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(4)]
    model, opt, step = make()
    for x, y in batches:
        step(x, y)
    model2, opt2, step2 = make()
    for x, y in batches[:2]:
        step2(x, y)
    state = {"m": model2.state_dict(), "o": opt2.state_dict(), "s": step2.state_dict()}
    model3, opt3, step3 = make()
    model3.load_state_dict(state["m"])
    opt3.load_state_dict(state["o"])
    step3.load_state_dict(state["s"])
    for x, y in batches[2:]:
        step3(x, y)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model3.state_dict().values()))


class TinyNet(nn.Module):
    """One's own net: takes normalized 1 x 16 x 16 images, returns logits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                  nn.Linear(128, 10))

    def forward(self, x):
        return self.body(x)


QUICK = {"dataset": "synthetic", "method": "fgsm-rs", "epochs": 1, "batch_size": 64, "eval_size": 64,
         "eval_attack_steps": 2, "final_limit": 64, "final_attack_steps": 3, "final_aa_points": 0, "progress": False}


def test_train_ones_own_module_then_load_evaluate_and_export(tmp_path):
    torch.manual_seed(0)
    result = fastadv.train({**QUICK, "out_dir": str(tmp_path), "name": "own"}, model=TinyNet())
    run = result.run_dir
    arch = json.loads((run / "config.json").read_text())["arch"]
    assert arch["model"] == "custom" and arch["module"].endswith("TinyNet")
    model = fastadv.load_model(run, model=TinyNet())
    x = torch.rand(4, 1, 16, 16)
    assert torch.allclose(model(x), result.model(x), atol=1e-5)  # the trained module is channels_last
    with pytest.raises(fastadv.ConfigError.__mro__[1], match="its own module"):  # a UserError, one line
        fastadv.load_model(run)
    again = fastadv.evaluate(model, fastadv.load_dataset("synthetic"), eps=0.1, steps=3, limit=64)
    assert again.clean_acc == pytest.approx(result.summary["clean_acc"])
    record = fastadv.export_checkpoint(run, tmp_path / "own.pt", model=TinyNet())
    assert "wrap_model(MyNet()" in record["load"]
    reloaded = fastadv.models.wrap_model(TinyNet(), channels=1)
    reloaded.load_state_dict(torch.load(tmp_path / "own.pt", weights_only=True))
    assert torch.equal(reloaded.eval()(x), model(x))


def test_torchvision_resnet18_trains_saves_evaluates_and_exports(tmp_path, capsys):
    args = ["--dataset", "synthetic", "--preset", "none", "--model", "torchvision:resnet18", "--method", "fgsm-rs",
            "--epochs", "0.25", "--batch-size", "64", "--eval-size", "16", "--eval-attack-steps", "1",
            "--eval-every", "4", "--final-limit", "16", "--final-attack-steps", "2", "--final-aa-points", "0",
            "--no-progress", "--out-dir", str(tmp_path), "--name", "tv"]
    assert main(["train", *args]) == 0
    run = tmp_path / "tv"
    net = fastadv.load_model(run)[1]
    assert isinstance(net.conv1, nn.Conv2d) and net.conv1.kernel_size == (3, 3) and isinstance(net.maxpool, nn.Identity)
    assert main(["eval", str(run), "--steps", "2", "--limit", "16", "--json"]) == 0
    assert main(["export", str(run), str(tmp_path / "tv.pt")]) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "tv.pt.json").read_text())
    assert record["build_model"]["name"] == "torchvision:resnet18"


def test_timm_model_builds_with_a_cifar_stem_and_trains_a_step():
    pytest.importorskip("timm")
    model = fastadv.build_model("timm:resnet18", channels=3, size=32)
    assert model[1].conv1.kernel_size == (3, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    step = fastadv.AdversarialStep("fgsm-rs", model, opt, eps=8 / 255)
    stats = step(torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    assert stats.count == 4 and torch.isfinite(stats.loss_sum)


def test_unknown_outside_models_are_one_line(capsys):
    assert main(["train", "--dataset", "synthetic", "--model", "torchvision:nonet", "--dry-run"]) == 0  # name only
    capsys.readouterr()
    with pytest.raises(ValueError, match="unknown torchvision model 'nonet'"):
        fastadv.build_model("torchvision:nonet")
