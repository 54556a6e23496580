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
    return LazyScores({name: w for name, w in prunable_weights(gm, layers)}, torch.abs, out=True)


class LazyScores(Mapping[str, torch.Tensor]):
    """``{param_name: fn(weight)}``, computed when read, so scoring a large model does not
    hold a second copy of every weight at once. ``fn`` must be elementwise (``gather``
    applies it to a few entries only); ``out=True`` says it takes ``out=`` (as
    ``torch.abs`` does), so :meth:`rows_into` writes into a buffer the reader reuses."""

    lazy = True  # read by run_scorer and SensitivityPass: keep it lazy, read it in parts

    def __init__(
        self,
        weights: dict[str, torch.Tensor],
        fn: Callable[..., torch.Tensor],
        *,
        out: bool = False,
    ):
        self._weights = weights
        self._fn = fn
        self._out = out

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._fn(self._weights[name].detach())

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """The scores of rows ``start:stop`` (dim 0) of ``name`` (only those are computed)."""
        return self._fn(self._weights[name].detach()[start:stop])

    def rows_into(self, name: str, start: int, stop: int, buffer: torch.Tensor) -> torch.Tensor:
        """The scores of rows ``start:stop`` of ``name``, written into the front of the flat
        ``buffer`` when ``fn`` takes ``out=`` and the buffer has the weight's dtype and
        device (a new tensor otherwise). A fresh tensor of a large layer's size costs its
        page faults on every read (~4x the arithmetic of ``abs``); a reused one does not.

        Example:
            >>> w = torch.tensor([[-1.0, 2.0], [3.0, -4.0]])
            >>> s = LazyScores({"w": w}, torch.abs, out=True)
            >>> buffer = torch.empty(8)
            >>> s.rows_into("w", 1, 2, buffer), buffer[:2]
            (tensor([[3., 4.]]), tensor([3., 4.]))
        """
        w = self._weights[name].detach()[start:stop]
        if not self._out or buffer.dtype != w.dtype or buffer.device != w.device:
            return self._fn(w)
        return self._fn(w, out=buffer[: w.numel()].view(w.shape))

    def gather(self, name: str, positions: torch.Tensor) -> torch.Tensor:
        """The scores of ``name`` at flat ``positions`` (only those are computed)."""
        return self._fn(self._weights[name].detach().reshape(-1)[positions])

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)
