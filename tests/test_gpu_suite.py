"""The GPU suite's --tiny mode: the same code as on a GPU, on a CPU with a few hundred CIFAR-10 images."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import gpu_suite


def test_split_and_assemble_give_back_the_same_arrays(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (10, 4, 4, 3), dtype=np.uint8), "y_train": np.arange(10),
              "x_test": rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8), "y_test": np.arange(4)}
    np.savez(tmp_path / "src.npz", **arrays)
    parts = gpu_suite.split(tmp_path / "src.npz", tmp_path / "parts")
    assert [p.name for p in parts] == list(gpu_suite.PARTS)
    whole = gpu_suite.assemble(tmp_path / "parts")
    with np.load(whole) as f:
        for key, value in arrays.items():
            assert np.array_equal(f[key], value), key
    assert gpu_suite.assemble(tmp_path / "parts") == whole  # already whole: nothing to do


def test_tiny_suite_runs_every_recipe_and_writes_results_and_figure(tmp_path):
    import fastadv
    from fastadv.data import DataError

    try:
        fastadv.load_dataset("cifar10", download=False)
    except DataError as exc:
        pytest.skip(f"CIFAR-10 not available ({exc}); set FASTADV_DATA")
    assert gpu_suite.main(["--tiny", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    names = [r["name"] for r in results["runs"]]
    assert names == ["cifar10-fast", "free8-1cycle", "free8-3steps"]
    for r in results["runs"]:
        assert 0 <= r["pgd20_acc"] <= r["clean_acc"] <= 1
        counts = r["aa_lite"]["robust_counts"]  # PGD-20, then after APGD-CE and APGD-T, on AA-lite's points
        assert counts == sorted(counts, reverse=True) and r["aa_lite"]["points"] == 32
        assert r["curve"] and r["train_seconds"] > 0
    free, three = results["runs"][1], results["runs"][2]
    assert three["steps"] == 2 * free["steps"]  # the 3-steps baseline gets twice the iterations
    assert (tmp_path / "heldout.png").stat().st_size > 10_000
    assert "CUDA peak MB" in results["table"]
