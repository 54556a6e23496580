"""GraSP (Wang et al. 2020): keep the weights that preserve gradient flow, via H g."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx

from .._mode import eval_mode
from ..errors import ArgumentError, ScoringError
from ..layers import LayerRegistry
from ._forward import cross_entropy, logits_of, run_with, weight_leaves

__all__ = ["grasp"]


def grasp(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    temperature: float = 200.0,
    hessian: str = "auto",
    layers: LayerRegistry | None = None,
) -> dict[str, torch.Tensor]:
    """``w * (H g)`` divided by ``|sum of all scores|``; higher means keep.

    ``g = dL/dw`` and ``H`` the Hessian of ``L``, the mean cross-entropy of
    ``output / temperature`` against ``targets`` (drawn with ``seed`` when ``None``); the
    Hessian-gradient product comes from a double backward pass: ``H g = d(g . stop(g))/dw``.
    GraSP removes the weights with the largest ``-w * (H g)``: removing them reduces the
    gradient norm least, so they are the least important, and this score (its negation)
    is ranked like every other scorer's. Scores are signed. The temperature 200 and the
    normalisation follow the authors' code. Eval mode, model not modified (see ``snip``).

    ``hessian``: ``"exact"`` (double backward), ``"finite-difference"`` (``H g`` from
    gradients at ``w +- r g``, central differences: for models with ops that have no
    second derivative, such as ``hardsigmoid`` in MobileNetV3), or ``"auto"`` (exact,
    finite differences where the double backward is not implemented). ``layers``: the
    layer registry that says which weights are prunable (None: the built-in one).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(
        ...     torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)))
        >>> s = grasp(net, (torch.randn(2, 4),), torch.tensor([0, 2]))
        >>> round(abs(float(sum(v.sum() for v in s.values()))), 3)  # normalised: |sum| is 1
        1.0
    """
    if not temperature > 0:
        raise ArgumentError(f"temperature must be positive, got {temperature}")
    if hessian not in ("auto", "exact", "finite-difference"):
        raise ArgumentError(
            f"hessian must be 'auto', 'exact' or 'finite-difference', got {hessian!r}"
        )
    leaves = weight_leaves(gm, layers)
    weights = list(leaves.values())

    def gradients(at: list[torch.Tensor], create_graph: bool) -> tuple[Any, ...]:
        tensors = dict(zip(leaves, at, strict=True))
        output = run_with(gm, tensors, example_inputs)
        loss = cross_entropy(logits_of(output) / temperature, targets, seed)
        return torch.autograd.grad(loss, at, create_graph=create_graph, allow_unused=True)

    with eval_mode(gm), torch.enable_grad():
        hg = None
        if hessian != "finite-difference":
            try:
                hg = _exact_hessian_gradient(weights, gradients(weights, True))
            except RuntimeError as exc:
                if hessian == "exact" or "not implemented" not in str(exc):
                    raise ScoringError(
                        f"GraSP needs second derivatives, and the model's backward has "
                        f"none here ({' '.join(str(exc).split())[:200]}); use "
                        "hessian='finite-difference' (method_options) or another method"
                    ) from exc
        if hg is None:
            hg = _finite_difference_hessian_gradient(weights, gradients)
    scores = {
        name: (w.detach() * h.detach()) if h is not None else torch.zeros_like(w.detach())
        for (name, w), h in zip(leaves.items(), hg or [None] * len(weights), strict=True)
    }
    total = abs(float(sum(float(s.sum(dtype=torch.float64)) for s in scores.values())))
    norm = total + 1e-10
    return {name: s / norm for name, s in scores.items()}


grasp.needs_labels = True  # type: ignore[attr-defined]


def _exact_hessian_gradient(
    weights: list[torch.Tensor], grads: tuple[Any, ...]
) -> tuple[Any, ...] | None:
    """``H g`` by a double backward pass: ``d(g . stop(g))/dw``."""
    used = [g for g in grads if g is not None]
    z = sum(((g * g.detach()).sum() for g in used), torch.zeros(()))
    return torch.autograd.grad(z, weights, allow_unused=True) if z.requires_grad else None


def _finite_difference_hessian_gradient(
    weights: list[torch.Tensor], gradients: Any
) -> tuple[Any, ...]:
    """``H g ~ (grad(w + r g) - grad(w - r g)) / 2r``, ``r = sqrt(eps) (1 + |w|) / |g|``."""
    g = [x.detach() if x is not None else torch.zeros_like(w)
         for x, w in zip(gradients(weights, False), weights, strict=True)]  # fmt: skip
    g_norm = float(torch.sqrt(sum((x.double() ** 2).sum() for x in g)))
    if g_norm == 0.0:
        return tuple(torch.zeros_like(w) for w in weights)
    w_norm = float(torch.sqrt(sum((w.detach().double() ** 2).sum() for w in weights)))
    r = math.sqrt(torch.finfo(torch.float32).eps) * (1.0 + w_norm) / g_norm

    def shifted(sign: float) -> list[torch.Tensor]:
        return [
            (w.detach() + sign * r * x).requires_grad_() for w, x in zip(weights, g, strict=True)
        ]

    plus, minus = gradients(shifted(1.0), False), gradients(shifted(-1.0), False)
    return tuple(
        (a - b) / (2 * r) if a is not None and b is not None else None
        for a, b in zip(plus, minus, strict=True)
    )
