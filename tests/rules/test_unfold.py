"""A Linear whose outputs are viewed as channels and positions (a DCGAN generator's
``Linear(z -> 256*4*4)`` then ``view(-1, 256, 4, 4)``): the channels are pruned and the
Linear loses whole blocks of outputs, the inverse of a flatten before a Linear."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import reconvene_fx as rfx

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # ONNX export

VIEWS = {
    "view-literal": lambda h: h.view(-1, 32, 4, 4),
    "view-minus-one": lambda h: h.view(h.shape[0], -1, 4, 4),
    "reshape": lambda h: torch.reshape(h, (h.size(0), 32, 4, 4)),
    "view-3d": lambda h: h.view(h.shape[0], 32, 16),
}


class _Generator(nn.Module):
    def __init__(self, unfold, conv: type[nn.Module] = nn.ConvTranspose2d) -> None:
        super().__init__()
        self.unfold = unfold
        self.fc = nn.Linear(16, 512)
        self.bn = nn.BatchNorm1d(512)
        self.up = conv(32, 8, 3, padding=1)
        self.out = conv(8, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.unfold(self.bn(self.fc(z)).relu())
        return self.out(self.up(h).relu())


def _z() -> torch.Tensor:
    return torch.randn(2, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("form", VIEWS)
def test_features_unfolded_into_channels_are_pruned_in_blocks(form: str, tmp_path) -> None:
    torch.manual_seed(0)
    conv = nn.ConvTranspose1d if form == "view-3d" else nn.ConvTranspose2d
    model = _Generator(VIEWS[form], conv).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", rfx.passes.UnknownOpWarning)
        gm = rfx.compile(model, 0.5, (_z(),), reinit=False, strategy="uniform",
                         method="magnitude")  # fmt: skip
    channels = gm.get_submodule("up").in_channels
    block = 512 // 32
    assert channels < 32
    assert gm.get_submodule("fc").out_features == channels * block  # whole blocks go
    assert gm.get_submodule("bn").num_features == channels * block
    rep = rfx.report(gm)
    kept = rep.layers["fc"].out_idx.view(channels, block)  # each block kept whole, in order
    assert torch.equal(kept - kept[:, :1], torch.arange(block).expand(channels, block))
    assert torch.equal(kept[:, 0] // block, rep.layers["up"].in_idx)
    assert rfx.verify(model, gm, (_z(),)).exact
    rfx.export_onnx(gm, tmp_path / "g.onnx", (_z(),))  # checked against PyTorch


def test_features_unfolded_by_an_unflatten_module_stay_whole() -> None:
    """``nn.Unflatten`` keeps its sizes in the module, which ShrinkPass does not rewrite:
    the Linear's outputs are kept, the rest of the model is still pruned."""
    torch.manual_seed(0)
    model = _Generator(nn.Unflatten(1, (32, 4, 4))).eval()
    gm = rfx.compile(model, 0.9, (_z(),), reinit=False, strategy="uniform", method="magnitude")
    assert gm.get_submodule("fc").out_features == 512
    assert gm.get_submodule("up").out_channels < 8
    assert rfx.verify(model, gm, (_z(),)).exact
