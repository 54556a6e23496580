"""Checking what the public entry points are given."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from .errors import ArgumentTypeError, InputError, ModelError

__all__ = ["check_inputs"]


def check_inputs(
    model: torch.nn.Module,
    example_inputs: tuple[Any, ...] | torch.Tensor,
    concrete_args: Mapping[str, Any] | None = None,
) -> tuple[Any, ...]:
    """``example_inputs`` as a tuple, after checking ``model`` and the inputs' form.

    The inputs must fill ``model.forward``'s positional parameters: not more than it
    takes, and every one without a default (or a ``concrete_args`` entry) given. A model
    whose tensors live on the ``meta`` device has no values to score.

    Example:
        >>> len(check_inputs(torch.nn.ReLU(), torch.zeros(1)))
        1
        >>> check_inputs(torch.nn.ReLU(), (torch.zeros(1), torch.zeros(1)))
        Traceback (most recent call last):
        ...
        reconvene_fx.errors.InputError: example_inputs holds 2 inputs; ReLU.forward takes 1 (input)
    """
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise ArgumentTypeError("example_inputs must be a non-empty tuple of inputs, e.g. (x,)")
    _check_device(model)
    _check_arity(model, tuple(example_inputs), concrete_args or {})
    return tuple(example_inputs)


def _check_device(model: torch.nn.Module) -> None:
    on_meta = next(
        (name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta),
        None,
    )
    if on_meta is not None:
        raise ModelError(
            f"the model's tensors are on the meta device ({on_meta!r} and maybe others): "
            "there are no weights to score. Materialize it first, e.g. "
            "model.to_empty(device='cpu') and initialize it, or build it without "
            "torch.device('meta')"
        )


def _check_arity(
    model: torch.nn.Module, inputs: tuple[Any, ...], concrete_args: Mapping[str, Any]
) -> None:
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in params if p.kind in kinds]
    names = ", ".join(p.name for p in positional)
    owner = f"{type(model).__name__}.forward"
    if len(inputs) > len(positional):
        raise InputError(
            f"example_inputs holds {len(inputs)} inputs; {owner} takes {len(positional)} ({names})"
        )
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind is not inspect.Parameter.VAR_KEYWORD]  # fmt: skip
    missing = [p.name for p in required[len(inputs) :] if p.name not in concrete_args]
    if missing:
        raise InputError(
            f"example_inputs holds {len(inputs)} inputs; {owner} also needs "
            f"{', '.join(missing)} (add them to example_inputs, or fix them with "
            "concrete_args={...})"
        )
