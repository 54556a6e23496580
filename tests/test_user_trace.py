"""The passes on a user's own ``torch.fx.symbolic_trace``: the user's model is untouched."""

from __future__ import annotations

import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.passes import compile_passes, run_passes

X = torch.randn(2, 3, 16, 16)


def test_passes_on_symbolic_trace_leave_the_model_alone() -> None:
    model = build("residual")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Conv2d)}  # fmt: skip
    gm = torch.fx.symbolic_trace(model)  # shares model's submodules
    run_passes(gm, compile_passes(0.4, (X,), rfx.CompileConfig(reinit=True)))
    assert rfx.report(gm).params_ratio <= 0.4
    assert {n: tuple(m.weight.shape) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv2d)} == shapes  # fmt: skip
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    out = model(X)  # still runs at full width
    assert out.shape == (2, 10)
