"""GraSP (Wang et al. 2020): keep the weights that preserve gradient flow, via H g."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from .._mode import eval_mode
from ._forward import cross_entropy, logits_of, run_with, weight_leaves
from .base import register_scorer

__all__ = ["grasp"]


@register_scorer("grasp")
def grasp(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    temperature: float = 200.0,
) -> dict[str, torch.Tensor]:
    """``w * (H g)`` divided by ``|sum of all scores|``; higher means keep.

    ``g = dL/dw`` and ``H`` the Hessian of ``L``, the mean cross-entropy of
    ``output / temperature`` against ``targets`` (drawn with ``seed`` when ``None``); the
    Hessian-gradient product comes from a double backward pass: ``H g = d(g . stop(g))/dw``.
    GraSP removes the weights with the largest ``-w * (H g)``: removing them reduces the
    gradient norm least, so they are the least important, and this score (its negation)
    is ranked like every other scorer's. Scores are signed. The temperature 200 and the
    normalisation follow the authors' code. Eval mode, model not modified (see ``snip``).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(
        ...     torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)))
        >>> s = grasp(net, (torch.randn(2, 4),), torch.tensor([0, 2]))
        >>> round(abs(float(sum(v.sum() for v in s.values()))), 3)  # normalised: |sum| is 1
        1.0
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    leaves = weight_leaves(gm)
    weights = list(leaves.values())
    with eval_mode(gm), torch.enable_grad():
        output = run_with(gm, leaves, example_inputs)
        loss = cross_entropy(logits_of(output) / temperature, targets, seed)
        grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
        used = [(w, g) for w, g in zip(weights, grads, strict=True) if g is not None]
        z = sum(((g * g.detach()).sum() for _, g in used), torch.zeros(()))
        hg = torch.autograd.grad(z, weights, allow_unused=True) if z.requires_grad else None
    scores = {
        name: (w.detach() * h.detach()) if h is not None else torch.zeros_like(w.detach())
        for (name, w), h in zip(leaves.items(), hg or [None] * len(weights), strict=True)
    }
    total = abs(float(sum(float(s.sum(dtype=torch.float64)) for s in scores.values())))
    norm = total + 1e-10
    return {name: s / norm for name, s in scores.items()}


grasp.needs_labels = True  # type: ignore[attr-defined]
