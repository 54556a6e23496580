"""SNIP (Lee et al. 2019): connection sensitivity |w * dL/dw|."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from .._mode import eval_mode
from ..layers import LayerRegistry
from ._forward import cross_entropy, run_with, weight_leaves

__all__ = ["snip"]


def snip(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    layers: LayerRegistry | None = None,
) -> dict[str, torch.Tensor]:
    """``|w * dL/dw|`` with L the mean cross-entropy of the output against ``targets``.

    One forward and backward pass on ``example_inputs`` with the model in eval mode (as the
    PaI reference implementations score; BatchNorm uses its running statistics, so a batch
    of one works). ``targets`` are class indices shaped like the output without its class
    dim; when ``None`` they are drawn uniformly from the output's classes with ``seed``.
    The model is not modified (weights enter as detached leaves). ``layers``: the layer
    registry that says which weights are prunable (None: the built-in one).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(4, 3)))
        >>> s = snip(net, (torch.randn(2, 4),), torch.tensor([0, 2]))
        >>> s["0.weight"].shape, bool((s["0.weight"] >= 0).all())
        (torch.Size([3, 4]), True)
    """
    leaves = weight_leaves(gm, layers)
    with eval_mode(gm), torch.enable_grad():
        loss = cross_entropy(run_with(gm, leaves, example_inputs), targets, seed)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return {
        name: (w.detach() * g).abs() if g is not None else torch.zeros_like(w.detach())
        for (name, w), g in zip(leaves.items(), grads, strict=True)
    }


snip.needs_labels = True  # type: ignore[attr-defined]
