"""LatencyEstimate: the table's layer times at the kept widths plus the scaled rest."""

from __future__ import annotations

import pytest
import torch
from models import build

from reconvene_fx.costs import LayerCosts
from reconvene_fx.latency import LatencyEstimate, LatencyTable
from reconvene_fx.meta import CHANNELS
from reconvene_fx.passes import ChannelGroupPass, ShapePass

X = torch.randn(2, 3, 16, 16)


class ProductTable(LatencyTable):
    """Every layer costs its MACs per output position (in / groups x out) in ns: bilinear
    in the widths (linear for depthwise), so reading it between grid samples is exact and
    the estimate can be checked against a formula."""

    def _timer(self):
        self.specs = []

        def seconds(spec):
            self.specs.append(spec)
            return spec.in_channels // spec.groups * spec.out_channels * 1e-9

        return seconds


def annotated(name: str | torch.nn.Module) -> tuple[torch.fx.GraphModule, LayerCosts]:
    gm = torch.fx.symbolic_trace(build(name) if isinstance(name, str) else name)
    ShapePass((X,))(gm)
    ChannelGroupPass()(gm)
    return gm, LayerCosts(gm)


def removal(gm: torch.fx.GraphModule, costs: LayerCosts, share: float) -> torch.Tensor:
    """Remove ``share`` of the channels of every conv output (first atoms of each)."""
    removed = torch.zeros(costs.num_atoms, dtype=torch.bool)
    for node, _ in costs.calls:
        info = node.meta.get(CHANNELS)
        if info is not None and not bool(info.pinned.any()):
            atoms = info.atoms.unique()
            removed[atoms[: int(share * atoms.numel())]] = True
    return removed


def expected_layers(costs: LayerCosts, removed: torch.Tensor) -> float:
    kout, per_in = costs.call_widths(removed)
    # per_in: kept inputs per group (1 for depthwise)
    return sum(kin * out * 1e-9 for out, kin in zip(kout.tolist(), per_in.tolist(), strict=True))


def expected(est: LatencyEstimate, removed: torch.Tensor, before: float) -> float:
    """The estimate by its definition: layers at kept widths plus the rest (``before``
    minus the layers at full width) scaled by the share of output activations kept."""
    costs = est.costs
    kout, _ = costs.call_widths(removed)
    widths = [layer.out_channels for _, layer in costs.calls]
    full = sum(w * s for w, s in zip(widths, est.spatial.tolist(), strict=True))
    kept = sum(o * s for o, s in zip(kout.tolist(), est.spatial.tolist(), strict=True))
    rest = before - expected_layers(costs, torch.zeros_like(removed))
    return expected_layers(costs, removed) + rest * kept / full


@pytest.mark.parametrize("name", ["residual", "depthwise", "grouped", "densenet", "flatten"])
@pytest.mark.parametrize("share", [0.0, 0.3, 0.6])
def test_estimate_is_layer_times_at_kept_widths_plus_scaled_rest(name: str, share: float) -> None:
    gm, costs = annotated(name)
    table = ProductTable("torch", False)
    before = 1.0
    est = LatencyEstimate(gm, costs, table, before)
    assert est.timed_calls == len(costs.calls)  # plain conv/linear modules: all timed
    removed = removal(gm, costs, share)
    assert est.seconds(removed) == pytest.approx(expected(est, removed, before), rel=1e-9)
    if share:
        assert est.seconds(removed) < before


def test_depthwise_specs_keep_one_input_per_group() -> None:
    gm, costs = annotated("depthwise")
    table = ProductTable("torch", False)
    est = LatencyEstimate(gm, costs, table, 1.0)
    est.seconds(removal(gm, costs, 0.5))
    depthwise = [s for s in table.specs if s.groups > 1]
    assert depthwise and all(s.in_channels == s.groups for s in depthwise)


def test_grid_reuses_timed_widths_as_the_search_moves() -> None:
    wide = torch.nn.Sequential(
        torch.nn.Conv2d(3, 256, 3), torch.nn.ReLU(), torch.nn.Conv2d(256, 256, 3),
        torch.nn.Conv2d(256, 10, 1),
    )  # fmt: skip
    gm, costs = annotated(wide)
    table = ProductTable("torch", False)
    est = LatencyEstimate(gm, costs, table, 1.0, round_to=1)
    first = est.seconds(removal(gm, costs, 0.40))  # 154 of 256 kept: between samples 144, 160
    timed = table.timed
    second = est.seconds(removal(gm, costs, 0.42))  # 149 kept: the same grid cells
    assert table.timed == timed and second < first


def regnet_like() -> torch.nn.Module:
    """A grouped conv of 13 groups of 8 channels between 1x1 convs (regnet's bottleneck)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 104, 1), torch.nn.ReLU(),
        torch.nn.Conv2d(104, 104, 3, padding=1, groups=13), torch.nn.ReLU(),
        torch.nn.Conv2d(104, 10, 1),
    )  # fmt: skip


@pytest.mark.parametrize("round_to", [1, 8])
@pytest.mark.parametrize("share", [0.1, 0.3, 0.55, 0.8])
def test_grouped_specs_split_evenly_into_their_groups(round_to: int, share: float) -> None:
    gm, costs = annotated(regnet_like())
    table = ProductTable("torch", False)
    est = LatencyEstimate(gm, costs, table, 1.0, round_to=round_to)
    removed = removal(gm, costs, share)
    got = est.seconds(removed)
    grouped = [s for s in table.specs if s.groups == 13]
    assert grouped
    for spec in grouped:
        assert spec.out_channels % 13 == 0 and spec.in_channels % 13 == 0, spec.key()
        spec.module()  # a conv of that geometry exists
    assert got == pytest.approx(expected(est, removed, 1.0), rel=1e-9)
