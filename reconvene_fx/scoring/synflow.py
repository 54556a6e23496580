"""SynFlow (Tanaka et al. 2020): iterative, data-free synaptic-flow scores."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
from torch.nn.utils.stateless import _reparametrize_module

from .._mode import eval_mode, flatten_tensors
from .._progress import progress_bar
from ..errors import ArgumentError, ScoringError
from ..layers import LayerRegistry
from ._forward import run_with
from ._scaled import Unsupported, scaled_flow
from .base import kth_largest, prunable_weights

__all__ = ["synflow"]


def synflow(
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    density: float = 1.0,
    iterations: int = 100,
    progress: bool | None = None,
    layers: LayerRegistry | None = None,
) -> dict[str, torch.Tensor]:
    """Scores ``|w * dR/dw|`` with ``R = sum(f(1; |θ|))``, re-scored while pruning.

    Every floating parameter and buffer enters by its absolute value (BatchNorm in eval
    mode with ``|running stats|``, as the authors' code linearises the whole state dict);
    the input is all ones, shaped like one sample of ``example_inputs`` (batch 1). Over
    ``iterations`` rounds ``t = 1..T`` the weights with the lowest scores are masked so
    that the fraction ``density ** (t / T)`` stays (the exponential schedule); masked
    weights score 0. Returns the last round's scores. ``targets`` and ``seed`` are unused
    (SynFlow needs no data). Runs in float32; when the flow overflows, as it does on deep
    networks (resnet50: ~1e72), every activation carries its own power-of-two exponent
    (block floating point, still float32; scores then share a factor ``2**-E``, which
    changes no ranking), and where the graph holds an op that cannot carry one
    (sigmoid, LayerNorm, ...), float64. ``layers``: the layer registry that says which
    weights are prunable (None: the built-in one).

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
        raise ArgumentError(f"density must be in (0, 1], got {density}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ArgumentError(f"iterations must be a positive int, got {iterations!r}")
    weights = dict(prunable_weights(gm, layers))
    for dtype, scaled in ((torch.float32, False), (torch.float32, True), (torch.float64, False)):
        try:
            scores = _iterate(gm, example_inputs, weights, density, iterations, dtype, scaled,
                              progress)  # fmt: skip
        except Unsupported:
            continue
        if scores is not None:
            return scores
    raise ScoringError(
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
    scaled: bool,
    progress: bool | None,
) -> dict[str, torch.Tensor] | None:
    """All rounds at ``dtype``; None when the flow is not finite at that precision.
    ``scaled``: every tensor carries its own power-of-two exponent (see ``_scaled``).

    The prunable weights live in one flat tensor; each module sees a view of it, so a
    round is one forward/backward pass plus a few passes over that tensor."""
    state = _linearised_state(gm, dtype)
    names = list(weights)
    shapes = [w.shape for w in weights.values()]
    sizes = [w.numel() for w in weights.values()]
    abs_flat = torch.cat([w.detach().to(dtype).abs().flatten() for w in weights.values()])
    inputs = _ones_like_sample(example_inputs, dtype)
    # buffers reused every round: fresh 100-200 MB allocations cost more than the math
    scores = torch.zeros_like(abs_flat)
    kept = torch.ones(abs_flat.shape, dtype=torch.bool)
    mask = torch.ones_like(abs_flat)
    flat = abs_flat.clone().requires_grad_()
    label = str(dtype).removeprefix("torch.") + (", scaled" if scaled else "")
    with eval_mode(gm), progress_bar(iterations, f"synflow ({label})", enabled=progress) as bar:
        for t in range(1, iterations + 1):
            with torch.no_grad():
                torch.mul(abs_flat, mask, out=flat)
            views = {n: v.view(shape) for n, v, shape in
                     zip(names, flat.split(sizes), shapes, strict=True)}  # fmt: skip
            with torch.enable_grad():
                if scaled:
                    with _reparametrize_module(gm, {**state, **views}, tie_weights=True):
                        flow = scaled_flow(gm, inputs)
                else:
                    output = run_with(gm, {**state, **views}, inputs)
                    flow = sum((o.sum() for o in _tensors(output)), torch.zeros((), dtype=dtype))
                if not bool(torch.isfinite(flow)):
                    return None
                (grad,) = torch.autograd.grad(flow, flat, allow_unused=True)
            if grad is None:
                scores.zero_()
            else:
                torch.mul(flat.detach(), grad, out=scores).abs_()
            if _prune_to(scores, kept, density ** (t / iterations)):
                mask.copy_(kept)
            bar.update()
    if not bool(torch.isfinite(scores).all()):
        return None
    return {n: v.view(shape) for n, v, shape in zip(names, scores.split(sizes), shapes,
                                                    strict=True)}  # fmt: skip


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


def _prune_to(scores: torch.Tensor, kept: torch.Tensor, keep: float) -> bool:
    """Write into ``kept`` the mask keeping the scores above the ``n_prune``-th smallest,
    as the authors' code: ties at the threshold are pruned, so weights that scored 0
    never come back. False when nothing is to be pruned yet (``kept`` unchanged)."""
    total = scores.numel()
    n_prune = int((1.0 - keep) * total)
    if n_prune < 1:
        return False
    threshold = kth_largest(scores, total - n_prune + 1)
    torch.gt(scores, threshold, out=kept)
    return True


def _tensors(output: Any) -> list[torch.Tensor]:
    return [t for t in flatten_tensors(output) if t.is_floating_point()]
