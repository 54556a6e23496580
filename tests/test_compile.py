"""End-to-end compile on hand-built graphs: equivalence, budgets, inputs, determinism."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
from models import HAND_BUILT, build

import reconvene_fx as rfx
from reconvene_fx.passes import UnknownOpWarning


def _x(batch: int = 2, size: int = 16) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("budget", [0.8, 0.5, 0.25])
@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_hand_built_models_are_equivalent_and_within_budget(name: str, budget: float) -> None:
    model, x = build(name), _x()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownOpWarning)
        gm = rfx.compile(model, budget=budget, example_inputs=(x,), reinit=False)
    rep = rfx.report(gm)
    assert rep.params_before == sum(p.numel() for p in model.parameters())
    assert rep.params_after == sum(p.numel() for p in gm.parameters())
    assert rep.params_after <= budget * rep.params_before
    assert any(lp.narrowed for lp in rep.layers.values())
    result = rfx.verify(model, gm, (x,))
    assert result.exact
    with torch.no_grad():
        assert gm(x).shape == model(x).shape


def test_verify_compares_numbers_not_only_shapes() -> None:
    """A compact model that is wrong in one layer is caught, and the layer is named."""
    model, x = build("residual"), _x()
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=False)
    with torch.no_grad():
        gm.get_submodule("conv3.0").weight.mul_(1.5)
    with pytest.raises(rfx.VerifyError) as info:
        rfx.verify(model, gm, (x,))
    assert info.value.layer == "conv3.0"
    assert info.value.max_error > 0


def test_compile_does_not_mutate_the_model() -> None:
    model, x = build("residual"), _x()
    model.train()
    before = copy.deepcopy(model.state_dict())
    rfx.compile(model, budget=0.5, example_inputs=(x,))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(m.training for m in model.modules())
    assert model.conv1[0].out_channels == 16


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_compile_is_deterministic_per_seed(method: str) -> None:
    model, x = build("inception"), _x()
    a = rfx.compile(model, budget=0.4, example_inputs=(x,), method=method, seed=3)
    b = rfx.compile(model, budget=0.4, example_inputs=(x,), method=method, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = rfx.compile(model, budget=0.4, example_inputs=(x,), method=method, seed=4)
    assert any(
        sa[k].shape != c.state_dict()[k].shape or not torch.equal(sa[k], c.state_dict()[k])
        for k in sa
    )


def test_qualified_names_are_kept() -> None:
    model, x = build("residual"), _x()
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,))
    original = {n for n, _ in model.named_modules()}
    assert {"conv1.0", "conv3.0", "down", "fc"} <= {n for n, _ in gm.named_modules()}
    assert set(rfx.report(gm).layers) <= original


def test_reinit_redraws_narrowed_layers_only() -> None:
    model, x = build("residual"), _x()
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=True, seed=0)
    rep = rfx.report(gm)
    for name, lp in rep.layers.items():
        w = gm.get_submodule(name).weight
        sliced = model.get_submodule(name).weight[lp.out_idx][:, lp.in_idx]
        assert torch.equal(w, sliced) != lp.narrowed, name
    with pytest.raises(rfx.ReconveneError, match="reinit=False"):
        rfx.verify(model, gm, (x,))


def test_round_to_makes_kept_widths_multiples() -> None:
    model, x = build("residual"), _x()
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,), round_to=8, reinit=False)
    for name in ("stem.0", "conv1.0", "conv3.0", "down"):
        assert gm.get_submodule(name).out_channels % 8 == 0, name
    assert rfx.report(gm).params_ratio <= 0.5
    rfx.verify(model, gm, (x,))


class ThirteenGroups(torch.nn.Module):
    """regnet_y_400mf's bottleneck: a conv of 13 groups of 8 channels between 1x1 convs."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 104, 1)
        self.grouped = torch.nn.Conv2d(104, 104, 3, padding=1, groups=13)
        self.b = torch.nn.Conv2d(104, 64, 1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b(torch.relu(self.grouped(torch.relu(self.a(x)))))
        return self.fc(x.mean((2, 3)))


def test_round_to_counts_channels_in_grouped_convs() -> None:
    """An atom of a grouped conv spans one channel per group: with 4 groups, 2 atoms make
    the 8 channels round_to asks for (before: 8 atoms, steps of 32)."""
    model, x = build("grouped"), _x()
    gm = rfx.compile(model, rfx.Budget(macs=0.3), (x,), round_to=8, reinit=False)
    grouped = gm.get_submodule("grouped.0")
    assert grouped.out_channels < 64 and grouped.groups == 4
    assert grouped.in_channels % 8 == 0 and grouped.out_channels % 8 == 0
    assert rfx.report(gm).macs_ratio <= 0.3
    assert rfx.verify(model, gm, (x,)).exact


def test_round_to_keeps_13_groups_of_8_whole() -> None:
    """13 groups of 8 channels: a multiple of 8 channels needs all 8 positions of every
    group, so that space keeps its width and the rest narrows (rounded to 8)."""
    model, x = ThirteenGroups(), _x()
    gm = rfx.compile(model, rfx.Budget(macs=0.7), (x,), round_to=8, reinit=False)
    assert gm.get_submodule("grouped").out_channels == 104
    assert gm.get_submodule("b").out_channels % 8 == 0
    assert gm.get_submodule("b").out_channels < 64
    assert rfx.verify(model, gm, (x,)).exact
    rounded_free = rfx.compile(model, rfx.Budget(macs=0.3), (x,), round_to=1, reinit=False)
    assert rounded_free.get_submodule("grouped").out_channels < 104


def test_macs_budget_holds_alone_and_with_params() -> None:
    model, x = build("inception"), _x()
    gm = rfx.compile(model, budget=rfx.Budget(macs=0.3), example_inputs=(x,), reinit=False)
    rep = rfx.report(gm)
    assert rep.macs_after <= 0.3 * rep.macs_before
    both = rfx.Budget(params=0.6, macs=0.2)
    rep2 = rfx.report(rfx.compile(model, budget=both, example_inputs=(x,)))
    assert rep2.macs_ratio <= 0.2 and rep2.params_ratio <= 0.6


def test_unreachable_budget_names_the_smallest_reachable_value() -> None:
    model, x = build("conv_head"), _x()
    protect = ["features.0.0"]
    with pytest.raises(rfx.BudgetError) as info:
        rfx.compile(model, budget=0.02, example_inputs=(x,), ignore=protect)
    smallest = info.value.smallest
    assert info.value.quantity == "params"
    assert 0.02 < smallest < 0.5
    assert f"{smallest:.4f}" in str(info.value)
    gm = rfx.compile(model, budget=smallest, example_inputs=(x,), ignore=protect)
    assert rfx.report(gm).params_ratio <= smallest


def test_ignore_protects_named_modules() -> None:
    model, x = build("residual"), _x()
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,), ignore=["conv3.0"])
    lp = rfx.report(gm).layers["conv3.0"]
    assert not lp.narrowed
    with pytest.raises(rfx.ArgumentError, match="'nope' matches no prunable layer"):
        rfx.compile(model, budget=0.5, example_inputs=(x,), ignore=["nope"])
    with pytest.raises(rfx.ArgumentError, match=r"it names a ReLU.*close matches: conv1"):
        rfx.compile(model, budget=0.5, example_inputs=(x,), ignore=["conv1.2"])


