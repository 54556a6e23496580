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
from models import build
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


def _same_structure(a: object, b: object, seen: dict[int, object] | None = None) -> None:
    """``b`` is a copy of ``a`` as ``copy.deepcopy`` makes it: the same types, keys and
    values all the way down, each object copied once (sharing kept), tensors equal."""
    seen = {} if seen is None else seen
    if id(a) in seen:
        assert seen[id(a)] is b
        return
    seen[id(a)] = b
    if isinstance(a, torch.fx.GraphModule):  # a class per instance: copied by its own
        assert isinstance(b, torch.fx.GraphModule) and a.code == b.code
        return
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, nn.Module):
        assert vars(a).keys() == vars(b).keys()
        for key, value in vars(a).items():
            _same_structure(value, vars(b)[key], seen)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key, value in a.items():
            _same_structure(value, b[key], seen)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same_structure(x, y, seen)
    elif isinstance(a, (set, int, float, str, bool, type(None))):
        assert a == b


class _Holder:
    """A plain object holding a computed tensor: copied by copy.deepcopy itself."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t


class _OwnCopy(nn.Linear):
    """A module with a __deepcopy__ of its own: copied by it, not field by field."""

    def __deepcopy__(self, memo: dict[int, object]) -> _OwnCopy:
        twin = _OwnCopy(2, 2)
        twin.weight, twin.bias = self.weight, self.bias
        memo[id(self)] = twin
        return twin


def _odd_model() -> nn.Module:
    import torchvision

    model = torchvision.models.mobilenet_v3_small()
    shared = model.features[0]
    model.again = shared  # one module under two names
    model.tags = {"names": ["a", "b"], "set": {"x", "y"}, "sizes": (1, (2, 3))}
    model.cache = {
        "scale": model.classifier[0].weight * 2,
        "plain": _Holder(torch.ones(2, requires_grad=True) * 3),
    }
    model.own = _OwnCopy(2, 2)
    model.graph = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2)))
    model.features[1].register_forward_hook(lambda *_: None)
    shared_empty: dict[str, int] = {}  # one empty dict held by two modules: copied once
    model.features[2].slots, model.features[3].slots = shared_empty, shared_empty
    return model


@pytest.mark.parametrize("make", [_odd_model, lambda: build("residual")], ids=["odd", "resnet"])
def test_the_structural_copy_is_the_deep_copy_that_shares_tensors(make) -> None:
    """The fast copy gives what ``copy.deepcopy`` with a memo of the shared tensors and of
    the computed ones (as detached clones) gives."""
    from reconvene_fx._copy import _computed_tensors, tensors_of

    model = make()
    memo: dict[int, object] = {id(t): t for t in tensors_of(model)}
    for t in _computed_tensors(model):
        memo.setdefault(id(t), t.detach().clone())
    expected = copy.deepcopy(model, memo)
    got = structural_copy(model)
    _same_structure(got, expected)
    _same_structure(model, got)  # and it is a copy of the model, sharing its tensors
    assert [id(p) for p in got.parameters()] == [id(p) for p in model.parameters()]
    assert [id(b) for b in got.buffers()] == [id(b) for b in model.buffers()]
    assert all(got_m is not m for got_m, m in zip(got.modules(), model.modules(), strict=True))
    if hasattr(model, "again"):
        assert got.again is got.features[0] and got.own is not model.own
        assert got.cache["scale"].grad_fn is None and got.cache["plain"].t.grad_fn is None
        assert isinstance(got.graph, torch.fx.GraphModule) and got.graph is not model.graph
        assert len(got.features[1]._forward_hooks) == 1
        assert got.features[2].slots is got.features[3].slots is not model.features[2].slots
        hooks = got.features[4]._forward_hooks
        assert hooks is not model.features[4]._forward_hooks and not hooks  # empty, its own
        hooks[0] = print
        assert not model.features[4]._forward_hooks
