"""Model registry. Every model takes [0,1] images; normalization is its first layer.

``build_model(name, num_classes=10, channels=3, size=32, mean=..., std=..., **kw)``
returns ``nn.Sequential(Normalize(mean, std), net)``, whose ``state_dict`` keys are
``0.mean``, ``0.std``, ``1.<net params>``: load it into the same call's output with
``torch.load(path, weights_only=True)``.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from torch import nn

from fastadv.models.nets import AirbenchNet, FastCNN, PreActResNet18, SmallCNN, WideResNet

MODELS: dict[str, Callable[..., nn.Module]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_model(name: str, description: str):
    def wrap(fn):
        MODELS[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return wrap


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std as buffers saved in the state dict."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


register_model("small-cnn", "2 conv + 2 fc layers (Wong et al.'s MNIST net); adapts to channels and size")(SmallCNN)
register_model("preact-resnet18", "pre-activation ResNet-18 (Wong et al.'s CIFAR net)")(PreActResNet18)
register_model("wide-resnet", "WideResNet-depth-width; depth 32, width 10 is Free-m's WRN-32-10")(WideResNet)
register_model("fast-cnn", "small BN conv net (widths 32/64/128) that trains usefully on a CPU")(FastCNN)
register_model("airbench", "airbench94's layout (2x2 stem, conv groups 64/256/256, GELU; 2.0M params): "
                           "the CPU CIFAR-10 net")(AirbenchNet)


def build_model(name: str, *, num_classes: int = 10, channels: int = 3, size: int = 32,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                **kwargs) -> nn.Sequential:
    """Build a registered model with a Normalize layer in front.

    Extra keyword arguments (``depth``, ``width``) go to the network when it takes them.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r} (valid: {', '.join(sorted(MODELS))})")
    ctor = MODELS[name]
    accepted = inspect.signature(ctor).parameters
    extra = {k: v for k, v in kwargs.items() if k in accepted}
    net = ctor(num_classes=num_classes, channels=channels, size=size, **extra)
    mean = mean if mean is not None else (0.0,) * channels
    std = std if std is not None else (1.0,) * channels
    return nn.Sequential(Normalize(mean, std), net)


__all__ = ["MODELS", "Normalize", "build_model", "register_model", "SmallCNN", "PreActResNet18",
           "WideResNet", "FastCNN", "AirbenchNet"]
