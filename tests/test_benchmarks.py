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
    assert set(recipes) == {"free-shafahi", "fgsm-rs-wong", "n-fgsm", "pgd-2", "fastadv"}
    for name, cfg in recipes.items():
        assert all(cfg.get(k) == ours.get(k) for k in cifar_cpu.SHARED), name
    free, wong, nfgsm = recipes["free-shafahi"], recipes["fgsm-rs-wong"], recipes["n-fgsm"]
    assert (free["replays"], free["lr_max"], free["weight_decay"]) == (8, 0.1, 2e-4)
    assert free["lr_schedule"] == "piecewise:values=1/0.1/0.01,boundaries=0.5/0.75" and "alpha" not in free
    assert (wong["alpha"], wong["lr_max"], wong["weight_decay"]) == ("10/255", 0.2, 5e-4)
    assert (nfgsm["method"], nfgsm["noise"], nfgsm["alpha"]) == ("n-fgsm", 2.0, "8/255")
    assert recipes["pgd-2"]["attack_steps"] == 2


def test_tiny_benchmark_runs_every_recipe_and_gives_a_table():
    import fastadv
    from fastadv.data import DataError

    try:
        cifar10 = fastadv.load_dataset("cifar10", download=False)  # loaded once, given to every run below
    except DataError as exc:
        pytest.skip(f"CIFAR-10 not available ({exc})")
    out = cifar_cpu.run(torch.device("cpu"), data=cifar10, budget=1.0, seeds=1, train_limit=256, final_points=16,
                        aa_points=8, eval_points=16, target=0.0, log=lambda s: None, calibration_minibatches=2,
                        overrides={"model": "fast-cnn", "batch_size": 32})
    assert set(out["summary"]) == set(cifar_cpu.recipes())
    for name, s in out["summary"].items():
        assert s["reached"] == "1/1" and s["median_seconds_to_target"] is not None, name  # target 0: the first check
    assert out["ratio"] is not None and "ratio fastadv / best peer" in out["table"]
    assert out["data_note"].startswith("partial training split")

    # --extend: one more seed, the same calibrated length, the first seed's runs kept (through JSON, as on disk);
    # on fastadv's recipe alone (a result of --only-like runs), to keep the test short
    earlier = json.loads(json.dumps(out))
    for key in ("recipes", "runs", "summary"):
        earlier[key] = {"fastadv": earlier[key]["fastadv"]}
    tiny = {"model": "fast-cnn", "batch_size": 32}
    more = cifar_cpu.run(torch.device("cpu"), data=cifar10, train_limit=256, log=lambda s: None, overrides=tiny,
                         only=["fastadv"], extend=earlier)  # seeds not given: extend adds one
    assert more["seeds"] == 2 and more["final_points"] == 16 and more["target"] == 0.0
    (rs,) = more["runs"].values()
    assert [r["seed"] for r in rs] == [0, 1] and rs[0] == earlier["runs"]["fastadv"][0]
    assert rs[1]["epochs"] == rs[0]["epochs"] and rs[1]["config"]["eval_size"] == 16
    assert more["summary"]["fastadv"]["reached"] == "2/2" and more["earlier"][0]["seeds"] == 1
    with pytest.raises(UserError, match="changed"):  # the full-size recipe is not the one that result ran
        cifar_cpu.run(torch.device("cpu"), data=cifar10, seeds=1, train_limit=256, log=lambda s: None,
                      only=["fastadv"], extend=earlier)


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
        options = run_options(module, args, None)
        assert set(options) <= set(params) and options["quick"] is True and "log" in options
        inspect.signature(module.run).bind(torch.device("cpu"), **options)  # the call __main__ makes binds
    assert run_options(registry()["time-to-robust"], args, None)["seeds"] == 2
    with pytest.raises(TypeError, match="quik"):
        registry()["eval-throughput"].run(torch.device("cpu"), quik=True)
