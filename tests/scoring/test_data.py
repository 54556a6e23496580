"""``data=``: SNIP and GraSP score on labelled batches; random labels warn."""

from __future__ import annotations

import warnings

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.scoring import run_scorer

G = torch.Generator().manual_seed(0)
X1, X2 = torch.randn(4, 3, 16, 16, generator=G), torch.randn(4, 3, 16, 16, generator=G)
Y1, Y2 = torch.randint(10, (4,), generator=G), torch.randint(10, (4,), generator=G)


@pytest.fixture
def gm() -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(build("residual"))


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_one_batch_scores_as_its_targets(gm, method: str) -> None:
    given = run_scorer(method, gm, (X1,), Y1)
    from_data = run_scorer(method, gm, (X2,), None, data=(X1, Y1))  # example inputs unused
    assert given.keys() == from_data.keys()
    assert all(torch.allclose(given[k], from_data[k]) for k in given)


def test_batches_are_summed(gm) -> None:
    one, two = (
        run_scorer("snip", gm, (), Y1, data=(X1, Y1)),
        run_scorer("snip", gm, (), None, data=[(X2, Y2)]),
    )
    both = run_scorer("snip", gm, (), None, data=iter([(X1, Y1), [(X2,), Y2]]))
    assert all(torch.allclose(both[k], one[k] + two[k]) for k in both)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (X1, TypeError, r"data must be a batch \(inputs, targets\)"),
        ([(X1, Y1), (X1,)], TypeError, "an item of type tuple"),
        ([], ValueError, "data holds no batch"),
        ((X1, [1, 2, 3, 4]), TypeError, "data must be a batch"),
    ],
)
def test_bad_data_is_refused_clearly(gm, data, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        run_scorer("snip", gm, (X1,), None, data=data)


def test_compile_uses_data_and_refuses_it_beside_targets() -> None:
    model = build("residual")
    a = rfx.compile(model, 0.4, (X2,), method="snip", data=(X1, Y1), reinit=False)
    b = rfx.compile(model, 0.4, (X1,), method="snip", targets=Y1, reinit=False)
    ra, rb = rfx.report(a), rfx.report(b)
    assert all(torch.equal(ra.layers[n].out_idx, rb.layers[n].out_idx) for n in ra.layers)
    with pytest.raises(ValueError, match="not both"):
        rfx.compile(model, 0.4, (X1,), method="snip", data=(X1, Y1), targets=Y1)


def test_random_labels_warn_and_real_ones_do_not(gm) -> None:
    with pytest.warns(rfx.RandomTargetsWarning, match="random labels.*data=\\(inputs, targets\\)"):
        run_scorer("snip", gm, (X1,), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rfx.RandomTargetsWarning)
        run_scorer("snip", gm, (X1,), Y1)
        run_scorer("grasp", gm, (), None, data=(X1, Y1))
        run_scorer("magnitude", gm, (X1,), None)  # needs no labels


def test_analyze_takes_data_too() -> None:
    model = build("residual")
    from_data = rfx.analyze(model, 0.3, (X2,), method="snip", data=[(X1, Y1)])
    from_targets = rfx.analyze(model, 0.3, (X1,), method="snip", targets=Y1)
    assert all(
        torch.equal(from_data.layers[n].mask, from_targets.layers[n].mask)
        for n in from_targets.layers
    )
