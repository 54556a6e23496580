"""Budget(latency=...): with a user cost function and measured on this machine."""

from __future__ import annotations

import re
import statistics
import time

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.costs import count_params
from reconvene_fx.latency import measure_latency
from reconvene_fx.latency import ruler as ruler_module
from reconvene_fx.latency import search as latency_search

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
    assert rep.macs_after < rep.macs_before


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


def _wide_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 96, 3, padding=1), torch.nn.BatchNorm2d(96), torch.nn.ReLU(),
        torch.nn.Conv2d(96, 96, 3, padding=1), torch.nn.BatchNorm2d(96), torch.nn.ReLU(),
        torch.nn.Conv2d(96, 10, 1),
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_latency_backend_plan_is_measured_within_the_limit(backend: str) -> None:
    model, x = _wide_net(), torch.randn(1, 3, 64, 64)
    gm = rfx.compile(model, rfx.Budget(latency=0.5), (x,), latency_backend=backend,
                     latency_cache=False, reinit=False)  # fmt: skip
    rep = rfx.report(gm)
    assert rep.latency_ratio <= 0.5  # the planner measured the chosen plan on the backend
    assert rep.macs_after < 0.8 * rep.macs_before
    assert rfx.verify(model, gm, (x,)).exact


def test_second_compile_reads_the_layer_table_from_disk(tmp_path, caplog, monkeypatch) -> None:
    """With whole-model measurements made deterministic (their cost: the parameter count),
    the plan depends on the table alone: a second compile must time no layer again."""

    _deterministic_rounds(monkeypatch)
    model, x = _wide_net(), torch.randn(1, 3, 32, 32)
    timed = []
    for _ in range(2):
        caplog.clear()
        with caplog.at_level("INFO", logger="reconvene_fx"):
            gm = rfx.compile(model, rfx.Budget(latency=0.5), (x,), latency_backend="onnxruntime",
                             latency_cache=tmp_path, reinit=False)  # fmt: skip
        assert "latency plan 1: predicted" in caplog.text
        timed.append(_layers_timed(caplog.text))
        assert rfx.report(gm).latency_ratio <= 0.5
    assert timed[0] > 0 and timed[1] == 0
    assert len(list(tmp_path.glob("latency-onnxruntime-*.json"))) == 1


class FarOff(latency_search.LatencyEstimate):
    """An estimate that barely moves until nearly every channel is gone."""

    def seconds(self, removed: torch.Tensor) -> float:
        kept = 1.0 - float(removed.float().mean())
        return self.rest * kept**0.05


class Nothing(latency_search.LatencyEstimate):
    """An estimate that sees no time anywhere: every guess misses, measurements decide."""

    def seconds(self, removed: torch.Tensor) -> float:
        return 0.0


def test_a_plan_far_below_the_limit_is_refined_by_measurement(monkeypatch) -> None:
    """An estimate that is badly off (here: it barely moves until nearly every channel is
    gone) picks plans far below the limit or above it; bisecting on measurements between
    them lands in the tolerance band below the limit."""
    _deterministic_rounds(monkeypatch)
    monkeypatch.setattr(latency_search, "LatencyEstimate", FarOff)
    model, x = _wide_net(), torch.randn(1, 3, 32, 32)
    gm = rfx.compile(model, rfx.Budget(latency=0.5), (x,), latency_backend="torch",
                     latency_cache=False, reinit=False)  # fmt: skip
    ratio = count_params(gm) / count_params(model)
    assert rfx.report(gm).latency_ratio == pytest.approx(ratio)
    assert 0.45 <= ratio <= 0.5


def test_reported_ratio_is_the_measured_one_while_the_original_drifts(monkeypatch) -> None:
    """The original's timings shrink 10 % at each measurement (a machine getting quieter):
    the median of its timings moves, and the report must still give the ratio the chosen
    plan was measured at (the median of its measurements: it is measured again before it
    is taken), not its seconds over a later median."""
    _deterministic_rounds(monkeypatch)
    calls = []

    def drifting(runs, rounds=7, warmup=3, min_round_s=0.0):
        calls.append(1)
        original, *rest = runs
        return [[original.cost * 0.9 ** len(calls)] * rounds, *[[r.cost] * rounds for r in rest]]

    seen: dict[int, list[float]] = {}
    measure = ruler_module.LatencyRuler.measure

    def recording(self, candidate):
        got = measure(self, candidate)
        seen.setdefault(count_params(candidate), []).append(got[0])
        return got

    monkeypatch.setattr(ruler_module, "time_rounds", drifting)
    monkeypatch.setattr(ruler_module.LatencyRuler, "measure", recording)
    monkeypatch.setattr(latency_search, "LatencyEstimate", Nothing)  # a bisection on measurements
    model, x = _wide_net(), torch.randn(1, 3, 32, 32)
    gm = rfx.compile(model, rfx.Budget(latency=0.5), (x,), latency_backend="torch",
                     latency_cache=False, reinit=False, round_to=1)  # fmt: skip
    rep = rfx.report(gm)
    assert len(seen) > 2
    chosen = seen[count_params(gm)]
    assert len(chosen) == 1 + latency_search.LATENCY_CONFIRMATIONS
    assert rep.latency_ratio == pytest.approx(statistics.median(chosen))
    assert rep.latency_ratio <= 0.5


def _deterministic_rounds(monkeypatch) -> None:
    """Whole-model measurements cost the parameter count, exactly."""

    def prepare(backend, module, example_inputs):
        def run() -> None:
            return None

        run.cost = float(count_params(module))
        return run

    def rounds(runs, rounds=7, warmup=3, min_round_s=0.0):
        return [[run.cost] * rounds for run in runs]

    monkeypatch.setattr(ruler_module, "prepare_run", prepare)
    monkeypatch.setattr(ruler_module, "time_rounds", rounds)


def _layers_timed(log: str) -> int:
    # the final count (progress lines "N layers timed on ... ..." come every 100 layers)
    (count,) = re.findall(r"latency table: (\d+) layers timed, \d+ known", log)
    return int(count)


def test_latency_backend_and_cache_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown latency_backend 'tensorrt'"):
        rfx.CompileConfig(latency_backend="tensorrt")
    with pytest.raises(TypeError, match="latency_cache"):
        rfx.CompileConfig(latency_cache=3)


def _first_reading_off(monkeypatch, by: float) -> None:
    """Whole-model measurements cost the parameter count exactly, except that each
    candidate's first measurement reads ``by`` off (a lucky round below 0, an unlucky one
    above); the estimate guides nothing (a bisection on measurements)."""
    _deterministic_rounds(monkeypatch)
    monkeypatch.setattr(latency_search, "LatencyEstimate", Nothing)
    measure = ruler_module.LatencyRuler.measure
    seen: set[int] = set()

    def first_off(self, candidate):
        ratio, cost = measure(self, candidate)
        n = count_params(candidate)
        if n not in seen:
            seen.add(n)
            return ratio + by, cost
        return ratio, cost

    monkeypatch.setattr(ruler_module.LatencyRuler, "measure", first_off)


def _compiled_at(limit: float) -> tuple[torch.fx.GraphModule, float]:
    """``_wide_net`` compiled to ``Budget(latency=limit)`` on the torch backend, and its
    true ratio (the parameter count's)."""
    model = _wide_net()
    gm = rfx.compile(model, rfx.Budget(latency=limit), (torch.randn(1, 3, 32, 32),),
                     latency_backend="torch", latency_cache=False, reinit=False,
                     round_to=1)  # fmt: skip
    return gm, count_params(gm) / count_params(model)


def test_a_plan_measured_low_by_luck_is_measured_again_and_replaced(monkeypatch) -> None:
    """Every candidate's first measurement reads 0.12 low (a lucky round), later ones are
    exact (the parameter count). The search keeps a plan whose lucky reading was within
    the limit; measured again it is above, so a plan with more removals is taken, whose
    true ratio is within the limit (without the confirmation: 0.61)."""
    _first_reading_off(monkeypatch, -0.12)
    gm, true_ratio = _compiled_at(0.5)
    assert true_ratio <= 0.5
    assert rfx.report(gm).latency_ratio == pytest.approx(true_ratio)


def test_a_floor_measured_above_the_limit_once_is_measured_again_before_refusing(
    monkeypatch,
) -> None:
    """Every candidate's first measurement reads 0.5 high (an unlucky round): the model
    with every removable channel gone reads above the limit once, and the budget is
    refused only if the median of its measurements is above it too (here it is not)."""
    _first_reading_off(monkeypatch, 0.5)
    gm, true_ratio = _compiled_at(0.3)
    assert true_ratio <= 0.3
    assert rfx.report(gm).latency_ratio == pytest.approx(true_ratio)


def test_a_plan_confirmed_below_the_band_moves_up_to_it(monkeypatch) -> None:
    """Every candidate's first measurement reads 0.15 high (an unlucky round): the search
    settles on a plan that truly measures about 0.35 for a 0.5 limit; measured again, its
    median is below the tolerance band, so plans with fewer removals, measured as often,
    take its place until one lands in the band."""
    _first_reading_off(monkeypatch, 0.15)
    gm, true_ratio = _compiled_at(0.5)
    assert (1 - latency_search.LATENCY_TOLERANCE) * 0.5 <= true_ratio <= 0.5
    assert rfx.report(gm).latency_ratio == pytest.approx(true_ratio)


def test_a_floor_measured_within_the_limit_by_luck_is_refused_on_its_median(
    monkeypatch,
) -> None:
    """Every candidate's first measurement reads 0.5 low (a lucky round): for a limit
    below the true floor every plan first reads within it, but no plan's median does,
    nor the floor's: the budget is refused (not a model above its limit)."""
    floor = _floor_ratio()
    _first_reading_off(monkeypatch, -0.5)
    with pytest.raises(rfx.BudgetError) as err:
        _compiled_at(0.9 * floor)
    assert err.value.quantity == "latency"
    assert err.value.smallest == pytest.approx(floor)


def _floor_ratio() -> float:
    """The params fraction of ``_wide_net`` with every removable channel gone."""
    with pytest.raises(rfx.BudgetError) as err:
        rfx.compile(_wide_net(), rfx.Budget(latency=1e-6), (torch.randn(1, 3, 32, 32),),
                    latency_fn=weight_cost, reinit=False, round_to=1)  # fmt: skip
    return err.value.smallest
