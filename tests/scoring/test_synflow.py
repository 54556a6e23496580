"""SynFlow: conservation of flow, the iterative schedule, BatchNorm, precision fallback."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn
from models import build

from reconvene_fx.scoring import prunable_weights, run_scorer
from reconvene_fx.scoring import synflow as synflow_module


def linear_chain(widths=(6, 10, 8, 4), scale: float = 1.0) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(a, b, bias=False) for a, b in itertools.pairwise(widths)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(scale)
    return nn.Sequential(*layers)


def score(model: nn.Module, x: torch.Tensor, **options) -> dict[str, torch.Tensor]:
    density = options.pop("density", 1.0)
    return run_scorer("synflow", torch.fx.symbolic_trace(model), (x,), density=density,
                      options=options)  # fmt: skip


@pytest.mark.parametrize(("density", "iterations"), [(1.0, 1), (0.3, 1), (0.3, 20), (0.05, 100)])
def test_flow_is_conserved_layer_by_layer_in_a_bias_free_linear_chain(
    density: float, iterations: int
) -> None:
    """Tanaka et al. 2020, Thm. 2: every layer's total score equals the flow R."""
    model = linear_chain()
    s = score(model, torch.randn(1, 6), density=density, iterations=iterations)
    sums = torch.stack([v.double().sum() for v in s.values()])
    torch.testing.assert_close(sums, sums[0].expand_as(sums), rtol=1e-5, atol=0)
    assert float(sums[0]) > 0


def test_one_round_equals_the_closed_form() -> None:
    """R = 1^T |W3||W2||W1| 1; score of W2[i, j] = (1^T|W3|)_i |W2[i, j]| (|W1| 1)_j."""
    model = linear_chain()
    w1, w2, w3 = (m.weight.detach().abs().double() for m in model)
    ones = torch.ones(6, dtype=torch.float64)
    expected = (torch.ones(4, dtype=torch.float64) @ w3)[:, None] * w2 * (w1 @ ones)[None, :]
    s = score(model, torch.randn(2, 6), iterations=1)
    torch.testing.assert_close(s["1.weight"].double(), expected, rtol=1e-5, atol=0)


def test_iterations_prune_to_the_density_with_zeros_that_stay() -> None:
    model = linear_chain((6, 32, 32, 4))
    total = sum(m.weight.numel() for m in model)
    s = score(model, torch.randn(1, 6), density=0.2, iterations=30)
    flat = torch.cat([v.flatten() for v in s.values()])
    keep = total - int(0.8 * total)
    threshold = flat.sort(descending=True).values[keep - 1]
    assert int((flat >= threshold).sum()) == keep  # the final mask keeps exactly k
    # the last round scored the network masked at density ** (29 / 30): the rest are 0
    assert int((flat > 0).sum()) <= total - int((1 - 0.2 ** (29 / 30)) * total)
    one_round = score(model, torch.randn(1, 6), density=0.2, iterations=1)
    assert not torch.equal(flat > threshold, torch.cat([v.flatten() for v in one_round.values()])
                           > threshold)  # fmt: skip


def test_batchnorm_is_scored_in_eval_mode_and_left_untouched() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    stats = (model[1].running_mean.clone(), model[1].running_var.clone())
    model.train()
    s = score(model, torch.randn(2, 3, 8, 8), iterations=1)
    # by hand: BN in eval with |params| and |stats| is a per-channel scale and shift
    bn = model[1]
    a = bn.weight.abs() / torch.sqrt(bn.running_var.abs() + bn.eps)
    b = bn.bias.abs() - bn.running_mean.abs() * a
    w1, w2 = model[0].weight.detach().abs(), model[3].weight.detach().abs()
    x = torch.ones(1, 3, 8, 8)
    w1_leaf = w1.clone().requires_grad_()
    h = torch.relu(torch.conv2d(x, w1_leaf, model[0].bias.abs()) * a.view(1, -1, 1, 1)
                   + b.view(1, -1, 1, 1))  # fmt: skip
    flow = torch.conv2d(h, w2, model[3].bias.abs()).sum()
    (grad,) = torch.autograd.grad(flow, w1_leaf)
    torch.testing.assert_close(s["0.weight"], (w1 * grad).detach(), rtol=1e-5, atol=1e-6)
    assert model.training and torch.equal(bn.running_mean, stats[0])
    assert torch.equal(bn.running_var, stats[1])


