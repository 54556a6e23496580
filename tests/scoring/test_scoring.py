"""Scorers: values, determinism, registry."""

from __future__ import annotations

import inspect

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.scoring import (
    SCORERS,
    get_scorer,
    kth_largest,
    prunable_weights,
    register_scorer,
    run_scorer,
)


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


def test_run_scorer_passes_only_the_keywords_a_scorer_takes() -> None:
    seen = {}

    def minimal(gm, example_inputs, targets, *, seed):
        seen["seed"] = seed
        return {n: w.detach().abs() for n, w in prunable_weights(gm)}

    def with_option(gm, example_inputs, targets, *, density, power=1):
        seen.update(density=density, power=power)
        return {n: w.detach().abs() ** power for n, w in prunable_weights(gm)}

    gm = torch.fx.symbolic_trace(build("residual"))
    run_scorer(minimal, gm, (), seed=4, density=0.3, progress=True)
    run_scorer(with_option, gm, (), density=0.3, options={"power": 2})
    assert seen == {"seed": 4, "density": 0.3, "power": 2}
    with pytest.raises(TypeError, match=r"takes no option.*colour"):
        run_scorer(with_option, gm, (), options={"colour": 1})


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda w: w[:1], "of shape"),
        (lambda w: w * float("nan"), "non-finite"),
        (None, "no score for"),
    ],
)
def test_run_scorer_checks_what_a_scorer_returns(bad, match: str) -> None:
    def scorer(gm, example_inputs, targets, *, seed):
        return {n: bad(w.detach()) for n, w in prunable_weights(gm)} if bad else {}

    with pytest.raises(ValueError, match=match):
        run_scorer(scorer, torch.fx.symbolic_trace(build("residual")), ())


@pytest.mark.parametrize("n", [10, 70_000, 300_000])
@pytest.mark.parametrize("ties", [False, True])
def test_kth_largest_equals_a_full_sort(n: int, ties: bool) -> None:
    g = torch.Generator().manual_seed(n)
    if ties:
        values = torch.randint(0, 50, (n,), generator=g).double()
    else:
        values = torch.rand(n, generator=g)
    ordered = values.sort(descending=True).values
    for k in {1, 2, n // 3, n // 2 + 1, n - 1, n}:
        assert kth_largest(values, k) == float(ordered[k - 1])
    with pytest.raises(ValueError):
        kth_largest(values, 0)


def test_an_unknown_method_suggests_the_closest() -> None:
    with pytest.raises(rfx.ArgumentError, match=r"did you mean 'snip'\?.*known methods: grasp"):
        get_scorer("snap")
    assert "snip" in SCORERS and "snap" not in SCORERS


def test_scorers_are_declared_by_name_and_read_on_use() -> None:
    from reconvene_fx.scoring.magnitude import magnitude

    assert list(SCORERS)[:5] == ["magnitude", "random", "snip", "grasp", "synflow"]
    assert SCORERS["magnitude"] is get_scorer("magnitude") is magnitude
    assert SCORERS.summary("snip").endswith("needs labels")


def test_run_scorer_gives_the_layer_registry_to_scorers_that_take_it() -> None:
    from reconvene_fx.layers import get_default_layer_registry

    registry = get_default_layer_registry()
    seen = {}

    def with_layers(gm, example_inputs, targets, *, layers):
        seen["layers"] = layers
        return {n: w.detach().abs() for n, w in prunable_weights(gm, layers)}

    gm = torch.fx.symbolic_trace(build("se"))
    run_scorer(with_layers, gm, (), layers=registry)
    assert seen["layers"] is registry
    for method in ("magnitude", "random", "snip", "grasp", "synflow"):  # each takes it
        assert "layers" in inspect.signature(get_scorer(method)).parameters
