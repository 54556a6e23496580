"""Checking what the public entry points are given."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_inputs"]


def check_inputs(
    model: torch.nn.Module, example_inputs: tuple[Any, ...] | torch.Tensor
) -> tuple[Any, ...]:
    """``example_inputs`` as a tuple, after checking ``model`` and the inputs' form.

    Example:
        >>> len(check_inputs(torch.nn.ReLU(), torch.zeros(1)))
        1
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError("example_inputs must be a non-empty tuple of inputs, e.g. (x,)")
    return tuple(example_inputs)
