"""Models holding computed tensors (with a grad_fn) outside their parameters and buffers
trace and compile, and are left exactly as they were.

``copy.deepcopy`` refuses a tensor that is not a graph leaf. A module caching what its
forward computed with grad enabled (timm's levit attention biases), or an old-style
``torch.nn.utils.weight_norm`` module (its ``weight`` is computed from ``weight_g`` and
``weight_v``), holds one; the structural copy tracing works on copies it detached.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import pytest
import torch
import torch.nn as nn
from torch.fx._symbolic_trace import symbolic_trace

import reconvene_fx as rfx
from reconvene_fx._copy import independent_copy, own_modules, structural_copy

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class Scaled(nn.Module):
    """Caches a tensor computed from its parameter on ``self`` during forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.gain = nn.Parameter(torch.ones(()))
        self.head = nn.Conv2d(16, 4, 1)
        self.scale: torch.Tensor | None = None
        self.history: dict[str, list[torch.Tensor]] = {"scales": []}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.scale = self.gain * 2
        self.history["scales"] = [self.scale]
        return self.head(self.conv(x).relu() * self.scale)


def test_the_structural_copy_detaches_computed_tensors_and_keeps_sharing() -> None:
    model = Scaled()
    model(X)
    scale = model.scale
    assert scale is not None and scale.grad_fn is not None
    with pytest.raises(RuntimeError, match="graph leaves"):
        copy.deepcopy(model)
    twin = structural_copy(model)
    assert twin.gain is model.gain and twin.conv.weight is model.conv.weight
    assert twin.scale is not scale and twin.scale.grad_fn is None
    assert torch.equal(twin.scale, scale) and twin.scale.data_ptr() != scale.data_ptr()
    assert twin.history["scales"][0] is twin.scale  # one tensor, held twice: still one
    assert model.scale is scale and model.history["scales"][0] is scale
    assert scale.grad_fn is not None
    full = independent_copy(model)
    assert full.gain is not model.gain and torch.equal(full.scale, scale)


def test_a_module_caching_a_computed_tensor_compiles_and_is_left_alone() -> None:
    model = Scaled()
    expected = model(X)
    scale, state = model.scale, {k: v.clone() for k, v in model.state_dict().items()}
    gm = rfx.trace(model, example_inputs=(X,))  # checked against the model: it matches
    torch.testing.assert_close(gm(X), expected)
    out = rfx.compile(model, budget=0.5, example_inputs=(X,), reinit=False)
    assert out.get_submodule("conv").out_channels < 16
    assert rfx.verify(model, out, (X,)).exact  # its reference copies the cache too
    assert model.scale is scale and scale.grad_fn is not None
    assert model.history == {"scales": [scale]}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(X), expected)


def test_a_user_traced_graph_module_with_a_computed_attribute_owns_its_modules() -> None:
    model = Scaled()
    model(X)
    gm = symbolic_trace(nn.Sequential(model))
    own_modules(gm)
    assert gm.get_submodule("0") is not model and gm.get_submodule("0").gain is model.gain
    assert model.scale is not None and model.scale.grad_fn is not None


def test_a_weight_norm_conv_compiles_and_is_left_alone() -> None:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for parametrizations
        norm = nn.utils.weight_norm(nn.Conv2d(3, 16, 3))
    model = nn.Sequential(norm, nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.Conv2d(32, 4, 1))
    weight = norm.weight
    assert weight.grad_fn is not None
    expected = model(X)
    weight = norm.weight  # the forward recomputed it
    gm = rfx.trace(model, example_inputs=(X,))
    torch.testing.assert_close(gm(X), expected)
    # narrowing the weight-normed conv itself needs a layer handler for weight_g/weight_v
    out = rfx.compile(model, budget=0.6, example_inputs=(X,), reinit=False, ignore=["0"])
    assert out.get_submodule("2").out_channels < 32
    assert norm.weight is weight and weight.grad_fn is not None
    assert sorted(n for n, _ in norm.named_parameters()) == ["bias", "weight_g", "weight_v"]
    torch.testing.assert_close(out.get_submodule("0")(X), norm(X))


def test_levit_after_an_eval_forward_compiles_and_its_cache_is_untouched() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("levit_128s", pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    expected = model(x)
    caches = {
        name: dict(m.attention_bias_cache)
        for name, m in model.named_modules()
        if getattr(m, "attention_bias_cache", None)
    }
    assert caches and all(t.grad_fn is not None for c in caches.values() for t in c.values())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ops without a channel rule
        # a ReconveneError at most: today a BudgetError (ops without a channel rule pin 99%
        # of the params), no longer deepcopy's RuntimeError
        with contextlib.suppress(rfx.ReconveneError):
            rfx.compile(model, 0.5, (x,))
        gm = rfx.compile(model, 0.995, (x,), reinit=False)
    rep = rfx.report(gm)
    assert rep.params_after <= 0.995 * rep.params_before
    for name, cache in caches.items():
        now = model.get_submodule(name).attention_bias_cache
        assert now.keys() == cache.keys() and all(now[k] is t for k, t in cache.items())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(x), expected)
