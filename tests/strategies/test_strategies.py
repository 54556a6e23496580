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
from reconvene_fx.strategies.reconvene import group_targets, solve_log_widths

X = torch.randn(2, 3, 16, 16)


def test_builtin_strategies_are_registered() -> None:
    assert {"reconvene", "uniform", "global", "none"} <= set(STRATEGIES)


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


def _chain_inputs(
    composite: bool, allocation: str = "density", price: torch.Tensor | None = None
) -> PlanInputs:
    """conv a (pinned input) -> group 0 -> conv b -> group 1 -> linear (pinned output);
    a depthwise conv inside group 1; four atoms per group."""
    return PlanInputs(
        removable=torch.arange(8),
        scores=torch.ones(8, dtype=torch.float64),
        group=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        producers=torch.tensor([[0.2, 0.4], [0.9, 1.8]], dtype=torch.float64),
        composite=composite,
        sensitivity={},
        layer_groups=torch.tensor([[-1, 0], [0, 1], [1, 1], [1, -1]]),
        layer_density=torch.tensor([0.2, 0.05, 0.25, 0.9], dtype=torch.float64),
        allocation=allocation,
        price=price,
    )


@pytest.mark.parametrize(
    ("groups", "density", "free", "expected"),
    [
        # one-sided narrowing: the width is the density itself
        ([[-1, 0]], [0.3], [True], [0.3]),
        # two-sided, both groups free and equally dense: the square root on each side
        ([[-1, 0], [0, 1], [1, -1]], [0.5, 0.25, 0.5], [True, True], [0.5, 0.5]),
        # a depthwise conv (same group in and out) keeps w of its weights, not w**2
        ([[0, 0]], [0.2], [True], [0.2]),
        # a fixed (whole) group adds nothing: the other side carries the density
        ([[0, 1]], [0.1], [False, True], [1.0, 0.1]),
        # a group no layer reaches stays whole
        ([[-1, 0]], [0.4], [True, True], [0.4, 1.0]),
    ],
)
def test_solved_widths_make_each_layer_keep_its_density(
    groups: list[list[int]], density: list[float], free: list[bool], expected: list[float]
) -> None:
    log_width = solve_log_widths(
        torch.tensor(groups), torch.tensor(density, dtype=torch.float64), torch.tensor(free)
    )
    assert log_width.exp().tolist() == pytest.approx(expected, rel=1e-6)


def test_group_targets_narrow_only_selected_groups_when_composite() -> None:
    target, selected = group_targets(_chain_inputs(composite=True))
    assert selected.tolist() == [True, False]
    # group 0 alone is free: conv a wants 0.2 and conv b 0.05 -> geometric mean 0.1
    assert target.tolist() == pytest.approx([0.1, 1.0])


def test_group_targets_solve_every_group_when_structured() -> None:
    target, _ = group_targets(_chain_inputs(composite=False))
    expected = solve_log_widths(
        torch.tensor([[-1, 0], [0, 1], [1, 1], [1, -1]]),
        torch.tensor([0.2, 0.05, 0.25, 0.9], dtype=torch.float64),
        torch.tensor([True, True]),
    ).exp()
    assert target.tolist() == pytest.approx(expected.tolist())
    assert float(target[1]) < 1.0  # the structured plan narrows the dense group too
    sqrt_target, _ = group_targets(_chain_inputs(composite=False, allocation="sqrt"))
    assert sqrt_target.tolist() == pytest.approx(expected.sqrt().tolist())


def test_composite_order_prefers_selected_groups_and_starts_at_their_targets() -> None:
    order = get_strategy("reconvene")(_chain_inputs(composite=True))
    # group 1 keeps its masks unless the budget needs more: its atoms come last
    assert order.preferred == 4 and order.phase_ends == (4,)
    assert set(order.atoms[:4].tolist()) == {0, 1, 2, 3}
    assert set(order.atoms[4:].tolist()) == {4, 5, 6, 7}
    assert order.start == 3  # target 0.1 of 4 atoms: 3 go at s = 1 (kept 1 >= 0.4)
    assert not order.adjust_masks


def test_unknown_allocation_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown allocation 'cubic'.*density.*sqrt"):
        rfx.compile(build("residual"), 0.5, (X,), allocation="cubic")


def test_an_unknown_strategy_suggests_the_closest() -> None:
    with pytest.raises(rfx.ArgumentError, match=r"'uniforn' \(did you mean 'uniform'\?\)"):
        get_strategy("uniforn")
    assert list(STRATEGIES)[:4] == ["reconvene", "uniform", "global", "none"]


def test_a_time_price_divides_the_targets_of_the_free_groups() -> None:
    plain, _ = group_targets(_chain_inputs(composite=True))
    priced = _chain_inputs(composite=True, price=torch.tensor([2.0, 0.5], dtype=torch.float64))
    target, _ = group_targets(priced)
    # group 0 (free) keeps half the width per unit of time; group 1 stays whole
    assert target.tolist() == pytest.approx([float(plain[0]) / 2.0, 1.0])


def test_dear_channels_go_sooner_in_the_reconvene_order() -> None:
    """With group 1 priced 4x group 0, the structured order takes group 1's atoms
    earlier: the first four removals hold more of them than at MAC price."""

    def first_from_group_1(price: torch.Tensor | None) -> int:
        order = get_strategy("reconvene")(_chain_inputs(composite=False, price=price))
        return sum(a >= 4 for a in order.atoms[:4].tolist())

    dear = torch.tensor([1.0, 4.0], dtype=torch.float64)
    assert first_from_group_1(dear) > first_from_group_1(None)
