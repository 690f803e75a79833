"""Export: the RobustBench-style .pt loads with torch.load(weights_only=True) in a fresh process and
gives the same accuracy; .safetensors round-trips; bad output names are one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fastadv
from fastadv.cli import main
from fastadv.models.export import export_checkpoint


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x.float() / 255).argmax(1) == y).float().mean().item()


@pytest.mark.slow
def test_robustbench_export_loads_in_a_fresh_process(robust_mnist_run, mnist, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", str(robust_mnist_run.run_dir), "--format", "robustbench", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "model.pt.json").read_text())
    assert record["load"] in "\n".join(line[4:] for line in printed.splitlines())  # the printed lines
    x, y = mnist.x_test[:1000], mnist.y_test[:1000]
    torch.save({"x": x, "y": y}, tmp_path / "points.pt")
    # The user's side: only torch and fastadv.models, the exact lines the export printed.
    script = record["load"] + textwrap.dedent("""
        import sys
        points = torch.load("points.pt", weights_only=True)
        with torch.no_grad():
            pred = model(points["x"].float() / 255).argmax(1)
        print((pred == points["y"]).float().mean().item())
    """)
    assert "import fastadv\n" not in script and "load_model" not in script
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(fastadv.__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr
    theirs = float(proc.stdout.strip().splitlines()[-1])
    ours = accuracy(fastadv.load_model(robust_mnist_run.run_dir), x, y)
    print(f"accuracy on 1,000 MNIST test points: run {ours:.4f}, exported .pt in a fresh process {theirs:.4f}")
    assert theirs == ours and ours > 0.9
    state = torch.load(out, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert "0.mean" in state and "0.std" in state  # normalization travels inside the model


@pytest.mark.slow
def test_safetensors_export_round_trips(robust_mnist_run, mnist, tmp_path):
    out = tmp_path / "model.safetensors"
    record = export_checkpoint(robust_mnist_run.run_dir, out)
    assert record["format"] == "safetensors"
    x, y = mnist.x_test[:500], mnist.y_test[:500]
    assert accuracy(fastadv.load_model(out), x, y) == accuracy(fastadv.load_model(robust_mnist_run.run_dir), x, y)
    from safetensors.torch import load_file

    from fastadv.models import build_model

    model = build_model(**{"name": record["build_model"]["name"],
                           **{k: v for k, v in record["build_model"].items() if k != "name"}})
    model.load_state_dict(load_file(str(out)))
    assert accuracy(model.eval(), x, y) == accuracy(fastadv.load_model(out), x, y)


def test_export_of_a_synthetic_model(synthetic, tmp_path):
    """Round trip without real data: a fresh small-cnn saved as a run, exported in both formats."""
    from fastadv.models.store import save_weights

    arch = {"model": "small-cnn", "num_classes": 10, "channels": 1, "size": 16, "mean": list(synthetic.mean),
            "std": list(synthetic.std), "depth": 34, "width": 10, "dataset": "synthetic"}
    torch.manual_seed(0)
    model = fastadv.build_model("small-cnn", channels=1, size=16, mean=synthetic.mean, std=synthetic.std)
    save_weights(model, tmp_path, arch)
    pt = export_checkpoint(tmp_path, tmp_path / "out.pt")
    assert pt["format"] == "robustbench" and "depth" not in pt["build_model"]
    state = torch.load(tmp_path / "out.pt", weights_only=True)
    assert torch.equal(state["0.mean"], model.state_dict()["0.mean"])
    export_checkpoint(tmp_path, tmp_path / "out.safetensors")
    x = synthetic.x_test[:16].float() / 255
    assert torch.equal(fastadv.load_model(tmp_path / "out.safetensors")(x), model.eval()(x))


@pytest.mark.parametrize("argv,message", [
    (["RUN", "out.onnx"], "cannot tell the format from 'out.onnx'"),
    (["RUN", "--format", "onnx", "out.pt"], "unknown format 'onnx' (valid: robustbench, safetensors)"),
    (["RUN", "--format", "robustbench", "out.safetensors"], "format robustbench writes a .pt file"),
    (["RUN", "EXISTING"], "exists; pass --force"),
    (["no/such/run", "out.pt"], "no such run directory or weights file"),
    (["RUN", "out.pt"], "no model.safetensors or model.pt in"),
])
def test_bad_export_input(argv, message, capsys, tmp_path):
    (tmp_path / "RUN").mkdir()
    (tmp_path / "old.pt").write_bytes(b"keep me")
    subst = {"RUN": str(tmp_path / "RUN"), "EXISTING": str(tmp_path / "old.pt")}
    argv = [subst.get(a, str(tmp_path / a) if a.startswith("out.") else a) for a in argv]
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert (tmp_path / "old.pt").read_bytes() == b"keep me"
