"""Copies of a module's structure that share its tensors."""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Iterator
from typing import Any, TypeVar

import torch

from .meta import OWNED

__all__ = [
    "attributes_restored",
    "independent_copy",
    "own_modules",
    "structural_copy",
    "tensors_of",
]

M = TypeVar("M", bound=torch.nn.Module)


def tensors_of(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """Every parameter and buffer of ``model``, each once."""
    seen: dict[int, torch.Tensor] = {}
    for t in (*model.parameters(), *model.buffers()):
        seen.setdefault(id(t), t)
    return tuple(seen.values())


# what the search for computed tensors does not look into
_OPAQUE = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    str,
    bytes,
)


def _computed_tensors(root: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors with a ``grad_fn`` that ``root``'s modules hold outside their
    parameters and buffers: caches filled by a forward that ran with grad enabled
    (timm's levit attention biases), the ``weight`` of an old-style ``weight_norm``
    module. ``copy.deepcopy`` refuses them (only graph leaves can be deep-copied)."""
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    stack: list[Any] = []
    for module in root.modules():
        stack.extend(v for k, v in vars(module).items() if k not in ("_parameters", "_modules"))
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (torch.nn.Module, *_OPAQUE)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if not obj.is_leaf:
                found[id(obj)] = obj
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__"):
            stack.extend(vars(obj).values())
    return list(found.values())


def _sharing_memo(root: torch.nn.Module) -> dict[int, Any]:
    """A ``copy.deepcopy`` memo that keeps ``root``'s parameters and buffers as they are
    and copies each computed tensor as a detached clone (no graph, no shared memory)."""
    memo: dict[int, Any] = {id(t): t for t in tensors_of(root)}
    for t in _computed_tensors(root):
        memo.setdefault(id(t), t.detach().clone())
    return memo


def structural_copy(model: M) -> M:
    """A deep copy of ``model`` that shares its parameters and buffers.

    Modules, containers and plain attributes (caches, dicts, lists) are copied, so
    changing the copy's structure, flags or attributes leaves ``model`` alone; the tensors
    are the same objects (nothing is copied in memory), so the copy must never write into
    them in place. A tensor a module computed and kept outside its parameters and buffers
    (a cache filled with grad enabled, the ``weight`` of ``torch.nn.utils.weight_norm``)
    is copied detached: it has no autograd graph in the copy.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> net.cache = net[0].weight * 2  # computed: it has a grad_fn
        >>> twin = structural_copy(net)
        >>> twin[0] is net[0], twin[0].weight is net[0].weight
        (False, True)
        >>> twin.cache.grad_fn is None, torch.equal(twin.cache, net.cache)
        (True, True)
    """
    return copy.deepcopy(model, _sharing_memo(model))


def independent_copy(model: M) -> M:
    """``copy.deepcopy(model)``, tensors included, that also copies the tensors a module
    computed and kept outside its parameters and buffers (as detached clones), which
    ``copy.deepcopy`` refuses.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> net.cache = net.weight * 2
        >>> twin = independent_copy(net)
        >>> twin.weight is net.weight, torch.equal(twin.cache, net.cache)
        (False, True)
    """
    memo: dict[int, Any] = {id(t): t.detach().clone() for t in _computed_tensors(model)}
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
    memo = _sharing_memo(gm)
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
