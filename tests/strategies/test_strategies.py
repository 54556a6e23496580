"""Strategies are a registry: built-ins, a custom one, unknown names."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.strategies import (
    STRATEGIES,
    PlanInputs,
    RemovalOrder,
    by_key,
    fraction_in_group,
    get_strategy,
    register_strategy,
)
from reconvene_fx.strategies.reconvene import group_targets

X = torch.randn(2, 3, 16, 16)


def test_builtin_strategies_are_registered() -> None:
    assert {"reconvene", "uniform", "global"} <= set(STRATEGIES)


def test_unknown_strategy_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown strategy 'widest'.*global.*reconvene"):
        get_strategy("widest")
    with pytest.raises(ValueError, match="unknown strategy"):
        rfx.compile(build("residual"), 0.5, (X,), strategy="widest")


def test_a_registered_strategy_drives_the_plan() -> None:
    calls: list[PlanInputs] = []

    @register_strategy("strongest-first")
    def strongest_first(inputs: PlanInputs) -> RemovalOrder:
        calls.append(inputs)
        return RemovalOrder(inputs.removable[by_key(inputs, -inputs.scores[inputs.removable])])

    try:
        model = build("residual")
        weak = rfx.compile(model, 0.5, (X,), strategy="uniform", reinit=False)
        strong = rfx.compile(model, 0.5, (X,), strategy="strongest-first", reinit=False)
    finally:
        STRATEGIES.pop("strongest-first")
    assert len(calls) == 1 and calls[0].removable.numel() > 0
    assert rfx.report(strong).params_ratio <= 0.5
    assert rfx.report(strong).strategy == "strongest-first"
    assert rfx.verify(model, strong, (X,)).exact
    # the strongest channels went first: the kept ones differ from the uniform plan's
    assert any(
        not torch.equal(lp.out_idx, rfx.report(weak).layers[n].out_idx)
        for n, lp in rfx.report(strong).layers.items()
    )


def test_fraction_in_group_counts_within_each_group() -> None:
    inputs = PlanInputs(
        removable=torch.tensor([0, 1, 2, 3, 4]),
        scores=torch.tensor([5.0, 1.0, 3.0, 2.0, 9.0], dtype=torch.float64),
        group=torch.tensor([0, 0, 0, 1, 1]),
        producers=torch.zeros(2, 2, dtype=torch.float64),
        composite=False,
        sensitivity={},
    )
    assert fraction_in_group(inputs).tolist() == pytest.approx([1.0, 1 / 3, 2 / 3, 0.5, 1.0])


def test_group_targets_follow_the_producers_density() -> None:
    producers = torch.tensor([[0.16, 0.4], [0.5, 1.25], [-1.0, -1.0]], dtype=torch.float64)
    target, selected = group_targets(producers)
    assert selected.tolist() == [True, False, False]
    assert target.tolist() == pytest.approx([0.4, 1.25**0.5, 1.0])
