"""plot_report: the per-layer picture of a plan."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx

X = torch.randn(1, 3, 16, 16)


@pytest.mark.parametrize("composite", [False, True])
def test_plot_draws_every_layer_in_svg(tmp_path, composite: bool) -> None:
    gm = rfx.compile(build("residual"), 0.4, (X,), composite=composite)
    rep = rfx.report(gm)
    out = rfx.plot_report(rep, tmp_path / "plan.svg", title="residual net")
    text = out.read_text()
    assert text.startswith("<?xml") and "residual net" in text
    for name in rep.layers:  # every layer is labelled under the x axis
        assert f">{name}</text>" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.svg"]  # nothing partial


def test_plot_without_matplotlib_says_how_to_install(tmp_path, monkeypatch) -> None:
    gm = rfx.compile(build("residual"), 0.5, (X,))
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"reconvene-fx\[plot\]"):
        rfx.plot_report(rfx.report(gm), tmp_path / "plan.png")
    assert not list(tmp_path.iterdir())
