"""Budget(latency=...): with a user cost function and measured on this machine."""

from __future__ import annotations

import time

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.costs import count_params
from reconvene_fx.latency import measure_latency

X = torch.randn(2, 3, 16, 16)


def weight_cost(module: torch.nn.Module, example_inputs: tuple) -> float:
    """A deterministic stand-in for latency: the parameter count."""
    return float(count_params(module))


@pytest.mark.parametrize("limit", [0.3, 0.7])
def test_user_cost_function_budget_holds_and_is_reported(limit: float) -> None:
    calls: list[int] = []

    def cost(module: torch.nn.Module, example_inputs: tuple) -> float:
        calls.append(1)
        assert example_inputs[0] is X
        return weight_cost(module, example_inputs)

    model = build("residual")
    gm = rfx.compile(model, rfx.Budget(latency=limit), (X,), latency_fn=cost, reinit=False)
    rep = rfx.report(gm)
    assert rep.latency_before == count_params(model)
    assert rep.latency_after == count_params(gm)
    assert rep.latency_ratio <= limit
    assert rep.latency_ratio > limit - 0.15  # the search does not overshoot by much
    assert 3 <= len(calls) <= 12
    assert "latency" in rep.summary()
    assert rfx.verify(model, gm, (X,)).exact


def test_measured_latency_budget_holds_by_the_planners_measurement() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 128, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(128, 128, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(128, 10, 1),
    )  # fmt: skip
    x = torch.randn(1, 3, 48, 48)
    gm = rfx.compile(model, rfx.Budget(latency=0.5), (x,), reinit=False)
    rep = rfx.report(gm)
    assert rep.latency_before is not None and rep.latency_after is not None
    assert rep.latency_ratio <= 0.5
    assert rep.flops_after < rep.flops_before


def test_unreachable_latency_names_the_smallest_reachable_value() -> None:
    def fixed_cost(module: torch.nn.Module, example_inputs: tuple) -> float:
        return 1.0 + 1e-6 * count_params(module)  # mostly a fixed cost

    with pytest.raises(rfx.BudgetError) as err:
        rfx.compile(build("residual"), rfx.Budget(latency=0.5), (X,), latency_fn=fixed_cost)
    assert err.value.quantity == "latency" and err.value.smallest > 0.5


def test_latency_with_params_budget_meets_both() -> None:
    gm = rfx.compile(build("se"), rfx.Budget(params=0.6, latency=0.4), (X,),
                     latency_fn=weight_cost)  # fmt: skip
    rep = rfx.report(gm)
    assert rep.params_ratio <= 0.6 and rep.latency_ratio <= 0.4


def test_measure_latency_restores_training_and_rejects_bad_repeats() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout())
    assert measure_latency(net, (torch.randn(1, 4),), repeats=2) > 0
    assert net.training
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(net, (torch.randn(1, 4),), repeats=0)


class _Sleeper(torch.nn.Module):
    """Sleeps a fixed time per forward pass and records the modes it ran in."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.modes: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append((self.training, torch.is_inference_mode_enabled()))
        time.sleep(self.seconds)
        return x


def test_measure_latency_is_seconds_per_pass_in_eval_and_inference_mode() -> None:
    net = _Sleeper(0.01)
    seconds = measure_latency(net, (torch.randn(1, 4),), repeats=3, warmup=1)
    assert 0.01 <= seconds < 0.05  # one pass, not the sum of the repeats
    assert len(net.modes) >= 1 + 3
    assert set(net.modes) == {(False, True)}
    assert net.training
