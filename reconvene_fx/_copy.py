"""Copies of a module's structure that share its tensors."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch

__all__ = ["structural_copy", "tensors_of"]

M = TypeVar("M", bound=torch.nn.Module)


def tensors_of(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """Every parameter and buffer of ``model``, each once."""
    seen: dict[int, torch.Tensor] = {}
    for t in (*model.parameters(), *model.buffers()):
        seen.setdefault(id(t), t)
    return tuple(seen.values())


def structural_copy(model: M) -> M:
    """A deep copy of ``model`` that shares its parameters and buffers.

    Modules, containers and plain attributes (caches, dicts, lists) are copied, so
    changing the copy's structure, flags or attributes leaves ``model`` alone; the tensors
    are the same objects (nothing is copied in memory), so the copy must never write into
    them in place.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> twin = structural_copy(net)
        >>> twin[0] is net[0], twin[0].weight is net[0].weight
        (False, True)
    """
    memo = {id(t): t for t in tensors_of(model)}
    return copy.deepcopy(model, memo)