@pytest.mark.parametrize(
    ("patterns", "kept_outputs"),
    [
        (["conv1"], {"conv1.0"}),  # a block: every layer in it
        (["conv3.*"], {"conv3.0"}),  # a glob over names
        (["BatchNorm2d"], {"stem.0", "conv1.0", "conv3.0"}),  # a class name: the norms
        (["torch.nn.Linear"], {"conv4", "down"}),  # the classifier's input group
    ],
)
def test_ignore_takes_blocks_globs_and_class_names(
    patterns: list[str], kept_outputs: set[str]
) -> None:
    model, x = build("residual"), _x()
    modules = dict(model.named_modules())
    rep = rfx.report(rfx.compile(model, budget=0.7, example_inputs=(x,), ignore=patterns))
    for name in kept_outputs:  # every output channel kept
        assert rep.layers[name].out_idx.numel() == modules[name].out_channels, name
    # and the rest is pruned
    assert any(lp.out_idx.numel() < modules[n].out_channels for n, lp in rep.layers.items()
               if n not in kept_outputs and n != "fc")  # fmt: skip


def test_unknown_op_warns_once_and_is_not_pruned_through() -> None:
    model, x = build("unknown_op"), _x()
    with pytest.warns(UnknownOpWarning, match="cumsum") as record:
        gm = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=False)
    assert len([w for w in record if issubclass(w.category, UnknownOpWarning)]) == 1
    rep = rfx.report(gm)
    assert rep.layers["b.0"].out_idx.numel() == 16  # feeds the cumsum
    assert rep.layers["c.0"].in_idx.numel() == 16  # fed by the cumsum
    assert rep.layers["a.0"].narrowed


def test_graph_outputs_are_never_pruned() -> None:
    model, x = build("conv_head"), _x()
    gm = rfx.compile(model, budget=0.3, example_inputs=(x,))
    assert gm.get_submodule("classifier.0").out_channels == 10


def test_shared_module_keeps_one_set_of_channels() -> None:
    model, x = build("shared"), _x()
    gm = rfx.compile(model, budget=0.4, example_inputs=(x,), reinit=False)
    shared = gm.get_submodule("shared")
    assert shared.in_channels == shared.out_channels < 24
    rfx.verify(model, gm, (x,))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"budget": 0.0}, ValueError, r"\(0, 1\]"),
        ({"budget": 1.5}, ValueError, r"\(0, 1\]"),
        ({"budget": "half"}, TypeError, "budget"),
        ({"budget": 0.5, "method": "nope"}, ValueError, "known methods"),
        ({"budget": 0.5, "strategy": "nope"}, ValueError, "strategy"),
        ({"budget": 0.5, "round_to": 0}, ValueError, "round_to"),
        ({"budget": 0.5, "no_such_option": 1}, TypeError, "no_such_option"),
        ({"budget": 0.5, "example_inputs": ()}, TypeError, "example_inputs"),
    ],
)
def test_bad_input_is_rejected_clearly(kwargs: dict, error: type, match: str) -> None:
    args = {"example_inputs": (_x(),), **kwargs}
    with pytest.raises(error, match=match):
        rfx.compile(build("se"), **args)


def test_groupnorm_is_pruned_through_and_reported_approximate() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.ReLU(),
        nn.Conv2d(32, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip
    x = _x()
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=False)
    rep = rfx.report(gm)
    norm = gm.get_submodule("1")
    assert norm.num_groups == 4 and norm.num_channels % 4 == 0 and norm.num_channels < 32
    assert norm.weight.shape == (norm.num_channels,)
    assert rep.approximate and "GroupNorm" in next(iter(rep.approximate.values()))
    result = rfx.verify(model, gm, (x,))
    assert not result.exact
