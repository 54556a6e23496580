"""Temporary eval mode and output flattening, shared by scorers, verify and emitters."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["eval_mode", "flatten_tensors"]


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``module`` and all its submodules in eval mode, restoring every flag on exit.

    Each submodule's own ``training`` flag is restored, so mixed states (a model in
    train mode with a frozen, eval-mode BatchNorm) survive unchanged, even on error.

    Example:
        >>> import torch
        >>> from reconvene_fx._mode import eval_mode
        >>> m = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.ReLU())
        >>> with eval_mode(m):
        ...     print(m.training, m[0].training)
        False False
        >>> m.training, m[0].training
        (True, True)
    """
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def flatten_tensors(value: Any) -> list[torch.Tensor]:
    """Tensors in a nested tuple/list/dict, in the order the ONNX exporters flatten them.

    Dict values are taken in insertion order; ``None`` and non-tensor leaves are skipped.

    Example:
        >>> import torch
        >>> from reconvene_fx._mode import flatten_tensors
        >>> a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
        >>> [t.item() for t in flatten_tensors((a, [b, None], {"c": c}))]
        [0.0, 1.0, 2.0]
    """
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flatten_tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flatten_tensors(v)]
    return []
