"""The search of PlanPass: the fewest removals, in a strategy's order, that fit the budget."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any

import torch
import torch.fx

from .._bisect import first_true
from .._copy import structural_copy
from ..budget import Budget
from ..config import LatencyFn
from ..costs import LayerCosts
from ..errors import BudgetError
from ..latency.search import LatencySearch
from ..layers import LayerRegistry
from ..log import logger
from ..meta import ChannelInfo, LayerSensitivity, PinCause
from ..shrinking import shrink_layers
from ._composite import CompositeMasks
from ._keep import write_keep
from ._rounding import give_back_steps
from .channels import _describe_node, _source_line

__all__ = ["Pins", "Search", "SearchSettings"]


@dataclass(frozen=True)
class SearchSettings:
    """What the search needs to know of the compile."""

    budget: Budget
    example_inputs: tuple[Any, ...]
    round_to: int = 1
    # per coupled group, the atom count kept atoms are rounded to (None: round_to)
    round_atoms: torch.Tensor | None = None
    # round_atoms are the default widths (round_to left at None): where rounding alone
    # keeps the budget from being met, it gives way (see Search.run)
    round_auto: bool = False
    composite: bool = False
    # composite: a mask keeping less of its layer is raised until every input it reads
    # keeps this share (see CompositeMasks)
    mask_floor: float = 0.0
    latency_fn: LatencyFn | None = None
    latency_backend: str = "torch"
    latency_cache: bool | str | os.PathLike = True
    # a bar counting the candidates a latency budget measures (see progress_bar)
    progress: bool | None = None


# One entry of BudgetError.pinned_by: (layer, side, node, reason, source line).
PinnedSide = tuple[str, str, str, str, "str | None"]
# How many layers a BudgetError explains, and how many causes per side of each.
_TOP_LAYERS = 3
_CAUSES_PER_SIDE = 2


class Pins:
    """Why atoms stay whatever the budget: per atom, an index into ``causes`` (-1 where
    the plan may remove it). Filled from the channel infos' pins, then by the plan
    (``ignore=``, the ``min_width`` floor).

    Example:
        >>> pins = Pins(3)
        >>> pins.add(torch.tensor([0, 1]), PinCause("", "", "the min_width floor"))
        >>> pins.add(torch.tensor([1, 2]), PinCause("head", "module head", "ignore="))
        >>> pins.cause.tolist(), len(pins.causes)
        ([0, 0, 1], 2)
    """

    def __init__(self, num_atoms: int) -> None:
        self.cause = torch.full((num_atoms,), -1, dtype=torch.long)
        self.causes: list[PinCause] = []

    @classmethod
    def of(cls, infos: Mapping[int, ChannelInfo], num_atoms: int) -> Pins:
        """The causes ChannelGroupPass recorded for the pinned atoms of ``infos``."""
        pins = cls(num_atoms)
        unknown = torch.zeros(num_atoms, dtype=torch.bool)
        for info in infos.values():
            if info.causes and not pins.causes:
                pins.causes = list(info.causes)
            if info.pin_cause is None:
                unknown[info.atoms[info.pinned]] = True
            else:
                pins.cause[info.atoms[info.pinned]] = info.pin_cause[info.pinned]
        pins.add(unknown.nonzero().flatten(), PinCause("", "", "pinned (no cause recorded)"))
        return pins

    def add(self, atoms: torch.Tensor, cause: PinCause) -> None:
        """Give ``cause`` to those of ``atoms`` (indices or a bool mask) without one."""
        atoms = atoms.nonzero().flatten() if atoms.dtype == torch.bool else atoms
        free = atoms[self.cause[atoms] < 0]
        if free.numel():
            self.cause[free] = len(self.causes)
            self.causes.append(cause)

    def explain(
        self, costs: LayerCosts, removed: torch.Tensor, round_to: int
    ) -> tuple[str, list[PinnedSide]]:
        """What keeps the channels of the layers that hold the most parameters with
        ``removed`` gone: a message and its ``(layer, side, node, reason, source)`` rows."""
        held = costs.layer_params(removed).tolist()
        total = max(costs.params_full, 1)
        ranked = sorted(zip(costs.layers, held, strict=False), key=lambda nh: -nh[1])
        ranked = ranked[:_TOP_LAYERS]
        if not ranked:
            return "", []
        calls: dict[str, torch.fx.Node] = {}
        for node, layer in costs.calls:
            calls.setdefault(layer.name, node)
        rounding = PinCause(
            "", "", f"round_to={round_to} rounds the kept widths up" if round_to > 1 else "kept"
        )
        lines: list[str] = []
        rows: list[PinnedSide] = []
        for name, _ in ranked:
            costed = costs.layers[name]
            sides = [("output", costed.out_info)]
            if costed.layer.weighted:
                sides.append(("input", costed.in_info))
            for side, info in sides:
                if info is None:
                    cause = _untracked(calls.get(name), side)
                    lines.append(f"  {name!r} {side}: {cause}")
                    rows.append((name, side, cause.node, cause.why, cause.source))
                    continue
                kept = ~removed[info.atoms]
                why, count = torch.unique(self.cause[info.atoms][kept], return_counts=True)
                ordered = sorted(
                    zip(why.tolist(), count.tolist(), strict=True), key=lambda c: -c[1]
                )
                for index, n in ordered[:_CAUSES_PER_SIDE]:
                    cause = self.causes[index] if index >= 0 else rounding
                    lines.append(f"  {name!r} {side} ({n} of {info.size} kept): {cause}")
                    rows.append((name, side, cause.node, cause.why, cause.source))
                rest = sum(n for _, n in ordered[_CAUSES_PER_SIDE:])
                if rest:
                    lines.append(f"  {name!r} {side}: {rest} more kept for other reasons")
        named = ", ".join(f"{name!r} ({count / total:.0%})" for name, count in ranked)
        outside = costs.params_fixed / total
        text = f". The layers that keep the most of the params: {named}"
        if outside >= 0.01:
            text += f"; {outside:.0%} of the params lie outside the conv/linear/norm layers"
        text += (
            ". What keeps their channels:\n" + "\n".join(lines) + "\nRegister a channel rule "
            "for those ops (reconvene_fx.rules) or change the model's code there, name fewer "
            "modules in ignore=, lower min_width, or raise the budget"
        )
        return text, rows


def _untracked(node: torch.fx.Node | None, side: str) -> PinCause:
    """The cause of a layer side whose channels the coupling does not follow at all."""
    reason = f"its {side} has no channel dim the compiler follows, so it is never narrowed"
    if node is None or side != "input" or not node.args:
        return PinCause("", "", reason)
    source = node.args[0]
    if not isinstance(source, torch.fx.Node):
        return PinCause("", "", reason)
    why = f"its output, read by {node.name!r}, has no channel dim the compiler follows"
    op = _describe_node(source, source.graph.owning_module)
    return PinCause(source.name, op, why, _source_line(source))


class Search:
    """The binary searches over prefixes of a removal order: the shortest prefix whose
    removal meets every limit of the budget, each group rounded up to ``round_to``."""

    def __init__(
        self,
        settings: SearchSettings,
        gm: torch.fx.GraphModule,
        costs: LayerCosts,
        group: torch.Tensor,
        sens: Mapping[str, LayerSensitivity],
        mask_mode: str = "as_is",
        pins: Pins | None = None,
    ) -> None:
        self.settings, self.gm, self.costs = settings, gm, costs
        self.pins = pins if pins is not None else Pins(group.numel())
        self.group, self.num_atoms = group, group.numel()
        self.limits = {k: v for k, v in settings.budget.limits().items() if v is not None}
        self.full = {"params": costs.params_full, "macs": costs.macs_full}
        self.sens = sens
        scores_kept = all(lay.scores is not None for lay in sens.values())
        # composite: the masks of the layers that keep them count as they are, thinned, or
        # re-thresholded to fit the params budget (the last two need the scores)
        self.mask_mode = mask_mode if scores_kept else "as_is"
        self.composite = (
            CompositeMasks(costs, sens, mode=self.mask_mode, floor=settings.mask_floor)
            if settings.composite
            else None
        )
        self.latency_before: float | None = None
        self.latency_after: float | None = None

    def _refusal(
        self,
        message: str,
        quantity: str,
        smallest: float,
        removed: torch.Tensor,
        rounded: bool = True,
    ) -> BudgetError:
        """A BudgetError that names, for the layers that hold the most parameters even
        with all that may go removed, the nodes that keep their channels and why
        (``rounded``: the widths were rounded up to ``round_to``)."""
        round_to = self.settings.round_to if rounded else 1
        text, rows = self.pins.explain(self.costs, removed, round_to)
        return BudgetError(message + text, quantity=quantity, smallest=smallest, pinned_by=rows)

    def run(
        self, order: torch.Tensor, start: int, phase_ends: tuple[int, ...] = ()
    ) -> torch.Tensor:
        """The removal mask of the shortest prefix of ``order`` (from ``start``; composite
        counts are monotone within each of ``phase_ends``' phases) that meets the budget.

        With the default widths (``settings.round_auto``), rounding never makes a budget
        unreachable: when even the whole order does not meet it, the search runs again
        with the groups that rounding alone keeps whole (a grouped conv of 13 groups at a
        step of 8 channels can only keep all of its 8 positions) stepping by one atom,
        then, if that does not meet it either, with no rounding at all.

        Raises:
            BudgetError: when even the whole order, at the finest widths tried, does not
                meet the budget.
        """
        group_size = torch.bincount(
            self.group, minlength=int(self.group.max()) + 1 if self.num_atoms else 0
        )
        r = self.settings.round_atoms
        if r is None:
            r = torch.full_like(group_size, self.settings.round_to)
        steps = self._steps(r, order, group_size) if self.settings.round_auto else [r]
        for coarse, finer in pairwise(steps):
            try:
                return self._run(order, start, phase_ends, group_size, coarse)
            except BudgetError as exc:
                logger.info("%s at the default widths; searching again with %d more coupled "
                            "groups at any width", exc.args[0].split(":")[0],
                            int((coarse > 1).sum() - (finer > 1).sum()))  # fmt: skip
        return self._run(order, start, phase_ends, group_size, steps[-1])

    def _steps(
        self, r: torch.Tensor, order: torch.Tensor, group_size: torch.Tensor
    ) -> list[torch.Tensor]:
        """The rounding steps to try, coarsest first: ``r``; the groups whose kept width
        ``r`` rounds up to the whole group with the whole ``order`` removed at a step of
        one atom; every group at one atom."""
        kept = group_size - torch.bincount(self.group[order], minlength=group_size.numel())
        whole = (r > 1) & (kept < group_size) & ((kept + r - 1) // r * r >= group_size)
        steps = [r]
        if bool(whole.any()):
            steps.append(torch.where(whole, torch.ones_like(r), r))
        if bool((steps[-1] > 1).any()):
            steps.append(torch.ones_like(r))
        return steps

    def _run(
        self,
        order: torch.Tensor,
        start: int,
        phase_ends: tuple[int, ...],
        group_size: torch.Tensor,
        r: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`run` with the kept width of group ``g`` rounded up to ``r[g]`` atoms."""
        rank = _rank_within_group(self.group[order])

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
            raise self._refusal(
                f"budget {q}={self.limits[q]:g} cannot be met: the layers that may not be "
                f"pruned keep {got[q]:.4f} of the {q}; the smallest reachable {q} budget is "
                f"{got[q]:.4f}",
                q,
                got[q],
                removed_for(n),
                rounded=bool((r > 1).any()),
            )

        def fits_mask(removed: torch.Tensor) -> bool:
            return self._fits(removed)[0]

        # composite counts are monotone within a phase, not across: search phase by phase
        def fits(k: int) -> bool:
            return fits_mask(removed_for(k))

        bounds = sorted({min(start, n), *(b for b in phase_ends if start < b < n), n})
        lo = bounds[0]
        for hi in bounds[1:]:
            if fits(hi):
                break
            lo = hi
        k = first_true(fits, lo, hi) if len(bounds) > 1 else lo
        if "latency" in self.limits:
            rounded = bool((r > 1).any())
            return removed_for(self._latency_search(removed_for, k, n, rounded))
        # rounding up left part of the budget: spend it (composite masks fill it themselves)
        if bool((r > 1).any()) and self.composite is None:
            return give_back_steps(removed_for(k), order, self.group, r, fits_mask)
        return removed_for(k)

    def _fits(self, removed: torch.Tensor) -> tuple[bool, dict[str, float]]:
        params, macs = self.costs.evaluate(removed)
        if self.composite is not None:
            params -= self.composite.savings(removed)
        got = {
            "params": params / max(self.full["params"], 1),
            "macs": macs / max(self.full["macs"], 1),
        }
        ok = all(got[q] <= limit + 1e-12 for q, limit in self.limits.items() if q in got)
        return ok, got

    def composite_masks(self, removed: torch.Tensor) -> dict[str, torch.Tensor]:
        """Masks of the scored layers that keep all their output channels, sliced to the
        inputs they keep: the PaI masks, or for re-thresholded plans, the top scores of
        these layers that fill exactly the room the params budget leaves them."""
        if self.composite is None:
            return {}
        limit = self.limits.get("params")
        room = None
        if self.mask_mode != "as_is" and limit is not None:
            params, _ = self.costs.evaluate(removed)
            room = int(limit * self.full["params"]) - (params - self.composite.dense_size(removed))
        return self.composite.masks(removed, room)

    def _latency_search(
        self,
        removed_for: Callable[[int], torch.Tensor],
        lo: int,
        hi: int,
        rounded: bool = True,
    ) -> int:
        """Fewest removals (>= lo) whose shrunk model meets the latency limit, measured
        (:class:`~reconvene_fx.latency.search.LatencySearch`)."""
        limit = self.limits["latency"]
        settings = self.settings
        search = LatencySearch(
            self.gm,
            self.costs,
            settings.example_inputs,
            limit=limit,
            candidate=partial(_shrunk_copy, self.gm, layers=self.costs.registry),
            backend=settings.latency_backend,
            cache=settings.latency_cache,
            latency_fn=settings.latency_fn,
            round_to=settings.round_to if rounded else 1,
            progress=settings.progress,
        )

        def unreachable(ratio: float) -> BudgetError:
            return self._refusal(
                f"budget latency={limit:g} cannot be met: with every removable channel "
                f"gone the model measures {ratio:.4f} of its latency",
                "latency",
                ratio,
                removed_for(hi),
                rounded,
            )

        plan = search.run(removed_for, lo, hi, unreachable)
        self.latency_before, self.latency_after = plan.before, plan.after
        return plan.removals


def _shrunk_copy(
    gm: torch.fx.GraphModule, removed: torch.Tensor, layers: LayerRegistry | None = None
) -> torch.fx.GraphModule:
    """A shrunk candidate (:func:`~reconvene_fx.shrinking.shrink_layers` writes new
    tensors, so sharing the rest is safe), its layers read with ``layers`` (the plan's)."""
    candidate = structural_copy(gm)
    write_keep(candidate, removed)
    shrink_layers(candidate, layers=layers)
    return candidate


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
