"""Planning to a latency limit: the fewest removals whose shrunk model measures within it.

The planner orders the removable channels; this module picks how many of them go when the
budget limits latency. Candidates are measured whole on the runtime (a
:class:`~reconvene_fx.latency.ruler.LatencyRuler`); the per-layer
:class:`~reconvene_fx.latency.LatencyEstimate` guides which to measure, its target
corrected by each measurement (up to :data:`LATENCY_CORRECTIONS` times), then a bisection
on measurements moves a plan that landed far below the limit into the band just below it.
A user ``latency_fn`` (or an estimate whose guesses all miss) gets a binary search on
measurements alone. On a backend, the chosen plan is then measured again
(:data:`LATENCY_CONFIRMATIONS` times; its ratio is the median of its measurements): of many
noisy measurements the search keeps one that landed within the limit, which tends to be
one that landed low, so a plan whose median lands above the limit gives way to a
bisection (every plan measured as often) towards the nearest plan with more removals
measured within it, and one whose median lands below the tolerance band moves the same
way towards the nearest plan with fewer removals measured above the limit.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.fx

from .._bisect import first_true
from .._progress import progress_bar
from ..costs import LayerCosts
from ..log import logger
from .estimate import LatencyEstimate
from .ruler import LatencyRuler
from .table import LatencyTable

__all__ = [
    "LATENCY_CONFIRMATIONS", "LATENCY_CORRECTIONS", "LATENCY_REFINE_STEPS",
    "LATENCY_TOLERANCE", "LatencyPlan", "LatencySearch",
]  # fmt: skip

# A latency plan measured within this share below its limit is taken without correcting
# the estimate again.
LATENCY_TOLERANCE = 0.05
# Whole-model measurements spent correcting the per-layer estimate; then at most
# LATENCY_REFINE_STEPS more bisect between the best plan measured within the limit and the
# nearest measured above it, when the best is still below the band.
LATENCY_CORRECTIONS = 3
LATENCY_REFINE_STEPS = 5
# Whole-model measurements added to the chosen plan's (and to each plan that replaces it,
# for at most LATENCY_CONFIRMED_PLANS plans) before it is taken.
LATENCY_CONFIRMATIONS = 2
LATENCY_CONFIRMED_PLANS = 3


@dataclass(frozen=True)
class LatencyPlan:
    """How many removals the search chose, and the model's seconds before and after."""

    removals: int
    before: float
    after: float


