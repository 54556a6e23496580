"""RLR per layer handler: a narrowed layer starts where the model's own init started it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reconvene_fx.layers import InitScale, module_layer


def _narrow_and_reinit(module: nn.Module, in_idx, out_idx, seed: int = 0) -> InitScale | None:
    """Slice ``module`` as ShrinkPass does and re-initialize it through its handler."""
    layer = module_layer("m", module)
    assert layer is not None
    before = layer.handler.init_scale(layer)
    layer.handler.shrink(layer, in_idx, out_idx)
    after = layer.handler.describe("m", module, None)
    assert after is not None
    after.handler.reinit(after, torch.Generator().manual_seed(seed), before)
    return before


def _fill(t: torch.Tensor, mean: float, std: float, seed: int = 1) -> None:
    with torch.no_grad():
        t.normal_(mean, std, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv2d(64, 96, 3),  # inputs 64 -> 16
        nn.Conv2d(64, 96, 3, groups=4),  # 16 -> 4 per group
        nn.Linear(256, 96),
        nn.ConvTranspose2d(64, 96, 2),  # fan-in of its weight is out x k
    ],
    ids=["conv", "grouped-conv", "linear", "conv-transpose"],
)
def test_weighted_layers_keep_their_own_spread_at_a_quarter_of_the_fan_in(module) -> None:
    """The redraw is not rescaled to the new fan-in (a fresh layer's spread would be twice
    as large here): at the larger spread these layers, each followed by a norm in the
    accuracy study's models, trained less accurate models (see reconvene_fx.layers.init)."""
    _fill(module.weight, 0.0, 0.37)  # no PyTorch default: the model's own scheme
    _fill(module.bias, 0.25, 0.05)
    if isinstance(module, nn.ConvTranspose2d):
        in_idx, out_idx = torch.arange(0, 64, 4), torch.arange(96)
    elif getattr(module, "groups", 1) == 4:
        in_idx, out_idx = torch.cat([torch.arange(g * 16, g * 16 + 4) for g in range(4)]), None
    else:
        in_idx, out_idx = torch.arange(0, module.weight.shape[1], 4), None
    before = _narrow_and_reinit(module, in_idx, out_idx)
    assert before is not None and abs(before.weight_std - 0.37) < 0.01
    std = float(module.weight.detach().std())
    assert abs(std / 0.37 - 1) < 0.05, std
    bias = module.bias.detach()
    assert abs(float(bias.mean()) - 0.25) < 0.05  # its distribution, not zeros
    assert abs(float(bias.std()) / 0.05 - 1) < 0.35


@pytest.mark.parametrize("make", [lambda: nn.Conv2d(32, 32, 3), lambda: nn.Linear(32, 32)])
def test_zero_biases_stay_zero(make) -> None:
    module = make()
    with torch.no_grad():
        module.bias.zero_()
    _narrow_and_reinit(module, torch.arange(8), torch.arange(16))
    assert torch.equal(module.bias, torch.zeros(16))
    assert float(module.weight.detach().abs().sum()) > 0


_NORMS = [nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d]


@pytest.mark.parametrize("norm", _NORMS, ids=lambda t: t.__name__)
@pytest.mark.parametrize("init", ["zeros", "ones", "random"])
def test_norms_keep_their_initial_values(norm: type, init: str) -> None:
    """Zeros stay zeros (zero-init residuals), ones stay ones, anything else as it was."""
    module = {nn.GroupNorm: lambda: nn.GroupNorm(3, 12),
              nn.InstanceNorm2d: lambda: nn.InstanceNorm2d(12, affine=True)}.get(
        norm, lambda: norm(12))()  # fmt: skip
    with torch.no_grad():
        if init == "random":
            _fill(module.weight, 0.5, 0.2)
        else:
            module.weight.fill_(0.0 if init == "zeros" else 1.0)
        _fill(module.bias, 0.1, 0.3, seed=2)
    weight, bias = module.weight.detach().clone(), module.bias.detach().clone()
    keep = torch.tensor([0, 3, 4, 7, 8, 11]) if isinstance(module, nn.GroupNorm) else None
    keep = keep if keep is not None else torch.tensor([1, 2, 5, 9])
    _narrow_and_reinit(module, None, keep)
    assert torch.equal(module.weight.detach(), weight[keep])
    assert torch.equal(module.bias.detach(), bias[keep])


