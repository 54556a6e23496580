"""composite=True: masks on untouched layers, the nonzero budget, training and export."""

from __future__ import annotations

import math

import onnx
import pytest
import torch
import torch.nn.functional as F
from models import build
from onnx import numpy_helper

import reconvene_fx as rfx
from reconvene_fx.composite import masks_of
from reconvene_fx.emit import load, save
from reconvene_fx.layers import module_layer
from reconvene_fx.passes._composite import THIN_FLOOR

X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def composite(name: str = "residual", budget: float = 0.6, **options) -> tuple:
    model = build(name)
    options = {"method": "snip", "composite": True, "reinit": False, **options}
    return model, rfx.compile(model, budget=budget, example_inputs=(X,), **options)


@pytest.mark.parametrize("name", ["residual", "densenet", "inception", "se"])
@pytest.mark.parametrize("budget", [0.3, 0.6])
def test_untouched_layers_keep_their_masks_and_the_nonzero_budget_holds(
    name: str, budget: float
) -> None:
    model, gm = composite(name, budget)
    rep = rfx.report(gm)
    table = gm.meta["reconvene.sensitivity_table"]  # what compile scored, with the scores
    assert all(lay.scores is not None for lay in table.layers.values())
    masks = masks_of(gm)
    summary = gm.meta["reconvene.plan"]
    kept_scores, dropped_scores = [], []
    for layer, lp in rep.layers.items():
        pai = table.layers[layer]
        outputs_whole = lp.out_idx.numel() == lp.out_channels
        assert (layer in masks) == (outputs_whole and pai.density < 1) == lp.masked, layer
        if lp.masked:
            mask = masks[layer]
            # the PaI mask (and scores), sliced to the inputs the layer kept
            original = module_layer(layer, model.get_submodule(layer))
            in_idx = lp.in_idx if lp.in_idx.numel() < lp.in_channels else None
            pai_mask = original.handler.slice_weight(original, pai.mask, in_idx, None)
            scores = original.handler.slice_weight(original, pai.scores, in_idx, None)
            raised = bool((mask & ~pai_mask).any())
            if raised:  # more than the PaI mask only where it starved the layer: every
                # input keeps min_width x the global density of the weights reading it
                floor = 0.1 * table.global_density
                assert pai.density < floor, layer
                now = module_layer(layer, gm.get_submodule(layer))
                reads = now.handler.input_of_weights(now)[mask]
                per_input = torch.bincount(reads, minlength=now.in_channels)
                need = math.ceil(floor * mask.numel() / now.in_channels - 1e-9)
                assert int(per_input.min()) >= need, layer
            weight = gm.get_submodule(layer).weight
            assert bool((weight[~mask] == 0).all())
            # a masked layer keeps the weights its mask chose (sliced, not redrawn)
            sliced = original.handler.slice_weight(original, original.module.weight, in_idx,
                                                   None)  # fmt: skip
            assert torch.equal(weight.detach(), sliced * mask)
            assert lp.nonzero_after == lp.params_after - int((~mask).sum())
            if not raised:
                kept_scores.append(scores[mask])
                dropped_scores.append(scores[~mask])
            if pai_mask.any() and summary.mask_mode != "rethreshold":
                assert mask.any(), layer  # thinning never empties a layer
            if summary.mask_mode == "thin":  # a layer's best scores within its PaI mask
                thinned = pai_mask & ~mask
                if thinned.any():
                    assert float(scores[mask].min()) >= float(scores[thinned].max()), layer
                assert int(mask.sum()) >= THIN_FLOOR * int(pai_mask.sum()) - 1, layer
    if masks and summary.mask_mode != "thin":  # one global threshold over their scores
        assert float(torch.cat(kept_scores).min()) > float(torch.cat(dropped_scores).max())
    assert rep.nonzero_after == rep.params_after - sum(int((~m).sum()) for m in masks.values())
    assert rep.nonzero_after <= budget * rep.params_before
    assert rep.params_after > rep.nonzero_after or not masks
    assert rfx.verify(model, gm, (X,)).exact  # the reference carries the same masks


