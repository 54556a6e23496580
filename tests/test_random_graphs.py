"""Property test: random CNNs compile, verify exactly, export to ONNX and hold the budget.

About 50 examples run by default; ``HYPOTHESIS_PROFILE=slow`` runs 500.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from random_graphs import RandomNet, Spec, specs

import reconvene_fx as rfx

settings.register_profile(
    "ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "slow", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

PLANS = st.sampled_from([
    {"strategy": "reconvene"},
    {"strategy": "uniform"},
    {"strategy": "global"},
    {"strategy": "reconvene", "composite": True},
    {"strategy": "none", "composite": True},
    {"strategy": "reconvene", "round_to": 4},
])  # fmt: skip


@settings(settings.get_profile(PROFILE))
@given(
    spec=specs(),
    budget=st.sampled_from((0.3, 0.5, 0.8)),
    method=st.sampled_from(("magnitude", "random", "snip", "synflow")),
    plan=PLANS,
    seed=st.integers(0, 3),
)
def test_random_cnns_compile_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    spec: Spec,
    budget: float,
    method: str,
    plan: dict,
    seed: int,
) -> None:
    torch.manual_seed(seed)
    model = RandomNet(spec).eval()
    x = torch.randn(2, spec.in_channels, spec.size, spec.size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    options = {"method_options": {"iterations": 3}} if method == "synflow" else {}
    try:
        gm = rfx.compile(model, budget, (x,), method=method, seed=seed, reinit=False,
                         **plan, **options)  # fmt: skip
    except rfx.BudgetError as error:  # only when the pinned channels alone exceed it
        assert error.smallest > budget
        event("budget unreachable")
        return
    rep = rfx.report(gm)
    event("narrowed" if any(lp.narrowed for lp in rep.layers.values()) else "nothing narrowed")
    kept = rep.nonzero_ratio if plan.get("composite") else rep.params_ratio
    assert kept <= budget + 1e-9
    assert rfx.verify(model, gm, (x,)).exact
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    rfx.export_onnx(gm, path, (x,))  # raises unless onnxruntime agrees with PyTorch
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # caller's model untouched
