"""PlanPass: choose which channels to keep so the compact model fits the budget."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..budget import Budget, as_budget
from ..config import CompileConfig
from ..costs import CONV_TYPES, LayerCosts
from ..errors import BudgetError
from ..meta import CHANNELS, KEEP, ChannelInfo, ChannelKeep
from ..scoring import get_scorer

__all__ = ["PlanPass"]

WEIGHTED = (*CONV_TYPES, torch.nn.Linear)


class PlanPass(PassBase):
    """Scores channels, orders them for removal, and finds the most it must remove.

    A channel's score is the sum, over every conv/linear that produces or consumes it, of
    its weight-score mass in that layer relative to the layer's mean channel mass.

    Requires ChannelGroupPass. Channels are removed in *atoms* (coupled sets). Atoms that
    are pinned, belong to an ignored module, or are the best atom of their channel space
    (no tensor may lose all channels) stay. The others are ordered by the strategy; a binary
    search finds the shortest prefix of that order whose removal meets every limit of the
    budget, with each group's kept width rounded up to ``round_to``. Writes
    ``node.meta[KEEP]`` (a :class:`ChannelKeep`) on every node with channel info.

    Raises:
        BudgetError: when even removing every removable atom does not meet the budget; the
            message gives the smallest reachable fraction.

    Example:
        >>> from reconvene_fx.passes import ShapePass, ChannelGroupPass
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> _ = ShapePass((torch.randn(1, 3, 8, 8),))(gm)
        >>> _ = ChannelGroupPass()(gm)
        >>> _ = PlanPass(0.5, example_inputs=())(gm)
        >>> relu = [n for n in gm.graph.nodes if n.target == "1"][0]
        >>> relu.meta["reconvene.keep"].index.numel()
        7
    """

    def __init__(
        self,
        budget: float | Budget,
        *,
        example_inputs: tuple[Any, ...],
        config: CompileConfig | None = None,
    ) -> None:
        super().__init__()
        self.budget = as_budget(budget)
        self.example_inputs = tuple(example_inputs)
        self.config = config or CompileConfig()
        if self.budget.latency is not None:
            raise NotImplementedError(
                "latency budgets are not supported yet; use Budget(params=..., flops=...)"
            )

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        infos = _all_infos(graph_module)
        num_atoms = 1 + max((int(i.atoms.max()) for i in infos.values() if i.size), default=-1)
        pinned = torch.zeros(num_atoms, dtype=torch.bool)
        group = torch.zeros(num_atoms, dtype=torch.long)
        for info in infos.values():
            pinned[info.atoms] |= info.pinned
            group[info.atoms] = info.group
        costs = LayerCosts(graph_module)
        self._pin_ignored(costs, pinned)
        scores = self._atom_scores(graph_module, costs, num_atoms)
        protected = _best_atom_per_space(infos, scores, pinned)
        removable = (~pinned & ~protected).nonzero().flatten()
        order = _order(removable, scores, group, self.config.strategy)
        removed = self._search(costs, order, group, num_atoms)
        _write_keep(graph_module, removed)
        return PassResult(graph_module, False)

    # -- steps -----------------------------------------------------------------------------
    def _pin_ignored(self, costs: LayerCosts, pinned: torch.Tensor) -> None:
        unknown = [n for n in self.config.ignore if n not in costs.layers]
        if unknown:
            known = ", ".join(
                [n for n, layer in costs.layers.items() if isinstance(layer.module, WEIGHTED)][:8]
            )
            raise ValueError(
                f"ignore= names no prunable module: {', '.join(unknown)} "
                f"(prunable modules include: {known}, ...)"
            )
        for name in self.config.ignore:
            layer = costs.layers[name]
            for info in (layer.in_info, layer.out_info):
                if info is not None:
                    pinned[info.atoms] = True

    def _atom_scores(
        self, gm: torch.fx.GraphModule, costs: LayerCosts, num_atoms: int
    ) -> torch.Tensor:
        scorer = get_scorer(self.config.method)
        weight_scores = scorer(gm, self.example_inputs, self.config.targets, seed=self.config.seed)
        atom_score = torch.zeros(num_atoms, dtype=torch.float64)
        for name, layer in costs.layers.items():
            s = weight_scores.get(f"{name}.weight")
            if s is None:
                continue
            s = s.detach()
            if layer.out_info is not None:
                per_out = s.flatten(1).sum(1).double()
                atom_score.index_add_(0, layer.out_info.atoms, _normalized(per_out))
            if layer.in_info is not None:
                m = layer.module
                if isinstance(m, CONV_TYPES):
                    g = m.groups
                    per_in = s.view(g, m.out_channels // g, m.in_channels // g, -1).sum((1, 3))
                    per_in = per_in.reshape(-1)
                else:
                    per_in = s.sum(0)
                atom_score.index_add_(0, layer.in_info.atoms, _normalized(per_in.double()))
        return atom_score

    def _search(
        self, costs: LayerCosts, order: torch.Tensor, group: torch.Tensor, num_atoms: int
    ) -> torch.Tensor:
        limits = {k: v for k, v in self.budget.limits().items() if v is not None}
        full = {"params": costs.params_full, "flops": costs.macs_full}
        group_size = torch.bincount(group, minlength=int(group.max()) + 1 if num_atoms else 0)
        rank = _rank_within_group(group[order])
        r = self.config.round_to

        def removed_for(k: int) -> torch.Tensor:
            prefix = order[:k]
            removed_count = torch.bincount(group[prefix], minlength=group_size.numel())
            kept = group_size - removed_count
            rounded = torch.minimum(group_size, (kept + r - 1) // r * r)
            allowed = group_size - rounded
            take = rank[:k] < allowed[group[prefix]]
            removed = torch.zeros(num_atoms, dtype=torch.bool)
            removed[prefix[take]] = True
            return removed

        def fits(k: int) -> tuple[bool, dict[str, float]]:
            params, macs = costs.evaluate(removed_for(k))
            got = {"params": params / max(full["params"], 1), "flops": macs / max(full["flops"], 1)}
            return all(got[q] <= limit + 1e-12 for q, limit in limits.items()), got

        ok, got = fits(order.numel())
        if not ok:
            failing = [q for q, limit in limits.items() if got[q] > limit + 1e-12]
            q = failing[0]
            raise BudgetError(
                f"budget {q}={limits[q]:g} cannot be met: the layers that may not be pruned "
                f"keep {got[q]:.4f} of the {q}; the smallest reachable {q} budget is "
                f"{got[q]:.4f}",
                quantity=q,
                smallest=got[q],
            )
        lo, hi = 0, order.numel()
        while lo < hi:
            mid = (lo + hi) // 2
            if fits(mid)[0]:
                hi = mid
            else:
                lo = mid + 1
        return removed_for(lo)


def _normalized(channel_scores: torch.Tensor) -> torch.Tensor:
    """Scores relative to the layer's mean, so layers of different fan-in compare fairly."""
    mean = channel_scores.mean()
    return channel_scores / mean if float(mean) > 0 else channel_scores


