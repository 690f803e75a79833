"""Model registry. Every model takes [0,1] images; normalization is its first layer.

``build_model(name, num_classes=10, channels=3, size=32, mean=..., std=..., **kw)`` returns
``nn.Sequential(Normalize(mean, std), net)``, whose ``state_dict`` keys are ``0.mean``,
``0.std``, ``1.<net params>``: load it into the same call's output with
``torch.load(path, weights_only=True)``.

Names: fastadv's own nets (``MODELS``), ``torchvision:NAME`` (any ``torchvision.models`` builder,
e.g. ``torchvision:resnet18``) and ``timm:NAME`` (``pip install timm``). Outside nets are built
untrained with ``num_classes`` outputs, and take their constructor's keyword arguments after a ``?``:
``timm:vit_tiny_patch16_224?img_size=32,patch_size=4``, ``torchvision:resnet18?zero_init_residual=true``
(``key=value`` pairs separated by commas; ints, floats, ``true``/``false``, ``none`` and strings); for images under 64 pixels a ResNet-style stem (7x7 stride-2
conv and max-pool, made for 224-pixel ImageNet) becomes a 3x3 stride-1 conv without the pool, as
CIFAR ResNets have it. One's own ``nn.Module`` needs no registry: ``fastadv.train(cfg, model=...)``.
"""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from torch import nn

from fastadv.errors import UserError, first_line
from fastadv.models.nets import (
    AirbenchHalf,
    AirbenchNet,
    FastCNN,
    PreActResNet18,
    SmallCNN,
    WideResNet,
)

MODELS: dict[str, Callable[..., nn.Module]] = {}
PREFIXES = ("torchvision:", "timm:")  # outside registries, by name prefix
SMALL_INPUT = 64  # below this image size an ImageNet stem is replaced by a CIFAR one


def register_model(name: str):
    """Add ``fn(num_classes, channels, size, **kw) -> nn.Module`` (normalized input, logits out) as ``name``."""
    def wrap(fn):
        MODELS[name] = fn
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


register_model("small-cnn")(SmallCNN)  # 2 conv + 2 fc layers (Wong et al.'s MNIST net)
register_model("preact-resnet18")(PreActResNet18)  # Wong et al.'s CIFAR net
register_model("wide-resnet")(WideResNet)  # depth 32, width 10 is Free-m's WRN-32-10
register_model("fast-cnn")(FastCNN)  # small BN conv net, widths 32/64/128
register_model("airbench")(AirbenchNet)  # airbench94's layout (2.0M parameters)
register_model("airbench-half")(AirbenchHalf)  # the same at half the widths (0.5M): the CPU CIFAR-10 net


class ModelError(UserError, ValueError):
    """A model name or argument that cannot be built (unknown name, bad syntax, rejected argument); one line."""


RESERVED = ("num_classes", "in_chans", "weights", "pretrained")  # set by fastadv from the data; untrained