@dataclass
class LatencySearch:
    """Searches the removal count for a latency limit (see the module docstring).

    ``candidate(removed)`` builds the shrunk model of a removal mask; ``removed_for(k)``
    (given to :meth:`run`) is the mask of the first ``k`` removals of the plan's order.

    Example:
        >>> from reconvene_fx.passes import ChannelGroupPass, ShapePass
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(64, 8, 3))
        >>> x = torch.randn(1, 3, 32, 32)
        >>> gm = torch.fx.symbolic_trace(net)
        >>> _ = ShapePass((x,))(gm); _ = ChannelGroupPass()(gm)
        >>> def removed_for(k):  # the first k of the 64 channels go
        ...     return torch.arange(64) < k
        >>> def seconds(model, inputs):  # a runtime whose time is the channels kept
        ...     return 64.0 if model is gm else float((~model).sum())
        >>> search = LatencySearch(gm, LayerCosts(gm), (x,), limit=0.5,
        ...                        candidate=lambda removed: removed, latency_fn=seconds)
        >>> search.run(removed_for, 0, 60, unreachable=ValueError).removals
        32
    """

    gm: torch.fx.GraphModule
    costs: LayerCosts
    example_inputs: tuple[Any, ...]
    limit: float
    candidate: Callable[[torch.Tensor], torch.fx.GraphModule]
    backend: str = "torch"
    cache: bool | str | os.PathLike = True
    latency_fn: Callable[..., float] | None = None
    round_to: int = 1
    progress: bool | None = None

    def run(
        self,
        removed_for: Callable[[int], torch.Tensor],
        lo: int,
        hi: int,
        unreachable: Callable[[float], Exception],
    ) -> LatencyPlan:
        """Fewest removals (>= lo) whose shrunk model meets the limit, measured.

        Raises:
            Exception: ``unreachable(ratio)`` when even ``hi`` removals measure above the
                limit (on a backend: the median of ``1 + LATENCY_CONFIRMATIONS``
                measurements of them, before the search and again when no plan's median
                ends within the limit).
        """
        ruler = LatencyRuler(self.gm, self.example_inputs, backend=self.backend,
                             latency_fn=self.latency_fn)  # fmt: skip
        measured: dict[int, float] = {}  # the median of each plan's measurements
        samples: dict[int, list[tuple[float, float]]] = {}
        bar = progress_bar(None, f"latency budget {self.limit:g} (candidates measured)",
                           enabled=self.progress)  # fmt: skip

        def measure(k: int) -> float:
            got = ruler.measure(self.candidate(removed_for(k)))
            samples.setdefault(k, []).append(got)
            measured[k] = statistics.median(r for r, _ in samples[k])
            bar.set_postfix_str(f"last {got[0]:.3f} of the model", refresh=False)
            bar.update()
            return measured[k]

        def ratio(k: int) -> float:
            return measured[k] if k in measured else measure(k)

        def pooled(k: int) -> float:  # the median of 1 + LATENCY_CONFIRMATIONS measurements
            while len(samples.get(k, ())) < 1 + LATENCY_CONFIRMATIONS:
                measure(k)
            return measured[k]

        with bar:
            if ratio(hi) > self.limit and self.latency_fn is None:
                pooled(hi)  # one noisy measurement does not refuse a budget near the floor
            if ratio(hi) > self.limit:
                raise unreachable(ratio(hi))
            guided = None
            if self.latency_fn is None:
                guided = self._estimated(removed_for, lo, hi, ruler.before, ratio)
            if guided is None:
                k = _measured_search(ratio, self.limit, lo, hi, measured)
            else:
                k = _refine(ratio, self.limit, guided, measured, lo)
            if self.latency_fn is None:
                k = _confirm(pooled, lambda j: len(samples.get(j, ())), self.limit, k, lo,
                             hi, measured)  # fmt: skip
                if measured[k] > self.limit:  # no plan's median is within: the floor decides
                    if pooled(hi) > self.limit:
                        raise unreachable(measured[hi])
                    k = hi
        # timed on a backend, ``before`` (the median of every timing of the original) moves
        # as candidates are timed: the seconds follow the final one, so that the reported
        # ratio is the one measured
        if self.latency_fn:
            after = statistics.median(cost for _, cost in samples[k])
        else:
            after = measured[k] * ruler.before
        return LatencyPlan(k, ruler.before, after)

    def _estimated(
        self,
        removed_for: Callable[[int], torch.Tensor],
        lo: int,
        hi: int,
        before: float,
        ratio: Callable[[int], float],
    ) -> int | None:
        """The plan the per-layer estimate picks, its target corrected by measuring each
        pick; the fewest removals measured within the limit, or None if none was."""
        limit = self.limit
        table = LatencyTable(self.backend, self.cache)
        estimate = LatencyEstimate(self.gm, self.costs, table, before, round_to=self.round_to)
        predicted: dict[int, float] = {}

        def guess(k: int) -> float:
            if k not in predicted:
                predicted[k] = estimate.seconds(removed_for(k)) / before
            return predicted[k]

        best: int | None = None
        target = limit
        for attempt in range(1 + LATENCY_CORRECTIONS):
            k = first_true(partial(_within, guess, target), lo, hi) if guess(hi) <= target else hi
            got = ratio(k)
            logger.info("latency plan %d: predicted %.3f, measured %.3f of the model (limit %.3f)",
                        attempt + 1, guess(k), got, limit)  # fmt: skip
            if got <= limit:
                best = k if best is None else min(best, k)
                if got >= (1 - LATENCY_TOLERANCE) * limit or k == lo:
                    break
            target = min(target * limit / got, 1.0)
        table.save()
        logger.info("latency table: %d layers timed, %d known", table.timed, len(table))
        return best


