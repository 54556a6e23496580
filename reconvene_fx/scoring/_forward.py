"""What the data-dependent scorers share: weights as autograd leaves, logits and targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..errors import ArgumentError, ArgumentTypeError, ScoringError
from ..layers import LayerRegistry
from .base import prunable_weights

__all__ = ["class_targets", "cross_entropy", "logits_of", "run_with", "weight_leaves"]


def weight_leaves(
    gm: torch.nn.Module, layers: LayerRegistry | None = None
) -> dict[str, torch.Tensor]:
    """A fresh autograd leaf per prunable weight of ``layers`` (see
    :func:`~reconvene_fx.scoring.prunable_weights`; detached copies share no grad state).

    Scorers differentiate with respect to these instead of the module's parameters, so they
    never touch ``.grad`` or ``requires_grad`` of the caller's model.
    """
    return {name: w.detach().requires_grad_() for name, w in prunable_weights(gm, layers)}


def run_with(
    gm: torch.nn.Module, tensors: Mapping[str, torch.Tensor], example_inputs: tuple[Any, ...]
) -> Any:
    """Run ``gm`` with some parameters/buffers replaced by ``tensors`` (nothing is mutated)."""
    return functional_call(gm, dict(tensors), tuple(example_inputs))


def logits_of(output: Any) -> torch.Tensor:
    """The first floating-point tensor of a model's output (a tensor, tuple, list or dict).

    Example:
        >>> logits_of((torch.zeros(2, 3), torch.ones(1))).shape
        torch.Size([2, 3])
    """
    if isinstance(output, torch.Tensor):
        if output.is_floating_point():
            return output
    elif isinstance(output, (tuple, list)):
        for item in output:
            found = _maybe_logits(item)
            if found is not None:
                return found
    elif isinstance(output, Mapping):
        for key in ("out", "logits"):
            if isinstance(output.get(key), torch.Tensor):
                return output[key]
        for item in output.values():
            found = _maybe_logits(item)
            if found is not None:
                return found
    raise ScoringError(
        f"the model's output ({type(output).__name__}) holds no floating-point tensor to "
        "take a cross-entropy loss of"
    )


def _maybe_logits(value: Any) -> torch.Tensor | None:
    try:
        return logits_of(value)
    except ValueError:
        return None


def class_targets(logits: torch.Tensor, targets: torch.Tensor | None, seed: int) -> torch.Tensor:
    """``targets`` checked against ``logits``, or classes drawn uniformly with ``seed``.

    ``logits`` is ``(N, C, *extra)`` (classes on dim 1, as ``F.cross_entropy`` expects);
    targets are class indices of shape ``(N, *extra)``.

    Example:
        >>> class_targets(torch.zeros(4, 10), None, seed=0).shape
        torch.Size([4])
    """
    if logits.dim() < 2:
        raise ScoringError(
            f"cross-entropy needs outputs of shape (N, C, ...); the model returned "
            f"{tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[2:])
    if targets is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(logits.shape[1], expected, generator=generator).to(logits.device)
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(targets)
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ArgumentTypeError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if tuple(targets.shape) != expected:
        raise ArgumentError(
            f"targets have shape {tuple(targets.shape)}; the model's output "
            f"{tuple(logits.shape)} needs class indices of shape {expected}"
        )
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ArgumentError(
            f"targets must lie in [0, {logits.shape[1] - 1}] (the output has "
            f"{logits.shape[1]} classes)"
        )
    return targets.to(logits.device, torch.long)


def cross_entropy(output: Any, targets: torch.Tensor | None, seed: int) -> torch.Tensor:
    """Mean cross-entropy of the model's logits against ``targets`` (drawn if None)."""
    logits = logits_of(output)
    return F.cross_entropy(logits, class_targets(logits, targets, seed))
