"""Random scoring: uniform noise from a seeded generator (the usual PaI baseline)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from ..layers import LayerRegistry
from .base import prunable_weights

__all__ = ["random_scores"]


def random_scores(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    layers: LayerRegistry | None = None,
) -> dict[str, torch.Tensor]:
    """Uniform random scores in [0, 1), identical for the same ``seed`` (for the prunable
    weights of ``layers``).

    Example:
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        >>> torch.equal(random_scores(net, (), seed=1)["0.weight"],
        ...             random_scores(net, (), seed=1)["0.weight"])
        True
    """
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(w.shape, generator=generator, dtype=torch.float32)
        for name, w in prunable_weights(gm, layers)
    }
