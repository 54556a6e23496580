"""Scaled dot-product attention inside a CNN: pruned through per head feature, exactly.

The block is written the way diffusers' ``Attention`` (AttnProcessor2_0) writes it: the
feature map flattened to tokens, q/k/v projections, a head size read off ``key.shape``,
``F.scaled_dot_product_attention``, the heads merged back with ``heads * head_dim``, the
output projection, the tokens folded back with the input's ``channel`` and a residual add.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import reconvene_fx as rfx
from reconvene_fx.coupling import ChannelGraph
from reconvene_fx.meta import CHANNELS
from reconvene_fx.passes import ChannelGroupPass, ShapePass, UnknownOpWarning
from reconvene_fx.rules.attention import query_layer
from reconvene_fx.tracing import trace

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # ONNX export


class _Attention(nn.Module):
    def __init__(self, c: int, heads: int, *, query_read_twice: bool = False,
                 scale: float | None = None) -> None:  # fmt: skip
        super().__init__()
        self.heads = heads
        self.query_read_twice = query_read_twice
        self.scale = scale
        self.to_q, self.to_k, self.to_v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c), nn.Dropout(0.0)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        batch_size, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        query = self.to_q(hidden_states)
        key = self.to_k(hidden_states)
        value = self.to_v(hidden_states)
        inner_dim = key.shape[-1]
        head_dim = inner_dim // self.heads
        query = query.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, self.heads, head_dim).transpose(1, 2)
        if self.query_read_twice:
            value = value + query  # the query's values are read outside the attention
        hidden_states = F.scaled_dot_product_attention(
            query, key, value, dropout_p=0.0, is_causal=False, scale=self.scale
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, self.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = self.to_out[1](self.to_out[0](hidden_states))
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        return hidden_states + residual


class _Net(nn.Module):
    """A CNN with one attention block between two convs."""

    def __init__(self, heads: int, **attention) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.attn = _Attention(32, heads, **attention)
        self.conv = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.attn(self.stem(x))).mean((2, 3)))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _compile(model: nn.Module, tmp_path) -> torch.fx.GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownOpWarning)
        gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False,
                         strategy="uniform", method="magnitude")  # fmt: skip
    assert rfx.verify(model, gm, (_x(),)).exact
    rfx.export_onnx(gm, tmp_path / "m.onnx", (_x(),))  # checked against PyTorch
    return gm


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_prunes_the_same_features_of_q_k_and_v_in_every_head(heads, tmp_path) -> None:
    torch.manual_seed(0)
    model = _Net(heads).eval()
    gm = _compile(model, tmp_path)
    kept = {
        name: gm.get_submodule(f"attn.{name}").out_features for name in ("to_q", "to_k", "to_v")
    }
    assert len(set(kept.values())) == 1 and kept["to_q"] < 32  # narrowed alike
    assert kept["to_q"] % heads == 0  # each head keeps as many features
    assert gm.get_submodule("attn.to_out.0").in_features == kept["to_v"]
    # the residual stream (stem, to_out outputs) is pruned too
    assert gm.get_submodule("attn.to_out.0").out_features < 32
    # the scale the model had (1 / sqrt(32 // heads)) is written into the call
    attend = next(n for n in gm.graph.nodes if n.target is F.scaled_dot_product_attention)
    assert attend.kwargs["scale"] == pytest.approx((32 // heads) ** -0.5)


def test_an_explicit_scale_is_left_as_it_is(tmp_path) -> None:
    torch.manual_seed(0)
    gm = _compile(_Net(2, scale=0.1).eval(), tmp_path)
    attend = next(n for n in gm.graph.nodes if n.target is F.scaled_dot_product_attention)
    assert attend.kwargs["scale"] == 0.1
    assert gm.get_submodule("attn.to_q").out_features < 32


def test_a_query_read_outside_the_attention_keeps_q_and_k_whole(tmp_path) -> None:
    torch.manual_seed(0)
    model = _Net(2, query_read_twice=True).eval()
    gm = _compile(model, tmp_path)  # still exact: nothing that cannot be zeroed is cut
    assert gm.get_submodule("attn.to_q").out_features == 32
    assert gm.get_submodule("attn.to_k").out_features == 32


def test_query_layer_follows_views_and_transposes_only() -> None:
    gm = trace(_Net(2), example_inputs=(_x(),))
    attend = next(n for n in gm.graph.nodes if n.target is F.scaled_dot_product_attention)
    assert query_layer(attend) == "attn.to_q"
    twice = trace(_Net(2, query_read_twice=True), example_inputs=(_x(),))
    attend = next(n for n in twice.graph.nodes if n.target is F.scaled_dot_product_attention)
    assert query_layer(attend) is None


def test_a_size_read_off_an_unrelated_tensor_pins_both() -> None:
    """``y.view(..., k.shape[-1])`` with ``k`` as wide as ``y`` but pruned independently:
    the size would not follow, so the counts are checked after the coupling and both
    tensors pinned."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            a, b = self.a(x), self.b(x)
            n, _, h, w = a.shape
            flat = a.reshape(n, b.shape[1], h * w)  # b's count shapes a
            return self.head(flat.view(n, -1, h, w)) + b.sum()

    gm = trace(Net(), example_inputs=(_x(),))
    ShapePass((_x(),))(gm)
    ChannelGroupPass()(gm)
    infos = {n.name: n.meta.get(CHANNELS) for n in gm.graph.nodes}
    assert bool(infos["a"].pinned.all()) and bool(infos["b"].pinned.all())
    assert "with a size read off another tensor" in str(infos["a"].pinned_by(0))


def test_counts_kept_equal_by_ties_do_not_pin() -> None:
    g = ChannelGraph()
    a, b = g.new_space(6), g.new_space(6)
    g.tie(g.ids(a)[:3], g.ids(b)[3:])  # positions differ, counts per atom agree
    g.tie(g.ids(a)[3:], g.ids(b)[:3])
    g.pin_unless_same_count(g.ids(a), g.ids(b))
    assert not bool(g.resolve().pinned.any())
    g = ChannelGraph()
    a, b = g.new_space(6), g.new_space(6)
    g.tie(g.ids(a)[:2], g.ids(b)[:1])  # two channels of a go with one of b
    g.pin_unless_same_count(g.ids(a), g.ids(b))
    assert bool(g.resolve().pinned.all())
