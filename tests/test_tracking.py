"""Tracking: training scalars every log_every steps, the final summary in TensorBoard, W&B (offline) and MLflow
(a local file store), each read back from what was written; logging changes no number of the run."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fastadv
from fastadv.cli import main
from fastadv.config import ConfigError, TrainConfig
from fastadv.training import check_config

ROOT = Path(__file__).resolve().parents[1]
HAS = {name: importlib.util.find_spec(name) is not None for name in ("wandb", "mlflow")}
# 640 training images in batches of 64: 10 full batches an epoch, 40 steps; checks every 8, log points every 5:
# both fall on step 40, so the log points' windows and the metrics rows' windows cover the same 40 steps.
RUN = {"preset": "none", "dataset": "synthetic", "model": "small-cnn", "method": "fgsm-rs", "epochs": 4,
       "train_limit": 640, "batch_size": 64, "lr_max": 0.05, "val_size": 200, "eval_size": 100, "eval_every": 8,
       "log_every": 5, "eps_warmup": 0.5, "final_limit": 128, "final_aa_points": 50, "final_attack_steps": 3,
       "eval_attack_steps": 3, "progress": False, "stop_if_not_learning": False}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One run logged to TensorBoard, and to W&B (offline) and MLflow (file store) where they are installed."""
    tmp = tmp_path_factory.mktemp("tracked")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(tmp / "wandb-config"),
           "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_DATA_DIR": str(tmp / "wandb-data")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = fastadv.train({**RUN, "out_dir": str(tmp), "name": "tracked", "wandb": HAS["wandb"],
                                "mlflow": f"file:{tmp / 'mlruns'}" if HAS["mlflow"] else None})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return result


def events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in acc.Scalars(tag)}


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- TensorBoard
def test_training_scalars_every_log_every_steps(tracked):
    acc, rows = events(tracked.run_dir), metrics(tracked.run_dir)
    loss, train_acc = scalars(acc, "steps/train_loss"), scalars(acc, "steps/train_acc")
    assert sorted(loss) == list(range(5, 41, 5)) == sorted(train_acc)
    for tag in ("steps/lr", "steps/momentum", "steps/eps", "steps/images_per_s"):
        assert sorted(scalars(acc, tag)) == sorted(loss), tag
    assert all(v > 0 for v in scalars(acc, "steps/images_per_s").values())
    assert all(v == pytest.approx(0.9) for v in scalars(acc, "steps/momentum").values())
    # eps ramps over the first half (20 minibatches); step t trained minibatch t with (t - 1) / 20 of eps 0.1
    for step, eps in scalars(acc, "steps/eps").items():
        assert eps == pytest.approx(0.1 * min(1.0, (step - 1) / 20), rel=1e-6)
    # step 40 is a log point and a metrics row: the same LR
    assert scalars(acc, "steps/lr")[40] == pytest.approx(float(rows[-1]["lr"]), rel=1e-5)
    # every window holds 5 full batches (log points) or 8 (rows), over the same 40 steps: the means agree, so no
    # step is lost or counted twice where a held-out check zeroes the loop's sums between two log points
    assert [int(r["step"]) for r in rows] == list(range(8, 41, 8))
    for tag, key in ((loss, "train_loss"), (train_acc, "train_acc")):
        assert sum(tag.values()) / len(tag) == pytest.approx(sum(float(r[key]) for r in rows) / len(rows), rel=1e-5)


