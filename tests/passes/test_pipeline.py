"""compile is a PassManager run of the public passes; each pass names what it needs."""

from __future__ import annotations

import pytest
import torch
from models import build
from torch.fx.passes.infra.pass_manager import PassManager

import reconvene_fx as rfx
from reconvene_fx.config import CompileConfig
from reconvene_fx.errors import PassOrderError
from reconvene_fx.passes import (
    ChannelGroupPass,
    MaskPass,
    PlanPass,
    ReportPass,
    SensitivityPass,
    ShapePass,
    ShrinkPass,
    compile_passes,
)

X = torch.randn(2, 3, 16, 16)


def _same_report(a: rfx.PruningReport, b: rfx.PruningReport) -> None:
    assert a.to_dict() == b.to_dict()
    for name, lp in a.layers.items():
        assert torch.equal(lp.in_idx, b.layers[name].in_idx), name
        assert torch.equal(lp.out_idx, b.layers[name].out_idx), name


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("residual", {}),
        ("densenet", {"strategy": "uniform", "method": "snip"}),
        ("inception", {"composite": True, "method": "snip"}),
        ("grouped", {"strategy": "global", "reinit": False, "round_to": 2}),
        ("depthwise", {"budget": rfx.Budget(params=0.6, macs=0.5)}),
    ],
)
def test_a_user_pass_manager_reproduces_compile_bit_for_bit(name: str, options: dict) -> None:
    options = dict(options)
    budget = options.pop("budget", 0.4)
    model = build(name)
    expected = rfx.compile(model, budget=budget, example_inputs=(X,), seed=3, **options)
    config = CompileConfig(seed=3, **options)
    passes = compile_passes(budget, (X,), config)
    got = PassManager(passes)(rfx.trace(model)).graph_module
    assert got.code == expected.code
    want_state, got_state = expected.state_dict(), got.state_dict()
    assert want_state.keys() == got_state.keys()
    for key, value in want_state.items():
        assert torch.equal(value, got_state[key]), key
    _same_report(rfx.report(expected), rfx.report(got))
    with torch.no_grad():
        assert torch.equal(expected.eval()(X), got.eval()(X))


def _traced(name: str = "residual") -> torch.fx.GraphModule:
    return rfx.trace(build(name))


def _scores() -> SensitivityPass:
    return SensitivityPass(0.5, example_inputs=(X,))


def _plan() -> PlanPass:
    return PlanPass(0.5, example_inputs=(X,))


@pytest.mark.parametrize(
    ("passes", "missing"),
    [
        ([ShapePass((X,)), _scores(), _plan()], "ChannelGroupPass"),
        ([ShapePass((X,)), ChannelGroupPass(), _plan()], "SensitivityPass"),
        ([ChannelGroupPass()], "ShapePass"),
        ([ShapePass((X,)), ChannelGroupPass(), ShrinkPass()], "PlanPass"),
        ([_scores(), ReportPass()], "ShrinkPass"),
        ([MaskPass()], "ShrinkPass"),
    ],
)
def test_a_pass_run_too_early_names_the_pass_it_needs(passes: list, missing: str) -> None:
    gm = _traced()
    *before, last = passes
    for p in before:
        p(gm)
    with pytest.raises(PassOrderError, match=f"needs {missing} to run first"):
        last(gm)


def test_passes_log_their_time_when_progress_is_on(capsys: pytest.CaptureFixture) -> None:
    rfx.compile(build("residual"), budget=0.5, example_inputs=(X,), progress=True)
    err = capsys.readouterr().err
    for name in ("ShapePass", "ChannelGroupPass", "SensitivityPass", "PlanPass", "ShrinkPass",
                 "ReportPass", "DetachPass"):  # fmt: skip
        assert f"[reconvene_fx] {name} done in " in err, name


def test_shrink_updates_the_recorded_shapes_without_a_second_shape_pass() -> None:
    gm = rfx.compile(build("residual"), budget=0.4, example_inputs=(X,))
    recorded = {n.name: n.meta["tensor_meta"].shape for n in gm.graph.nodes
                if n.op == "call_module"}  # fmt: skip
    fresh = rfx.trace(gm)
    ShapePass((X,))(fresh)
    actual = {n.name: n.meta["tensor_meta"].shape for n in fresh.graph.nodes
              if n.op == "call_module"}  # fmt: skip
    assert recorded == actual
    rep = rfx.report(gm)
    # the report counts MACs per sample; count_macs counts the whole example batch
    assert rep.batch_size == X.shape[0] > 1
    assert rep.macs_after * rep.batch_size == rfx.costs.count_macs(fresh)
    assert rep.macs_after < rep.macs_before
