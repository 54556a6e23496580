"""GraSP: shapes, signs, and a two-layer case against an explicit Hessian."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import reconvene_fx as rfx
from reconvene_fx.scoring import run_scorer

X = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
TARGETS = torch.tensor([2, 0, 1])


def two_layer() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(4, 5, bias=False), nn.Tanh(), nn.Linear(5, 3, bias=False))


def test_two_layer_case_equals_explicit_hessian_gradient_product() -> None:
    model = two_layer()
    w1, w2 = (m.weight.detach().clone() for m in (model[0], model[2]))
    temperature = 200.0

    def loss(flat: torch.Tensor) -> torch.Tensor:
        a, b = flat[:20].view(5, 4), flat[20:].view(3, 5)
        logits = torch.tanh(X.double() @ a.T) @ b.T
        return F.cross_entropy(logits / temperature, TARGETS)

    theta = torch.cat([w1.flatten(), w2.flatten()]).double()
    g = torch.autograd.functional.jacobian(loss, theta)
    hessian = torch.autograd.functional.hessian(loss, theta)
    raw = theta * (hessian @ g)
    expected = raw / (raw.sum().abs() + 1e-10)

    got = run_scorer("grasp", torch.fx.symbolic_trace(model), (X,), TARGETS)
    flat = torch.cat([got["0.weight"].flatten(), got["2.weight"].flatten()]).double()
    torch.testing.assert_close(flat, expected, rtol=1e-3, atol=1e-6)


def test_scores_are_signed_shaped_and_normalised() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))  # fmt: skip
    x = torch.randn(4, 3, 8, 8)
    got = run_scorer("grasp", torch.fx.symbolic_trace(model), (x,), seed=0)
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    assert {n: s.shape for n, s in got.items()} == {n: p.shape for n, p in weights.items()}
    flat = torch.cat([s.flatten() for s in got.values()])
    assert bool((flat > 0).any()) and bool((flat < 0).any())
    assert abs(float(flat.double().sum())) == pytest.approx(1.0, rel=1e-4)


def test_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="temperature"):
        run_scorer("grasp", torch.fx.symbolic_trace(two_layer()), (X,), TARGETS,
                   options={"temperature": 0.0})  # fmt: skip


def _net(activation: torch.nn.Module) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return torch.fx.symbolic_trace(torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Tanh(),
        torch.nn.Conv2d(8, 8, 3), activation, torch.nn.Flatten(), torch.nn.Linear(128, 5),
    ))  # fmt: skip


_XY = (torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
       torch.tensor([0, 1, 2, 3]))  # fmt: skip


def test_finite_difference_hessian_matches_the_exact_one() -> None:
    gm = _net(torch.nn.Tanh())
    exact = run_scorer("grasp", gm, (_XY[0],), _XY[1], options={"hessian": "exact"})
    approx = run_scorer("grasp", gm, (_XY[0],), _XY[1],
                        options={"hessian": "finite-difference"})  # fmt: skip
    for name, value in exact.items():
        assert torch.allclose(approx[name], value, atol=1e-3 * float(value.abs().max()))


def test_ops_without_double_backward_fall_back_or_fail_clearly() -> None:
    gm = _net(torch.nn.Hardsigmoid())  # MobileNetV3's: no second derivative
    with pytest.raises(rfx.ScoringError, match=r"hardsigmoid.*finite-difference"):
        run_scorer("grasp", gm, (_XY[0],), _XY[1], options={"hessian": "exact"})
    auto = run_scorer("grasp", gm, (_XY[0],), _XY[1])
    fd = run_scorer("grasp", gm, (_XY[0],), _XY[1], options={"hessian": "finite-difference"})
    assert all(torch.equal(auto[k], fd[k]) for k in auto)
    assert any(bool(v.abs().sum() > 0) for v in auto.values())
