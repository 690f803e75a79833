"""Every registered model: [0,1] input, normalization inside, weights_only round trip."""
from __future__ import annotations

import pytest
import torch

from fastadv.models import MODELS, Normalize, build_model

SHAPES = {"small-cnn": [(1, 28), (3, 32)], "preact-resnet18": [(3, 32)], "wide-resnet": [(3, 32)],
          "fast-cnn": [(3, 32), (1, 28)], "airbench": [(3, 32), (1, 28)],
          "airbench-half": [(3, 32), (1, 16)]}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_logits_shape_and_normalize_first(name):
    for channels, size in SHAPES[name]:
        model = build_model(name, num_classes=7, channels=channels, size=size, mean=(0.5,) * channels,
                            std=(0.25,) * channels, depth=10, width=1)
        assert isinstance(model[0], Normalize)
        out = model.eval()(torch.rand(2, channels, size, size))
        assert out.shape == (2, 7)


def test_small_cnn_matches_the_published_layout():
    net = build_model("small-cnn", channels=1, size=28)[1]
    assert net.classifier[0].in_features == 1568 and net.classifier[0].out_features == 100
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 16, (4, 4), (2, 2)), (16, 32, (4, 4), (2, 2))]


def test_wide_resnet_32_10_is_madrys_layout():
    wrn = build_model("wide-resnet", depth=32, width=10)[1]
    assert len(wrn.blocks) == 15 and wrn.fc.in_features == 640  # 3 stages x 5 blocks
    assert len(build_model("wide-resnet", depth=28, width=2)[1].blocks) == 12  # (28-4)/6 = 4 per stage
    with pytest.raises(ValueError, match="6n\\+4 or 6n\\+2"):
        build_model("wide-resnet", depth=31)


def test_normalization_is_in_the_state_dict(tmp_path):
    model = build_model("small-cnn", channels=1, size=28, mean=(0.1307,), std=(0.3081,))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    state = torch.load(tmp_path / "w.pt", weights_only=True)
    assert torch.allclose(state["0.mean"].flatten(), torch.tensor([0.1307]))
    fresh = build_model("small-cnn", channels=1, size=28)
    fresh.load_state_dict(state)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(fresh.eval()(x), model.eval()(x))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="valid: airbench, airbench-half, fast-cnn, preact-resnet18, small-cnn, wide-resnet"):
        build_model("vgg")


def test_airbench_has_airbenchs_layout():
    net = build_model("airbench")[1]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 24, (2, 2)), (24, 64, (3, 3)), (64, 64, (3, 3)), (64, 256, (3, 3)), (256, 256, (3, 3)),
        (256, 256, (3, 3)), (256, 256, (3, 3))]
    assert 1.9e6 < sum(p.numel() for p in net.parameters()) < 2.1e6