def model_value(text: str):
    """A keyword argument's value: int, float, true/false, none, else the string (quotes optional)."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def split_model_name(name: str) -> tuple[str, dict]:
    """``"timm:vit_tiny_patch16_224?img_size=32,patch_size=4"`` -> ``("timm:vit_tiny_patch16_224",
    {"img_size": 32, "patch_size": 4})``; a name without ``?`` has no arguments. One-line ModelError on bad
    syntax: arguments on a fastadv net, an item that is not key=value, a key twice, a key fastadv sets."""
    base, mark, rest = name.partition("?")
    if not mark:
        return name, {}
    if not base.startswith(PREFIXES):
        raise ModelError(f"model {name!r}: keyword arguments after '?' are for torchvision:NAME and timm:NAME "
                          f"models (fastadv's nets take --depth / --width)")
    kwargs: dict = {}
    for item in rest.split(","):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not key.isidentifier() or not value:
            raise ModelError(f"model {name!r}: expected NAME?key=value,key=value, got {item.strip()!r}")
        if key in kwargs:
            raise ModelError(f"model {name!r}: {key} given twice")
        if key in RESERVED:
            raise ModelError(f"model {name!r}: {key} is set by fastadv (classes and channels from the data, "
                              f"untrained weights)")
        kwargs[key] = model_value(value)
    return base, kwargs


def is_known(name: str) -> bool:
    """A registered name or an outside one (``torchvision:`` / ``timm:``, with well-formed arguments)."""
    if name in MODELS:
        return True
    return split_model_name(name)[0].startswith(PREFIXES)


def adapt_stem(net: nn.Module, channels: int, size: int) -> nn.Module:
    """A ResNet-style ImageNet stem (``conv1`` 7x7/2, ``maxpool``) as CIFAR's: 3x3/1 conv, no pool, for small
    images; the first conv also takes ``channels`` inputs. Nets without such a stem are returned as built."""
    conv = getattr(net, "conv1", None)
    if isinstance(conv, nn.Conv2d) and (size < SMALL_INPUT or conv.in_channels != channels):
        small = size < SMALL_INPUT
        net.conv1 = nn.Conv2d(channels, conv.out_channels, 3 if small else conv.kernel_size,
                              1 if small else conv.stride, 1 if small else conv.padding, bias=conv.bias is not None)
        if small and isinstance(getattr(net, "maxpool", None), nn.MaxPool2d):
            net.maxpool = nn.Identity()
    return net


def outside_net(name: str, num_classes: int, channels: int, size: int) -> nn.Module:
    """An untrained net from torchvision or timm, its head sized to ``num_classes``, its stem to the images;
    ``name`` may carry the constructor's keyword arguments (``timm:NAME?img_size=32``). One-line ModelError
    (a ValueError) for an unknown name, a missing timm, or arguments the constructor rejects."""
    base, kwargs = split_model_name(name)
    source, _, model_name = base.partition(":")
    if source == "torchvision":
        import torchvision

        if model_name not in torchvision.models.list_models(torchvision.models):
            valid = ", ".join(torchvision.models.list_models(torchvision.models)[:12])
            raise ModelError(f"unknown torchvision model {model_name!r} (e.g. {valid}, ...)")
        build = lambda: torchvision.models.get_model(model_name, weights=None, num_classes=num_classes, **kwargs)
    else:
        try:
            import timm
        except ImportError:
            raise ModelError("timm: models need the timm package: pip install 'fastadv[timm]'") from None
        if not timm.is_model(model_name):
            raise ModelError(f"unknown timm model {model_name!r} (timm.list_models() names them)")
        build = lambda: timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=channels,
                                          **kwargs)
    try:
        net = build()
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        if not kwargs:
            raise
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(f"model {name!r}: {base} does not take {given}: {first_line(exc)}") from None
    return adapt_stem(net, channels, size)


def build_model(name: str, *, num_classes: int = 10, channels: int = 3, size: int = 32,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                **kwargs) -> nn.Sequential:
    """A registered, ``torchvision:NAME`` or ``timm:NAME`` model with a Normalize layer in front.

    Arguments:
        name (str): a ``MODELS`` name (``small-cnn``, ``preact-resnet18``, ``wide-resnet``, ``fast-cnn``,
            ``airbench``, ``airbench-half``), ``torchvision:resnet18``, ``timm:resnet18``, ...
        num_classes, channels, size (int): the task's classes and image shape. (Default: 10, 3, 32)
        mean, std (sequence of float): per-channel statistics on [0,1]. (Default: 0 and 1: no normalization)
        depth, width (int): for the nets that take them (``wide-resnet``).

    Returns:
        ``nn.Sequential(Normalize(mean, std), net)``, untrained; it takes [0,1] images.

    Example::

        model = fastadv.build_model("airbench-half", mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616))
    """
    if not is_known(name):
        raise ValueError(f"unknown model {name!r} (valid: {', '.join(sorted(MODELS))}, torchvision:NAME, timm:NAME)")
    if name in MODELS:
        ctor = MODELS[name]
        accepted = inspect.signature(ctor).parameters
        net = ctor(num_classes=num_classes, channels=channels, size=size,
                   **{k: v for k, v in kwargs.items() if k in accepted})
    else:
        net = outside_net(name, num_classes, channels, size)
    return wrap_model(net, channels, mean, std)


def wrap_model(net: nn.Module, channels: int, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> nn.Sequential:
    """``nn.Sequential(Normalize(mean, std), net)``: the layout every fastadv model has (identity by default)."""
    mean = mean if mean is not None else (0.0,) * channels
    std = std if std is not None else (1.0,) * channels
    return nn.Sequential(Normalize(mean, std), net)


__all__ = ["MODELS", "ModelError", "Normalize", "split_model_name", "build_model", "register_model", "wrap_model", "is_known", "adapt_stem",
           "SmallCNN", "PreActResNet18", "WideResNet", "FastCNN", "AirbenchNet", "AirbenchHalf"]
