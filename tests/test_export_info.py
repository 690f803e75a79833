"""`fastadv export RUN --format robustbench OUT` writes a model-info JSON beside the weights: what a RobustBench
user needs (dataset, threat model, eps, architecture and the line that rebuilds it, clean and AutoAttack
accuracy with their attacks and points, training data, versions), read from the run directory."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import fastadv
from fastadv.cli import main
from fastadv.models.export import eps_text

QUICK = {"dataset": "synthetic", "preset": "none", "method": "fgsm-rs", "epochs": 1, "batch_size": 64,
         "eval_size": 64, "eval_attack_steps": 2, "final_limit": 64, "final_attack_steps": 3, "final_aa_points": 32,
         "progress": False, "eps": 0.1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run on synthetic data declared a partial split (its published size set to twice what it has),
    then `fastadv eval --autoattack` on 16 points, which writes eval.json."""
    out = tmp_path_factory.mktemp("runs")
    data = fastadv.load_dataset("synthetic")
    data = dataclasses.replace(data, published_train=2 * len(data.y_train))
    result = fastadv.train({**QUICK, "out_dir": str(out), "name": "tiny"}, data=data)
    assert main(["eval", str(result.run_dir), "--limit", "16", "--steps", "3", "--autoattack", "--json"]) == 0
    return result


def test_robustbench_export_writes_the_model_info(run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["export", str(run.run_dir), "--format", "robustbench", str(tmp_path / "tiny.pt")]) == 0
    assert "tiny.model_info.json" in capsys.readouterr().out
    info = json.loads((tmp_path / "tiny.model_info.json").read_text())
    summary = run.summary
    evaluated = json.loads((run.run_dir / "eval.json").read_text())
    aa = next(a for a in evaluated["attacks"] if a["name"] == "autoattack")

    assert info["dataset"] == "synthetic" and info["threat_model"] == "Linf" and info["eps"] == "0.1"
    assert info["architecture"] == "small-cnn" and info["weights"] == "tiny.pt"
    assert info["clean_acc"] == f"{100 * summary['clean_acc']:.2f}"
    assert info["autoattack_acc"] == f"{100 * aa['robust_acc']:.2f}" and info["autoattack_points"] == 16
    names = {e["name"]: e for e in info["evaluations"]}
    assert names["AA-lite"]["acc"] == summary["headline"]["robust_acc"] and names["AA-lite"]["points"] == 32
    assert names["AA-lite"]["attack"].startswith("worst case of PGD-3")
    assert names["autoattack"]["points"] == 16 and "AutoAttack standard" in names["autoattack"]["attack"]
    n, whole = summary["train_size"], summary["train_size"] + summary["val_size"]  # validation is training data
    assert info["training_data"] == {"dataset": "synthetic", "train_images": n,
                                     "note": f"partial training split: {whole:,} of {2 * whole:,} images"}
    assert info["versions"]["fastadv"] == fastadv.__version__ and info["versions"]["torch"] == torch.__version__

    # the rebuild line, run as written, gives the net the weights load into, strictly; same outputs as the run's
    scope: dict = {}
    exec(info["rebuild"], scope)
    model = scope["model"]
    model.load_state_dict(torch.load(tmp_path / "tiny.pt", weights_only=True))
    x = torch.rand(8, 1, 16, 16)
    assert torch.equal(model.eval()(x), fastadv.load_model(run.run_dir)(x))


def test_without_autoattack_the_model_info_says_so(run, tmp_path):
    (tmp_path / "run").mkdir()
    for name in ("model.pt", "model.safetensors", "config.json", "summary.json"):  # no eval.json
        (tmp_path / "run" / name).write_bytes((run.run_dir / name).read_bytes())
    record = fastadv.export_checkpoint(tmp_path / "run", tmp_path / "plain.pt", "robustbench")
    info = json.loads((tmp_path / record["model_info"]).read_text())
    assert info["autoattack_acc"] is None and info["autoattack_points"] is None
    assert [e["source"] for e in info["evaluations"]] == ["summary.json"] * 3  # clean, AA-lite, final PGD


def test_safetensors_export_writes_no_model_info(run, tmp_path):
    record = fastadv.export_checkpoint(run.run_dir, tmp_path / "m.safetensors")
    assert "model_info" not in record and not list(tmp_path.glob("*.model_info.json"))


def test_a_corrupt_summary_is_one_line_and_nothing_is_written(run, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    for name in ("model.pt", "model.safetensors", "config.json"):
        (tmp_path / "run" / name).write_bytes((run.run_dir / name).read_bytes())
    (tmp_path / "run" / "summary.json").write_text("{not json")
    assert main(["export", str(tmp_path / "run"), "--format", "robustbench", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "summary.json" in err
    assert not list(tmp_path.glob("x*"))


@pytest.mark.parametrize("eps,text", [(8 / 255, "8/255"), (2 / 255, "2/255"), (0.3, "0.3"), (0.5, "0.5")])
def test_eps_is_written_as_robustbench_writes_it(eps, text):
    assert eps_text(eps) == text
