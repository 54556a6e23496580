"""time_rounds / LatencyRuler: alternating rounds, calls repeated to a minimum round length."""

from __future__ import annotations

import time

import pytest
import torch

from reconvene_fx.latency.ruler import MAX_CALLS_PER_ROUND, LatencyRuler, time_rounds


class Sleeper:
    """Sleeps ``seconds`` per call and counts its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self) -> None:
        self.calls += 1
        time.sleep(self.seconds)


def test_short_calls_repeat_until_a_round_lasts_min_round_s() -> None:
    short, long = Sleeper(0.002), Sleeper(0.03)
    times = time_rounds([short, long], rounds=3, warmup=1, min_round_s=0.02)
    # the long call already fills a round: warmup + one call per round
    assert long.calls == 1 + 3
    # the short one repeats ~10 times a round (sleep may overshoot: never fewer than 2)
    per_round = (short.calls - 1) / 3
    assert per_round == int(per_round) and 2 <= per_round <= 10
    # seconds are per call, not per round
    assert all(0.002 <= t < 0.02 for t in times[0])
    assert all(t >= 0.03 for t in times[1])


def test_without_min_round_s_each_round_is_one_call() -> None:
    run = Sleeper(0.0)
    times = time_rounds([run], rounds=4, warmup=2)
    assert run.calls == 6 and len(times[0]) == 4


def test_calls_per_round_are_capped() -> None:
    run = Sleeper(0.0)
    time_rounds([run], rounds=1, warmup=1, min_round_s=10.0)
    assert run.calls <= 1 + MAX_CALLS_PER_ROUND


def test_rounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        time_rounds([Sleeper(0.0)], rounds=0)


def test_ruler_orders_a_narrow_candidate_below_the_original() -> None:
    wide = torch.nn.Sequential(torch.nn.Conv2d(3, 128, 3), torch.nn.Conv2d(128, 128, 3))
    narrow = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 128, 3))
    x = (torch.randn(1, 3, 48, 48),)
    ruler = LatencyRuler(wide, x, backend="torch", rounds=3, min_round_s=0.01)
    ratio, seconds = ruler.measure(narrow)
    assert ratio < 0.5
    assert seconds == pytest.approx(ratio * ruler.before)
