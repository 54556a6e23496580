"""Per-channel parameters in arithmetic (layer scales) follow the channels, not pin them."""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

import reconvene_fx as rfx


class ScaledBlock(nn.Module):
    """A ConvNeXt-style residual block: ``gamma`` (1-D, reshaped) and ``beta`` ([C,1,1])."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pw = nn.Conv2d(c, 4 * c, 1)
        self.pw2 = nn.Conv2d(4 * c, c, 1)
        self.gamma = nn.Parameter(torch.rand(c) + 0.5)
        self.register_buffer("beta", torch.randn(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(self.pw(self.dw(x)).relu())
        return x + y.mul(self.gamma.reshape(1, -1, 1, 1)) + self.beta


class Net(nn.Module):
    def __init__(self, shared_scale: bool = False) -> None:
        super().__init__()
        self.shared_scale = shared_scale
        self.stem = nn.Conv2d(3, 32, 3)
        self.b1, self.b2 = ScaledBlock(32), ScaledBlock(32)
        self.scale = nn.Parameter(torch.rand(32) + 0.5)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b2(self.b1(self.stem(x)))
        x = x * self.scale.view(1, 32, 1, 1)  # a literal channel count
        if self.shared_scale:  # the tensor is also read elsewhere: it must keep its size
            x = x + self.scale.sum()
        return self.head(x.mean((2, 3)))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_layer_scales_are_sliced_with_the_residual_stream() -> None:
    torch.manual_seed(0)
    model = Net().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False,
                         strategy="uniform")  # fmt: skip
    width = gm.stem.out_channels
    assert width < 32  # the residual stream itself was narrowed
    assert gm.b1.gamma.shape == (width,) and isinstance(gm.b1.gamma, nn.Parameter)
    assert gm.b2.beta.shape == (width, 1, 1) and "beta" in dict(gm.b2.named_buffers())
    assert gm.scale.shape == (width,)
    (view,) = [n for n in gm.graph.nodes if n.target == "view"]
    assert view.args[1:] == (1, width, 1, 1)  # the literal follows the plan
    assert rfx.verify(model, gm, (_x(),)).exact
    assert model.scale.shape == (32,)  # the caller's model is untouched


def test_a_scale_read_elsewhere_pins_its_channels() -> None:
    torch.manual_seed(0)
    model = Net(shared_scale=True).eval()
    gm = rfx.compile(model, budget=0.7, example_inputs=(_x(),), reinit=False)
    assert gm.stem.out_channels == 32 and gm.scale.shape == (32,)
    assert rfx.verify(model, gm, (_x(),)).exact
