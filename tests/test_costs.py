"""The cost model against the model ShrinkPass builds: what PlanPass counts for its plan
(``LayerCosts.evaluate``, per layer ``layer_params``) is what the compiled model holds.

Both read which channels feed a layer's input from one function
(:func:`reconvene_fx.layers.consumed_input`); these tests would catch them drifting apart
on real architectures (residual adds, depthwise and grouped convs, dense concats).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from models import build

import reconvene_fx as rfx
from reconvene_fx.config import CompileConfig
from reconvene_fx.costs import LayerCosts, count_macs, count_params
from reconvene_fx.meta import CHANNELS, KEEP, SHRINK, ChannelInfo, ChannelKeep
from reconvene_fx.passes import ShapePass, ShrinkPass, compile_passes, run_passes


def _removed(gm: torch.fx.GraphModule) -> torch.Tensor:
    """The atoms the plan removed, read back from ``node.meta[KEEP]`` (checked against
    every node's kept channels)."""
    pairs = []
    for node in gm.graph.nodes:
        infos, keeps = node.meta.get(CHANNELS), node.meta.get(KEEP)
        if not isinstance(infos, tuple):
            infos, keeps = (infos,), (keeps,)
        pairs += [(i, k) for i, k in zip(infos, keeps, strict=False)
                  if isinstance(i, ChannelInfo) and isinstance(k, ChannelKeep)]  # fmt: skip
    num_atoms = 1 + max((int(i.atoms.max()) for i, _ in pairs if i.size), default=-1)
    kept = torch.zeros(num_atoms, dtype=torch.bool)
    for info, keep in pairs:
        kept[info.atoms[keep.index]] = True
    removed = ~kept
    for info, keep in pairs:
        assert torch.equal(keep.index, (~removed[info.atoms]).nonzero().flatten())
    return removed


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _check_costs_match_the_compiled_model(model: nn.Module, x: torch.Tensor, budget: float):
    passes = compile_passes(budget, (x,), CompileConfig(method="magnitude", reinit=False))
    shrink = next(i for i, p in enumerate(passes) if isinstance(p, ShrinkPass))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = run_passes(rfx.trace(model), passes[:shrink])  # up to and with PlanPass
    costs = LayerCosts(gm)
    removed = _removed(gm)
    params, macs = costs.evaluate(removed)
    per_layer = dict(zip(costs.layers, costs.layer_params(removed).tolist(), strict=True))
    assert params < costs.params_full and macs < costs.macs_full  # the plan removed some

    gm = run_passes(gm, [passes[shrink]])
    wrong = {name: (want, _own_params(gm.get_submodule(name)))
             for name, want in per_layer.items()
             if _own_params(gm.get_submodule(name)) != want}  # fmt: skip
    assert not wrong, f"layer params (cost model, compiled): {wrong}"
    assert count_params(gm) == params
    assert gm.meta[SHRINK].macs_after == macs
    fresh = rfx.trace(gm)  # MACs counted anew on the compiled model's own shapes
    ShapePass((x,))(fresh)
    assert count_macs(fresh) == macs


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121"])
def test_cost_model_matches_the_compiled_torchvision_model(name: str) -> None:
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    _check_costs_match_the_compiled_model(model, x, 0.4)


@pytest.mark.parametrize("name", ["grouped", "depthwise", "shufflenet", "flatten", "shared"])
def test_cost_model_matches_the_compiled_grouped_and_hand_built_models(name: str) -> None:
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    _check_costs_match_the_compiled_model(build(name), x, 0.4)


def test_kept_counts_are_the_atoms_left_in_each_channel_space() -> None:
    """The scatter-add count of kept atoms per channel space, against counting each space's
    atoms one by one, for random removals."""
    x = torch.randn(2, 3, 16, 16)
    gm = run_passes(rfx.trace(build("shufflenet")), compile_passes(0.5, (x,))[:3])
    costs = LayerCosts(gm)
    g = torch.Generator().manual_seed(0)
    for fraction in (0.0, 0.3, 0.7, 1.0):
        removed = torch.rand(costs.num_atoms, generator=g) < fraction
        expected = [int((~removed[costs._atoms[costs._segment == slot]]).sum())
                    for slot in range(costs._num_slots)]  # fmt: skip
        assert costs._kept_counts(removed).tolist() == expected
        assert costs._kept_counts(removed).dtype == torch.long
