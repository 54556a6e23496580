"""Magnitude scoring: |w|."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from .base import prunable_weights, register_scorer

__all__ = ["magnitude"]


@register_scorer("magnitude")
def magnitude(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Score each prunable weight by its absolute value; needs no data.

    Example:
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        >>> s = magnitude(net, ())
        >>> torch.equal(s["0.weight"], net.get_submodule("0").weight.abs())
        True
    """
    return {name: w.detach().abs() for name, w in prunable_weights(gm)}
