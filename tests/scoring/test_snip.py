"""SNIP and magnitude: scores and per-layer densities against independent computations."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import reconvene_fx as rfx
from reconvene_fx.scoring import run_scorer


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 5),
    )


X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
TARGETS = torch.tensor([0, 3, 1, 4])
WEIGHTS = ("0.weight", "3.weight", "7.weight")


def independent_snip(model: nn.Module) -> dict[str, torch.Tensor]:
    """|w * dL/dw| by a plain backward pass on a copy in eval mode."""
    ref = copy.deepcopy(model).eval()
    loss = F.cross_entropy(ref(X), TARGETS)
    loss.backward()
    params = dict(ref.named_parameters())
    return {n: (params[n].detach() * params[n].grad).abs() for n in WEIGHTS}


def independent_densities(scores: dict[str, torch.Tensor], density: float) -> dict[str, float]:
    """Global top-k by a full sort: keep the k = N - int((1 - d) N) largest."""
    flat = torch.cat([scores[n].flatten() for n in WEIGHTS]).double()
    k = flat.numel() - int((1 - density) * flat.numel())
    threshold = flat.sort(descending=True).values[k - 1]
    # no ties in continuous scores: keeping those >= the k-th largest keeps exactly k
    return {n: int((scores[n].double() >= threshold).sum()) / scores[n].numel() for n in WEIGHTS}


def test_snip_scores_equal_a_plain_backward_pass() -> None:
    model = small_net()
    gm = torch.fx.symbolic_trace(copy.deepcopy(model))
    got = run_scorer("snip", gm, (X,), TARGETS)
    expected = independent_snip(model)
    for name in WEIGHTS:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("method", ["snip", "magnitude"])
@pytest.mark.parametrize("budget", [0.1, 0.3, 0.7])
def test_densities_and_selection_equal_an_independent_top_k(method: str, budget: float) -> None:
    model = small_net()
    if method == "snip":
        scores = independent_snip(model)
    else:
        scores = {n: p.detach().abs() for n, p in model.named_parameters() if n in WEIGHTS}
    expected = independent_densities(scores, budget)
    table = rfx.analyze(model, budget, (X,), method=method, targets=TARGETS)
    names = {n.removesuffix(".weight"): n for n in WEIGHTS}
    assert list(table.layers) == list(names)
    total = sum(scores[n].numel() for n in WEIGHTS)
    assert sum(lay.kept for lay in table.layers.values()) == total - int((1 - budget) * total)
    for module, weight in names.items():
        lay = table.layers[module]
        assert lay.density == pytest.approx(expected[weight], abs=1e-12)
        assert lay.sensitivity == pytest.approx(lay.density / table.global_density)
        assert lay.selected == (lay.density < table.global_density)
        assert lay.mask.shape == scores[weight].shape and lay.kept == int(lay.mask.sum())


def test_drawn_targets_are_seeded_and_given_targets_are_used() -> None:
    gm = torch.fx.symbolic_trace(small_net())
    a = run_scorer("snip", gm, (X,), seed=1)
    b = run_scorer("snip", gm, (X,), seed=1)
    c = run_scorer("snip", gm, (X,), seed=2)
    assert all(torch.equal(a[n], b[n]) for n in WEIGHTS)
    assert not all(torch.equal(a[n], c[n]) for n in WEIGHTS)
    drawn = torch.randint(5, (4,), generator=torch.Generator().manual_seed(1))
    given = run_scorer("snip", gm, (X,), drawn)
    assert all(torch.equal(a[n], given[n]) for n in WEIGHTS)


@pytest.mark.parametrize(
    ("targets", "error", "match"),
    [
        (torch.tensor([0, 1, 2]), ValueError, r"shape \(3,\).*\(4,\)"),
        (torch.tensor([0, 1, 2, 5]), ValueError, r"\[0, 4\]"),
        (torch.zeros(4), TypeError, "integer class indices"),
    ],
)
def test_bad_targets_are_rejected_clearly(targets, error: type, match: str) -> None:
    gm = torch.fx.symbolic_trace(small_net())
    with pytest.raises(error, match=match):
        run_scorer("snip", gm, (X,), targets)


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
def test_scoring_leaves_the_model_untouched(method: str) -> None:
    model = small_net().train()
    before = copy.deepcopy(model.state_dict())
    rfx.analyze(model, 0.3, (X,), method=method, method_options={"iterations": 3}
                if method == "synflow" else None)  # fmt: skip
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats
