"""Network bodies. Each takes normalized N x C x H x W input and returns logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class SmallCNN(nn.Module):
    """conv(C->16, k4, s2) - conv(16->32, k4, s2) - fc(->100) - fc(100->classes).

    For 1 x 28 x 28 input the flattened size is 32 * 7 * 7 = 1568, as in Wong et al.
    """

    def __init__(self, num_classes: int = 10, channels: int = 1, size: int = 28):
        super().__init__()
        s = conv_out(conv_out(size, 4, 2, 1), 4, 2, 1)
        if s < 1:
            raise ValueError(f"small-cnn needs images of at least 4x4 pixels, got {size}x{size}")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Linear(32 * s * s, 100), nn.ReLU(), nn.Linear(100, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18: stages of 2 blocks at widths 64/128/256/512."""

    def __init__(self, num_classes: int = 10, channels: int = 3, size: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class WideResNet(nn.Module):
    """WideResNet with pre-activation blocks in three stages of widths 16k, 32k, 64k.

    Blocks per stage: (depth - 4) / 6 (Zagoruyko & Komodakis, e.g. WRN-34-10, WRN-28-10);
    a depth with (depth - 2) divisible by 6 instead uses Madry's layout, 32 -> 5 blocks per
    stage, the WRN-32-10 of the Free-m paper.
    """

    def __init__(self, num_classes: int = 10, channels: int = 3, size: int = 32,
                 depth: int = 34, width: int = 10):
        super().__init__()
        if (depth - 4) % 6 == 0:
            n = (depth - 4) // 6
        elif (depth - 2) % 6 == 0:
            n = (depth - 2) // 6
        else:
            raise ValueError(f"wide-resnet depth must be 6n+4 or 6n+2, got {depth}")
        if n < 1:
            raise ValueError(f"wide-resnet depth too small: {depth}")
        widths = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        blocks, cin = [], 16
        for cout, stride in zip(widths, (1, 2, 2)):
            for i in range(n):
                blocks.append(PreActBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FastCNN(nn.Module):
    """A small VGG-style net (widths 32/64/128, BN, max-pool) that is quick on a CPU.

    About 1,100 CIFAR images per second forward+backward on 2 CPU cores.
    """

    def __init__(self, num_classes: int = 10, channels: int = 3, size: int = 32, widths=(32, 64, 128)):
        super().__init__()
        layers, cin = [conv_bn(channels, widths[0])], widths[0]
        for w in widths:
            layers += [conv_bn(cin, w), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_max_pool2d(self.features(x), 1).flatten(1))


class ConvGroup(nn.Module):
    """conv 3x3 - max-pool 2 - BN - GELU - conv 3x3 - BN - GELU (airbench's block: pool early, so the
    second conv runs at a quarter of the pixels)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.bn1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.bn2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The airbench94 network layout (Keller Jordan, 2024), as a plain trainable net.

    A 2x2 convolution stem (24 channels, no padding: 32 -> 31 pixels), then three ConvGroups of
    widths 64/256/256, global max-pool and a linear head: 2.0M parameters. airbench's training
    tricks (frozen whitening stem, lookahead, label smoothing, test-time flips) are left out: they
    are tuned for clean accuracy, and test-time augmentation would change the model an attack sees.
    Measured on 2 CPU cores (bf16, channels_last, batch 128, forward + backward): 1,290 images/s,
    between fast-cnn (3,490) and a half-width ResNet-9 (960); see docs/PERFORMANCE.md.
    """

    def __init__(self, num_classes: int = 10, channels: int = 3, size: int = 32, widths=(64, 256, 256)):
        super().__init__()
        if size < 8:
            raise ValueError(f"airbench needs images of at least 8x8 pixels, got {size}x{size}")
        self.stem = nn.Conv2d(channels, 24, 2)
        groups, cin = [], 24
        for w in widths:
            groups.append(ConvGroup(cin, w))
            cin = w
        self.groups = nn.Sequential(*groups)
        self.fc = nn.Linear(cin, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(F.gelu(self.stem(x)))
        return self.fc(F.adaptive_max_pool2d(x, 1).flatten(1))


class AirbenchHalf(AirbenchNet):
    """``AirbenchNet`` at half the widths (32/128/128): 0.5M parameters, 2.3x its speed on a CPU."""

    def __init__(self, num_classes: int = 10, channels: int = 3, size: int = 32):
        super().__init__(num_classes, channels, size, widths=(32, 128, 128))
