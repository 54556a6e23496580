"""PlanPass: kept channels per node, strategies, budgets."""

from __future__ import annotations

import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.config import CompileConfig
from reconvene_fx.meta import KEEP
from reconvene_fx.passes import ChannelGroupPass, PlanPass, ShapePass

X = torch.randn(2, 3, 16, 16)


def planned(name: str, budget, **config) -> dict:
    gm = torch.fx.symbolic_trace(build(name))
    ShapePass((X,))(gm)
    ChannelGroupPass()(gm)
    result = PlanPass(budget, example_inputs=(X,), config=CompileConfig(**config))(gm)
    assert not result.modified
    return {n.name: n.meta.get(KEEP) for n in gm.graph.nodes}


def test_uniform_removes_the_same_fraction_from_every_group() -> None:
    keep = planned("residual", 0.4, strategy="uniform")
    groups = ("stem_0", "conv1_0", "conv3_0")  # three separate coupled groups
    fractions = [keep[n].index.numel() / keep[n].size for n in groups]
    assert max(fractions) - min(fractions) <= 1 / 16 + 1e-9
    assert max(fractions) < 1


def test_magnitude_keeps_the_heaviest_channels() -> None:
    model = build("se")
    gm = rfx.compile(model, budget=0.5, example_inputs=(X,), reinit=False)
    lp = rfx.report(gm).layers["reduce"]
    produced = model.get_submodule("reduce").weight.detach().abs().flatten(1).sum(1)
    consumed = model.get_submodule("expand").weight.detach().abs().sum((0, 2, 3))
    mass = produced / produced.mean() + consumed / consumed.mean()  # relative to each layer
    kept = set(lp.out_idx.tolist())
    dropped = [i for i in range(8) if i not in kept]
    assert dropped and min(mass[lp.out_idx]) >= max(mass[dropped])


def test_global_strategy_differs_from_uniform_and_holds_the_budget() -> None:
    uniform = planned("inception", 0.5, strategy="uniform")
    global_ = planned("inception", 0.5, strategy="global")
    tensors = [n for n, k in uniform.items() if k is not None and not isinstance(k, tuple)]
    assert any(not torch.equal(uniform[n].index, global_[n].index) for n in tensors)
    gm = rfx.compile(build("inception"), budget=0.5, example_inputs=(X,), strategy="global")
    assert rfx.report(gm).params_ratio <= 0.5


def test_every_tensor_keeps_at_least_one_channel() -> None:
    keep = planned("residual", rfx.Budget(flops=0.01 + 0.02))
    assert all(k.index.numel() >= 1 for k in keep.values() if k is not None)
