"""Shared fixtures: real MNIST when it can be found, tiny models, one trained checkpoint."""
from __future__ import annotations

import pytest
import torch

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
    """A small-CNN trained with FGSM-RS on 20k MNIST images (about 15 s on 2 cores)."""
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    cfg = {"dataset": "mnist", "method": "fgsm-rs", "eps": 0.3, "alpha": 0.375, "optimizer": "adam",
           "lr_schedule": "one-cycle:peak=0.4,end_cycle=1,div=1e9", "lr_max": 5e-3, "weight_decay": 0.0,
           "epochs": 3, "batch_size": 100, "train_limit": 20000, "final_limit": 1000,
           "out_dir": str(tmp_path_factory.mktemp("runs")), "progress": False, "seed": 0}
    return fastadv.train(cfg, data=mnist)