def test_masked_weights_stay_zero_through_20_sgd_steps() -> None:
    _, gm = composite()
    masks = masks_of(gm)
    assert masks
    before = {n: gm.get_submodule(n).weight.detach().clone() for n in masks}
    gm.train()
    optimizer = torch.optim.SGD(gm.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(10, (8,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(gm(x), y).backward()
        optimizer.step()
    for name, mask in masks.items():
        weight = gm.get_submodule(name).weight.detach()
        assert bool((weight[~mask] == 0).all()), name
        assert not torch.equal(weight[mask], before[name][mask]), name  # it did train


def test_onnx_round_trip_bakes_the_masks_into_the_weights(tmp_path) -> None:
    _, gm = composite()
    masks = masks_of(gm)
    path = rfx.export_onnx(gm, tmp_path / "composite.onnx", (X,))  # checks onnxruntime
    assert masks_of(gm).keys() == masks.keys()  # the caller's module keeps its masks
    inits = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    for name, mask in masks.items():
        zero = ~mask.numpy()
        same_shape = [a for a in inits if a.shape == zero.shape]
        assert any(((a == 0) == zero).all() for a in same_shape), name
    baked = load(save(gm, tmp_path / "composite.pt2", (X,)))  # deployment: baked too
    torch.testing.assert_close(baked(X), gm.eval()(X))


@pytest.mark.parametrize("name", ["residual", "densenet"])
def test_pt_round_trip_keeps_masks_report_and_training(tmp_path, name: str) -> None:
    _, gm = composite(name, 0.4, reinit=True)
    path = rfx.save(gm, tmp_path / "composite.pt")
    state = torch.load(path, weights_only=True)  # plain data: no pickled code runs
    assert "sensitivity_table" not in str(list(state))  # no analysis scratch stored
    loaded = rfx.load(path)
    gm.eval(), loaded.eval()
    torch.testing.assert_close(loaded(X), gm(X), rtol=0, atol=0)
    assert rfx.report(loaded).to_dict() == rfx.report(gm).to_dict()
    masks = masks_of(loaded)
    assert masks.keys() == masks_of(gm).keys() and masks
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.1, momentum=0.9)
    loaded.train()
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(loaded(X), torch.arange(X.shape[0]) % 10).backward()
        optimizer.step()
    for module_name, mask in masks.items():
        weight = loaded.get_submodule(module_name).weight
        assert bool((weight[~mask] == 0).all()), module_name
    assert not torch.equal(loaded(X), gm(X))  # it did train


def test_bake_masks_copies_and_keeps_the_numbers() -> None:
    _, gm = composite()
    baked = rfx.bake_masks(gm)
    assert masks_of(gm) and not masks_of(baked)
    gm.eval(), baked.eval()
    torch.testing.assert_close(baked(X), gm(X))
    assert rfx.bake_masks(baked) is baked


@pytest.mark.parametrize("budget", [0.25, 0.5])
def test_strategy_none_is_the_unstructured_pai_model(budget: float) -> None:
    model, gm = composite("residual", budget, strategy="none")
    rep = rfx.report(gm)
    table = gm.meta["reconvene.sensitivity_table"]
    assert not any(lp.narrowed for lp in rep.layers.values())
    assert rep.params_after == rep.params_before and rep.strategy == "none"
    # the nonzero parameters (biases and norms included) fill the budget
    assert budget - 0.01 <= rep.nonzero_ratio <= budget
    masks = masks_of(gm)
    kept = torch.cat([table.layers[n].scores[m] for n, m in masks.items()])
    dropped = torch.cat([table.layers[n].scores[~m] for n, m in masks.items()])
    assert float(kept.min()) > float(dropped.max())  # one global threshold
    assert rfx.verify(model, gm, (X,)).exact


def test_strategy_none_needs_composite() -> None:
    with pytest.raises(ValueError, match=r"strategy='none' narrows nothing.*composite=True"):
        rfx.compile(build("residual"), 0.5, (X,), strategy="none")


@pytest.mark.parametrize("strategy", ["uniform", "global"])
def test_composite_with_a_strategy_that_narrows_everything_is_refused(strategy: str) -> None:
    with pytest.raises(ValueError, match=f"strategy='{strategy}' narrows every layer"):
        rfx.compile(build("residual"), 0.5, (X,), strategy=strategy, composite=True)


def test_report_gives_pai_and_kept_density_per_layer() -> None:
    _, gm = composite("residual", 0.4)
    rep = rfx.report(gm)
    table = rep.format_table()
    assert "density" in table and "kept" in table
    for lp in rep.layers.values():
        assert lp.kept_density == pytest.approx(lp.nonzero_after / lp.params_before)
        if lp.masked:  # a masked layer keeps about its PaI share (biases aside)
            assert lp.kept_density <= lp.density + 0.05
    assert rep.to_dict()["layers"]["fc"]["kept_density"] == rep.layers["fc"].kept_density


def _unselected_narrowed(gm: torch.fx.GraphModule) -> list[str]:
    """Layers whose outputs narrowed although the PSE did not select them."""
    table = gm.meta["reconvene.sensitivity_table"]
    return [n for n, lp in rfx.report(gm).layers.items()
            if lp.out_idx.numel() < lp.out_channels and not table.layers[n].selected]  # fmt: skip


def test_a_composite_budget_below_the_floor_thins_the_masks_first() -> None:
    """The selected groups at their floor hold more than their masks kept: the masks are
    thinned by one factor (each keeps its best weights, none empties) before any other
    group narrows."""
    model, gm = composite("residual", 0.08, round_to=1)  # the floors at any width
    rep = rfx.report(gm)
    assert gm.meta["reconvene.plan"].mask_mode == "thin"
    assert 0.075 <= rep.nonzero_ratio <= 0.08
    assert not _unselected_narrowed(gm)
    assert rfx.verify(model, gm, (X,)).exact


def test_a_tight_composite_budget_narrows_beyond_the_selected_groups() -> None:
    """When narrowing the selected groups to the floor and thinning the masks to half is
    not enough, the other groups narrow too: the budget holds instead of a BudgetError."""
    model, gm = composite("residual", 0.04, round_to=1)
    rep = rfx.report(gm)
    assert rep.nonzero_after <= 0.04 * rep.params_before
    assert _unselected_narrowed(gm)
    assert rfx.verify(model, gm, (X,)).exact


def test_rethresholded_masks_break_score_ties_and_fill_the_budget() -> None:
    """Scores with many exact ties (SNIP's zeros on a small batch): the masks that fit the
    budget keep the tied weights with the largest |w|, up to the budget, not none of them."""

    @rfx.scoring.register_scorer("test-ties")
    def ties(gm, example_inputs, targets, *, seed):
        return {n: (torch.arange(w.numel()) % 3 == 0).float().view_as(w)
                for n, w in rfx.scoring.prunable_weights(gm)}  # fmt: skip

    try:
        _, gm = composite("residual", 0.25, method="test-ties", strategy="none")
    finally:
        rfx.scoring.SCORERS.pop("test-ties")
    rep = rfx.report(gm)
    assert 0.24 <= rep.nonzero_ratio <= 0.25


class _SmallHead(torch.nn.Module):
    """Convs at PyTorch's default scale and a classifier drawn 100x smaller (timm's
    regnets draw theirs at std 0.01): global magnitude PaI keeps almost none of it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.b = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32, 10)
        with torch.no_grad():
            self.fc.weight.mul_(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b(torch.relu(self.a(x))))
        return self.fc(x.mean((2, 3)))


def test_a_mask_that_starves_its_layer_is_raised_to_the_floor() -> None:
    torch.manual_seed(0)
    model = _SmallHead()
    pai = rfx.compile(model, 0.3, (X,), composite=True, strategy="none")
    assert int(masks_of(pai)["fc"].sum()) == 0  # the PaI model itself: fc collapsed
    gm = rfx.compile(model, 0.3, (X,), composite=True)
    table = gm.meta["reconvene.sensitivity_table"]
    floor = 0.1 * table.global_density  # min_width x the global density
    fc = masks_of(gm)["fc"]
    kept_inputs = rfx.report(gm).layers["fc"].in_idx.numel()
    assert fc.shape == (10, kept_inputs)
    assert int(fc.sum(0).min()) >= math.ceil(floor * 10 - 1e-9)  # every input it reads
    assert rfx.report(gm).nonzero_after <= 0.3 * rfx.report(gm).params_before
    assert not any(lp.dead for lp in rfx.report(gm).layers.values())
