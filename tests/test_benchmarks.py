"""The cifar-cpu peer benchmark runs end to end (tiny: a few hundred images, seconds of training per recipe)."""
from __future__ import annotations

import json

import pytest
import torch

from benchmarks import cifar_cpu
from fastadv.errors import UserError


def test_peer_recipes_share_the_net_data_and_engine_and_differ_as_published():
    recipes = cifar_cpu.recipes()
    ours = recipes["fastadv"]
    peers = {"free-shafahi", "fgsm-rs-wong", "n-fgsm", "pgd-2"}
    assert set(recipes) == peers | {f"{p}+avg" for p in peers} | {"fastadv", "fastadv-free"}
    for name, cfg in recipes.items():
        assert all(cfg.get(k) == ours.get(k) for k in cifar_cpu.SHARED), name
        assert "time_budget" not in cfg  # the frontier sets each run's length
    free, wong, nfgsm = recipes["free-shafahi"], recipes["fgsm-rs-wong"], recipes["n-fgsm"]
    assert (free["replays"], free["lr_max"], free["weight_decay"]) == (8, 0.1, 2e-4)
    assert free["lr_schedule"] == "piecewise:values=1/0.1/0.01,boundaries=0.5/0.75" and "alpha" not in free
    assert (wong["alpha"], wong["lr_max"], wong["weight_decay"]) == ("10/255", 0.2, 5e-4)
    assert (nfgsm["method"], nfgsm["noise"], nfgsm["alpha"]) == ("n-fgsm", 2.0, "8/255")
    assert recipes["pgd-2"]["attack_steps"] == 2
    for peer in peers:  # as published: no averaging, no smoothing; "+avg" adds only fastadv's averaging
        assert (recipes[peer]["average"], recipes[peer]["keep"], recipes[peer]["label_smoothing"]) == ("none", "last", 0)
        plus = {k: v for k, v in recipes[f"{peer}+avg"].items() if recipes[peer].get(k) != v}
        assert plus == cifar_cpu.AVERAGING


def test_time_to_target_interpolates_on_log_budget():
    assert cifar_cpu.time_to_target({120: 0.30, 240: 0.40, 480: 0.45}, 0.35) == pytest.approx(120 * 2 ** 0.5)
    assert cifar_cpu.time_to_target({120: 0.36, 240: 0.40}, 0.35) == 120
    assert cifar_cpu.time_to_target({120: 0.20, 240: 0.30}, 0.35) is None
    order = cifar_cpu.plan(["a", "b"], (120, 240, 480), 2)
    assert order[:2] == [(0, 240, "a"), (0, 240, "b")] and len(order) == 12  # the middle budget first


def test_tiny_frontier_runs_resumes_from_its_ledger_and_gives_a_table(tmp_path):
    import fastadv
    from fastadv.data import DataError

    try:
        cifar10 = fastadv.load_dataset("cifar10", download=False)  # loaded once, given to every run below
    except DataError as exc:
        pytest.skip(f"CIFAR-10 not available ({exc})")
    ledger = tmp_path / "frontier.json"
    tiny = dict(data=cifar10, budgets=(0.5, 1.0), seeds=1, train_limit=300, final_points=16, aa_points=8,
                eval_points=16, target=0.0, log=lambda s: None, calibration_minibatches=2, ledger=ledger,
                only=["n-fgsm", "n-fgsm+avg", "fastadv"], overrides={"model": "fast-cnn", "batch_size": 32,
                                                                       "val_size": 50})
    first = cifar_cpu.run(torch.device("cpu"), max_runs=4, **tiny)  # stopped after 4 runs, as a killed job
    assert json.loads(ledger.read_text())["runs"].__len__() == 4
    out = cifar_cpu.run(torch.device("cpu"), **tiny)  # the rerun adds only the 2 missing runs
    book = json.loads(ledger.read_text())
    assert len(book["runs"]) == 6 and book["runs"][:4] == json.loads(json.dumps(book["runs"][:4]))
    assert len(first["summary"]) >= 2 and set(out["summary"]) == {"n-fgsm", "n-fgsm+avg", "fastadv"}
    for name, s in out["summary"].items():
        assert s["time_to_target"] == 0.5 and set(s["budgets"]) == {"0", "1"}, name  # target 0: the first budget
    ratio = out["ratios"]["fastadv / best published peer"]
    assert ratio["peer"] == "n-fgsm" and ratio["ratio"] == 1.0 and "AA-lite" in out["table"]
    assert ledger.with_suffix(".png").is_file()
    kept = {r["recipe"]: r["kept"]["which"] for r in book["runs"]}
    assert kept["n-fgsm"] == "raw" and kept["fastadv"] in ("raw", "average")


def test_cpu_speed_measures_every_variant_and_names_what_auto_picks():
    from benchmarks import cpu_speed

    out = cpu_speed.run(torch.device("cpu"), quick=True, nets=[("small-cnn / MNIST", "small-cnn", 1, 28, 8)],
                        compile_too=False, log=lambda s: None)
    (row,) = out["rows"]
    assert set(row["img_per_s"]) == {"fp32-NCHW", "fp32-NHWC", "bf16-NCHW", "bf16-NHWC"}
    assert all(v > 0 for v in row["img_per_s"].values())
    assert row["fastest"] in row["img_per_s"] and row["auto"] in row["img_per_s"]
    assert 0 < row["auto_vs_fastest"] <= 1 and "auto/fastest" in out["table"]


def test_benchmark_runs_take_no_catch_all_and_get_only_their_options():
    """`python -m benchmarks` passes each run only the options its signature names; a misspelt keyword
    in a direct call is a TypeError (no `**_` swallows it)."""
    import inspect

    from benchmarks import gpu_suite, registry
    from benchmarks.__main__ import parse_args, run_options

    args = parse_args(["--quick", "--seeds", "2", "--budget", "5"])
    for name, module in {**registry(), "gpu-suite": gpu_suite}.items():
        params = inspect.signature(module.run).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), f"{name}.run takes **kwargs"
        options = run_options(module, args)
        assert set(options) <= set(params) and options["quick"] is True and "log" in options
        inspect.signature(module.run).bind(torch.device("cpu"), **options)  # the call __main__ makes binds
    assert run_options(registry()["time-to-robust"], args)["seeds"] == 2
    with pytest.raises(TypeError, match="quik"):
        registry()["eval-throughput"].run(torch.device("cpu"), quik=True)
