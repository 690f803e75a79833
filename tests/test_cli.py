"""CLI errors of eval and the parser, config coercion, --dry-run, --help.

The table of bad train configs and flags is in test_validation.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastadv.cli import main
from fastadv.config import ConfigError, TrainConfig


@pytest.mark.parametrize("argv,message", [
    (["eval", "no/such/run"], "no such run directory or weights file"),
    (["eval", "RUN", "--steps", "0"], "--steps must be >= 1"),
    (["eval", "RUN", "--eps", "2"], "--eps must be in [0, 1]"),
    (["eval", "RUN", "--eps", "x/255"], "--eps expects a number"),
    (["eval", "RUN", "--attack", "cw"], "unknown attack 'cw'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_eval_input(argv, message, capsys, tmp_path):
    (tmp_path / "RUN").mkdir()
    argv = [str(tmp_path / "RUN") if a == "RUN" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_eval_of_garbage_weights_is_one_line(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"garbage")
    (tmp_path / "config.json").write_text(json.dumps({"eps": 0.3, "arch": {"model": "small-cnn", "dataset": "mnist",
                                                                             "channels": 1, "size": 28}}))
    assert main(["eval", str(tmp_path / "model.pt")]) == 2
    err = capsys.readouterr().err
    assert "cannot read weights" in err and err.count("\n") == 1


@pytest.mark.parametrize("text,message", [("{not json", "Expecting property name"),
                                          ("[1, 2]", "expected a JSON object, got list")])
def test_eval_of_a_run_with_a_corrupt_config_is_one_line(tmp_path, capsys, text, message):
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "config.json").write_text(text)
    for target in (tmp_path, tmp_path / "model.pt"):
        assert main(["eval", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"cannot read {tmp_path / 'config.json'}: {message}" in err and err.count("\n") == 1


def test_config_coercion_and_fractions():
    cfg = TrainConfig.from_dict({"eps": "8/255", "epochs": "2", "nesterov": "true", "alpha": None})
    assert cfg.eps == pytest.approx(8 / 255) and cfg.epochs == 2.0 and cfg.nesterov is True
    with pytest.raises(ConfigError, match="nesterov expects true or false"):
        TrainConfig.from_dict({"nesterov": "maybe"})


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--dataset", "mnist", "--method", "fgsm-rs", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["method"] == "fgsm-rs" and out["name"] == "mnist_1cyc_8ep_0.005"  # thesis D_F2_E_M name (the mnist preset: 8 epochs, lr 5e-3)


def test_console_script_help_reads_well():
    out = subprocess.run([sys.executable, "-m", "fastadv", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "--replays" in out.stdout and "Free-m's m" in out.stdout
