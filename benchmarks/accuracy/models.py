"""Four small CNN families for the accuracy study, plain ``torch.nn`` modules.

Every constructor is ``(in_channels=1, num_classes=10, image_size=28)`` and works for the
28x28 MNIST and the 8x8 digits images. To keep the full study within its time budget on
two CPU cores, 28x28 inputs go through a stride-2 stem (14x14 after it); 8x8 inputs keep
stride 1. Layers keep PyTorch's default initialization. Everything traces with
``torch.fx``: modules, ``torch.cat``, ``+`` and ``nn.Flatten`` only.

- ``ResNetS``: stem conv3x3 16, three stages (16, 32, 64) of one BasicBlock each, stride 2
  at stages 2 and 3, 1x1 conv + BN shortcut where stride or width change; ~77k params.
- ``VGGS``: six conv3x3-BN-ReLU (16, 16, 32, 32, 64, 64), MaxPool2d(2) after each pair,
  Flatten, Linear(64*s*s, 64), ReLU, Linear(64, classes), s the final side (1 for both
  data sets: 14 -> 7 -> 3 -> 1 and 8 -> 4 -> 2 -> 1).
- ``DenseNetS``: stem conv 16, two dense blocks (growth 12, 3 BN-ReLU-conv3x3 layers each,
  outputs concatenated along channels), a BN-ReLU-conv1x1 transition halving the channels
  plus AvgPool2d(2) between them, final BN-ReLU, global average pool, Linear.
- ``MobileNetS``: stem conv 16, four inverted-residual blocks (1x1 expand x4,
  depthwise 3x3, 1x1 project; BN, ReLU6; residual add where shapes match) of widths
  16, 24, 32, 48 (stride 2 at the second and third), global average pool, Linear.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["FAMILIES", "DenseNetS", "MobileNetS", "ResNetS", "VGGS", "build", "stem_stride"]


def stem_stride(image_size: int) -> int:
    """2 for MNIST-sized inputs (to keep the MACs small), 1 for tiny ones."""
    return 2 if image_size >= 16 else 1


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2, self.bn2 = _conv_bn(c_out, c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNetS(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn(in_channels, 16, 3, stem_stride(image_size)), nn.ReLU(inplace=True)
        )
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.layer3 = BasicBlock(32, 64, 2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x))


class VGGS(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, side = in_channels, -(-image_size // stem_stride(image_size))
        for i, width in enumerate((16, 16, 32, 32, 64, 64)):
            stride = stem_stride(image_size) if i == 0 else 1
            layers += [*_conv_bn(c_in, width, 3, stride), nn.ReLU(inplace=True)]
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` channels, concatenated to its input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.relu(self.norm(x)))], dim=1)


def _dense_block(c_in: int, growth: int, layers: int) -> tuple[nn.Sequential, int]:
    block = nn.Sequential(*(DenseLayer(c_in + i * growth, growth) for i in range(layers)))
    return block, c_in + layers * growth


class DenseNetS(nn.Module):
    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
        growth: int = 12, layers: int = 3,
    ) -> None:  # fmt: skip
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 16, 3, stem_stride(image_size), 1, bias=False)
        self.block1, c = _dense_block(16, growth, layers)
        self.transition = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2),
        )  # fmt: skip
        self.block2, c = _dense_block(c // 2, growth, layers)
        self.head = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.fc(self.head(x))


class InvertedResidual(nn.Module):
    """1x1 expand (x4), depthwise 3x3, 1x1 project; residual add where shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hidden = c_in * expand
        self.block = nn.Sequential(
            *_conv_bn(c_in, hidden, 1), nn.ReLU6(inplace=True),
            *_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True),
            *_conv_bn(hidden, c_out, 1),
        )  # fmt: skip
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetS(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn(in_channels, 16, 3, stem_stride(image_size)), nn.ReLU6(inplace=True)
        )
        self.blocks = nn.Sequential(
            InvertedResidual(16, 16, 1),
            InvertedResidual(16, 24, 2),
            InvertedResidual(24, 32, 2),
            InvertedResidual(32, 48, 1),
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))


FAMILIES: dict[str, type[nn.Module]] = {
    "resnet": ResNetS,
    "vgg": VGGS,
    "densenet": DenseNetS,
    "mobilenet": MobileNetS,
}


def build(family: str, in_channels: int = 1, num_classes: int = 10,
          image_size: int = 28) -> nn.Module:  # fmt: skip
    """A freshly initialized model of ``family`` (seed the global RNG first)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family](in_channels, num_classes, image_size)
