"""Bad configs and CLI inputs: one line on stderr naming the bad value, exit code 2, no traceback,
nothing written to the run directory. Every row goes through the real entry point
(``fastadv.cli.main``); a few also through ``python -m fastadv`` in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastadv
from fastadv.cli import main
from fastadv.config import ConfigError, TrainConfig

# Flags that keep a (wrongly) accepted input cheap: it would train a few steps on generated data.
QUICK = ["--dataset", "synthetic", "--epochs", "0.05", "--no-progress", "--eval-size", "16", "--final-limit", "16",
         "--final-attack-steps", "1", "--eval-attack-steps", "1"]

# (id, argv, config files {name: text}, expected message). "{d}" in argv is a scratch folder
# holding the files; the run directory is always {d}/runs and must not be created.
BAD = [
    # --- values out of range or of the wrong type, given as flags
    ("epochs 0", ["--epochs", "0"], {}, "epochs must be > 0, got 0.0"),
    ("epochs negative", ["--epochs", "-3"], {}, "epochs must be > 0, got -3.0"),
    ("epochs inf", ["--epochs", "inf"], {}, "epochs must be a finite number, got inf"),
    ("eps above 1", ["--eps", "1.5"], {}, "eps must be in [0, 1] for L-inf (>= 0 for L2), got 1.5"),
    ("eps negative", ["--eps", "-0.1"], {}, "eps must be in [0, 1] for L-inf (>= 0 for L2), got -0.1"),
    ("eps nan", ["--eps", "nan"], {}, "eps must be a finite number, got nan"),
    ("eps not a number", ["--eps", "abc"], {}, "eps expects a number (e.g. 0.3 or 8/255), got 'abc'"),
    ("eps divides by zero", ["--eps", "8/0"], {}, "eps expects a number (e.g. 0.3 or 8/255), got '8/0'"),
    ("eps without value", ["--eps"], {}, "argument --eps: expected one argument"),
    ("alpha 0", ["--alpha", "0"], {}, "alpha must be > 0, got 0.0"),
    ("replays 0", ["--replays", "0"], {}, "replays must be >= 1, got 0"),
    ("replays fractional", ["--replays", "1.5"], {}, "replays expects an integer, got '1.5'"),
    ("batch size 0", ["--batch-size", "0"], {}, "batch_size must be >= 1, got 0"),
    ("batch size fractional", ["--batch-size", "1.5"], {}, "batch_size expects an integer, got '1.5'"),
    ("lr-max negative", ["--lr-max", "-0.1"], {}, "lr_max must be > 0 or auto, got -0.1"),
    ("momentum 1", ["--momentum", "1.0"], {}, "momentum must be in [0, 1), got 1.0"),
    ("weight decay negative", ["--weight-decay", "-1"], {}, "weight_decay must be >= 0, got -1.0"),
    ("eval size 0", ["--eval-size", "0"], {}, "eval_size must be >= 1, got 0"),
    ("width 0", ["--model", "wide-resnet", "--width", "0"], {}, "width must be >= 1, got 0"),
    ("wide-resnet depth 5", ["--model", "wide-resnet", "--depth", "5"], {},
     "model 'wide-resnet' cannot be built: wide-resnet depth must be 6n+4 or 6n+2, got 5"),
    ("seed negative", ["--seed", "-1"], {}, "seed must be in [0, 2**32), got -1"),
    ("seed huge", ["--seed", "99999999999999999999"], {}, "seed is out of range, got 99999999999999999999"),
    ("name with a slash", ["--name", "a/b"], {}, "name must be a plain folder name (no '/', not '.' or '..')"),
    ("name ..", ["--name", ".."], {}, "name must be a plain folder name"),
    # --- unknown names, with the valid ones
    ("unknown dataset", ["--dataset", "imagenet"], {}, "unknown dataset 'imagenet' (valid: cifar10, cifar100, digits"),
    ("unknown model", ["--model", "vgg"], {}, "unknown model 'vgg' (valid: airbench, airbench-half, fast-cnn, preact-resnet18, small-cnn"),
    ("unknown method", ["--method", "fgsm-ls"], {}, "unknown method 'fgsm-ls' (valid: fgsm, fgsm-mep-cs, fgsm-pgi, "),
    ("unknown schedule", ["--lr-schedule", "cosine"], {}, "unknown schedule 'cosine' (valid: constant, cyclical"),
    ("unknown momentum schedule", ["--momentum-schedule", "bouncy"], {}, "unknown momentum schedule 'bouncy' (valid:"),
    ("unknown optimizer", ["--optimizer", "rmsprop"], {}, "optimizer must be one of sgd, adam, adamw or torch:NAME (e.g. torch:RAdam), got 'rmsprop'"),
    ("unknown precision", ["--precision", "fp8"], {}, "precision must be one of fp32, bf16, fp16, auto, got 'fp8'"),
    ("unknown device", ["--device", "tpu"], {}, "unknown device 'tpu' (valid: auto, cpu, cuda, cuda:N, mps)"),
    ("absent device", ["--device", "cuda:99"], {}, "device 'cuda:99' requested but"),
    ("unknown flag", ["--bogus-flag", "1"], {}, "unrecognized arguments: --bogus-flag"),
    # --- schedules: unknown or mistyped parameters, contradictions, values out of range
    ("schedule typo", ["--lr-schedule", "one-cycle:peek=0.3"], {}, "schedule 'one-cycle' has no parameter(s) peek"),
    ("schedule word for number", ["--lr-schedule", "one-cycle:peak=abc"], {},
     "lr_schedule 'one-cycle:peak=abc': peak expects a number, got 'abc'"),
    ("schedule peak after end", ["--lr-schedule", "one-cycle:peak=0.9,end_cycle=0.5"], {},
     "inconsistent parameters: need 0 <= peak <= end_cycle <= 1, got peak=0.9, end_cycle=0.5"),
    ("piecewise counts", ["--lr-schedule", "piecewise:values=1/0.1,boundaries=0.5/0.75"], {},
     "piecewise needs one more value than boundaries, got 2 values and 2 boundaries"),
    ("schedule nan", ["--lr-schedule", "one-cycle:peak=nan"], {}, "peak must be a finite number, got nan"),
    ("negative learning rate", ["--lr-schedule", "constant:lr_max=-1"], {},
     "lr_schedule 'constant:lr_max=-1' gives learning rates from -1 to -1; they must be >= 0"),
    ("momentum above 1", ["--momentum-schedule", "one-cycle:high=1.5"], {},
     "momentum schedule 'one-cycle:high=1.5' has inconsistent parameters: need 0 <= low <= high < 1"),
    # --- files and folders
    ("config not found", ["--config", "{d}/missing.toml"], {}, "config file not found: "),
    ("config is a folder", ["--config", "{d}"], {}, "is a directory"),
    ("data dir not found", ["--data-dir", "{d}/no-data"], {}, "data_dir not found: "),
    ("out dir is a file", ["--out-dir", "{d}/file.toml"], {"file.toml": ""}, "cannot create run directory"),
    # --- config files with bad content
    ("file unknown key", ["--config", "{d}/c.toml"], {"c.toml": "lr_maxx = 0.1\n"},
     "unknown config key(s): lr_maxx (did you mean lr_max?)"),
    ("file bad toml", ["--config", "{d}/c.toml"], {"c.toml": 'dataset = "mnist\n'}, "cannot parse config file"),
    ("file bad json", ["--config", "{d}/c.json"], {"c.json": '{"eps": 0.1,'}, "cannot parse config file"),
    ("file json list", ["--config", "{d}/c.json"], {"c.json": "[1, 2]"},
     "must hold a table of key = value pairs, not a list"),
    ("file nested table", ["--config", "{d}/c.toml"], {"c.toml": "[train]\neps = 0.1\n"},
     "[train] is a section; fastadv configs are one flat table"),
    ("file eps nan", ["--config", "{d}/c.toml"], {"c.toml": "eps = nan\n"}, "eps must be a finite number, got nan"),
    ("file lr inf", ["--config", "{d}/c.toml"], {"c.toml": "lr_max = inf\n"},
     "lr_max must be a finite number, got inf"),
    ("file bool for int", ["--config", "{d}/c.toml"], {"c.toml": "batch_size = true\n"},
     "batch_size expects an integer, got True"),
    ("file fraction for int", ["--config", "{d}/c.toml"], {"c.toml": "batch_size = 64.5\n"},
     "batch_size expects an integer, got 64.5"),
    ("file list for number", ["--config", "{d}/c.toml"], {"c.toml": "eps = [0.1]\n"},
     "eps expects a number (e.g. 0.3 or 8/255), got [0.1]"),
    ("file word for number", ["--config", "{d}/c.toml"], {"c.toml": 'eps = "small"\n'},
     "eps expects a number (e.g. 0.3 or 8/255), got 'small'"),
    ("file number for name", ["--config", "{d}/c.toml"], {"c.toml": "method = 5\n"}, "method expects a string, got 5"),
    ("file null", ["--config", "{d}/c.json"], {"c.json": '{"replays": null}'}, "replays cannot be empty"),
    ("file bad schedule", ["--config", "{d}/c.toml"], {"c.toml": 'lr_schedule = "one-cycle:peak=2"\n'},
     "need 0 <= peak <= end_cycle <= 1, got peak=2.0"),
    ("file unknown method", ["--config", "{d}/c.toml"], {"c.toml": 'method = "fgsm-ls"\n'}, "unknown method 'fgsm-ls'"),
    ("file yaml", ["--config", "{d}/c.yaml"], {"c.yaml": "eps: 0.1\n"}, ".yaml is not supported (use .toml or .json)"),
    ("file not utf-8", ["--config", "{d}/c.toml"], {"c.toml": b"\xff\xfe eps = 1"}, "cannot parse config file"),
    ("flag overrides file, still bad", ["--config", "{d}/c.toml", "--eps", "2"], {"c.toml": "eps = 0.1\n"},
     "eps must be in [0, 1] for L-inf (>= 0 for L2), got 2.0"),
]


def write_files(folder: Path, files: dict) -> None:
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)


def expand(argv: list[str], folder: Path) -> list[str]:
    return [a.replace("{d}", str(folder)) for a in argv]


def test_table_is_large_and_covers_files_and_flags():
    assert len(BAD) >= 20
    assert sum(bool(files) for _, _, files, _ in BAD) >= 10  # bad config files, not only flags
    assert len({row[0] for row in BAD}) == len(BAD)


@pytest.mark.parametrize("argv,files,message", [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(argv, files, message, tmp_path, capsys):
    write_files(tmp_path, files)
    runs = tmp_path / "runs"
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        code = main(["train", "--out-dir", str(runs), *QUICK, *expand(argv, tmp_path)])
    except SystemExit as exc:  # argparse errors exit from inside main
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert message in err, err
    assert err.count("\n") == 1 and err.startswith("fastadv") and "Traceback" not in err, err
    assert not runs.exists()  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("row", ["file nested table", "out dir is a file"])
def test_no_traceback_reaches_the_terminal(row, tmp_path):
    """The same rows through ``python -m fastadv`` in a subprocess: stderr is exactly one line."""
    _, argv, files, message = next(r for r in BAD if r[0] == row)
    write_files(tmp_path, files)
    root = Path(fastadv.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "fastadv", "train", "--out-dir", str(tmp_path / "runs"), *QUICK,
                          *expand(argv, tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()


def test_model_too_small_for_the_images_fails_before_the_run_directory(tmp_path, capsys, monkeypatch):
    """A registered dataset of 4x4 images and fast-cnn's three 2x2 poolings: caught when the model is
    built for the loaded data (the images' size is not known before), still before anything is written."""
    from fastadv import data as data_module

    def tiny(roots, download):
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(64, 4, 4), dtype=np.uint8)
        y = rng.integers(0, 10, size=64)
        return (x, y, x[:16], y[:16]), "generated (test)"

    info = data_module.DatasetInfo(loader=tiny, num_classes=10, mean=(0.5,), std=(0.25,), augment=False,
                                   description="4x4 test images")
    monkeypatch.setitem(data_module.DATASETS, "tiny", info)
    code = main(["train", "--dataset", "tiny", "--model", "fast-cnn", "--out-dir", str(tmp_path / "runs"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "model 'fast-cnn' cannot be built for tiny's 1x4x4 images" in err
    assert not (tmp_path / "runs").exists()


def test_python_api_raises_config_error():
    """The same checks guard the Python API: ConfigError (a ValueError), nothing trained."""
    with pytest.raises(ConfigError, match="eps must be a finite number"):
        fastadv.train({"dataset": "synthetic", "eps": float("nan")})
    with pytest.raises(ConfigError, match="momentum must be in"):
        TrainConfig(momentum=1.0).validated()
    with pytest.raises(ConfigError, match="a config must be a mapping"):
        TrainConfig.from_dict([("eps", 0.1)])
    with pytest.raises(ConfigError, match="replays must be >= 1"):
        TrainConfig().replace(replays=0)


def test_good_values_in_their_accepted_forms(tmp_path):
    """Forms that are not mistakes: numbers as strings in a file ("8/255"), 64.0 for an integer,
    'none' for an optional value, an empty file (all defaults), a flag overriding a bad file value."""
    (tmp_path / "c.toml").write_text('eps = "8/255"\nbatch_size = 64.0\nalpha = "none"\nepochs = -1\n')
    cfg = TrainConfig.from_file(tmp_path / "c.toml", {"epochs": "2"})
    assert cfg.eps == pytest.approx(8 / 255) and cfg.batch_size == 64 and cfg.alpha is None and cfg.epochs == 2
    (tmp_path / "empty.toml").write_text("")
    assert TrainConfig.from_file(tmp_path / "empty.toml") == TrainConfig()
