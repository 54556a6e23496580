"""Random CNNs for property tests: a hypothesis strategy that draws a program of blocks.

A program is a list of blocks applied in turn to one tensor; each block names what it
exercises in the channel-coupling analysis: plain, grouped and depthwise convs, residual
adds, concatenations, splits, channel shuffles, squeeze-and-excitation, pooling and a
module called twice (shared). The head is global pooling or flatten -> Linear, and the
output a tensor, a tuple or a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from hypothesis import strategies as st

__all__ = ["RandomNet", "Spec", "specs"]

BLOCKS = ("conv", "grouped", "dw", "res", "cat", "split", "shuffle", "se", "pool", "shared")


@dataclass(frozen=True)
class Spec:
    """What to build: input channels, image size, blocks (kind, width), head and output."""

    in_channels: int
    size: int
    blocks: tuple[tuple[str, int], ...]
    head: str  # "pool" or "flatten"
    output: str  # "tensor", "tuple" or "dict"


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    blocks = draw(st.lists(st.tuples(st.sampled_from(BLOCKS), st.sampled_from((4, 8, 12, 16))),
                           min_size=1, max_size=6))  # fmt: skip
    return Spec(
        in_channels=draw(st.sampled_from((1, 3))),
        size=draw(st.sampled_from((8, 12))),
        blocks=tuple(blocks),
        head=draw(st.sampled_from(("pool", "flatten"))),
        output=draw(st.sampled_from(("tensor", "tuple", "dict"))),
    )


def _bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())


class RandomNet(nn.Module):
    """The model a :class:`Spec` describes (norms randomized, so verify sees their effect)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec
        c, size = spec.in_channels, spec.size
        self.stem = nn.Conv2d(c, 8, 3, padding=1)
        c = 8
        self.blocks = nn.ModuleList()
        self.kinds: list[str] = []
        for kind, width in spec.blocks:
            block, c, size = self._block(kind, width, c, size)
            if block is None:
                continue
            self.blocks.append(block)
            self.kinds.append(kind)
        self.head_norm = _bn_relu(c)
        features = c if spec.head == "pool" else c * size * size
        self.fc = nn.Linear(features, 5)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)

    def _block(self, kind: str, width: int, c: int, size: int) -> tuple[nn.Module | None, int, int]:
        if kind == "conv":
            return nn.Sequential(nn.Conv2d(c, width, 3, padding=1), _bn_relu(width)), width, size
        if kind == "grouped":
            g = 4 if c % 4 == 0 and width % 4 == 0 else 2 if c % 2 == 0 and width % 2 == 0 else 1
            return (
                nn.Sequential(nn.Conv2d(c, width, 3, padding=1, groups=g), _bn_relu(width)),
                width,
                size,
            )
        if kind == "dw":
            return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c), _bn_relu(c)), c, size
        if kind == "res":
            return nn.ModuleDict({"a": nn.Conv2d(c, width, 3, padding=1), "n": _bn_relu(width),
                                  "b": nn.Conv2d(width, c, 1)}), c, size  # fmt: skip
        if kind == "cat":
            branches = {"a": nn.Conv2d(c, width, 1), "b": nn.Conv2d(c, 4, 3, padding=1)}
            return nn.ModuleDict(branches), width + 4, size
        if kind == "split":
            if c % 2:
                return None, c, size
            half = c // 2
            return nn.ModuleDict({"a": nn.Conv2d(half, half, 3, padding=1),
                                  "b": nn.Conv2d(half, width, 1)}), half + width, size  # fmt: skip
        if kind == "shuffle":
            return (nn.Identity(), c, size) if c % 2 == 0 else (None, c, size)
        if kind == "se":
            return nn.ModuleDict({"down": nn.Conv2d(c, 4, 1), "up": nn.Conv2d(4, c, 1)}), c, size
        if kind == "pool":
            return (nn.MaxPool2d(2), c, size // 2) if size >= 4 else (None, c, size)
        if kind == "shared":
            return nn.Conv2d(c, c, 3, padding=1), c, size
        raise ValueError(kind)

    def forward(self, x: torch.Tensor) -> Any:  # a tensor, a tuple or a dict
        x = self.stem(x)
        for kind, block in zip(self.kinds, self.blocks, strict=True):
            x = self._apply(kind, block, x)
        feature = self.head_norm(x)
        flat = feature.mean((2, 3)) if self.spec.head == "pool" else torch.flatten(feature, 1)
        logits = self.fc(flat)
        if self.spec.output == "tuple":
            return logits, feature
        if self.spec.output == "dict":
            return {"logits": logits, "feature": feature}
        return logits

    @staticmethod
    def _apply(kind: str, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if kind == "res":
            return x + block["b"](block["n"](block["a"](x)))
        if kind == "cat":
            return torch.cat([block["a"](x), block["b"](x)], dim=1)
        if kind == "split":
            a, b = torch.chunk(x, 2, dim=1)
            return torch.cat([block["a"](a), block["b"](b)], dim=1)
        if kind == "shuffle":
            n, c, h, w = x.shape
            return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        if kind == "se":
            s = torch.sigmoid(block["up"](torch.relu(block["down"](x.mean((2, 3), keepdim=True)))))
            return x * s
        if kind == "shared":
            return block(torch.relu(block(x)))
        return block(x)
