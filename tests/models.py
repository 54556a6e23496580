"""Small hand-built networks, one per channel-flow rule, for the tests."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["HAND_BUILT", "build", "randomize_norms"]


def _cbr(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class ResidualNet(nn.Module):
    """Two residual blocks (identity and 1x1 downsample shortcut), then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 16)
        self.conv1, self.conv2 = _cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1)
        self.conv3, self.conv4 = _cbr(16, 32), nn.Conv2d(32, 32, 3, padding=1)
        self.down = nn.Conv2d(16, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.conv2(self.conv1(x)))
        x = torch.relu(self.down(x) + self.conv4(self.conv3(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DenseNet(nn.Module):
    """DenseNet-style: every layer reads the concatenation of all earlier outputs."""

    def __init__(self, growth: int = 12, layers: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(16 + i * growth), nn.ReLU(),
                          nn.Conv2d(16 + i * growth, growth, 3, padding=1))
            for i in range(layers)
        )  # fmt: skip
        self.head = nn.Linear(16 + layers * growth, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.head(torch.cat(features, 1).mean([2, 3]))


class InceptionNet(nn.Module):
    """Inception-style block: four branches of different widths concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 24)
        self.b1 = _cbr(24, 16, 1)
        self.b2 = nn.Sequential(_cbr(24, 12, 1), _cbr(12, 20))
        self.b3 = nn.Sequential(_cbr(24, 8, 1), _cbr(8, 12, 5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _cbr(24, 8, 1))
        self.fc = nn.Linear(56, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)
        return self.fc(F.adaptive_avg_pool2d(x, (1, 1)).flatten(1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleNet(nn.Module):
    """ShuffleNetV2-style units: chunk, a branch on one half, cat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 32)
        self.units = nn.ModuleList(
            nn.Sequential(_cbr(16, 16, 1), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.BatchNorm2d(16), _cbr(16, 16, 1))
            for _ in range(2)
        )  # fmt: skip
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for unit in self.units:
            a, b = x.chunk(2, dim=1)
            x = channel_shuffle(torch.cat((a, unit(b)), dim=1), 2)
        return self.fc(x.mean([2, 3]))


class SENet(nn.Module):
    """Squeeze-and-excitation: a per-channel gate multiplied into the trunk."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _cbr(3, 32)
        self.reduce, self.expand = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.conv2 = _cbr(32, 32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        s = torch.sigmoid(self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        x = self.conv2(x * s)
        return self.fc(x.mean((2, 3)))


class DepthwiseNet(nn.Module):
    """MobileNet-style: expand, depthwise (multiplier 1 and 2), project."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = _cbr(3, 32, 1)
        self.dw = _cbr(32, 32, 3, groups=32)
        self.dw2 = nn.Conv2d(32, 64, 3, padding=1, groups=32)
        self.project = nn.Conv2d(64, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(self.dw2(self.dw(self.expand(x))))
        return self.fc(x.mean((2, 3)))


class GroupedNet(nn.Module):
    """ResNeXt-style grouped 3x3 between two 1x1 convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = _cbr(3, 32, 1)
        self.grouped = _cbr(32, 64, 3, groups=4)
        self.b = nn.Conv2d(64, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.grouped(self.a(x))).mean((2, 3)))


class FlattenNet(nn.Module):
    """Flatten of a 4x4 feature map into a Linear: each channel owns 16 features."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 16), nn.MaxPool2d(2), _cbr(16, 24), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(24 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class ConvHeadNet(nn.Module):
    """SqueezeNet-style conv classifier: the last conv's channels are the classes."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_cbr(3, 32), _cbr(32, 48))
        self.classifier = nn.Sequential(nn.Conv2d(48, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class SharedNet(nn.Module):
    """One conv module applied twice: both calls must keep the same channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(3, 24)
        self.shared = nn.Conv2d(24, 24, 3, padding=1)
        self.bn1, self.bn2 = nn.BatchNorm2d(24), nn.BatchNorm2d(24)
        self.head = nn.Conv2d(24, 32, 1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.bn1(self.shared(x)))
        x = F.relu(self.bn2(self.shared(x)))
        return self.fc(self.head(x).mean((2, 3)))


class UnknownOpNet(nn.Module):
    """An op without a channel rule (cumsum over channels) between prunable parts."""

    def __init__(self) -> None:
        super().__init__()
        self.a = _cbr(3, 32)
        self.b = _cbr(32, 16)
        self.c = _cbr(16, 48)
        self.fc = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(self.a(x))
        x = torch.cumsum(x, dim=1)
        return self.fc(self.c(x).mean((2, 3)))


HAND_BUILT = {
    "residual": ResidualNet,
    "densenet": DenseNet,
    "inception": InceptionNet,
    "shufflenet": ShuffleNet,
    "se": SENet,
    "depthwise": DepthwiseNet,
    "grouped": GroupedNet,
    "flatten": FlattenNet,
    "conv_head": ConvHeadNet,
    "shared": SharedNet,
    "unknown_op": UnknownOpNet,
}


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give norm layers random affine parameters and statistics (in place), so that outputs
    are of order one and every channel matters in equivalence checks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model


def build(name: str, seed: int = 0) -> nn.Module:
    """A hand-built model by name, seeded, with randomized norms, in eval mode."""
    torch.manual_seed(seed)
    return randomize_norms(HAND_BUILT[name](), seed).eval()
