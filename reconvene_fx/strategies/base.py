"""The strategy interface and registry: how a plan orders channels for removal."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .._catalog import STRATEGIES
from ..meta import LayerSensitivity

__all__ = [
    "STRATEGIES",
    "PlanInputs",
    "RemovalOrder",
    "Strategy",
    "by_key",
    "fraction_in_group",
    "get_strategy",
    "register_strategy",
]


@dataclass(frozen=True, eq=False)
class PlanInputs:
    """What a strategy may read, per coupled channel set ("atom").

    Attributes:
        removable: ids of the atoms that may go (not pinned, not the last of a space).
        scores: float64 per atom: summed relative score mass over every layer producing
            or consuming it.
        group: coupled group id per atom.
        producers: per group, ``(max density, max sensitivity)`` of the scored layers whose
            output channels it holds; ``(-1, -1)`` where no scored layer produces it.
        composite: the plan keeps unstructured masks on the untouched layers.
        sensitivity: the PaI rating of every scored layer, by module name.
        layer_groups: int64 ``[L, 2]``: per scored conv/linear layer, the coupled group of
            its input and of its output channels (-1 where it has none).
        layer_density: float64 ``[L]``: each of those layers' PaI density.
        allocation: how the ``reconvene`` strategy turns densities into widths
            (``"density"`` or ``"sqrt"``; see
            :func:`~reconvene_fx.strategies.reconvene.group_targets`).
        part: int64 per atom: the narrowest channel space holding it, numbered from 0. A
            group joined by a concatenation has one part per input of it; elsewhere a
            group is one part. None: every group is one part.
        price: float64 per coupled group: the time its channels cost per MAC relative to
            the median group's, on the latency backend
            (:func:`~reconvene_fx.latency.price.time_prices`); None when channels are
            priced by their MACs (``CompileConfig.price``).
    """

    removable: torch.Tensor
    scores: torch.Tensor
    group: torch.Tensor
    producers: torch.Tensor
    composite: bool
    sensitivity: Mapping[str, LayerSensitivity]
    layer_groups: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))
    layer_density: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    allocation: str = "density"
    part: torch.Tensor | None = None
    price: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class RemovalOrder:
    """A strategy's answer.

    Attributes:
        atoms: the removable atoms, least important first.
        start: the plan removes at least this prefix of ``atoms``.
        phase_ends: prefix lengths where the budget counts may stop being monotone (the
            search is made phase by phase).
        adjust_masks: composite plans: re-threshold the masks of the untouched layers to
            fill the params budget (else they keep their PaI masks as they are, and the
            masks are re-thresholded only when no prefix of ``atoms`` fits the budget).
        preferred: composite plans: the plan stays within the first ``preferred`` atoms
            when it can with the masks as they are; else it goes on into the rest of
            ``atoms``, and only when that does not fit either are the masks
            re-thresholded (None: no such preference).
    """

    atoms: torch.Tensor
    start: int = 0
    phase_ends: tuple[int, ...] = ()
    adjust_masks: bool = False
    preferred: int | None = None


class Strategy(Protocol):
    """``strategy(inputs) -> RemovalOrder``."""

    def __call__(self, inputs: PlanInputs) -> RemovalOrder: ...


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register a strategy under ``name`` in :data:`STRATEGIES` so
    ``compile(strategy=name)`` (and the command line's ``--strategy``) finds it.

    Example:
        >>> @register_strategy("weakest-first")
        ... def weakest_first(inputs):
        ...     return RemovalOrder(by_key(inputs, inputs.scores[inputs.removable]))
        >>> get_strategy("weakest-first") is weakest_first
        True
        >>> _ = STRATEGIES.pop("weakest-first")
    """
    return STRATEGIES.register(name)


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``.

    Raises:
        ArgumentError: naming the closest known strategy and all of them.
    """
    return STRATEGIES.lookup(name)  # type: ignore[no-any-return]


def fraction_in_group(inputs: PlanInputs) -> torch.Tensor:
    """Per removable atom, ``(i + 1) / n`` for the ``i``-th weakest of the ``n`` removable
    atoms of its part (``inputs.part``; its group where that is None): the fraction of the
    part gone once it goes. So each part of a concatenation's group loses the same share:
    ranked across the whole group, a weak layer's few outputs would all go before a strong
    one lost any (a DenseNet layer's 12 down to 1 while the stem keeps its 16).

    Example:
        >>> inputs = PlanInputs(
        ...     removable=torch.arange(6), scores=torch.tensor([9., 8, 7, 1, 2, 3]).double(),
        ...     group=torch.zeros(6, dtype=torch.long), producers=torch.zeros(1, 2),
        ...     composite=False, sensitivity={}, part=torch.tensor([0, 0, 0, 1, 1, 1]))
        >>> [round(f, 2) for f in fraction_in_group(inputs).tolist()]
        [1.0, 0.67, 0.33, 0.33, 0.67, 1.0]
    """
    s = inputs.scores[inputs.removable]
    g = (inputs.group if inputs.part is None else inputs.part)[inputs.removable]
    by_score = torch.argsort(s, stable=True)
    by_group = by_score[torch.argsort(g[by_score], stable=True)]
    counts = torch.bincount(g)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(by_group)
    position[by_group] = torch.arange(by_group.numel())
    return (position - starts[g] + 1).double() / counts[g].double()


def by_key(inputs: PlanInputs, key: torch.Tensor) -> torch.Tensor:
    """Permutation of ``inputs.removable`` by ascending ``key`` (one per removable atom),
    ties broken by score, then by atom id, for determinism."""
    idx = torch.argsort(inputs.removable, stable=True)
    idx = idx[torch.argsort(inputs.scores[inputs.removable][idx], stable=True)]
    return idx[torch.argsort(key[idx], stable=True)]
