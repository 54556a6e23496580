"""Copies of a module's structure that share its tensors."""

from __future__ import annotations

import collections
import contextlib
import copy
import copyreg
import types
import weakref
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
    """Every parameter and buffer of ``model``, each once: the parameters, then the
    buffers, in the order of ``model.parameters()`` and ``model.buffers()`` (read in one
    walk over the modules)."""
    params: list[torch.Tensor] = []
    buffers: list[torch.Tensor] = []
    for module in model.modules():
        params.extend(t for t in module._parameters.values() if t is not None)
        buffers.extend(t for t in module._buffers.values() if t is not None)
    seen: dict[int, torch.Tensor] = {}
    for t in (*params, *buffers):
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
    stack: list[Any] = []
    for module in root.modules():
        stack.extend(v for k, v in vars(module).items() if k not in ("_parameters", "_modules"))
    return _computed_in(stack)


def _computed_in(stack: list[Any]) -> list[torch.Tensor]:
    """The tensors with a ``grad_fn`` reachable from the objects in ``stack`` through
    containers and plain objects' attributes (not through modules), which it empties."""
    found: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
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
    memo: dict[int, Any] = {id(t): t for t in tensors_of(model)}
    return _Copier(model, memo).copy(model)  # type: ignore[no-any-return]


# what copy.deepcopy returns as it is (its own atomic types), and torch's singletons
_ATOMIC = frozenset({
    type(None), int, float, bool, complex, bytes, str, type, range, property,
    types.BuiltinFunctionType, types.FunctionType, types.CodeType, type(Ellipsis),
    type(NotImplemented), weakref.ref, torch.dtype, torch.layout, torch.memory_format,
})  # fmt: skip


class _Copier:
    """``copy.deepcopy`` with ``memo`` (the shared tensors), sped up for what modules hold.

    Modules whose class copies the standard way (``nn.Module``'s ``__getstate__``, no
    ``__deepcopy__``, ``__reduce_ex__`` or slots of its own), plain dicts, ordered
    dicts, lists, tuples and sets, and atomic values are copied here as ``deepcopy``
    copies them (a new object of the class, the state copied item by item, then the
    class's ``__setstate__``), at a fraction of its per-object cost; anything else goes
    to ``copy.deepcopy`` with the same memo, after the computed tensors (those with a
    ``grad_fn``, which ``deepcopy`` refuses) of the root's modules and of the object were
    memoized as detached clones. A computed
    tensor met here is cloned the same way; any other tensor not in the memo is
    deep-copied.
    """

    def __init__(self, root: torch.nn.Module, memo: dict[int, Any]) -> None:
        self.root, self.memo = root, memo
        self.scanned = False  # the root's computed tensors are in the memo
        self.plain: dict[type, bool] = {}

    def copy(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in _ATOMIC:
            return obj
        found = self.memo.get(id(obj), _MISSING)
        if found is not _MISSING:
            return found
        if kind is dict or kind is collections.OrderedDict:
            if kind is collections.OrderedDict and vars(obj):
                return self._fallback(obj)
            new_map = kind()
            self.memo[id(obj)] = new_map
            for key, value in obj.items():  # atomic keys and values inline: most of them
                new_map[key if type(key) in _ATOMIC else self.copy(key)] = (
                    value if type(value) in _ATOMIC else self.copy(value)
                )
            return new_map
        if kind is list:
            new_list: list[Any] = []
            self.memo[id(obj)] = new_list
            new_list.extend(self.copy(value) for value in obj)
            return new_list
        if kind is tuple:
            if all(type(value) in _ATOMIC for value in obj):  # sizes, strides, paddings
                return obj
            items = [self.copy(value) for value in obj]
            if all(a is b for a, b in zip(items, obj, strict=True)):
                return obj
            found = self.memo.get(id(obj), _MISSING)  # a cycle through the tuple
            if found is not _MISSING:
                return found
            new_tuple = tuple(items)
            self.memo[id(obj)] = new_tuple
            return new_tuple
        if kind is set and all(type(value) in _ATOMIC for value in obj):
            new_set = set(obj)
            self.memo[id(obj)] = new_set
            return new_set
        if isinstance(obj, torch.Tensor) and not obj.is_leaf:
            clone = obj.detach().clone()
            self.memo[id(obj)] = clone
            return clone
        if isinstance(obj, torch.nn.Module) and self._plain_module(kind):
            module = kind.__new__(kind)
            memo = self.memo
            memo[id(obj)] = module
            state: dict[str, Any] = {}
            for key, value in obj.__dict__.items():
                if key == "_compiled_call_impl":
                    continue
                held = type(value)
                if held in _ATOMIC:
                    state[key] = value
                elif (
                    held in _EMPTY
                    and not value
                    and id(value) not in memo
                    and not (held is collections.OrderedDict and vars(value))
                ):  # a module's many empty hook dicts: copied here, not by a call each
                    state[key] = memo[id(value)] = held()
                else:
                    state[key] = self.copy(value)
            module.__setstate__(state)
            return module
        return self._fallback(obj)

    def _fallback(self, obj: Any) -> Any:
        """``copy.deepcopy(obj)`` with the memo, once every computed tensor of the root's
        modules and of ``obj`` is memoized as a detached clone (``deepcopy`` may reach any
        module from ``obj``: a hook bound to another module, a graph module's own)."""
        found = _computed_tensors(obj) if isinstance(obj, torch.nn.Module) else []
        if not self.scanned:
            found += _computed_tensors(self.root)
            self.scanned = True
        for t in [*found, *_computed_in([obj])]:
            self.memo.setdefault(id(t), t.detach().clone())
        return copy.deepcopy(obj, self.memo)

    def _plain_module(self, kind: type) -> bool:
        """Whether ``copy.deepcopy`` copies modules of ``kind`` by the standard protocol:
        ``cls.__new__(cls)``, then ``__setstate__`` of the copied ``__getstate__()``."""
        known = self.plain.get(kind)
        if known is None:
            known = (
                getattr(kind, "__deepcopy__", None) is None
                and kind.__reduce_ex__ is object.__reduce_ex__
                and kind.__reduce__ is object.__reduce__
                and kind.__getstate__ is torch.nn.Module.__getstate__  # type: ignore[comparison-overlap]
                and not hasattr(kind, "__getnewargs_ex__")
                and not hasattr(kind, "__getnewargs__")
                and kind not in copyreg.dispatch_table
                and not any("__slots__" in vars(c) for c in kind.__mro__)
            )
            self.plain[kind] = known
        return known


_MISSING = object()
# containers copied inline when empty (a module holds a dozen empty hook dicts)
_EMPTY = frozenset({dict, collections.OrderedDict, set, list})


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