def test_float32_overflow_carries_exponents_and_matches_float64() -> None:
    """A flow of ~1e60 overflows float32; the exponent-carrying float32 run gives the
    float64 scores up to one power-of-two factor."""
    model = linear_chain((4,) + (64,) * 30 + (2,), scale=30.0)
    gm = torch.fx.symbolic_trace(model)
    s = run_scorer("synflow", gm, (torch.randn(1, 4),), options={"iterations": 2})
    assert all(v.dtype == torch.float32 for v in s.values())
    weights = dict(prunable_weights(gm))
    reference = synflow_module._iterate(gm, (torch.randn(1, 4),), weights, 1.0, 2,
                                        torch.float64, False, False)  # fmt: skip
    got = torch.cat([v.flatten().double() for v in s.values()])
    want = torch.cat([v.flatten() for v in reference.values()])
    assert float(want.sum()) > 1e40
    torch.testing.assert_close(got / got.sum(), want / want.sum(), rtol=1e-4, atol=0)


def test_ops_without_an_exponent_rule_fall_back_to_float64() -> None:
    s = score(gelu_chain(30, 30.0), torch.randn(1, 4), iterations=1)  # ~1e60
    assert all(v.dtype == torch.float64 and bool(torch.isfinite(v).all()) for v in s.values())
    assert float(s["0.weight"].sum()) > 1e40


def gelu_chain(depth: int, scale: float) -> nn.Module:
    """Linear layers with GELU between: no exponent rule for GELU, so float64 it is."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(4, 64, bias=False)]
    for _ in range(depth):
        layers += [nn.GELU(), nn.Linear(64, 64, bias=False)]
    model = nn.Sequential(*layers, nn.Linear(64, 2, bias=False))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
    return model


def test_flow_beyond_float64_raises_with_advice() -> None:
    with pytest.raises(ValueError, match="overflows even in float64"):
        score(gelu_chain(120, 300.0), torch.randn(1, 4), iterations=1)  # ~1e370


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    run_scorer("synflow", torch.fx.symbolic_trace(linear_chain()), (torch.randn(1, 6),),
               density=0.5, progress=True, options={"iterations": 5})  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == ""
    final = captured.err.split("\r")[-1]  # tqdm redraws in place; the bar is closed at 5/5
    assert final.startswith("[reconvene_fx] synflow (float32): 100%"), captured.err
    assert " 5/5 " in final and final.endswith("\n")


def test_no_progress_bar_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    run_scorer("synflow", torch.fx.symbolic_trace(linear_chain()), (torch.randn(1, 6),),
               density=0.5, options={"iterations": 5})  # fmt: skip
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("options", "match"), [({"iterations": 0}, "iterations"), ({"density": 0.0}, "density")]
)
def test_bad_arguments_are_rejected(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        score(linear_chain(), torch.randn(1, 6), **options)


@pytest.mark.parametrize("name", ["residual", "densenet", "inception", "shared", "depthwise"])
def test_exponent_carrying_float32_equals_float64_on_hand_built_graphs(name: str) -> None:
    """Adds, concatenations, shared modules, BatchNorm with random statistics, grouped
    convs: the float32 interpreter with per-tensor exponents gives the float64 scores."""
    gm = torch.fx.symbolic_trace(build(name))
    weights = dict(prunable_weights(gm))
    x = torch.randn(1, 3, 16, 16)
    scaled = synflow_module._iterate(gm, (x,), weights, 0.5, 3, torch.float32, True, False)
    exact = synflow_module._iterate(gm, (x,), weights, 0.5, 3, torch.float64, False, False)
    got = torch.cat([v.flatten().double() for v in scaled.values()])
    want = torch.cat([v.flatten() for v in exact.values()])
    torch.testing.assert_close(got / got.sum(), want / want.sum(), rtol=1e-4, atol=1e-12)


def test_ops_without_an_exponent_rule_are_refused_by_the_interpreter() -> None:
    gm = torch.fx.symbolic_trace(build("se"))  # sigmoid gate
    with pytest.raises(synflow_module.Unsupported, match=r"(?i)sigmoid"):
        synflow_module._iterate(gm, (torch.randn(1, 3, 16, 16),), dict(prunable_weights(gm)),
                                1.0, 1, torch.float32, True, False)  # fmt: skip
