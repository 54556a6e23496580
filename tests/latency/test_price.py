"""Time prices: each coupled group's seconds per MAC, relative to the median group's."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from models import build

import reconvene_fx as rfx
from reconvene_fx.costs import LayerCosts
from reconvene_fx.latency import LatencyEstimate, LatencyTable
from reconvene_fx.latency.price import PRICE_RANGE, time_prices
from reconvene_fx.meta import CHANNELS, PLAN
from reconvene_fx.passes import ChannelGroupPass, ShapePass
from reconvene_fx.passes import plan as plan_module

X = torch.randn(1, 3, 8, 8)


def _macs(spec) -> float:
    """MACs of a conv spec whose padding keeps the spatial size (the nets below)."""
    return spec.in_channels // spec.groups * spec.out_channels * math.prod(spec.kernel) * 64


class MacTable(LatencyTable):
    """Seconds = MACs x 1e-12, times ``slow`` for 1x1 convs (memory-bound layers)."""

    def __init__(self, slow: float) -> None:
        self.slow = slow
        super().__init__("torch", False)

    def _timer(self):
        return lambda spec: _macs(spec) * 1e-12 * (self.slow if spec.kernel == (1, 1) else 1.0)


def _chain() -> nn.Sequential:
    """a: 3 -> 16 (3x3), b: 16 -> 32 (1x1), c: 32 -> 4 (3x3): group 1 (16 channels) feeds
    b, group 2 (32 channels) comes out of it."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.ReLU(),
        nn.Conv2d(32, 4, 3, padding=1),
    )  # fmt: skip


def _prices(slow: float, net: nn.Module | None = None) -> tuple[torch.Tensor, dict[int, int]]:
    """Per group, its price; and the group of each width."""
    gm = torch.fx.symbolic_trace(net if net is not None else _chain())
    ShapePass((X,))(gm)
    ChannelGroupPass()(gm)
    costs = LayerCosts(gm)
    group = torch.zeros(costs.num_atoms, dtype=torch.long)
    width: dict[int, int] = {}
    for node in gm.graph.nodes:
        info = node.meta.get(CHANNELS)
        if info is not None and info.size:
            group[info.atoms] = info.group
            width[info.group] = info.size
    free = torch.ones(costs.num_atoms, dtype=torch.bool)
    for node in gm.graph.nodes:  # the input and the output stay (pinned)
        info = node.meta.get(CHANNELS)
        if info is not None and bool(info.pinned.any()):
            free[info.atoms] = False
    removable = free.nonzero().flatten()
    # before = 0: nothing outside the conv layers costs time (the rest is 0)
    estimate = LatencyEstimate(gm, costs, MacTable(slow), 0.0)
    prices = time_prices(estimate, costs, group, removable, torch.rand(costs.num_atoms))
    return prices, {w: g for g, w in width.items()}


def test_time_proportional_to_macs_prices_every_group_alike() -> None:
    prices, groups = _prices(slow=1.0)
    assert prices[[groups[16], groups[32]]].tolist() == pytest.approx([1.0, 1.0])


def test_a_memory_bound_layer_makes_its_groups_dear_by_their_share_of_it() -> None:
    prices, groups = _prices(slow=8.0)
    # half of group 1 (8 channels) saves a's 3x8x9x64 MACs at 1x and b's 8x32x64 at 8x;
    # half of group 2 (16) saves b's 16x16x64 at 8x and c's 16x4x9x64 at 1x
    a, b1 = 3 * 8 * 9 * 64, 8 * 32 * 64
    b2, c = 16 * 16 * 64, 16 * 4 * 9 * 64
    raw1, raw2 = (a + 8 * b1) / (a + b1), (8 * b2 + c) / (b2 + c)
    low = min(raw1, raw2)  # the median of two groups is the lower one (torch.median)
    got = prices[[groups[16], groups[32]]].tolist()
    assert got == pytest.approx([raw1 / low, raw2 / low], rel=1e-9)
    assert got[0] > 1.0 == got[1]  # group 1 is the dearer


def test_prices_are_clamped_to_the_range() -> None:
    # a 3x3 pair around a 1x1 conv 1e4 times slower per MAC: the two groups touching it
    # are priced far above the first group, the median; the first is clamped
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 24, 1), nn.ReLU(), nn.Conv2d(24, 4, 3, padding=1),
    )  # fmt: skip
    prices, groups = _prices(1e4, net)
    assert float(prices[groups[16]]) == pytest.approx(1 / PRICE_RANGE)
    assert float(prices[groups[24]]) == pytest.approx(PRICE_RANGE) or float(
        prices[groups[32]]
    ) == pytest.approx(1.0)
    assert bool((prices >= 1 / PRICE_RANGE).all() and (prices <= PRICE_RANGE).all())


