"""Literal split sizes follow the plan: channels flow through, the sizes are rewritten."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import reconvene_fx as rfx
from reconvene_fx.passes import UnknownOpWarning


class MixedSplit(nn.Module):
    """Unequal literal pieces (``split([16, 48], 1)``), as mixed-kernel blocks do."""

    def __init__(self, functional: bool = False) -> None:
        super().__init__()
        self.functional = functional
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.small = nn.Conv2d(16, 16, 3, padding=1)
        self.large = nn.Conv2d(48, 16, 5, padding=2)
        self.head = nn.Conv2d(32, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).relu()
        if self.functional:
            a, b = torch.split(x, [16, 48], dim=1)
        else:
            a, b = x.split([16, 48], 1)
        return self.head(torch.cat([self.small(a), self.large(b)], 1)).mean((2, 3))


class EqualSplit(nn.Module):
    """Equal pieces of a literal size (``split(32, 1)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.head = nn.Conv2d(32, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.stem(x).split(32, 1)
        return self.head(a * b.sigmoid()).mean((2, 3))


class Stacked(nn.Module):
    """``torch.stack`` of branches, then a reduction over the new dim (SKNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.b = nn.Conv2d(3, 32, 5, padding=2)
        self.head = nn.Conv2d(32, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = torch.stack([self.a(x), self.b(x)], 1)
        return self.head(both.softmax(1).sum(1)).mean((2, 3))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def _split_sizes(gm: torch.fx.GraphModule) -> object:
    (node,) = [n for n in gm.graph.nodes if "split" in str(n.target)]
    return node.args[1] if len(node.args) > 1 else node.kwargs["split_size_or_sections"]


@pytest.mark.parametrize("functional", [False, True], ids=["method", "function"])
def test_unequal_literal_pieces_are_rewritten_to_the_kept_counts(functional: bool) -> None:
    torch.manual_seed(0)
    model = MixedSplit(functional).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownOpWarning)
        gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False,
                         strategy="uniform")  # fmt: skip
    sizes = _split_sizes(gm)
    assert list(sizes) == [gm.small.in_channels, gm.large.in_channels]
    assert sum(sizes) == gm.stem.out_channels < 64
    assert gm.small.in_channels < 16 and gm.large.in_channels < 48
    assert rfx.verify(model, gm, (_x(),)).exact
    assert gm(_x()).shape == (2, 10)


def test_equal_literal_pieces_stay_equal_and_follow_the_plan() -> None:
    torch.manual_seed(0)
    model = EqualSplit().eval()
    gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False)
    assert gm.stem.out_channels < 64
    assert _split_sizes(gm) == gm.stem.out_channels // 2 == gm.head.in_channels
    assert rfx.verify(model, gm, (_x(),)).exact


def test_stacked_branches_are_pruned_together() -> None:
    torch.manual_seed(0)
    model = Stacked().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownOpWarning)
        gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False)
    assert gm.a.out_channels == gm.b.out_channels == gm.head.in_channels < 32
    assert rfx.verify(model, gm, (_x(),)).exact


class PartialResidual(nn.Module):
    """Literal channel ranges: a partial residual, a narrow, a cat of slices."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(3, 48, 3, padding=1)
        self.short = nn.Conv2d(3, 16, 1)
        self.mid = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Conv2d(48, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.wide(x).relu()
        first = y[:, :16] + self.short(x)  # x[:, :C] + shortcut
        middle = self.mid(y.narrow(1, 16, 16))
        return self.head(torch.cat([first, middle, y[:, 32:]], 1)).mean((2, 3))


def test_literal_channel_ranges_are_rewritten_to_the_kept_positions() -> None:
    torch.manual_seed(0)
    model = PartialResidual().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownOpWarning)
        gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False,
                         strategy="uniform")  # fmt: skip
    assert gm.wide.out_channels < 48
    # the ranges line up with what each consumer kept
    assert gm.short.out_channels + gm.mid.in_channels <= gm.wide.out_channels
    assert gm.head.in_channels == gm.wide.out_channels - gm.mid.in_channels + gm.mid.out_channels
    assert rfx.verify(model, gm, (_x(),)).exact
