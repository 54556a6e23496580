"""Scorers: values, determinism, registry."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.scoring import SCORERS, get_scorer, prunable_weights, register_scorer


def test_magnitude_is_absolute_weight_of_conv_and_linear_only() -> None:
    gm = torch.fx.symbolic_trace(build("residual"))
    scores = get_scorer("magnitude")(gm, (), None, seed=0)
    names = {n for n, _ in prunable_weights(gm)}
    assert set(scores) == names and "stem.1.weight" not in names
    for name, w in prunable_weights(gm):
        assert torch.equal(scores[name], w.detach().abs())


def test_random_is_seeded() -> None:
    gm = torch.fx.symbolic_trace(build("se"))
    a = get_scorer("random")(gm, (), None, seed=5)
    b = get_scorer("random")(gm, (), None, seed=5)
    c = get_scorer("random")(gm, (), None, seed=6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_a_registered_scorer_drives_the_plan() -> None:
    @register_scorer("test-prefer-last")
    def prefer_last(gm, example_inputs, targets, *, seed):
        return {
            n: torch.arange(w.shape[0], dtype=torch.float32).view(-1, *[1] * (w.dim() - 1))
            .expand_as(w).clone()
            for n, w in prunable_weights(gm)
        }  # fmt: skip

    try:
        x = torch.randn(1, 3, 16, 16)
        gm = rfx.compile(build("se"), budget=0.5, example_inputs=(x,), method="test-prefer-last")
        kept = rfx.report(gm).layers["reduce"].out_idx
        assert torch.equal(kept, torch.arange(8 - kept.numel(), 8))
    finally:
        SCORERS.pop("test-prefer-last")


def test_unknown_method_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="magnitude, random"):
        get_scorer("snap")
