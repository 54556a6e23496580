"""timm's models, plain calls: compiled, narrowed, and equal to the zeroed original.

timm's tiny ``test_*`` models (weights never downloaded) cover its layer kinds: timm's
BatchNormAct2d (traced through to ``F.batch_norm``), LayerNorm2d (``F.layer_norm``),
GroupNormAct, weight-standardized convs (NF-Net), Conv2dSame, ConvNeXt blocks.
"""

from __future__ import annotations

import pytest
import torch

import reconvene_fx as rfx

timm = pytest.importorskip("timm")  # a dev dependency: CI installs it

# (model, exact): exact False where pruning runs through GroupNorm/LayerNorm statistics
MODELS = [
    ("test_byobnet", True),
    ("test_convnext", False),  # stage widths go through LayerNorm2d
    ("test_efficientnet", True),
    ("test_efficientnet_gn", False),
    ("test_efficientnet_ln", False),
    ("test_nfnet", False),
    ("test_resnet", True),
    ("test_coatnet", False),
]


@pytest.mark.parametrize(("name", "exact"), MODELS)
def test_timm_model_compiles_plainly_and_verifies(name: str, exact: bool) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    size = model.pretrained_cfg["input_size"]
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=False)
    rep = rfx.report(gm)
    assert rep.params_after <= 0.5 * rep.params_before
    assert rfx.verify(model, gm, (x,)).exact is exact
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_tf_same_padding_convs_are_kept_whole_and_pruned() -> None:
    conv2d_same = pytest.importorskip("timm.layers.conv2d_same")
    model = torch.nn.Sequential(
        conv2d_same.Conv2dSame(3, 16, 3, stride=2), torch.nn.ReLU(),
        conv2d_same.Conv2dSame(16, 8, 3, stride=2),
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 17, 17)
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=False)
    assert type(gm.get_submodule("0")) is conv2d_same.Conv2dSame
    assert gm.get_submodule("0").out_channels < 16
    assert rfx.verify(model, gm, (x,)).exact


def test_weight_standardized_conv_slices_its_gain_and_rescales() -> None:
    std_conv = pytest.importorskip("timm.layers.std_conv")
    model = torch.nn.Sequential(
        std_conv.ScaledStdConv2d(3, 16, 3), torch.nn.ReLU(), std_conv.ScaledStdConv2d(16, 8, 3)
    ).eval()
    with torch.no_grad():
        for m in model:
            if hasattr(m, "gain"):
                m.gain.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 12, 12)
    gm = rfx.compile(model, budget=0.7, example_inputs=(x,), reinit=False)
    first, second = gm.get_submodule("0"), gm.get_submodule("2")
    assert first.out_channels < 16 and first.gain.shape[0] == first.out_channels
    assert second.in_channels == first.out_channels
    # scale stays gamma / sqrt(fan_in) at the new fan-in
    assert second.scale == pytest.approx(model[2].scale * (16 / second.in_channels) ** 0.5)
    rep = rfx.report(gm)
    assert rep.params_after <= 0.7 * rep.params_before and rep.approximate
    assert rfx.verify(model, gm, (x,)).exact is False
