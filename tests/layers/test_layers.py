"""Layer handlers: counts, slicing and zeroing per layer type, and a new type in one place."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import reconvene_fx as rfx
from reconvene_fx.layers import (
    DEFAULT_LAYERS,
    Layer,
    LayerHandler,
    get_default_layer_registry,
    layer_calls,
    module_layer,
    new_param,
    take,
)
from reconvene_fx.rules import DEFAULT_RULES, RuleContext


def _direct_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters(recurse=False))


@pytest.mark.parametrize(
    "module",
    [
        nn.Conv1d(4, 6, 3),
        nn.Conv2d(4, 8, 3, groups=2),
        nn.Conv2d(8, 16, 3, groups=8, bias=False),
        nn.Conv3d(2, 4, (1, 2, 3)),
        nn.ConvTranspose2d(4, 6, 2, stride=2),
        nn.Linear(6, 5),
        nn.BatchNorm2d(8),
        nn.GroupNorm(2, 8),
        nn.LayerNorm(8),
        nn.InstanceNorm2d(8, affine=True),
    ],
    ids=lambda m: type(m).__name__,
)
def test_layer_counts_its_own_parameters(module: nn.Module) -> None:
    layer = module_layer("m", module)
    assert layer is not None
    assert layer.params == _direct_params(module)


def test_conv_macs_match_a_direct_count() -> None:
    conv = nn.Conv2d(4, 8, 3, groups=2)
    layer = module_layer("c", conv)
    out = conv(torch.randn(2, 4, 10, 10)).shape
    assert layer.handler.macs(layer, out) == out.numel() * (4 // 2) * 9


@pytest.mark.parametrize(
    ("module", "in_idx", "out_idx"),
    [
        (nn.Conv2d(4, 6, 3), torch.tensor([0, 2, 3]), torch.tensor([1, 5])),
        (nn.Conv2d(4, 6, 3), None, torch.tensor([0, 4])),
        (nn.Linear(5, 3), torch.tensor([1, 4]), None),
        (nn.Conv2d(4, 8, 3, groups=2), torch.tensor([1, 3]), torch.tensor([0, 1, 4, 5])),
        (nn.Conv2d(4, 6, 3), torch.tensor([0, 3]), None),  # inputs only: one copy, new
        (nn.Conv2d(4, 8, 3, groups=2), torch.tensor([1, 3]), None),
    ],
)
def test_shrink_slices_every_tensor_into_new_storage(module, in_idx, out_idx) -> None:
    layer = module_layer("m", module)
    old = {n: p.detach().clone() for n, p in module.named_parameters()}
    old_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    x = torch.randn(2, layer.in_channels, 7, 7) if layer.in_dim == 1 else torch.randn(2, 5)
    layer.handler.shrink(layer, in_idx, out_idx)
    assert not old_ptrs & {p.untyped_storage().data_ptr() for p in module.parameters()}
    out_keep = out_idx if out_idx is not None else torch.arange(old["weight"].shape[0])
    assert torch.equal(module.bias, old["bias"][out_keep])
    # equivalence (design §5): the slice sees only the kept inputs
    if in_idx is not None:
        x_zeroed = torch.zeros_like(x)
        x_zeroed.index_copy_(1 if layer.in_dim == 1 else -1, in_idx,
                             x.index_select(1 if layer.in_dim == 1 else -1, in_idx))  # fmt: skip
        x_small = x.index_select(1 if layer.in_dim == 1 else -1, in_idx)
    else:
        x_zeroed = x_small = x
    full = module_layer("ref", _rebuilt(module, old))
    reference = full.module(x_zeroed).index_select(1 if layer.out_dim == 1 else -1, out_keep)
    assert torch.allclose(module(x_small), reference, atol=1e-6)


@pytest.mark.parametrize(
    "module",
    [nn.Conv2d(6, 4, 3), nn.Conv2d(6, 4, 1), nn.Conv2d(6, 9, (3, 2), groups=3),
     nn.Conv2d(6, 6, 3, groups=6)],
)  # fmt: skip
def test_conv_channel_mass_sums_every_weight_of_each_channel(module: nn.Conv2d) -> None:
    layer = module_layer("m", module)
    scores = torch.rand(module.weight.shape, generator=torch.Generator().manual_seed(0))
    out_mass, in_mass = layer.handler.channel_mass(layer, scores)
    g, per_in = module.groups, module.in_channels // module.groups
    per_out = module.out_channels // g
    expected_in = torch.zeros(module.in_channels, dtype=torch.float64)
    for o in range(module.out_channels):  # output o of group o // per_out reads its inputs
        for i in range(per_in):
            expected_in[(o // per_out) * per_in + i] += scores[o, i].double().sum()
    expected_out = torch.stack([scores[o].double().sum() for o in range(module.out_channels)])
    assert out_mass.dtype == in_mass.dtype == torch.float64
    assert torch.allclose(out_mass, expected_out, rtol=1e-5)
    assert torch.allclose(in_mass, expected_in, rtol=1e-5)


def _rebuilt(module: nn.Module, old: dict[str, torch.Tensor]) -> nn.Module:
    if isinstance(module, nn.Linear):
        ref = nn.Linear(old["weight"].shape[1], old["weight"].shape[0])
    else:
        groups = module.groups if module.groups > 1 else 1
        ref = nn.Conv2d(old["weight"].shape[1] * groups, old["weight"].shape[0], 3, groups=groups)
    with torch.no_grad():
        ref.weight.copy_(old["weight"])
        ref.bias.copy_(old["bias"])
    return ref


def test_transposed_conv_is_pruned_on_both_sides_exactly() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.ConvTranspose2d(16, 12, 2, stride=2),
                        nn.ReLU(), nn.Conv2d(12, 4, 1)).eval()  # fmt: skip
    x = torch.randn(2, 3, 10, 10)
    gm = rfx.compile(net, budget=0.4, example_inputs=(x,), reinit=False, strategy="uniform")
    up = gm.get_submodule("2")
    assert up.in_channels < 16 and up.out_channels < 12
    rep = rfx.report(gm)
    assert rep.layers["2"].params_after == up.weight.numel() + up.bias.numel()
    assert rfx.verify(net, gm, (x,)).exact


def test_zero_inputs_equals_zeroing_the_input_channels() -> None:
    conv = nn.Conv2d(4, 8, 3, groups=2)
    x = torch.randn(1, 4, 6, 6)
    removed = torch.tensor([False, True, False, True])
    expected = conv(x * (~removed).view(1, 4, 1, 1).float())
    layer = module_layer("c", conv)
    layer.handler.zero_inputs(layer, removed)
    assert torch.allclose(conv(x), expected, atol=1e-6)


def test_a_new_layer_type_is_one_handler_and_one_rule() -> None:
    """A layer type of your own (here a transposed conv, weight [in, out, k, k]) becomes
    prunable with a handler and a rule, and compile, report and verify follow."""

    class Deconv(nn.ConvTranspose2d):
        pass

    class ConvTransposeHandler(LayerHandler):
        def describe(self, name, module, node):
            return Layer(name, module, self, node, True, module.in_channels,
                         module.out_channels, unit=math.prod(module.kernel_size),
                         bias=module.bias is not None)  # fmt: skip

        def weight(self, layer):
            return layer.module.weight

        def macs(self, layer, out_shape):
            return out_shape.numel() * layer.in_channels * layer.unit

        def channel_mass(self, layer, scores):
            return scores.sum((0, 2, 3)).double(), scores.sum((1, 2, 3)).double()

        def shrink(self, layer, in_idx, out_idx):
            m = layer.module
            w = take(m.weight, 0, in_idx)
            w = take(w, 1, out_idx)
            m.weight = new_param(w, m.weight)
            m.bias = new_param(take(m.bias, 0, out_idx), m.bias)
            m.in_channels, m.out_channels = w.shape[:2]

        def zero_inputs(self, layer, removed):
            with torch.no_grad():
                layer.module.weight[removed] = 0.0

    def conv_transpose_rule(ctx: RuleContext):
        return ctx.new(ctx.module.out_channels, 1)

    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), Deconv(16, 12, 3),
                        nn.ReLU(), nn.Conv2d(12, 4, 1))  # fmt: skip
    x = torch.randn(2, 3, 10, 10)
    DEFAULT_LAYERS.modules[Deconv] = ConvTransposeHandler()
    DEFAULT_RULES.modules[Deconv] = conv_transpose_rule
    try:
        gm = rfx.compile(net, budget=0.4, example_inputs=(x,), reinit=False, strategy="uniform")
        rep = rfx.report(gm)
        assert rfx.verify(net, gm, (x,)).exact
    finally:
        del DEFAULT_LAYERS.modules[Deconv]
        del DEFAULT_RULES.modules[Deconv]
    deconv = gm.get_submodule("2")
    assert rep.layers["2"].narrowed and deconv.in_channels < 16 and deconv.out_channels < 12
    assert rep.params_ratio <= 0.4
    assert rep.layers["2"].params_after == deconv.weight.numel() + deconv.bias.numel()


def test_a_functional_layer_handler_gets_the_module_holding_its_weight() -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Module()
            self.proj.weight = nn.Parameter(torch.randn(4, 6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, self.proj.weight)

    seen = []

    class FunctionalLinear(LayerHandler):
        def describe(self, name, module, node):
            seen.append((name, module))
            return Layer(name, module, self, node, True, module.weight.shape[1],
                         module.weight.shape[0], in_dim=-1, out_dim=-1)  # fmt: skip

    registry = get_default_layer_registry()
    registry.function(torch.nn.functional.linear)(FunctionalLinear)
    model = Holder()
    gm = torch.fx.symbolic_trace(model)
    (node, layer), *rest = list(layer_calls(gm, registry))
    assert not rest and node.target is torch.nn.functional.linear
    assert seen == [("proj", gm.get_submodule("proj"))]
    assert (layer.name, layer.in_channels, layer.out_channels, layer.params) == ("proj", 6, 4, 24)
    assert list(layer_calls(gm)) == []  # the default registry has no functional handlers


def test_rule_and_layer_registries_have_one_shape() -> None:
    import inspect

    from reconvene_fx._registry import TypeRegistry
    from reconvene_fx.layers import LayerRegistry
    from reconvene_fx.rules import RuleRegistry

    shared = ("module", "function", "method", "lazy", "lookup", "for_module", "for_function",
              "for_method", "copy")  # fmt: skip
    for name in shared:
        rule_method, layer_method = getattr(RuleRegistry, name), getattr(LayerRegistry, name)
        assert inspect.signature(rule_method) == inspect.signature(layer_method), name
    assert issubclass(RuleRegistry, TypeRegistry) and issubclass(LayerRegistry, TypeRegistry)
    assert isinstance(get_default_layer_registry(), LayerRegistry)


def test_a_lazy_layer_handler_waits_for_its_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """``lazy(kind, module, name, handler)``, as for rules: nothing is imported; once the
    library is, its type (and a subclass that keeps its forward) finds the handler."""
    import sys
    import types

    from reconvene_fx.layers.conv import ConvHandler

    class LibraryConv(nn.Conv2d):  # a forward of its own: the Conv2d handler is not its
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x)

    class Subclass(LibraryConv):
        pass

    registry = get_default_layer_registry()
    registry.lazy("module", "no_such_library.layers", "LibraryConv", ConvHandler)  # made once
    assert "no_such_library.layers" not in sys.modules
    assert registry.for_module(LibraryConv(3, 4, 3)) is None  # not imported yet
    library = types.ModuleType("no_such_library.layers")
    library.LibraryConv = LibraryConv  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "no_such_library.layers", library)
    handler = registry.for_module(Subclass(3, 4, 3))
    assert isinstance(handler, ConvHandler) and registry.for_module(LibraryConv(3, 4, 3)) is handler
    assert DEFAULT_LAYERS.for_module(LibraryConv(3, 4, 3)) is None  # the copy only
    with pytest.raises(rfx.ArgumentError, match="kind must be 'module' or 'function'"):
        registry.lazy("no_such_library.layers", "LibraryConv", ConvHandler(), None)


def test_submodule_reads_the_tree_and_fails_as_get_submodule() -> None:
    from reconvene_fx.layers.base import submodule

    net = nn.Sequential(nn.Sequential(nn.ReLU(), nn.Conv2d(1, 1, 1)), nn.Linear(2, 2))
    assert submodule(net, "0.1") is net[0][1] is net.get_submodule("0.1")
    assert submodule(net, "") is net
    with pytest.raises(AttributeError) as ours:
        submodule(net, "0.7")
    with pytest.raises(AttributeError) as theirs:
        net.get_submodule("0.7")
    assert str(ours.value) == str(theirs.value)
