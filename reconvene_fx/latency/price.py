"""What a channel costs in time: per coupled group, seconds saved per MAC saved.

The ``reconvene`` strategy gives each coupled group a target width from the PaI densities.
Those widths are what a planner buys when every channel costs its MACs: a group whose
layers keep ``d`` of their weights keeps a width that follows ``d``. On a runtime, though,
a MAC costs more time in some layers than in others (a 1x1 conv on a large feature map is
bound by memory, not arithmetic; a concatenation copies its inputs again). Pricing a group's
channels by their time instead, the planner that bought a width ``t_g`` at MAC price buys
``t_g / p_g`` at a relative time price ``p_g`` (seconds per MAC of the group over the
median group): the groups whose channels are dear in time give more of them up, and the
same latency keeps more of the channels the scores rate.

The price of a group is read from the per-layer :class:`~reconvene_fx.latency.LatencyTable`
through a :class:`~reconvene_fx.latency.LatencyEstimate`: the seconds and the MACs the model
saves when the group alone loses the weaker half of its removable channels.
"""

from __future__ import annotations

import math

import torch
import torch.fx

from ..costs import LayerCosts
from ..log import logger
from .estimate import LatencyEstimate

__all__ = ["PRICE_RANGE", "time_prices"]

# A group's time price is clamped to [1 / PRICE_RANGE, PRICE_RANGE] of the median group's:
# the table's timings of a single layer are noisy, and a width is never cut or kept for a
# factor of ten in one reading.
PRICE_RANGE = 4.0


def time_prices(
    estimate: LatencyEstimate,
    costs: LayerCosts,
    group: torch.Tensor,
    removable: torch.Tensor,
    scores: torch.Tensor,
    part: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per coupled group, its channels' seconds per MAC relative to the median group's
    (1 where the group has nothing removable or saves no MACs or time).

    Each group with removable atoms alone loses the weaker half of them (by ``scores``;
    of each of its parts, ``part`` as in :class:`~reconvene_fx.strategies.PlanInputs`, as
    the plans narrow them); its price is the seconds the estimate says that saves over the
    MACs it saves.

    Example:
        >>> from reconvene_fx.latency import LatencyTable
        >>> from reconvene_fx.passes import ChannelGroupPass, ShapePass
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> _ = ShapePass((torch.randn(1, 3, 24, 24),))(gm); _ = ChannelGroupPass()(gm)
        >>> costs = LayerCosts(gm)
        >>> group = torch.zeros(costs.num_atoms, dtype=torch.long)
        >>> for node in gm.graph.nodes:
        ...     info = node.meta.get("reconvene.channels")
        ...     if info is not None and info.size:
        ...         group[info.atoms] = info.group
        >>> est = LatencyEstimate(gm, costs, LatencyTable("torch", False, repeats=2), 1e-3)
        >>> removable = torch.arange(costs.num_atoms)
        >>> prices = time_prices(est, costs, group, removable, torch.rand(costs.num_atoms))
        >>> bool((prices >= 1 / PRICE_RANGE).all() and (prices <= PRICE_RANGE).all())
        True
    """
    num_groups = int(group.max()) + 1 if group.numel() else 0
    raw = torch.full((num_groups,), math.nan, dtype=torch.float64)
    if removable.numel() == 0:
        return torch.ones(num_groups, dtype=torch.float64)
    none = torch.zeros(group.numel(), dtype=torch.bool)
    seconds_full = estimate.seconds(none)
    macs_full = costs.evaluate(none)[1]
    by_group = group[removable]
    by_part = by_group if part is None else part[removable]
    for g in torch.unique(by_group).tolist():
        removed = none.clone()
        in_group = by_group == g
        for p in torch.unique(by_part[in_group]).tolist():
            atoms = removable[in_group & (by_part == p)]
            weak = torch.argsort(scores[atoms], stable=True)[: max(1, atoms.numel() // 2)]
            removed[atoms[weak]] = True
        saved_s = seconds_full - estimate.seconds(removed)
        saved_macs = macs_full - costs.evaluate(removed)[1]
        if saved_s > 0 and saved_macs > 0:
            raw[g] = saved_s / saved_macs
    priced = ~torch.isnan(raw)
    prices = torch.ones(num_groups, dtype=torch.float64)
    if bool(priced.any()):
        median = raw[priced].median()
        prices[priced] = (raw[priced] / median).clamp(1 / PRICE_RANGE, PRICE_RANGE)
        logger.info(
            "time prices of %d groups: %.2f to %.2f of the median group's seconds per MAC",
            int(priced.sum()), float(prices[priced].min()), float(prices[priced].max()),
        )  # fmt: skip
    return prices