def _plan_widths(price: str, dear: int | None, monkeypatch) -> dict[str, int]:
    """Conv widths of the plan; ``dear``: the width of the group priced PRICE_RANGE times
    the others (None: time_prices must not run)."""

    def priced(estimate, costs, group, removable, scores, part) -> torch.Tensor:
        assert dear is not None, "time_prices must not run"
        sizes = torch.bincount(group)
        return torch.where(sizes == dear, PRICE_RANGE, 1.0).double()

    monkeypatch.setattr(plan_module, "time_prices", priced)
    torch.manual_seed(0)
    gm = rfx.compile(_chain(), rfx.Budget(macs=0.5), (X,), price=price, latency_cache=False,
                     round_to=1, reinit=False)  # fmt: skip
    assert PLAN.get(gm).price == ("macs" if dear is None else "latency")
    return {name: m.out_channels for name, m in gm.named_modules() if isinstance(m, nn.Conv2d)}


def test_price_latency_narrows_the_dear_group_more(monkeypatch: pytest.MonkeyPatch) -> None:
    by_macs = _plan_widths("macs", None, monkeypatch)
    by_time = _plan_widths("latency", 16, monkeypatch)  # a's 16 outputs are dear
    assert by_time["0"] < by_macs["0"], (by_time, by_macs)
    assert by_time["2"] >= by_macs["2"], (by_time, by_macs)


def test_macs_is_the_default_price(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _plan_widths("macs", None, monkeypatch)  # time_prices never runs
    gm = rfx.compile(_chain(), 0.5, (X,), reinit=False)
    assert PLAN.get(gm).price == "macs"


def test_an_unknown_price_is_refused() -> None:
    with pytest.raises(rfx.ArgumentError, match=r"unknown price 'ms'.*macs.*latency"):
        rfx.compile(_chain(), 0.5, (X,), price="ms")


def test_a_latency_budget_priced_by_time_holds() -> None:
    net, x = _chain(), torch.randn(1, 3, 64, 64)  # large enough that compute dominates
    gm = rfx.compile(net, rfx.Budget(latency=0.8), (x,), latency_cache=False, reinit=False,
                     price="latency")  # fmt: skip
    assert PLAN.get(gm).price == "latency"
    assert rfx.report(gm).latency_ratio <= 0.8


class _Recording:
    """An estimate that records what each call removes (time: the atoms kept)."""

    def __init__(self) -> None:
        self.removals: list[torch.Tensor] = []

    def seconds(self, removed: torch.Tensor) -> float:
        self.removals.append(removed.clone())
        return float((~removed).sum())


def test_a_concatenated_group_loses_half_of_each_part() -> None:
    """DenseNet's concatenation joins the stem's 16 outputs and each layer's 12 in one
    group: its price is read with every part at half, as the plans narrow them, not with
    the group's weakest half (here all in the parts the scores rate low)."""
    gm = torch.fx.symbolic_trace(build("densenet"))
    ShapePass((X,))(gm)
    ChannelGroupPass()(gm)
    costs = LayerCosts(gm)
    infos = {
        info.space: info for n in gm.graph.nodes
        if (info := n.meta.get(CHANNELS)) is not None and info.size
    }  # fmt: skip
    group = torch.zeros(costs.num_atoms, dtype=torch.long)
    for info in infos.values():
        group[info.atoms] = info.group
    part = plan_module._parts(infos, group)
    stem = next(i for i in infos.values() if i.size == 16)
    scores = torch.ones(costs.num_atoms, dtype=torch.float64)
    scores[stem.atoms] = 100.0  # the stem's channels rated far above the layers'
    removable = torch.arange(costs.num_atoms)[~torch.isin(torch.arange(costs.num_atoms),
                                                          _pinned(infos))]  # fmt: skip
    estimate = _Recording()
    time_prices(estimate, costs, group, removable, scores, part)
    concat = group[stem.atoms[0]]
    (removed,) = [r for r in estimate.removals if bool(r[group == concat].any())]
    for p in torch.unique(part[removable][group[removable] == concat]).tolist():
        atoms = removable[(part[removable] == p) & (group[removable] == concat)]
        assert int(removed[atoms].sum()) == atoms.numel() // 2, p


def _pinned(infos: dict) -> torch.Tensor:
    return torch.cat([i.atoms[i.pinned] for i in infos.values()])