def _rank_within_group(groups: torch.Tensor) -> torch.Tensor:
    """For each position, how many earlier positions hold the same group."""
    if groups.numel() == 0:
        return groups
    perm = torch.argsort(groups, stable=True)
    counts = torch.bincount(groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(groups)
    rank[perm] = torch.arange(groups.numel()) - starts[groups[perm]]
    return rank


def _all_infos(gm: torch.fx.GraphModule) -> dict[int, ChannelInfo]:
    infos: dict[int, ChannelInfo] = {}
    for node in gm.graph.nodes:
        value = node.meta.get(CHANNELS)
        for info in value if isinstance(value, tuple) else (value,):
            if isinstance(info, ChannelInfo):
                infos.setdefault(info.space, info)
    return infos


def _best_atom_per_space(
    infos: dict[int, ChannelInfo], scores: torch.Tensor, pinned: torch.Tensor
) -> torch.Tensor:
    """Each channel space keeps at least its best atom, unless a pinned one stays anyway."""
    protected = torch.zeros_like(pinned)
    for info in infos.values():
        if info.size == 0 or bool(pinned[info.atoms].any()):
            continue
        protected[info.atoms[int(torch.argmax(scores[info.atoms]))]] = True
    return protected


def _order(
    removable: torch.Tensor, scores: torch.Tensor, group: torch.Tensor, strategy: str
) -> torch.Tensor:
    """Removable atoms, least important first."""
    if removable.numel() == 0:
        return removable
    s = scores[removable]
    g = group[removable]
    if strategy == "global":
        num_groups = int(g.max()) + 1
        total = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, g, s)
        count = torch.bincount(g, minlength=num_groups).double()
        mean = total / count.clamp(min=1)
        key = torch.where(mean[g] > 0, s / mean[g], s)
    else:
        # uniform: the i-th weakest of n atoms in a group has key (i + 1) / n
        by_score = torch.argsort(s, stable=True)
        by_group = by_score[torch.argsort(g[by_score], stable=True)]
        counts = torch.bincount(g)
        starts = torch.cumsum(counts, 0) - counts
        position = torch.empty_like(by_group)
        position[by_group] = torch.arange(by_group.numel())
        within = position - starts[g]
        key = (within + 1).double() / counts[g].double()
    # ties broken by score, then by atom id, for determinism
    idx = torch.argsort(removable, stable=True)
    idx = idx[torch.argsort(s[idx], stable=True)]
    idx = idx[torch.argsort(key[idx], stable=True)]
    return removable[idx]


def _write_keep(gm: torch.fx.GraphModule, removed: torch.Tensor) -> None:
    cache: dict[int, ChannelKeep] = {}

    def keep(info: Any) -> Any:
        if isinstance(info, tuple):
            return tuple(keep(i) for i in info)
        if not isinstance(info, ChannelInfo):
            return None
        if info.space not in cache:
            index = (~removed[info.atoms]).nonzero().flatten()
            cache[info.space] = ChannelKeep(index=index, size=info.size)
        return cache[info.space]

    for node in gm.graph.nodes:
        if CHANNELS in node.meta:
            node.meta[KEEP] = keep(node.meta[CHANNELS])
        else:
            node.meta.pop(KEEP, None)
