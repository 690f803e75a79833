"""CLI and config errors: one line on stderr, exit code 2, no traceback, nothing trained."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fastadv.cli import main
from fastadv.config import ConfigError, TrainConfig

BAD_TRAIN = [
    (["--epochs", "0"], "epochs must be > 0"),
    (["--epochs", "-3"], "epochs must be > 0"),
    (["--eps", "1.5"], "eps must be in [0, 1]"),
    (["--eps", "-0.1"], "eps must be in [0, 1]"),
    (["--eps", "abc"], "eps expects float"),
    (["--alpha", "0"], "alpha must be > 0"),
    (["--replays", "0"], "replays must be >= 1"),
    (["--batch-size", "0"], "batch_size must be >= 1"),
    (["--batch-size", "1.5"], "batch_size expects int"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet' (valid: cifar10, cifar100, digits"),
    (["--model", "vgg"], "unknown model 'vgg' (valid: fast-cnn, preact-resnet18"),
    (["--method", "trades"], "unknown method 'trades' (valid: fgsm-rs, free, pgd, standard)"),
    (["--lr-schedule", "cosine"], "unknown schedule 'cosine' (valid: constant, cyclical, exponential, linear"),
    (["--lr-schedule", "one-cycle:peek=0.3"], "schedule 'one-cycle' has no parameter(s) peek"),
    (["--momentum-schedule", "bouncy"], "unknown momentum schedule 'bouncy'"),
    (["--optimizer", "rmsprop"], "optimizer must be one of sgd, adam"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--bogus-flag", "1"], "unrecognized arguments: --bogus-flag"),
    (["--config", "missing.toml"], "config file not found: missing.toml"),
]


@pytest.mark.parametrize("argv,message", BAD_TRAIN, ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_train_input(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(["train", "--out-dir", str(tmp_path / "runs"), *argv]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_bad_config_file_key_and_syntax(tmp_path, capsys):
    (tmp_path / "a.toml").write_text('dataset = "mnist"\nlearning_rate = 0.1\n')
    (tmp_path / "b.toml").write_text('dataset = "mnist\n')
    for name, message in (("a.toml", "unknown config key(s): learning_rate"), ("b.toml", "cannot parse config file")):
        assert main(["train", "--config", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


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


def test_config_coercion_and_fractions():
    cfg = TrainConfig.from_dict({"eps": "8/255", "epochs": "2", "nesterov": "true", "alpha": None})
    assert cfg.eps == pytest.approx(8 / 255) and cfg.epochs == 2.0 and cfg.nesterov is True
    with pytest.raises(ConfigError, match="nesterov expects bool"):
        TrainConfig.from_dict({"nesterov": "maybe"})


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--dataset", "mnist", "--method", "fgsm-rs", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["method"] == "fgsm-rs" and out["name"] == "mnist_1cyc_10ep_0.10"  # thesis D_F2_E_M name


def test_console_script_help_reads_well():
    out = subprocess.run([sys.executable, "-m", "fastadv", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "--replays" in out.stdout and "Free-m's m" in out.stdout
