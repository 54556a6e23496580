"""SynFlow (Tanaka et al. 2020): iterative, data-free synaptic-flow scores."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from .._mode import eval_mode, flatten_tensors
from .._progress import ProgressBar
from ._forward import run_with
from .base import kth_largest, prunable_weights, register_scorer

__all__ = ["synflow"]


@register_scorer("synflow")
def synflow(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    density: float = 1.0,
    iterations: int = 100,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Scores ``|w * dR/dw|`` with ``R = sum(f(1; |θ|))``, re-scored while pruning.

    Every floating parameter and buffer enters by its absolute value (BatchNorm in eval
    mode with ``|running stats|``, as the authors' code linearises the whole state dict);
    the input is all ones, shaped like one sample of ``example_inputs`` (batch 1). Over
    ``iterations`` rounds ``t = 1..T`` the weights with the lowest scores are masked so
    that the fraction ``density ** (t / T)`` stays (the exponential schedule); masked
    weights score 0. Returns the last round's scores. ``targets`` and ``seed`` are unused
    (SynFlow needs no data). Runs in float32 and switches to float64 when the flow
    overflows, as it does on deep networks (resnet50: ~1e72).

    Example:
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(
        ...     torch.nn.Linear(4, 8, bias=False), torch.nn.Linear(8, 2, bias=False)))
        >>> s = synflow(net, (torch.randn(1, 4),), density=0.5, iterations=10)
        >>> [tuple(v.shape) for v in s.values()]
        [(8, 4), (2, 8)]
        >>> # in a bias-free linear chain every layer carries the same total flow
        >>> bool(torch.isclose(s["0.weight"].sum(), s["1.weight"].sum()))
        True
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int, got {iterations!r}")
    weights = dict(prunable_weights(gm))
    for dtype in (torch.float32, torch.float64):
        scores = _iterate(gm, example_inputs, weights, density, iterations, dtype, progress)
        if scores is not None:
            return scores
    raise ValueError(
        "SynFlow's synaptic flow overflows even in float64 on this model (the product of "
        "|weights| along its paths exceeds 1e308); use method='snip' or 'magnitude'"
    )


def _iterate(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    weights: dict[str, torch.nn.Parameter],
    density: float,
    iterations: int,
    dtype: torch.dtype,
    progress: bool,
) -> dict[str, torch.Tensor] | None:
    """All rounds at ``dtype``; None when the flow is not finite at that precision."""
    state = _linearised_state(gm, dtype)
    abs_weights = {n: w.detach().to(dtype).abs() for n, w in weights.items()}
    inputs = _ones_like_sample(example_inputs, dtype)
    total = sum(w.numel() for w in abs_weights.values())
    # every round writes its scores into one flat buffer: no concatenation per round
    flat = torch.empty(total, dtype=dtype)
    scores = dict(zip(abs_weights, flat.split([w.numel() for w in abs_weights.values()]),
                      strict=True))  # fmt: skip
    scores = {n: s.view_as(abs_weights[n]) for n, s in scores.items()}
    masks: dict[str, torch.Tensor] = {}
    bar = ProgressBar(iterations, f"synflow ({str(dtype).removeprefix('torch.')})",
                      enabled=progress)  # fmt: skip
    with eval_mode(gm):
        for t in range(1, iterations + 1):
            if not _score_into(scores, gm, state, abs_weights, masks, inputs):
                return None
            masks = _prune_to(flat, scores, masks, density ** (t / iterations))
            bar.update()
    return scores


def _linearised_state(gm: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, t in [*gm.named_parameters(), *gm.named_buffers()]:
        if t is not None and t.is_floating_point():
            state[name] = t.detach().to(dtype).abs()
    return state


def _ones_like_sample(example_inputs: tuple[Any, ...], dtype: torch.dtype) -> tuple[Any, ...]:
    return tuple(
        torch.ones((1, *x.shape[1:]) if x.dim() else (), dtype=dtype)
        if isinstance(x, torch.Tensor) and x.is_floating_point()
        else x
        for x in example_inputs
    )


def _score_into(
    scores: dict[str, torch.Tensor],
    gm: torch.fx.GraphModule,
    state: dict[str, torch.Tensor],
    abs_weights: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    inputs: tuple[Any, ...],
) -> bool:
    """One forward/backward pass; scores ``|w * dR/dw|`` written in place. False when
    the flow R is not finite."""
    leaves = {
        n: (w * masks[n] if n in masks else w.detach()).requires_grad_()
        for n, w in abs_weights.items()
    }
    with torch.enable_grad():
        output = run_with(gm, {**state, **leaves}, inputs)
        flow = sum((o.sum() for o in _tensors(output)), torch.zeros((), dtype=_dtype(leaves)))
        if not bool(torch.isfinite(flow)):
            return False
        grads = torch.autograd.grad(flow, list(leaves.values()), allow_unused=True)
    for (name, w), g in zip(leaves.items(), grads, strict=True):
        if g is None:
            scores[name].zero_()
        else:
            torch.mul(w.detach(), g, out=scores[name]).abs_()
    return True


def _prune_to(
    flat: torch.Tensor,
    scores: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    keep: float,
) -> dict[str, torch.Tensor]:
    """Masks keeping the scores above the ``n_prune``-th smallest, as the authors' code:
    ties at the threshold are pruned, so weights that scored 0 never come back."""
    total = flat.numel()
    n_prune = int((1.0 - keep) * total)
    if n_prune < 1:
        return masks
    threshold = kth_largest(flat, total - n_prune + 1)
    return {n: s > threshold for n, s in scores.items()}


def _tensors(output: Any) -> list[torch.Tensor]:
    return [t for t in flatten_tensors(output) if t.is_floating_point()]


def _dtype(leaves: dict[str, torch.Tensor]) -> torch.dtype:
    return next(iter(leaves.values())).dtype if leaves else torch.float32
