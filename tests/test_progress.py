"""Progress on stderr: silent for quick compiles, a bar for long steps by default, none
with progress=False."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reconvene_fx as rfx
from reconvene_fx import _progress


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3), nn.ReLU(),
                         nn.Conv2d(8, 4, 1))  # fmt: skip


X = torch.randn(2, 3, 12, 12)


def test_a_quick_compile_prints_nothing_by_default(capsys: pytest.CaptureFixture) -> None:
    rfx.compile(_net(), 0.5, (X,), method="synflow", method_options={"iterations": 3})
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("progress", [None, True, False])
def test_a_long_step_shows_a_bar_unless_progress_is_false(
    progress: bool | None, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "AUTO_DELAY", 0.0)  # every step counts as long
    rfx.compile(_net(), 0.5, (X,), method="synflow", method_options={"iterations": 3},
                progress=progress)  # fmt: skip
    err = capsys.readouterr().err
    if progress is False:
        assert err == ""
    else:
        assert "[reconvene_fx] synflow" in err and "3/3" in err
    # only progress=True also logs each pass's time
    assert ("[reconvene_fx] PlanPass" in err) == (progress is True)


def test_a_latency_budget_counts_the_candidates_it_measures(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "AUTO_DELAY", 0.0)
    calls = []

    def latency(module: nn.Module, inputs: tuple) -> float:  # MACs stand in for time
        calls.append(1)
        return float(sum(p.numel() for p in module.parameters()))

    gm = rfx.compile(_net(), rfx.Budget(latency=0.6), (X,), latency_fn=latency)
    err = capsys.readouterr().err
    assert "[reconvene_fx] latency budget 0.6 (candidates measured)" in err
    assert rfx.report(gm).latency_after is not None
    assert f"{len(calls) - 1}it" in err.replace(" ", "")  # every candidate, not the original
