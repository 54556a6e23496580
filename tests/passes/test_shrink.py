"""ShrinkPass: slices match the plan, groups stay valid, norms keep their statistics."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx

X = torch.randn(2, 3, 16, 16)


def test_grouped_conv_keeps_groups_and_slices_weights_by_position() -> None:
    model = build("grouped")
    gm = rfx.compile(model, budget=0.5, example_inputs=(X,), reinit=False)
    conv, orig = gm.get_submodule("grouped.0"), model.get_submodule("grouped.0")
    lp = rfx.report(gm).layers["grouped.0"]
    assert conv.groups == 4 and conv.in_channels % 4 == 0 and conv.out_channels % 4 == 0
    positions = lp.in_idx[: conv.in_channels // 4]
    assert torch.equal(conv.weight, orig.weight[lp.out_idx][:, positions])


def test_depthwise_conv_drops_whole_groups() -> None:
    model = build("depthwise")
    gm = rfx.compile(model, budget=0.4, example_inputs=(X,), reinit=False)
    dw, dw2 = gm.get_submodule("dw.0"), gm.get_submodule("dw2")
    assert dw.groups == dw.in_channels == dw.out_channels < 32
    assert dw2.groups == dw2.in_channels and dw2.out_channels == 2 * dw2.in_channels


def test_batchnorm_parameters_and_statistics_are_sliced() -> None:
    model = build("residual")
    gm = rfx.compile(model, budget=0.5, example_inputs=(X,), reinit=False)
    keep = rfx.report(gm).layers["conv3.0"].out_idx
    bn, orig = gm.get_submodule("conv3.1"), model.get_submodule("conv3.1")
    assert bn.num_features == keep.numel()
    for name in ("weight", "bias", "running_mean", "running_var"):
        assert torch.equal(getattr(bn, name), getattr(orig, name)[keep]), name


def test_reinit_keeps_narrowed_norms_values_and_is_seeded() -> None:
    """A narrowed norm keeps its own (sliced) affine values, statistics start afresh."""
    model = build("residual")
    with torch.no_grad():
        model.get_submodule("conv3.1").running_var.fill_(4.0)
    a = rfx.compile(model, budget=0.5, example_inputs=(X,), seed=1)
    bn, orig = a.get_submodule("conv3.1"), model.get_submodule("conv3.1")
    keep = rfx.report(a).layers["conv3.0"].out_idx
    assert keep.numel() < orig.num_features
    assert not torch.equal(orig.weight, torch.ones_like(orig.weight))  # the test means it
    assert torch.equal(bn.weight, orig.weight[keep])
    assert torch.equal(bn.bias, orig.bias[keep])
    assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    b = rfx.compile(model, budget=0.5, example_inputs=(X,), seed=2)
    assert not torch.equal(a.get_submodule("conv3.0").weight, b.get_submodule("conv3.0").weight)


class _ZeroInitResidual(torch.nn.Module):
    """Two residual blocks whose last norm starts at zero (torchvision's
    ``zero_init_residual``, timm's ``zero_init_last``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.blocks = torch.nn.ModuleList()
        for _ in range(2):
            block = torch.nn.Sequential(
                torch.nn.Conv2d(32, 64, 1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
                torch.nn.Conv2d(64, 32, 1), torch.nn.BatchNorm2d(32),
            )  # fmt: skip
            torch.nn.init.zeros_(block[4].weight)
            self.blocks.append(block)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = torch.relu(x + block(x))
        return self.head(x.mean((2, 3)))


@pytest.mark.parametrize("strategy", ["reconvene", "uniform", "global"])
def test_a_zero_init_residual_model_stays_zero_init_residual(strategy: str) -> None:
    torch.manual_seed(0)
    model = _ZeroInitResidual()
    gm = rfx.compile(model, budget=0.3, example_inputs=(X,), strategy=strategy)
    rep = rfx.report(gm)
    assert rep.layers["blocks.0.3"].narrowed or rep.layers["stem"].narrowed
    for i in range(2):
        bn = gm.get_submodule(f"blocks.{i}.4")
        assert bn.num_features < 32 or rep.layers[f"blocks.{i}.0"].narrowed
        assert torch.equal(bn.weight.detach(), torch.zeros_like(bn.weight)), i
        # so each block starts as the identity, as in the dense model
    x = torch.randn(2, 3, 8, 8)
    gm.eval()
    stem = gm.get_submodule("stem")
    expected = gm.get_submodule("head")(torch.relu(torch.relu(stem(x))).mean((2, 3)))
    torch.testing.assert_close(gm(x), expected)


def test_user_init_fn_is_called_on_narrowed_layers_only() -> None:
    seen: list[str] = []

    def init_fn(module: torch.nn.Module, generator: torch.Generator) -> None:
        seen.append(type(module).__name__)
        torch.nn.init.zeros_(module.weight)

    gm = rfx.compile(build("residual"), budget=0.5, example_inputs=(X,), init_fn=init_fn)
    narrowed = [n for n, lp in rfx.report(gm).layers.items() if lp.narrowed]
    assert narrowed and len([k for k in seen if "Norm" not in k]) == len(narrowed)
    assert all(float(gm.get_submodule(n).weight.detach().abs().sum()) == 0 for n in narrowed)


def _three_convs() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 256, 3), torch.nn.BatchNorm2d(256), torch.nn.ReLU(),
        torch.nn.Conv2d(256, 10, 1),
    )  # fmt: skip


