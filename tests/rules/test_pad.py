"""``F.pad`` of the spatial dims passes the channels through, with widths computed from the
input's shape as TF-style "same" padding computes them (HF MobileNetV2 pads before every
strided conv); padding the channel dim pins it."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import reconvene_fx as rfx
from reconvene_fx.meta import CHANNELS
from reconvene_fx.passes import ChannelGroupPass, ShapePass, UnknownOpWarning
from reconvene_fx.tracing import trace

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # ONNX export


def _same_padding(x: torch.Tensor, kernel: int, stride: int) -> list[int]:
    """TF "same" padding for the last two dims, from the input's shape."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


class _TfStyle(nn.Module):
    def __init__(self, pad_channels: bool = False) -> None:
        super().__init__()
        self.pad_channels = pad_channels
        self.stem = nn.Conv2d(3, 16, 3, stride=2)
        self.dw = nn.Conv2d(16, 16, 3, stride=2, groups=16)
        self.pw = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(F.pad(x, _same_padding(x, 3, 2))).relu()
        h = self.dw(F.pad(h, _same_padding(h, 3, 2), "constant", 0.0)).relu()
        if self.pad_channels:
            h = F.pad(h, [0, 0, 0, 0, 0, 1])[:, :16]
        return self.pw(h).mean((2, 3))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 15, 15, generator=torch.Generator().manual_seed(0))


def test_spatial_padding_from_the_shape_passes_the_channels_through(tmp_path) -> None:
    torch.manual_seed(0)
    model = _TfStyle().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownOpWarning)
        gm = rfx.compile(model, 0.5, (_x(),), reinit=False, strategy="uniform",
                         method="magnitude")  # fmt: skip
    assert gm.stem.out_channels == gm.dw.out_channels == gm.pw.in_channels < 16
    assert rfx.verify(model, gm, (_x(),)).exact
    rfx.export_onnx(gm, tmp_path / "m.onnx", (_x(),))  # checked against PyTorch


def test_padding_the_channels_pins_them() -> None:
    gm = trace(_TfStyle(pad_channels=True), example_inputs=(_x(),))
    ShapePass((_x(),))(gm)
    ChannelGroupPass()(gm)
    dw = next(n for n in gm.graph.nodes if n.target == "dw")
    assert bool(dw.meta[CHANNELS].pinned.all())
    assert "it pads the channels" in str(dw.meta[CHANNELS].pinned_by(0))
