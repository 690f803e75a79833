"""Packaging facts a user relies on: the Python it needs, the licence, TensorBoard in the base install, and a
run that says so in one line when TensorBoard events cannot be written."""
from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

from fastadv.training.log import RunLog

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_requires_python_covers_every_module_the_package_imports():
    """The package imports tomllib (3.11+), so requires-python says 3.11."""
    assert PROJECT["requires-python"] == ">=3.11"
    uses_tomllib = [p for p in (ROOT / "fastadv").rglob("*.py")
                    if any(isinstance(n, ast.Import) and any(a.name == "tomllib" for a in n.names)
                           for n in ast.walk(ast.parse(p.read_text())))]
    assert uses_tomllib  # if this ever becomes empty, 3.10 may be declared again


def test_the_mit_licence_ships():
    text = (ROOT / "LICENSE").read_text()
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert text.startswith("MIT License") and "Copyright (c) 2026 the fastadv authors" in text


def test_tensorboard_is_in_the_base_install():
    assert any(dep.split(">")[0].split("=")[0].strip() == "tensorboard" for dep in PROJECT["dependencies"])


def test_a_run_without_tensorboard_says_its_events_are_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    log = RunLog(tmp_path, total=10, progress=False)
    assert log.tb is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorBoard events are off" in err[0] and "pip install tensorboard" in err[0]
    assert (tmp_path / "metrics.csv").exists()
    log.close()


def test_a_run_with_tensorboard_writes_events_and_says_nothing(tmp_path, capsys):
    log = RunLog(tmp_path, total=10, progress=False)
    assert log.tb is not None and capsys.readouterr().err == ""
    log.close()
    assert list(tmp_path.glob("events.out.tfevents.*"))