def _refine(
    ratio: Callable[[int], float],
    limit: float,
    within: int,
    measured: dict[int, float],
    lo: int,
    trusted: Callable[[int], bool] = lambda k: True,
) -> int:
    """From ``within`` (measured within the limit but maybe far below it), bisect on
    measurements towards the nearest ``trusted`` count measured above the limit, until a
    plan lands in the tolerance band below the limit (the estimate can be off by more
    than its corrections mend: onnxruntime's kernels change speed at some widths)."""
    band = (1 - LATENCY_TOLERANCE) * limit
    over = max(
        (k for k, r in measured.items() if r > limit and k < within and trusted(k)),
        default=lo - 1,
    )
    for _ in range(LATENCY_REFINE_STEPS):
        if measured[within] >= band or within - over <= 1:
            break
        mid = (over + within) // 2
        got = ratio(mid)
        logger.info("latency plan refined: measured %.3f of the model (limit %.3f)", got, limit)
        if got <= limit:
            within = mid
        else:
            over = mid
    return within


def _confirm(
    pooled: Callable[[int], float],
    count: Callable[[int], int],
    limit: float,
    k: int,
    lo: int,
    hi: int,
    measured: dict[int, float],
) -> int:
    """Measure plan ``k`` again (``pooled(k)``: the median of ``1 +``
    :data:`LATENCY_CONFIRMATIONS` measurements of it; ``count(k)``: how many it has).
    While it lands above the limit, bisect between it and the nearest plan with more
    removals measured within the limit (``hi`` is) towards the band below the limit
    (:func:`_refine`); while it lands below the band, bisect between it and the nearest
    plan with fewer removals measured above the limit; every plan now measured as often,
    for at most :data:`LATENCY_CONFIRMED_PLANS` rounds; then the plan with the fewest
    removals whose median is within the limit."""
    band = (1 - LATENCY_TOLERANCE) * limit
    for _ in range(LATENCY_CONFIRMED_PLANS):
        got = pooled(k)
        logger.info("latency plan confirmed: measured %.3f of the model, the median of its "
                    "measurements (limit %.3f)", got, limit)  # fmt: skip
        if got <= limit:  # within: done, unless it landed below the band and can move up
            if got >= band or k <= lo:
                return k
            # the plans above it were measured once: only those measured as often bound it
            refined = _refine(pooled, limit, k, measured, lo,
                              lambda j: count(j) > LATENCY_CONFIRMATIONS)  # fmt: skip
            if refined == k:
                return k
            k = refined
            continue
        if k >= hi:
            return k
        within = min((j for j, r in measured.items() if j > k and r <= limit), default=hi)
        k = _refine(pooled, limit, within, measured, lo)
    pooled(k)
    confirmed = [j for j, r in measured.items() if count(j) > LATENCY_CONFIRMATIONS]
    return min((j for j in confirmed if measured[j] <= limit), default=k)


def _within(guess: Callable[[int], float], target: float, k: int) -> bool:
    return guess(k) <= target


def _measured_search(
    ratio: Callable[[int], float], limit: float, lo: int, hi: int, measured: dict[int, float]
) -> int:
    """Binary search on whole-model measurements; ``ratio(hi) <= limit`` is known."""
    # measurements are noisy: stop at a resolution of 1/128 of the removable atoms
    step = max(1, (hi - lo) // 128)
    while hi - lo > step:
        mid = (lo + hi) // 2
        if ratio(mid) <= limit:
            hi = mid
        else:
            lo = mid + 1
    return lo if lo in measured and ratio(lo) <= limit else hi
