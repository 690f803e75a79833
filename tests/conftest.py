"""Shared fixtures: real MNIST when it can be found, tiny models, one trained checkpoint."""
from __future__ import annotations

import pytest

import fastadv
from fastadv.data import DataError


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST from --data-dir / $FASTADV_DATA / the cache, without downloading."""
    try:
        return fastadv.load_dataset("mnist", download=False)
    except DataError as exc:
        pytest.skip(f"real MNIST not available ({exc}); set FASTADV_DATA")


@pytest.fixture(scope="session")
def synthetic():
    return fastadv.load_dataset("synthetic")


@pytest.fixture(scope="session")
def robust_mnist_run(mnist, tmp_path_factory):
    """The demo recipe (PGD-3 with an eps ramp) on 20,000 MNIST images for 3 epochs: a robust small-cnn."""
    from fastadv.demo import DEMO_CONFIG

    cfg = {**DEMO_CONFIG, "epochs": 3, "train_limit": 20000, "final_limit": 1000, "name": "robust-fixture",
           "out_dir": str(tmp_path_factory.mktemp("runs")), "progress": False, "seed": 0}
    return fastadv.train(cfg, data=mnist)
