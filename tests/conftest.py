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
    cfg = {"preset": "mnist", "epochs": 3, "train_limit": 20000, "final_limit": 1000, "name": "robust-fixture",
           "final_aa_points": 0,  # no test reads the fixture's AA-lite (16 s on 1,000 points)
           "out_dir": str(tmp_path_factory.mktemp("runs")), "progress": False, "seed": 0}
    return fastadv.train(cfg, data=mnist)


@pytest.fixture(scope="session")
def briefly_trained(synthetic):
    """``n -> model``: a small-cnn trained with SGD on the first n synthetic images (batches of 64;
    not robust), in eval mode; the same n gives the same weights."""
    import torch
    import torch.nn.functional as F

    def train(n: int):
        torch.manual_seed(0)
        model = fastadv.build_model("small-cnn", channels=1, size=16, mean=synthetic.mean, std=synthetic.std)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = synthetic.x_train.float() / 255
        for i in range(0, n, 64):
            loss = F.cross_entropy(model(x[i:i + 64]), synthetic.y_train[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.eval()

    return train
