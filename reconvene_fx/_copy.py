"""Copies of a module's structure that share its tensors."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import TypeVar

import torch

from .meta import OWNED

__all__ = ["attributes_restored", "own_modules", "structural_copy", "tensors_of"]

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


def own_modules(gm: torch.nn.Module) -> None:
    """Give ``gm`` submodules of its own before a pass changes any (copy on write).

    A ``GraphModule`` from ``torch.fx.symbolic_trace(model)`` holds ``model``'s own
    submodule objects, so slicing or replacing one of them would change ``model``. Each
    child is replaced by a structural copy (modules copied, tensors shared, sharing between
    children kept), once; ``gm.meta[OWNED]`` records it (:func:`reconvene_fx.trace` sets
    it: its modules are copies already).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> own_modules(gm)
        >>> gm.get_submodule("0") is net[0], gm.get_submodule("0").weight is net[0].weight
        (False, True)
    """
    meta = getattr(gm, "meta", None)
    if meta is None or meta.get(OWNED):
        return
    memo = {id(t): t for t in tensors_of(gm)}
    for name, child in list(gm._modules.items()):
        if child is not None:
            gm._modules[name] = copy.deepcopy(child, memo)
    meta[OWNED] = True


@contextlib.contextmanager
def attributes_restored(module: torch.nn.Module) -> Iterator[None]:
    """Every submodule's attributes are put back on exit: a module that caches what its
    forward computed (Ultralytics' Detect keeps its anchors) keeps nothing of a run on
    meta tensors.

    Example:
        >>> m = torch.nn.Linear(2, 2)
        >>> with attributes_restored(m):
        ...     m.cache = "meta"
        >>> hasattr(m, "cache")
        False
    """
    saved = {m: dict(vars(m)) for m in module.modules()}
    try:
        yield
    finally:
        for m, attributes in saved.items():
            now = vars(m)
            same = now.keys() == attributes.keys()
            if not same or any(now[k] is not v for k, v in attributes.items()):
                m.__dict__.clear()
                m.__dict__.update(attributes)