def test_validation_checks_and_the_final_summary_reach_tensorboard(tracked):
    acc, rows, summary = events(tracked.run_dir), metrics(tracked.run_dir), tracked.summary
    assert scalars(acc, "adversarial/adv_acc") == {int(r["step"]): pytest.approx(float(r["adv_acc"]), abs=1e-6)
                                                   for r in rows}
    head = summary["headline"]
    assert head["name"] == "AA-lite" and head["points"] == 50
    last = summary["steps"]
    assert scalars(acc, "final/headline_robust_acc") == {last: pytest.approx(head["robust_acc"])}
    assert scalars(acc, "final/headline_points") == {last: 50}
    assert scalars(acc, "final/clean_acc") == {last: pytest.approx(summary["clean_acc"])}
    assert scalars(acc, "final/pgd_robust_acc") == {last: pytest.approx(summary["robust_acc"])}
    assert scalars(acc, "final/kept_step") == {last: summary["kept"]["step"]}
    text = acc.Tensors("final/summary/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"{100 * head['robust_acc']:.2f}% robust" in text and head["attack"] in text
    assert "**kept weights**: raw at step" in text and "completed" in text


def test_logging_and_a_resume_change_no_number_of_the_run(tmp_path):
    """A run with log points every 3 steps, killed and resumed, ends with the weights and metrics.csv of an unbroken
    run without log points (log points read the device sums, nothing else), and logs into the same MLflow run
    (where mlflow is installed), which ends FINISHED."""
    store = f"file:{tmp_path / 'mlruns'}" if HAS["mlflow"] else None
    settings = {**RUN, "epochs": 2, "final_aa_points": 0, "log_every": 3, "out_dir": str(tmp_path), "mlflow": store}
    unbroken = fastadv.train({**settings, "name": "unbroken", "log_every": 0, "mlflow": None})
    env = {**os.environ, "FASTADV_CHECKPOINT_KILL": "2", "PYTHONPATH": str(ROOT)}
    code = f"import fastadv, json; fastadv.train(json.loads({json.dumps({**settings, 'name': 'killed'})!r}))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and not (tmp_path / "killed" / "summary.json").exists()
    ids = (tmp_path / "killed" / "tracking.json").read_text() if store else None
    resumed = fastadv.train(resume=tmp_path / "killed")
    wa = torch.load(unbroken.run_dir / "model.pt", weights_only=True)
    wb = torch.load(resumed.run_dir / "model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics(unbroken.run_dir)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in metrics(resumed.run_dir)]
    assert sorted(scalars(events(resumed.run_dir), "steps/lr")) == list(range(3, 21, 3))  # no step twice
    assert "steps/lr" not in events(unbroken.run_dir).Tags()["scalars"]
    if store:
        from mlflow.tracking import MlflowClient

        assert (tmp_path / "killed" / "tracking.json").read_text() == ids
        client = MlflowClient(tracking_uri=store)
        run = client.get_run(json.loads(ids)["mlflow"])
        assert run.info.status == "FINISHED" and run.info.run_name == "killed"
        assert run.data.metrics["final/clean_acc"] == pytest.approx(resumed.summary["clean_acc"])
        assert {m.step for m in client.get_metric_history(run.info.run_id, "steps/lr")} == set(range(3, 21, 3))


# ----------------------------------------------------------------------------- W&B and MLflow
def wandb_records(run_dir: Path) -> list:
    """The records of the offline run's .wandb file (a LevelDB-style log: 32 KiB blocks of records with a 7-byte
    header, crc32, length, type; the file opens with a 7-byte W&B header) as wandb's protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, records, pos, parts = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # the block's tail is padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last part of one
            record = pb.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
        elif kind == 0:
            break
    return records


@pytest.mark.skipif(not HAS["wandb"], reason="wandb not installed (pip install 'fastadv[wandb]')")
def test_wandb_offline_run_holds_the_config_the_scalars_and_the_final_headline(tracked):
    records = wandb_records(tracked.run_dir)
    config = {i.key: json.loads(i.value_json) for r in records for i in
              (r.run.config.update if r.HasField("run") else r.config.update if r.HasField("config") else [])}
    assert config["seed"] == 0 and config["log_every"] == 5 and config["optimizer"] == "sgd"
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.HasField("history")]
    assert sorted(h["_step"] for h in history if "steps/train_loss" in h) == list(range(5, 41, 5))
    summary = {}
    for r in records:
        if r.HasField("summary"):
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.summary.update})
    head = tracked.summary["headline"]
    assert summary["final/headline_robust_acc"] == pytest.approx(head["robust_acc"])
    assert summary["final/headline"] == "AA-lite" and summary["final/headline_attack"] == head["attack"]
    assert summary["final/clean_acc"] == pytest.approx(tracked.summary["clean_acc"])
    run_id = json.loads((tracked.run_dir / "tracking.json").read_text())["wandb"]
    assert any(r.HasField("run") and r.run.run_id == run_id for r in records)


@pytest.mark.skipif(not HAS["mlflow"], reason="mlflow not installed (pip install 'fastadv[mlflow]')")
def test_mlflow_file_store_holds_the_config_the_scalars_and_the_final_headline(tracked):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file:{tracked.run_dir.parent / 'mlruns'}")
    run = client.get_run(json.loads((tracked.run_dir / "tracking.json").read_text())["mlflow"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    assert run.data.params["seed"] == "0" and run.data.params["optimizer"] == "sgd"
    head = tracked.summary["headline"]
    assert run.data.metrics["final/headline_robust_acc"] == pytest.approx(head["robust_acc"])
    assert run.data.metrics["final/clean_acc"] == pytest.approx(tracked.summary["clean_acc"])
    assert run.data.tags["final/headline"] == "AA-lite" and run.data.tags["final/headline_attack"] == head["attack"]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "steps/train_loss")]
    assert sorted(steps) == list(range(5, 41, 5))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "adversarial/adv_acc")] == list(range(8, 41, 8))
    assert "summary.json" in [f.path for f in client.list_artifacts(run.info.run_id)]


@pytest.mark.parametrize("field, value, flag", [("wandb", True, "--wandb"), ("mlflow", "file:./mlruns", "--mlflow")])
def test_a_tracker_asked_for_but_not_installed_is_one_line(field, value, flag, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == field else real(name, *a))
    cfg = TrainConfig.from_dict({**RUN, field: value})
    with pytest.raises(ConfigError, match=rf"^{flag} needs {field}: pip install 'fastadv\[{field}\]'$"):
        check_config(cfg)
    args = ["train", "--preset", "none", "--dataset", "synthetic", flag] + ([value] if value is not True else [])
    assert main(args + ["--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f": {flag} needs {field}: pip install 'fastadv[{field}]'")


def test_log_every_must_not_be_negative():
    with pytest.raises(ConfigError, match="log_every must be >= 0"):
        TrainConfig(log_every=-1).validated()