def test_rlr_redraws_narrowed_layers_at_the_models_own_scale() -> None:
    """Default RLR: narrowed convs redrawn at their original spread (not the larger one a
    fresh layer of the narrowed fan-in would get); norms reset."""
    model = _three_convs()
    gm = rfx.compile(model, budget=0.3, example_inputs=(X,), strategy="uniform", seed=3)
    rep = rfx.report(gm)
    for name in ("3", "6"):
        conv, original = gm.get_submodule(name), model.get_submodule(name)
        assert rep.layers[name].narrowed
        fan_in, fan_in_before = conv.weight[0].numel(), original.weight[0].numel()
        assert fan_in < fan_in_before, name  # its inputs were narrowed too
        expected = float(original.weight.detach().std())
        assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.05, name
        fresh = (1 / (3 * fan_in)) ** 0.5  # a fresh layer's: Kaiming uniform, a=sqrt(5)
        assert float(conv.weight.detach().std()) < 0.9 * fresh, name
        kept = rep.layers[name].out_idx
        assert not torch.equal(conv.weight[:, :1], original.weight[kept, :1])  # redrawn
    bn = gm.get_submodule("4")
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_torchvision_init_draws_kaiming_fan_out() -> None:
    """``init_fn=torchvision_init``: std = sqrt(2 / (out * k * k)) of the narrowed shape."""
    model = _three_convs()
    gm = rfx.compile(model, budget=0.3, example_inputs=(X,), strategy="uniform", seed=3,
                     init_fn=rfx.passes.torchvision_init)  # fmt: skip
    for name in ("3", "6"):
        conv = gm.get_submodule(name)
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        std = float(conv.weight.detach().std())
        assert abs(std / (2 / fan_out) ** 0.5 - 1) < 0.05, (name, std)


class _GainConv(torch.nn.Conv2d):
    """A conv with a per-output-channel gain (as timm's ScaledStdConv2d): its forward is
    its own, so no built-in layer handler claims it."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, 3, padding=1)
        self.gain = torch.nn.Parameter(torch.rand(cout, 1, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.gain, self.bias)


def _gain_net() -> torch.nn.Module:
    return torch.nn.Sequential(_GainConv(3, 16), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 1))


def test_a_tensor_left_at_its_old_size_is_named() -> None:
    from reconvene_fx.rules import get_default_registry
    from reconvene_fx.rules.layers import conv

    rules = get_default_registry()
    rules.module(_GainConv)(conv)  # the user taught the channel flow, not the layer
    with pytest.raises(rfx.ShrinkError) as info:
        rfx.compile(
            _gain_net(), budget=0.95, example_inputs=(X,), rules=rules, leaf_modules=[_GainConv]
        )
    assert info.value.module == "0" and info.value.tensor in ("weight", "gain")
    assert "register a layer handler for _GainConv" in str(info.value)


def test_a_handler_that_slices_the_gain_makes_it_prunable() -> None:
    from reconvene_fx.layers import DEFAULT_LAYERS, new_param, take
    from reconvene_fx.layers.conv import ConvHandler
    from reconvene_fx.rules import get_default_registry
    from reconvene_fx.rules.layers import conv

    class GainConvHandler(ConvHandler):
        def shrink(self, layer, in_idx, out_idx):
            gain = layer.module.gain
            super().shrink(layer, in_idx, out_idx)
            layer.module.gain = new_param(take(gain, 0, out_idx), gain)

    rules = get_default_registry()
    rules.module(_GainConv)(conv)
    DEFAULT_LAYERS.modules[_GainConv] = GainConvHandler()
    try:
        model = _gain_net()
        gm = rfx.compile(
            model,
            budget=0.5,
            example_inputs=(X,),
            rules=rules,
            reinit=False,
            leaf_modules=[_GainConv],
        )
        assert rfx.verify(model, gm, (X,)).exact
    finally:
        del DEFAULT_LAYERS.modules[_GainConv]
    assert gm.get_submodule("0").gain.shape[0] == gm.get_submodule("0").out_channels < 16
