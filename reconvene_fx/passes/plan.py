"""PlanPass: choose which channels to keep so the compact model fits the budget."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..budget import Budget, as_budget
from ..config import CompileConfig
from ..costs import CONV_TYPES, LayerCosts
from ..errors import BudgetError
from ..latency import measure_latency
from ..meta import (
    CHANNELS,
    KEEP,
    PLAN,
    SENSITIVITY,
    ChannelInfo,
    ChannelKeep,
    LayerSensitivity,
    PlanSummary,
)
from ..scoring import kth_largest
from .sensitivity import SensitivityPass

__all__ = ["PlanPass"]

WEIGHTED = (*CONV_TYPES, torch.nn.Linear)


class PlanPass(PassBase):
    """Orders channels for removal and finds the fewest removals that meet the budget.

    Reads the :class:`~reconvene_fx.meta.LayerSensitivity` of SensitivityPass (runs it
    first when the graph has none) and the channel info of ChannelGroupPass. Channels go in
    *atoms* (coupled sets); a channel's score is the sum, over every conv/linear that
    produces or consumes it, of its score mass in that layer relative to the layer's mean
    channel mass. Atoms that are pinned, belong to an ignored module, or are the best atom
    of their channel space (no tensor may lose all channels) stay.

    Strategies order the other atoms:

    - ``reconvene``: a coupled group is *selected* when every conv/linear layer producing
      it (whose output channels it holds) is PSE-selected (density below the global
      density); its consumers lose inputs and are re-initialized with it (RLR). Its target
      width is ``t_g = sqrt(max density of its producers)`` (a layer narrowed to ``r`` on
      both sides keeps ``r**2`` of its weights, so ``sqrt`` makes it keep about what its
      unstructured mask keeps; the width must serve every producer, hence the max). Any
      other group has ``t_g = sqrt(max sensitivity)`` (>= 1). At scale ``s`` a group keeps
      the fraction ``min(1, s * t_g)`` of its atoms, its weakest going first. At ``s = 1``
      exactly the selected groups are narrowed, to their density-derived widths; a generous
      budget stops at ``s > 1`` (less narrowing), a tight one goes below 1, where the
      remaining groups narrow too, the least sensitive first. With ``composite=True`` the
      plan never stops before ``s = 1``.
    - ``uniform``: every group loses the same fraction.
    - ``global``: channels ranked model-wide by score relative to their group's mean.

    A binary search finds the shortest prefix of that order whose removal meets every
    limit, each group's kept width rounded up to ``round_to``. Latency limits are measured
    on shrunk candidates (``latency_fn`` or :func:`~reconvene_fx.latency.measure_latency`).
    With ``composite=True`` the params limit bounds the nonzero parameters: untouched
    conv/linear layers count only their masked-in weights. Writes ``node.meta[KEEP]``
    (a :class:`ChannelKeep`) on every node with channel info and a
    :class:`~reconvene_fx.meta.PlanSummary` to ``gm.meta[PLAN]``.

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
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.budget = as_budget(budget)
        self.example_inputs = tuple(example_inputs)
        self.config = config or CompileConfig()
        self.progress = progress

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        sens = self._sensitivities(graph_module)
        infos = _all_infos(graph_module)
        num_atoms = 1 + max((int(i.atoms.max()) for i in infos.values() if i.size), default=-1)
        pinned = torch.zeros(num_atoms, dtype=torch.bool)
        group = torch.zeros(num_atoms, dtype=torch.long)
        for info in infos.values():
            pinned[info.atoms] |= info.pinned
            group[info.atoms] = info.group
        costs = LayerCosts(graph_module)
        self._pin_ignored(costs, pinned)
        scores = _atom_scores(costs, sens, num_atoms)
        protected = _best_atom_per_space(infos, scores, pinned)
        removable = (~pinned & ~protected).nonzero().flatten()
        target, selected = _group_targets(costs, sens, group)
        # composite: narrowing an unselected group trades masked layers for dense narrower
        # ones, which can raise the nonzero count; selected groups go all the way first
        reconvene_composite = self.config.composite and self.config.strategy == "reconvene"
        late = ~selected if reconvene_composite else None
        order, key = _order(removable, scores, group, self.config.strategy, target, late)
        # reconvene + composite: never stop before the PSE point (scale s = 1)
        start = int((key <= -1.0 + 1e-12).sum()) if reconvene_composite else 0
        search = _Search(self, graph_module, costs, group, num_atoms, sens)
        # composite reconvene: selected groups (first) and the rest are separate phases
        phase_ends = (int((~late[group[order]]).sum()),) if late is not None else ()
        removed = search.run(order, start, phase_ends)
        _write_keep(graph_module, removed)
        masks = search.composite_masks(removed) if self.config.composite else {}
        graph_module.meta[PLAN] = PlanSummary(
            strategy=self.config.strategy,
            composite=self.config.composite,
            removed_atoms=int(removed.sum()),
            removable_atoms=int(removable.numel()),
            latency_before=search.latency_before,
            latency_after=search.latency_after,
            masks=masks,
        )
        return PassResult(graph_module, False)

    def _sensitivities(self, gm: torch.fx.GraphModule) -> dict[str, LayerSensitivity]:
        found = _sensitivity_meta(gm)
        if not found:
            SensitivityPass(
                self.budget,
                example_inputs=self.example_inputs,
                method=self.config.method,
                targets=self.config.targets,
                seed=self.config.seed,
                progress=self.progress,
                options=self.config.method_options,
                keep_scores=self.config.composite,
            )(gm)
            found = _sensitivity_meta(gm)
        return found

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


