"""shrink_layers: the rewrite engine, run without a pass (as the plan's candidates are)."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx._copy import structural_copy
from reconvene_fx.config import CompileConfig
from reconvene_fx.meta import PLAN
from reconvene_fx.passes import ShrinkPass, compile_passes, run_passes
from reconvene_fx.shrinking import shrink_layers

X = torch.randn(2, 3, 16, 16)


def _planned(model: torch.nn.Module, budget: float = 0.5) -> torch.fx.GraphModule:
    """``model`` traced and planned: the passes of compile up to PlanPass."""
    passes = compile_passes(budget, (X,), CompileConfig(reinit=False))
    upto = next(i for i, p in enumerate(passes) if isinstance(p, ShrinkPass))
    return run_passes(rfx.trace(model), passes[:upto])


@pytest.mark.parametrize("name", ["residual", "densenet", "shufflenet"])
def test_shrink_layers_makes_the_model_compile_makes(name: str) -> None:
    model = build(name)
    gm = _planned(model)
    record = shrink_layers(gm)
    compiled = rfx.compile(model, budget=0.5, example_inputs=(X,), reinit=False)
    want = compiled.state_dict()
    assert gm.state_dict().keys() == want.keys()
    for key, tensor in gm.state_dict().items():
        assert torch.equal(tensor, want[key]), key
    layers = rfx.report(compiled).layers
    assert record.layers.keys() == layers.keys()
    for layer, change in record.layers.items():
        assert torch.equal(change.in_idx, layers[layer].in_idx), layer
        assert torch.equal(change.out_idx, layers[layer].out_idx), layer
    assert set(record.sliced) >= {
        n for n, c in record.layers.items() if c.params_after < c.params_before
    }
    torch.testing.assert_close(gm(X), compiled(X))


def test_a_candidate_needs_no_plan_and_leaves_the_planned_model_alone() -> None:
    gm = _planned(build("residual"))
    del gm.meta[PLAN]  # the plan's candidates are shrunk before PlanPass writes it
    weights = gm.state_dict(keep_vars=True)
    candidate = structural_copy(gm)
    record = shrink_layers(candidate)
    assert record.sliced and record.macs_after < record.macs_before
    assert all(gm.state_dict(keep_vars=True)[k] is t for k, t in weights.items())
    for name in record.sliced:
        assert gm.get_submodule(name) is not candidate.get_submodule(name)


def test_nothing_narrowed_slices_nothing() -> None:
    gm = _planned(build("residual"), budget=1.0)
    weights = gm.state_dict(keep_vars=True)
    result = ShrinkPass(reinit=True)(gm)
    assert result is not None and result.modified is False
    assert result.graph_module.meta["reconvene.shrink"].sliced == ()
    assert all(gm.state_dict(keep_vars=True)[k] is t for k, t in weights.items())


def test_masked_layers_keep_their_sliced_weights_when_others_are_redrawn() -> None:
    gm = _planned(build("residual"))
    kept, redrawn = structural_copy(gm), structural_copy(gm)
    record = shrink_layers(kept)
    weighted = [n for n in record.sliced if n in record.layers]
    masked, other = weighted[0], weighted[1]
    shrink_layers(redrawn, reinit=True, seed=3, masked={masked})
    weight = kept.get_submodule(masked).weight
    assert torch.equal(redrawn.get_submodule(masked).weight, weight)
    assert not torch.equal(redrawn.get_submodule(other).weight, kept.get_submodule(other).weight)