def test_batchnorm_statistics_start_afresh() -> None:
    bn = nn.BatchNorm2d(8)
    bn.train()
    bn(torch.randn(4, 8, 3, 3) * 5 + 2)  # statistics of the old input
    _narrow_and_reinit(bn, None, torch.tensor([0, 2, 4]))
    assert torch.equal(bn.running_mean, torch.zeros(3))
    assert torch.equal(bn.running_var, torch.ones(3))
    assert int(bn.num_batches_tracked) == 0


def test_standardized_conv_keeps_its_gain() -> None:
    from timm.layers import std_conv

    conv = std_conv.ScaledStdConv2d(16, 24, 3, gain_init=0.0)  # NF-Net's zero gain
    with torch.no_grad():
        conv.gain[:12].fill_(0.5)
    gain = conv.gain.detach().clone()
    keep = torch.arange(0, 24, 2)
    _narrow_and_reinit(conv, torch.arange(8), keep)
    assert torch.equal(conv.gain.detach(), gain[keep])
    assert conv.weight.shape == (12, 8, 3, 3)


def test_a_uniform_init_is_redrawn_uniform_within_its_own_bound() -> None:
    """PyTorch's default (uniform, bound 1/sqrt(fan_in)): the redraw stays uniform within
    the bound the model drew it with (not a normal, and not the narrowed fan-in's bound)."""
    torch.manual_seed(0)  # the conv draws from the global generator
    conv = nn.Conv2d(64, 64, 3)
    before = _narrow_and_reinit(conv, torch.arange(16), None)
    assert before is not None and before.bias_values is not None
    bound = 1 / (64 * 9) ** 0.5  # kaiming_uniform(a=sqrt(5)) at the fan-in it was drawn at
    w = conv.weight.detach()
    assert float(w.abs().max()) <= bound * 1.01  # the draw is centred on its own mean
    assert float(w.abs().max()) > 0.95 * bound  # fills the range
    kurtosis = float(((w - w.mean()) ** 4).mean() / w.var() ** 2)
    assert abs(kurtosis - 1.8) < 0.1  # uniform: 1.8; a normal would give 3
    assert float(conv.bias.detach().abs().max()) <= bound  # a window of its own values


def test_torchvision_init_lives_in_layers_and_stays_importable_from_passes() -> None:
    import reconvene_fx as rfx
    from reconvene_fx.layers import torchvision_init

    assert rfx.passes.torchvision_init is torchvision_init is rfx.passes.default_init
    assert rfx.passes.shrink.torchvision_init is torchvision_init


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_redraw_is_a_random_window_of_the_initial_values(dtype: torch.dtype) -> None:
    """The narrowed dims take consecutive positions from one random offset each (in dim
    order, from the generator), the whole dims stay as they are, and the window is the
    values themselves: bit for bit (float64: values measured in float32)."""
    from reconvene_fx.layers import matched_init

    conv = nn.Conv2d(64, 48, 3).to(dtype)
    _fill(conv.bias, 0.1, 0.02)
    before = InitScale.of(conv)
    assert before is not None and before.weight_values is not None
    assert before.weight_values.shape == (48, 64, 3, 3)
    narrow = nn.Conv2d(16, 24, 3).to(dtype)  # half of the outputs, a quarter of the inputs
    matched_init(narrow, torch.Generator().manual_seed(5), before)
    gen = torch.Generator().manual_seed(5)
    row = int(torch.randint(48 - 24 + 1, (), generator=gen))
    col = int(torch.randint(64 - 16 + 1, (), generator=gen))
    values = before.weight_values
    expected = values[row : row + 24, col : col + 16].to(dtype)
    assert torch.equal(narrow.weight.detach(), expected)
    bias_row = int(torch.randint(48 - 24 + 1, (), generator=gen))  # drawn after the weight
    bias = before.bias_values[bias_row : bias_row + 24].to(dtype)
    assert torch.equal(narrow.bias.detach(), bias)


