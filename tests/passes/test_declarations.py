"""Each pass declares the meta keys it reads and writes; a pipeline is checked against those
declarations before it runs, analyze picks its passes from them, and the README's pass table
is printed from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from models import build
from torch.fx.passes.infra.pass_base import PassResult

import reconvene_fx as rfx
from reconvene_fx.config import CompileConfig
from reconvene_fx.errors import CompilerError, PassOrderError, ReconveneError
from reconvene_fx.meta import PLAN, REPORT, SENSITIVITY_TABLE, SHRINK, MetaKey
from reconvene_fx.passes import (
    ChannelGroupPass,
    LiftLayersPass,
    PlanPass,
    ReconvenePass,
    SensitivityPass,
    ShapePass,
    ShrinkPass,
    check_order,
    compile_passes,
    pass_table,
    passes_for,
    run_passes,
)

X = torch.randn(2, 3, 16, 16)
README = Path(__file__).resolve().parents[2] / "README.md"


def _names(passes: list[Any]) -> list[str]:
    return [type(p).__name__ for p in passes]


@pytest.mark.parametrize("name", ["residual", "densenet", "flatten"])
@pytest.mark.parametrize("composite", [False, True])
def test_every_pass_finds_what_it_reads_and_leaves_what_it_declares(
    name: str, composite: bool
) -> None:
    gm = rfx.trace(build(name))
    for p in compile_passes(0.4, (X,), CompileConfig(composite=composite)):
        for key in p.reads:
            assert key.written_in(gm), (type(p).__name__, key)
        result = p(gm)
        gm = result.graph_module if result is not None else gm
        for key in p.writes:
            if key.where == "graph":
                assert isinstance(gm.meta[key], key.value_type), (type(p).__name__, key)
    for key in (SENSITIVITY_TABLE, PLAN, SHRINK, REPORT):
        assert key.get(gm) is gm.meta[str(key)]


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (["ShapePass", "ChannelGroupPass", "PlanPass"], "PlanPass needs SensitivityPass"),
        (["ShapePass", "SensitivityPass", "PlanPass"], "PlanPass needs ChannelGroupPass"),
        (["ChannelGroupPass", "ShapePass"], "ChannelGroupPass needs ShapePass"),
        (["ShapePass", "ChannelGroupPass", "ShrinkPass"], "ShrinkPass needs PlanPass"),
        (["ShapePass", "SensitivityPass", "ReportPass"], "ReportPass needs ShrinkPass"),
        (
            ["ShapePass", "SensitivityPass", "LiftLayersPass"],
            "SensitivityPass reads .*reconvene.lifted.*LiftLayersPass writes after it",
        ),
    ],
)
def test_a_pipeline_in_the_wrong_order_fails_before_any_pass_runs(
    order: list[str], message: str
) -> None:
    by_name = {type(p).__name__: p for p in compile_passes(0.5, (X,))}
    gm = rfx.trace(build("residual"))
    with pytest.raises(PassOrderError, match=message):
        run_passes(gm, [by_name[name] for name in order])
    assert not any("tensor_meta" in n.meta for n in gm.graph.nodes)  # ShapePass never ran


def test_what_the_graph_module_holds_already_counts_as_written() -> None:
    passes = compile_passes(0.5, (X,))
    gm = run_passes(rfx.trace(build("residual")), passes[:5])  # ... PlanPass
    check_order(passes[5:], gm)
    with pytest.raises(PassOrderError, match="ShrinkPass needs PlanPass"):
        check_order(passes[5:])


def test_analyze_runs_the_passes_the_sensitivity_table_needs_and_no_other() -> None:
    chosen = passes_for([SENSITIVITY_TABLE], compile_passes(0.5, (X,)))
    assert _names(chosen) == ["ShapePass", "LiftLayersPass", "SensitivityPass"]
    report = passes_for([REPORT], compile_passes(0.5, (X,)))
    assert _names(report) == [
        "ShapePass", "LiftLayersPass", "ChannelGroupPass", "SensitivityPass", "PlanPass",
        "ShrinkPass", "ReportPass",
    ]  # fmt: skip
    model = build("residual")
    table = rfx.analyze(model, 0.5, (X,))
    gm = rfx.compile(model, 0.5, (X,))
    rep = rfx.report(gm)
    assert table.global_density == rep.global_density
    analyzed = {row["layer"]: (row["density"], row["selected"]) for row in table.to_list()}
    assert analyzed == {name: (lp.density, lp.selected) for name, lp in rep.layers.items()}


def test_a_pass_that_does_not_write_what_it_declares_fails() -> None:
    class Forgetful(ReconvenePass):
        writes = (PLAN,)

        def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
            return PassResult(graph_module, False)

    with pytest.raises(
        ReconveneError, match=r'Forgetful declares that it writes gm.meta\["reconvene.plan"\]'
    ):
        Forgetful()(rfx.trace(build("residual")))


def test_the_readme_pass_table_is_the_declared_one() -> None:
    table = pass_table()
    assert table in README.read_text(), "README pass table differs: paste pass_table()"
    for cls in (ShapePass, LiftLayersPass, ChannelGroupPass, SensitivityPass, PlanPass, ShrinkPass):
        assert f"| `{cls.__name__}` |" in table


def test_a_meta_key_is_its_string_and_checks_its_value() -> None:
    gm = rfx.trace(build("residual"))
    assert PLAN == "reconvene.plan" and isinstance(PLAN, MetaKey)
    with pytest.raises(PassOrderError, match=r"gm\.meta has no 'reconvene\.plan'"):
        PLAN.get(gm)
    gm.meta["reconvene.plan"] = "not a plan"
    with pytest.raises(CompilerError, match="holds a str, not a PlanSummary"):
        PLAN.get(gm)
