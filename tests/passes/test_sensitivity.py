"""SensitivityPass: what it writes, the exact global top-k, the table."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.meta import SENSITIVITY, SENSITIVITY_TABLE, LayerSensitivity
from reconvene_fx.passes import SensitivityPass
from reconvene_fx.passes.sensitivity import mask_density
from reconvene_fx.scoring import prunable_weights

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_meta_on_every_conv_and_linear_call_and_a_shared_module_once() -> None:
    gm = torch.fx.symbolic_trace(build("shared"))
    result = SensitivityPass(0.5, example_inputs=(X,))(gm)
    assert not result.modified
    calls = [
        n
        for n in gm.graph.nodes
        if n.op == "call_module"
        and isinstance(gm.get_submodule(str(n.target)), (torch.nn.Conv2d, torch.nn.Linear))
    ]
    assert calls and all(isinstance(n.meta[SENSITIVITY], LayerSensitivity) for n in calls)
    by_target: dict[str, list[LayerSensitivity]] = {}
    for n in calls:
        by_target.setdefault(str(n.target), []).append(n.meta[SENSITIVITY])
    assert any(len(v) > 1 for v in by_target.values())  # the shared module is called twice
    assert all(all(x is v[0] for x in v) for v in by_target.values())
    table = gm.meta[SENSITIVITY_TABLE]
    assert sorted(table.layers) == sorted(by_target)
    others = [n for n in gm.graph.nodes if n not in calls]
    assert not any(SENSITIVITY in n.meta for n in others)


def test_ties_at_the_threshold_are_broken_by_magnitude_to_keep_exactly_k() -> None:
    def constant(gm, example_inputs, targets, *, seed):
        return {n: torch.ones_like(w) for n, w in prunable_weights(gm)}

    model = build("residual")
    gm = torch.fx.symbolic_trace(model)
    SensitivityPass(0.3, example_inputs=(X,), method=constant)(gm)
    table = gm.meta[SENSITIVITY_TABLE]
    weights = dict(prunable_weights(gm))
    total = sum(w.numel() for w in weights.values())
    k = total - int(0.7 * total)
    assert sum(lay.kept for lay in table.layers.values()) == k
    flat_w = torch.cat([weights[f"{n}.weight"].detach().abs().flatten() for n in table.layers])
    flat_m = torch.cat([lay.mask.flatten() for lay in table.layers.values()])
    assert float(flat_w[flat_m].min()) >= float(flat_w[~flat_m].max())  # the largest |w| kept


def test_table_prints_and_converts_to_plain_dicts() -> None:
    table = rfx.analyze(build("se"), 0.4, (X,), method="magnitude")
    rows = table.to_list()
    assert [r["layer"] for r in rows] == list(table.layers)
    assert set(rows[0]) == {"layer", "density", "sensitivity", "selected", "kept", "total"}
    assert all(isinstance(v, (str, float, bool, int)) for r in rows for v in r.values())
    text = str(table)
    assert all(name in text for name in table.layers)
    assert "global density 0.4000" in text.splitlines()[-1]
    assert table.selected == [r["layer"] for r in rows if r["selected"]]
    assert all(lay.scores is None for lay in table.layers.values())  # not kept by default
    kept = rfx.analyze(build("se"), 0.4, (X,), keep_scores=True)
    assert all(lay.scores is not None for lay in kept.layers.values())


def test_mask_density_takes_the_tightest_limit() -> None:
    assert mask_density(0.3) == 0.3
    assert mask_density(rfx.Budget(params=0.5, macs=0.2)) == 0.2
    assert mask_density(rfx.Budget(latency=0.6)) == 0.6


def test_lazy_scores_are_checked_where_they_are_read() -> None:
    """Magnitude scores are computed on read; a NaN weight still stops the pass."""
    model = build("residual")
    with torch.no_grad():
        model.get_submodule("conv3.0").weight[0, 0, 0, 0] = float("nan")
    gm = torch.fx.symbolic_trace(model)
    with pytest.raises(ValueError, match=r"non-finite score\(s\) for 'conv3.0.weight'"):
        SensitivityPass(0.5, example_inputs=(X,))(gm)


def test_lazy_scores_read_in_row_blocks_give_the_same_ratings(monkeypatch) -> None:
    """Large layers' lazy scores are read a block of rows at a time (vgg16's first
    classifier layer would otherwise cost a second copy of 411 MB): same masks, masses
    and ratings as reading them whole."""
    import reconvene_fx.scoring.threshold as threshold

    def table(chunk: int) -> dict:
        monkeypatch.setattr(threshold, "_CHUNK", chunk)
        gm = torch.fx.symbolic_trace(build("flatten"))
        SensitivityPass(0.3, example_inputs=(X,))(gm)
        return gm.meta[SENSITIVITY_TABLE].layers

    whole, blocks = table(1 << 30), table(40)
    assert whole.keys() == blocks.keys()
    for name, lay in whole.items():
        other = blocks[name]
        assert torch.equal(lay.mask, other.mask), name
        assert torch.allclose(lay.out_mass, other.out_mass), name
        assert torch.allclose(lay.in_mass, other.in_mass), name
        assert (lay.kept, lay.density) == (other.kept, other.density), name


def test_compile_keeps_the_masks_only_where_they_are_read() -> None:
    """A plain compile rates the layers without writing a mask (a bool per weight, kept in
    the result's meta); composite plans, which read them, and analyze keep them, and all
    three rate every layer alike."""
    model = build("residual")
    plain = rfx.compile(model, 0.5, (X,)).meta[SENSITIVITY_TABLE]
    composite = rfx.compile(model, 0.5, (X,), composite=True).meta[SENSITIVITY_TABLE]
    analyzed = rfx.analyze(model, 0.5, (X,))
    assert all(lay.mask is None for lay in plain.layers.values())
    for table in (composite, analyzed):
        for name, lay in table.layers.items():
            assert lay.mask is not None and int(lay.mask.sum()) == lay.kept, name
            assert lay.kept == plain.layers[name].kept, name