def test_the_spread_is_measured_only_when_read() -> None:
    """A redraw from recorded values never reads ``weight_std``: :meth:`InitScale.of` leaves
    it to be measured on first read, where it is the weight's standard deviation."""
    from reconvene_fx.layers import matched_init

    conv = nn.Conv2d(32, 16, 3)
    before = InitScale.of(conv)
    assert before is not None
    matched_init(nn.Conv2d(8, 16, 3), torch.Generator().manual_seed(0), before)
    assert "weight_std" not in vars(before)
    assert before.weight_std == float(conv.weight.detach().std())
    assert vars(before)["weight_std"] == before.weight_std  # measured once
    by_hand = InitScale(0.25, 27)
    assert by_hand.weight_std == 0.25
    with pytest.raises(AttributeError, match="no attribute 'other'"):
        _ = before.other


def test_the_window_moves_with_the_seed() -> None:
    """Seeds draw different windows: a redraw is not the same rows for every seed."""
    from reconvene_fx.layers import matched_init

    before = InitScale.of(nn.Linear(64, 64))
    assert before is not None
    drawn = set()
    for seed in range(8):
        narrow = nn.Linear(16, 16)
        matched_init(narrow, torch.Generator().manual_seed(seed), before)
        drawn.add(tuple(narrow.weight.detach()[0, :2].tolist()))
    assert len(drawn) > 4


def test_the_redraw_owes_nothing_to_the_kept_channels() -> None:
    """Keeping the largest output channels (as magnitude scores do) does not hand their
    large values to the redraw: it is a window of rows at a random offset among all of them."""
    conv = nn.Conv2d(8, 32, 3, bias=False)
    with torch.no_grad():
        conv.weight.fill_(0.01)
        conv.weight[:8].fill_(1.0)  # the channels the scores keep
    _narrow_and_reinit(conv, None, torch.arange(8))
    rows = conv.weight.detach().flatten(1)
    assert conv.weight.shape == (8, 8, 3, 3)
    large = torch.isclose(rows, torch.tensor(1.0)).all(1)
    small = torch.isclose(rows, torch.tensor(0.01)).all(1)
    assert bool((large | small).all())  # whole rows of the initial weight
    assert int(large.sum()) < 8, "the redraw copied the kept channels"


def test_a_redraw_into_a_larger_shape_picks_values_with_replacement() -> None:
    from reconvene_fx.layers import matched_init

    small = nn.Linear(4, 2)
    before = InitScale.of(small)
    assert before is not None and before.weight_values is not None
    wide = nn.Linear(4, 6)  # more rows than were measured: no block fits
    matched_init(wide, torch.Generator().manual_seed(0), before)
    drawn, values = wide.weight.detach().flatten(), before.weight_values.flatten()
    nearest = (drawn[:, None] - values[None, :]).abs().min(1).values
    assert float(nearest.max()) < 1e-6  # each one of the values
    assert len(set(drawn.tolist())) > 1


def test_a_scale_views_the_weights_and_a_redraw_into_them_copies_them_first() -> None:
    """InitScale.of keeps views of the weights (no copy); re-initializing that very module
    in place gives what a copy of the values would give."""
    from reconvene_fx.layers import matched_init

    conv = nn.Conv2d(32, 32, 3)
    before = InitScale.of(conv)
    assert before is not None and before.weight_values is not None
    assert before.weight_values.data_ptr() == conv.weight.data_ptr()  # a view, not a copy
    copied = InitScale(before.weight_std, before.fan_in, before.bias_mean, before.bias_std,
                       before.weight_values.clone(), before.bias_values.clone())  # fmt: skip
    twin = nn.Conv2d(32, 32, 3)
    matched_init(twin, torch.Generator().manual_seed(2), copied)
    matched_init(conv, torch.Generator().manual_seed(2), before)  # into the viewed weight
    assert torch.equal(conv.weight, twin.weight)
    assert torch.equal(conv.bias, twin.bias)