class _Search:
    """The binary searches over prefixes of the removal order."""

    def __init__(
        self,
        plan: PlanPass,
        gm: torch.fx.GraphModule,
        costs: LayerCosts,
        group: torch.Tensor,
        num_atoms: int,
        sens: dict[str, LayerSensitivity],
    ) -> None:
        self.plan, self.gm, self.costs = plan, gm, costs
        self.group, self.num_atoms = group, num_atoms
        self.limits = {k: v for k, v in plan.budget.limits().items() if v is not None}
        self.full = {"params": costs.params_full, "flops": costs.macs_full}
        self.sens = sens
        # composite reconvene: the masks of untouched layers are re-thresholded to fit the
        # params budget, so a plan fits when the touched layers alone do; other composite
        # plans count the PaI masks as they are
        self.adjust_masks = (
            plan.config.composite
            and plan.config.strategy == "reconvene"
            and all(lay.scores is not None for lay in sens.values())
        )
        self.savings = (
            _mask_savings(costs, sens, whole=self.adjust_masks) if plan.config.composite else None
        )
        self.latency_before: float | None = None
        self.latency_after: float | None = None

    def run(
        self, order: torch.Tensor, start: int, phase_ends: tuple[int, ...] = ()
    ) -> torch.Tensor:
        group_size = torch.bincount(
            self.group, minlength=int(self.group.max()) + 1 if self.num_atoms else 0
        )
        rank = _rank_within_group(self.group[order])
        r = self.plan.config.round_to

        def removed_for(k: int) -> torch.Tensor:
            prefix = order[:k]
            removed_count = torch.bincount(self.group[prefix], minlength=group_size.numel())
            kept = group_size - removed_count
            rounded = torch.minimum(group_size, (kept + r - 1) // r * r)
            allowed = group_size - rounded
            take = rank[:k] < allowed[self.group[prefix]]
            removed = torch.zeros(self.num_atoms, dtype=torch.bool)
            removed[prefix[take]] = True
            return removed

        n = order.numel()
        ok, got = self._fits(removed_for(n))
        if not ok:
            failing = [q for q, limit in self.limits.items() if q in got and got[q] > limit + 1e-12]
            q = failing[0]
            raise BudgetError(
                f"budget {q}={self.limits[q]:g} cannot be met: the layers that may not be "
                f"pruned keep {got[q]:.4f} of the {q}; the smallest reachable {q} budget is "
                f"{got[q]:.4f}",
                quantity=q,
                smallest=got[q],
            )

        # composite counts are monotone within a phase, not across: search phase by phase
        def fits(k: int) -> bool:
            return self._fits(removed_for(k))[0]

        bounds = sorted({min(start, n), *(b for b in phase_ends if start < b < n), n})
        lo = bounds[0]
        for hi in bounds[1:]:
            if fits(hi):
                break
            lo = hi
        k = _first_true(fits, lo, hi) if len(bounds) > 1 else lo
        if "latency" in self.limits:
            k = self._latency_search(removed_for, k, n)
        return removed_for(k)

    def _fits(self, removed: torch.Tensor) -> tuple[bool, dict[str, float]]:
        params, macs = self.costs.evaluate(removed)
        if self.savings is not None:
            untouched = self.costs.untouched(removed)
            params -= int((self.savings * untouched).sum())
        got = {
            "params": params / max(self.full["params"], 1),
            "flops": macs / max(self.full["flops"], 1),
        }
        ok = all(got[q] <= limit + 1e-12 for q, limit in self.limits.items() if q in got)
        return ok, got

    def composite_masks(self, removed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masks of the scored layers that keep all their channels: the PaI masks, or for
        composite reconvene plans, when those exceed the params budget, the top scores of
        these layers that fill exactly the room left."""
        untouched = self.costs.untouched(removed)
        names = [n for n, keep in zip(self.costs.layers, untouched.tolist(), strict=True)
                 if keep and n in self.sens]  # fmt: skip
        masks = {n: self.sens[n].mask for n in names}
        limit = self.limits.get("params")
        if not self.adjust_masks or limit is None or not names:
            return masks
        params, _ = self.costs.evaluate(removed)
        dense_elsewhere = params - sum(self.sens[n].total for n in names)
        room = int(limit * self.full["params"]) - dense_elsewhere
        if room >= sum(self.sens[n].kept for n in names):
            return masks
        if room < 1:
            return {n: torch.zeros_like(m) for n, m in masks.items()}
        # adjust_masks guarantees the scores were kept; room < kept <= their count, so the
        # (room + 1)-th largest exists: keeping what lies strictly above it keeps <= room
        scores = [self.sens[n].scores for n in names]
        threshold = kth_largest(scores, room + 1)  # type: ignore[arg-type]
        return {n: s > threshold for n, s in zip(names, scores, strict=True)}

    def _latency_search(self, removed_for: Callable[[int], torch.Tensor], lo: int, hi: int) -> int:
        """Fewest removals (>= lo) whose shrunk model meets the latency limit, measured."""
        limit = self.limits["latency"]
        measure = self.plan.config.latency_fn or measure_latency
        inputs = self.plan.example_inputs
        before = float(measure(self.gm, inputs))
        if not before > 0:
            raise ValueError(f"the latency of the unpruned model measured {before}; need > 0")
        measured: dict[int, float] = {}

        def ratio(k: int) -> float:
            if k not in measured:
                measured[k] = float(measure(_shrunk_copy(self.gm, removed_for(k)), inputs))
            return measured[k] / before

        if ratio(hi) > limit:
            raise BudgetError(
                f"budget latency={limit:g} cannot be met: with every removable channel "
                f"gone the model measures {ratio(hi):.4f} of its latency",
                quantity="latency",
                smallest=ratio(hi),
            )
        # measurements are noisy: stop at a resolution of 1/128 of the removable atoms
        step = max(1, (hi - lo) // 128)
        while hi - lo > step:
            mid = (lo + hi) // 2
            if ratio(mid) <= limit:
                hi = mid
            else:
                lo = mid + 1
        k = lo if lo in measured and ratio(lo) <= limit else hi
        self.latency_before, self.latency_after = before, measured[k]
        return k


def _first_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """Smallest k in [lo, hi] with pred(k), given pred monotone and pred(hi) true; lo
    itself is tried first (composite counts are not monotone everywhere)."""
    if pred(lo):
        return lo
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _shrunk_copy(gm: torch.fx.GraphModule, removed: torch.Tensor) -> torch.fx.GraphModule:
    from .shrink import ShrinkPass

    candidate = copy.deepcopy(gm)
    _write_keep(candidate, removed)
    ShrinkPass(reinit=False)(candidate)
    return candidate


def _sensitivity_meta(gm: torch.fx.GraphModule) -> dict[str, LayerSensitivity]:
    found: dict[str, LayerSensitivity] = {}
    for node in gm.graph.nodes:
        lay = node.meta.get(SENSITIVITY)
        if isinstance(lay, LayerSensitivity):
            found.setdefault(str(node.target), lay)
    return found


def _atom_scores(
    costs: LayerCosts, sens: dict[str, LayerSensitivity], num_atoms: int
) -> torch.Tensor:
    atom_score = torch.zeros(num_atoms, dtype=torch.float64)
    for name, layer in costs.layers.items():
        lay = sens.get(name)
        if lay is None:
            continue
        if layer.out_info is not None and lay.out_mass.numel() == layer.out_info.size:
            atom_score.index_add_(0, layer.out_info.atoms, _normalized(lay.out_mass))
        if layer.in_info is not None and lay.in_mass.numel() == layer.in_info.size:
            atom_score.index_add_(0, layer.in_info.atoms, _normalized(lay.in_mass))
    return atom_score


def _group_targets(
    costs: LayerCosts, sens: dict[str, LayerSensitivity], group: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coupled group, the reconvene target width ``t_g`` (see PlanPass): the square
    root of its producers' largest density when all of them are PSE-selected, else the
    square root of their largest sensitivity; 1 where no scored layer produces the group.
    Also which groups are selected."""
    num_groups = int(group.max()) + 1 if group.numel() else 0
    density = torch.full((num_groups,), -1.0, dtype=torch.float64)
    sensitivity = torch.full((num_groups,), -1.0, dtype=torch.float64)
    for name, layer in costs.layers.items():
        lay = sens.get(name)
        if lay is None:
            continue
        info = layer.out_info
        if info is not None and 0 <= info.group < num_groups:
            g = info.group
            density[g] = max(float(density[g]), lay.density)
            sensitivity[g] = max(float(sensitivity[g]), lay.sensitivity)
    selected = (sensitivity >= 0) & (sensitivity < 1.0)
    target = torch.where(selected, density.clamp(min=0).sqrt(), sensitivity.clamp(min=1).sqrt())
    target[sensitivity < 0] = 1.0
    return target.clamp(min=1e-6), selected


def _mask_savings(
    costs: LayerCosts, sens: dict[str, LayerSensitivity], *, whole: bool
) -> torch.Tensor:
    """Per entry of ``costs.layers``: weights a mask removes (all of them when ``whole``)."""
    return torch.tensor(
        [(sens[n].total - (0 if whole else sens[n].kept)) if n in sens else 0
         for n in costs.layers],
        dtype=torch.long,
    )  # fmt: skip


def _normalized(channel_scores: torch.Tensor) -> torch.Tensor:
    """Scores relative to the layer's mean magnitude, so layers of different fan-in compare
    fairly (GraSP's scores are signed)."""
    scale = channel_scores.abs().mean()
    return channel_scores / scale if float(scale) > 0 else channel_scores


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
    removable: torch.Tensor,
    scores: torch.Tensor,
    group: torch.Tensor,
    strategy: str,
    target: torch.Tensor,
    late: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Removable atoms, least important first, and the sort key of each (in that order).

    Atoms of the groups flagged ``late`` (reconvene only) come after all others."""
    if removable.numel() == 0:
        return removable, torch.zeros(0, dtype=torch.float64)
    s = scores[removable]
    g = group[removable]
    if strategy == "global":
        num_groups = int(g.max()) + 1
        total = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, g, s)
        count = torch.bincount(g, minlength=num_groups).double()
        mean = total / count.clamp(min=1)
        key = torch.where(mean[g] > 0, s / mean[g], s)
    else:
        # the i-th weakest of n atoms in a group goes at fraction (i + 1) / n
        by_score = torch.argsort(s, stable=True)
        by_group = by_score[torch.argsort(g[by_score], stable=True)]
        counts = torch.bincount(g)
        starts = torch.cumsum(counts, 0) - counts
        position = torch.empty_like(by_group)
        position[by_group] = torch.arange(by_group.numel())
        fraction = (position - starts[g] + 1).double() / counts[g].double()
        # reconvene: removed once the scale s <= (1 - fraction) / t_g; ascending key = -that
        key = (fraction - 1.0) / target[g] if strategy == "reconvene" else fraction
    # ties broken by score, then by atom id, for determinism
    idx = torch.argsort(removable, stable=True)
    idx = idx[torch.argsort(s[idx], stable=True)]
    idx = idx[torch.argsort(key[idx], stable=True)]
    if late is not None and strategy == "reconvene":
        idx = idx[torch.argsort(late[g[idx]].to(torch.int8), stable=True)]
    return removable[idx], key[idx]


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
