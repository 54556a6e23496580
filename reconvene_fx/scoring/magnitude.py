"""Magnitude scoring: |w|."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.fx

from ..layers import LayerRegistry
from .base import prunable_weights

__all__ = ["LazyScores", "magnitude"]


def magnitude(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    layers: LayerRegistry | None = None,
) -> Mapping[str, torch.Tensor]:
    """Score each prunable weight (of ``layers``, see
    :func:`~reconvene_fx.scoring.prunable_weights`) by its absolute value; needs no data.

    Example:
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        >>> s = magnitude(net, ())
        >>> torch.equal(s["0.weight"], net.get_submodule("0").weight.abs())
        True
    """
    return LazyScores({name: w for name, w in prunable_weights(gm, layers)}, torch.abs)


class LazyScores(Mapping[str, torch.Tensor]):
    """``{param_name: fn(weight)}``, computed when read, so scoring a large model does not
    hold a second copy of every weight at once. ``fn`` must be elementwise (``gather``
    applies it to a few entries only)."""

    lazy = True  # read by run_scorer and SensitivityPass: keep it lazy, read it in parts

    def __init__(
        self, weights: dict[str, torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor]
    ):
        self._weights = weights
        self._fn = fn

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._fn(self._weights[name].detach())

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """The scores of rows ``start:stop`` (dim 0) of ``name`` (only those are computed)."""
        return self._fn(self._weights[name].detach()[start:stop])

    def gather(self, name: str, positions: torch.Tensor) -> torch.Tensor:
        """The scores of ``name`` at flat ``positions`` (only those are computed)."""
        return self._fn(self._weights[name].detach().reshape(-1)[positions])

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)
