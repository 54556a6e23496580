"""Old spellings kept for one release: ``flops`` became ``macs`` (issue 24)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import reconvene_fx as rfx
from reconvene_fx.emit._state import _report_from, _report_state

X = torch.randn(2, 3, 16, 16)
RENAMED = r"is deprecated and will be removed in the next release; use"


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


class _ValueBranch(nn.Module):
    """Its forward asks a question about values, which tracing cannot answer: its body is
    compiled in place (reconvene_fx._submodules)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y if y.mean() > -1e9 else -y


def test_budget_flops_is_a_deprecated_spelling_of_macs() -> None:
    with pytest.warns(DeprecationWarning, match=rf"Budget\(flops=\.\.\.\) {RENAMED} Budget\(macs"):
        old = rfx.Budget(flops=0.5)
    assert old == rfx.Budget(macs=0.5)
    assert repr(old) == "Budget(params=None, macs=0.5, latency=None)"
    assert old.limits() == {"params": None, "macs": 0.5, "latency": None}
    with pytest.warns(DeprecationWarning, match=rf"Budget\.flops {RENAMED} Budget\.macs") as seen:
        assert rfx.Budget(params=0.4, macs=0.3).flops == 0.3
    assert seen[0].filename == __file__  # the warning points at the line that said flops


def test_budget_takes_macs_or_flops_not_both() -> None:
    with pytest.raises(rfx.ArgumentError, match="macs= or its deprecated spelling flops="):
        rfx.Budget(macs=0.5, flops=0.5)
    with (
        pytest.raises(rfx.ArgumentError, match=r"Budget\.macs must be in"),
        pytest.warns(DeprecationWarning),
    ):
        rfx.Budget(flops=1.5)


def test_report_flops_names_are_deprecated_spellings_of_macs() -> None:
    gm = rfx.compile(_net(), rfx.Budget(macs=0.5), (X,))
    rep = rfx.report(gm)
    with pytest.warns(DeprecationWarning, match=rf"PruningReport\.flops_after {RENAMED}"):
        assert rep.flops_after == rep.macs_after
    with pytest.warns(DeprecationWarning, match=r"PruningReport\.flops_before"):
        assert rep.flops_before == rep.macs_before
    with pytest.warns(DeprecationWarning, match=r"PruningReport\.flops_ratio"):
        assert rep.flops_ratio == rep.macs_ratio <= 0.5
    layer = rep.layers["0"]
    with pytest.warns(DeprecationWarning, match=rf"LayerPlan\.flops_after {RENAMED}"):
        assert layer.flops_after == layer.macs_after
    with pytest.warns(DeprecationWarning, match=r"LayerPlan\.flops_before"):
        assert layer.flops_before == layer.macs_before
    data = rep.to_dict()
    assert {"macs_before", "macs_after"} <= data.keys() and "flops_after" not in data
    assert "macs_after" in data["layers"]["0"] and "flops_after" not in data["layers"]["0"]
    assert data["budget"] == {"params": None, "macs": 0.5, "latency": None}


def test_reports_saved_with_the_old_names_load_with_the_new() -> None:
    rep = rfx.report(rfx.compile(_net(), rfx.Budget(params=0.6, macs=0.5), (X,)))
    state = _report_state(rep)
    old = {("flops" + k[4:] if k.startswith("macs_") else k): v for k, v in state.items()}
    old["budget"] = {"params": 0.6, "flops": 0.5, "latency": None}
    old["layers"] = {
        name: {("flops" + k[4:] if k.startswith("macs_") else k): v for k, v in lay.items()}
        for name, lay in state["layers"].items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        again = _report_from(old)
    assert again.budget == rfx.Budget(params=0.6, macs=0.5)
    assert (again.macs_before, again.macs_after) == (rep.macs_before, rep.macs_after)
    assert again.layers["3"].macs_after == rep.layers["3"].macs_after


def test_library_code_raises_no_deprecation_warning(tmp_path: Path) -> None:
    """Every internal use of the renamed names has moved: a DeprecationWarning raised
    from reconvene_fx's own code (the old spellings warn at their caller's line) fails."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=DeprecationWarning, module=r"reconvene_fx\b")
        warnings.filterwarnings("ignore", category=rfx.SubmoduleCompileWarning)
        model = _net()
        gm = rfx.compile(model, rfx.Budget(params=0.6, macs=0.5), (X,), composite=True,
                         reinit=False)  # fmt: skip
        rep = rfx.report(gm)
        assert "MACs" in rep.summary() and "MACs" in rep.format_table().splitlines()[0]
        rep.to_dict()
        rfx.verify(model, gm, (X,))
        loaded = rfx.load(rfx.save(gm, tmp_path / "m.pt", (X,)))
        assert rfx.report(loaded).macs_after == rep.macs_after
        rfx.export_onnx(gm, tmp_path / "m.onnx", (X,))
        rfx.analyze(model, 0.5, (X,))
        in_place = rfx.compile(_ValueBranch(), rfx.Budget(params=0.8, macs=0.7), (X,))
        assert rfx.report(in_place).compiled == ["body"]
        assert rfx.report(in_place).macs_ratio <= 0.7
