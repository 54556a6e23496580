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


def test_default_widths_give_way_where_they_alone_keep_a_budget_from_being_met() -> None:
    """At round_to=8 the 13 groups of 8 keep all 104 channels, so a 0.5 MAC budget is out
    of reach; the default widths narrow that space by whole atoms (13 channels) instead
    and keep rounding the rest."""
    model, x = ThirteenGroups(), _x()
    with pytest.raises(rfx.BudgetError, match="round_to=8 rounds the kept widths up"):
        rfx.compile(model, rfx.Budget(macs=0.5), (x,), round_to=8, reinit=False)
    gm = rfx.compile(model, rfx.Budget(macs=0.5), (x,), reinit=False)
    grouped, b = gm.get_submodule("grouped"), gm.get_submodule("b")
    assert grouped.out_channels < 104 and grouped.out_channels % 13 == 0
    assert b.out_channels < 64 and b.out_channels % 8 == 0  # still rounded
    assert rfx.report(gm).macs_ratio <= 0.5
    assert rfx.verify(model, gm, (x,)).exact


def test_a_budget_out_of_reach_at_any_width_names_the_unrounded_floor() -> None:
    model, x = ThirteenGroups(), _x()
    refusals = []
    for round_to in (None, 1):
        with pytest.raises(rfx.BudgetError) as info:
            rfx.compile(model, rfx.Budget(macs=0.01), (x,), round_to=round_to, reinit=False)
        refusals.append(info.value)
    assert refusals[0].smallest == pytest.approx(refusals[1].smallest)
    assert "round_to" not in str(refusals[0])


def test_default_widths_give_way_for_a_latency_budget_too() -> None:
    """A latency limit out of reach at the default widths (here latency = parameters) is
    searched again at finer widths, and lands."""
    model, x = ThirteenGroups(), _x()

    def params(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
        return float(sum(p.numel() for p in module.parameters()))

    with pytest.raises(rfx.BudgetError, match=r"latency=0\.5 cannot be met"):
        rfx.compile(model, rfx.Budget(latency=0.5), (x,), round_to=8, latency_fn=params)
    gm = rfx.compile(model, rfx.Budget(latency=0.5), (x,), latency_fn=params)
    assert gm.get_submodule("grouped").out_channels < 104
    assert params(gm, (x,)) <= 0.5 * params(model, (x,))


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


class _ScaledConv(nn.Module):
    """A 3x3 conv with a gain per output channel, of no type any built-in handler knows."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * (2 / (9 * cin)) ** 0.5)
        self.gain = nn.Parameter(torch.rand(cout) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, padding=1) * self.gain.view(1, -1, 1, 1)


def _scaled_conv_registries() -> tuple[rfx.rules.RuleRegistry, rfx.layers.LayerRegistry]:
    """A user's rule (how channels flow) and handler (what the layer holds) for it."""
    from reconvene_fx.layers import LayerHandler, get_default_layer_registry, new_param, take
    from reconvene_fx.rules import get_default_registry

    rules, layers = get_default_registry(), get_default_layer_registry()

    @rules.module(_ScaledConv)
    def scaled_conv(ctx):
        return ctx.new(ctx.module.weight.shape[0], 1)

    @layers.module(_ScaledConv)
    class ScaledConvHandler(LayerHandler):
        def describe(self, name, module, node):
            out, cin, kh, kw = module.weight.shape  # bias: the gain, one per output
            return self.view(name, module, node, in_channels=cin, out_channels=out,
                             unit=kh * kw, bias=True)  # fmt: skip

        def macs(self, layer, out_shape):
            return out_shape.numel() * layer.in_channels * layer.unit

        def channel_mass(self, layer, scores):
            return scores.sum((1, 2, 3)).double(), scores.sum((0, 2, 3)).double()

        def shrink(self, layer, in_idx, out_idx):
            m = layer.module
            m.weight = new_param(take(take(m.weight, 0, out_idx), 1, in_idx), m.weight)
            m.gain = new_param(take(m.gain, 0, out_idx), m.gain)

        def zero_inputs(self, layer, removed):
            with torch.no_grad():
                layer.module.weight[:, removed] = 0.0

    return rules, layers


def test_a_users_layer_registry_is_what_compile_uses() -> None:
    """``layers=``: a handler of the user's own registry (not the global one) lets the
    scorer, the plan, its latency candidates, the shrink, the report and verify see a
    layer type of the user's."""
    rules, layers = _scaled_conv_registries()
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), _ScaledConv(16, 24),
                          nn.ReLU(), nn.Conv2d(24, 10, 1))  # fmt: skip
    x = _x(size=12)
    options = {"rules": rules, "leaf_modules": [_ScaledConv], "reinit": False}
    with pytest.raises(rfx.BudgetError):  # the built-in handlers: the layer cannot shrink
        rfx.compile(model, 0.5, (x,), **options)
    gm = rfx.compile(model, 0.5, (x,), layers=layers, **options)
    rep, narrowed = rfx.report(gm), gm.get_submodule("2")
    assert rep.layers["2"].narrowed and rep.params_ratio <= 0.5
    assert rep.layers["2"].density < 1  # scored, so it has a density of its own
    assert narrowed.gain.shape[0] == narrowed.weight.shape[0] == rep.layers["2"].out_idx.numel()
    assert narrowed.weight.shape[0] < 24
    assert narrowed.weight.shape[1] == gm.get_submodule("0").out_channels < 16
    assert rfx.verify(model, gm, (x,), layers=layers).exact
    assert rfx.layers.DEFAULT_LAYERS.for_module(model[2]) is None  # no global change
    # a latency limit measures whole candidates, each shrunk with the same handlers
    gm = rfx.compile(model, rfx.Budget(latency=0.5), (x,), layers=layers,
                     latency_fn=lambda m, _: float(sum(p.numel() for p in m.parameters())),
                     **options)  # fmt: skip
    assert rfx.report(gm).layers["2"].narrowed
    assert rfx.verify(model, gm, (x,), layers=layers).exact


@pytest.mark.parametrize("layers", ["copy", "default"])
def test_the_built_in_layer_registry_is_the_default(layers: str) -> None:
    registry = (rfx.layers.get_default_layer_registry() if layers == "copy"
                else rfx.layers.DEFAULT_LAYERS)  # fmt: skip
    model, x = build("residual"), _x()
    plain = rfx.compile(model, 0.4, (x,), seed=3)
    given = rfx.compile(model, 0.4, (x,), seed=3, layers=registry)
    assert rfx.report(plain).layers.keys() == rfx.report(given).layers.keys()
    for name, lp in rfx.report(plain).layers.items():
        assert torch.equal(lp.out_idx, rfx.report(given).layers[name].out_idx), name
    assert plain.state_dict().keys() == given.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, given.state_dict()[key]), key


def test_a_registry_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(rfx.ArgumentTypeError, match="layers must be a LayerRegistry"):
        rfx.compile(build("se"), 0.5, (_x(),), layers=rfx.rules.get_default_registry())
    with pytest.raises(rfx.ArgumentTypeError, match="rules must be a RuleRegistry"):
        rfx.compile(build("se"), 0.5, (_x(),), rules=rfx.layers.get_default_layer_registry())
