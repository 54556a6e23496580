"""The two shapes of registry: entries keyed by what a node calls (:class:`TypeRegistry`:
channel rules, layer handlers) and entries keyed by name (:class:`NamedRegistry`: scorers,
strategies).

Neither imports torch, so the command line reads the names of scorers and strategies for
its ``--help`` before torch is loaded.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._modules import submodule
from .errors import ArgumentError

if TYPE_CHECKING:
    import torch
    import torch.fx

__all__ = ["NamedRegistry", "TypeRegistry", "for_type"]

E = TypeVar("E")  # what a registry holds
D = TypeVar("D")  # what its decorators decorate
V = TypeVar("V")
R = TypeVar("R", bound="TypeRegistry[Any]")

_KINDS = ("module", "function")


def for_type(table: Mapping[type, V], module_type: type) -> V | None:
    """The entry of ``module_type`` or of its nearest base class in ``table``; a subclass
    inherits its base's entry only when it does not override ``forward`` (a forward of
    its own may use channels and tensors differently).

    Example:
        >>> import torch
        >>> class Same(torch.nn.ReLU): pass
        >>> class Own(torch.nn.ReLU):
        ...     def forward(self, x): return x
        >>> table = {torch.nn.ReLU: "relu"}
        >>> for_type(table, Same), for_type(table, Own)
        ('relu', None)
    """
    for base in module_type.__mro__:
        entry = table.get(base)
        if entry is not None:
            if base is module_type or module_type.forward is base.forward:  # type: ignore[attr-defined]
                return entry
            return None
    return None


class TypeRegistry(Generic[E]):
    """Entries keyed by module type, function object or method name: what an FX node
    calls. :class:`~reconvene_fx.rules.RuleRegistry` (channel rules) and
    :class:`~reconvene_fx.layers.LayerRegistry` (layer handlers) are both one.

    Register with the decorators :meth:`module`, :meth:`function` and :meth:`method`, or
    with :meth:`lazy` for a type or function of a library that may not be imported; read
    with :meth:`lookup` (a node) or :meth:`for_module` / :meth:`for_function` /
    :meth:`for_method`. A module subclass inherits its base class's entry only when it
    does not override ``forward`` (:func:`for_type`). What a decorator stores is
    :meth:`_entry` of what it decorates: the object itself here; a layer handler class
    is instantiated once. The tables ``modules``, ``functions`` and ``methods`` are plain
    dicts, open to reading and editing.

    Example:
        >>> import operator, torch
        >>> registry = TypeRegistry()
        >>> @registry.module(torch.nn.ReLU)
        ... @registry.function(torch.relu)
        ... @registry.method("relu")
        ... def relu(ctx): ...
        >>> registry.lazy("module", "no_such_library", "Layer", relu)  # never imported
        >>> registry.for_module(torch.nn.ReLU()) is registry.for_method("relu") is relu
        True
        >>> registry.copy().for_function(operator.add) is None
        True
    """

    def __init__(self) -> None:
        self.modules: dict[type, E] = {}
        self.functions: dict[Callable[..., Any], E] = {}
        self.methods: dict[str, E] = {}
        # entries for types/functions of libraries not imported yet: (kind, module, name, entry)
        self._pending: list[tuple[str, str, str, E]] = []
        self._modules_seen = -1  # len(sys.modules) when the pending entries were last tried

    def _entry(self, registered: Any) -> E:
        """What is stored for ``registered``, the object a decorator or :meth:`lazy` got."""
        return registered  # type: ignore[no-any-return]

    def module(self, *types: type) -> Callable[[D], D]:
        """Decorator: register what it decorates for calls of modules of ``types``."""
        return self._register(self.modules, types)

    def function(self, *functions: Callable[..., Any]) -> Callable[[D], D]:
        """Decorator: register what it decorates for calls of ``functions``."""
        return self._register(self.functions, functions)

    def method(self, *names: str) -> Callable[[D], D]:
        """Decorator: register what it decorates for calls of the tensor methods ``names``."""
        return self._register(self.methods, names)

    def _register(self, table: dict[Any, E], keys: tuple[Any, ...]) -> Callable[[D], D]:
        def register(registered: D) -> D:
            entry = self._entry(registered)
            for key in keys:
                table[key] = entry
            return registered

        return register

    def lazy(self, kind: str, module: str, name: str, entry: Any) -> None:
        """Register ``entry`` for ``module.name`` (a module type when ``kind`` is
        ``"module"``, a function when ``"function"``) once that module is imported, without
        importing it: a model that uses it has imported it already."""
        if kind not in _KINDS:
            raise ArgumentError(f"kind must be 'module' or 'function', got {kind!r}")
        self._pending.append((kind, module, name, self._entry(entry)))
        self._modules_seen = -1

    def _resolve_pending(self) -> None:
        """Register the pending entries whose library has been imported since they were
        last tried (nothing to try while no module was imported: lookups stay cheap)."""
        if len(sys.modules) == self._modules_seen:
            return
        self._modules_seen = len(sys.modules)
        waiting = []
        for kind, module, name, entry in self._pending:
            target = getattr(sys.modules.get(module), name, None)
            if target is None or (kind == "module" and not isinstance(target, type)):
                waiting.append((kind, module, name, entry))
            else:
                (self.modules if kind == "module" else self.functions)[target] = entry
        self._pending = waiting

    def for_module(self, module: torch.nn.Module) -> E | None:
        """The entry for calls of ``module``, or ``None``."""
        if self._pending:
            self._resolve_pending()
        return for_type(self.modules, type(module))

    def for_function(self, function: Any) -> E | None:
        """The entry for calls of ``function``, or ``None``."""
        if self._pending:
            self._resolve_pending()
        try:
            return self.functions.get(function)
        except TypeError:  # unhashable target
            return None

    def for_method(self, name: str) -> E | None:
        """The entry for calls of the tensor method ``name``, or ``None``."""
        return self.methods.get(name)

    def lookup(self, node: torch.fx.Node, gm: torch.nn.Module) -> E | None:
        """The entry for what ``node`` calls, or ``None`` when none is known."""
        if node.op == "call_module":
            return self.for_module(submodule(gm, str(node.target)))
        if node.op == "call_function":
            return self.for_function(node.target)
        if node.op == "call_method":
            return self.for_method(str(node.target))
        return None

    def copy(self: R) -> R:
        """An independent copy: registering in it leaves this registry as it is."""
        other = copy.copy(self)
        other.modules = dict(self.modules)
        other.functions = dict(self.functions)
        other.methods = dict(self.methods)
        other._pending = list(self._pending)
        return other


class NamedRegistry(MutableMapping[str, V]):
    """Entries keyed by name (``SCORERS``, ``STRATEGIES``): a mapping that also reads
    entries declared by where they live, importing them when first read, and whose
    unknown names are errors that list the known ones.

    ``kind`` and ``plural`` name the entries in errors (``"strategy"``, ``"strategies"``).
    Iteration gives the names in the order they were registered, without importing any.

    Example:
        >>> named = NamedRegistry("method", "methods")
        >>> named.declare("sqrt", "math:sqrt", "the square root")
        >>> @named.register("twice")
        ... def twice(x):
        ...     '''Doubles x.'''
        ...     return 2 * x
        >>> list(named), named.summary("sqrt"), named.summary("twice")
        (['sqrt', 'twice'], 'the square root', 'Doubles x.')
        >>> named.lookup("sqrt")(9.0)
        3.0
        >>> try:
        ...     named.lookup("twise")
        ... except ArgumentError as exc:
        ...     print(exc)
        unknown method 'twise' (did you mean 'twice'?); known methods: sqrt, twice
    """

    def __init__(self, kind: str, plural: str) -> None:
        self.kind, self.plural = kind, plural
        self._entries: dict[str, V] = {}
        self._declared: dict[str, tuple[str, str]] = {}  # name -> ("module:attr", summary)
        self._order: dict[str, None] = {}  # every name, in registration order

    def register(self, name: str) -> Callable[[V], V]:
        """Decorator: register what it decorates as ``name`` (replacing any entry)."""

        def register(entry: V) -> V:
            self[name] = entry
            return entry

        return register

    def declare(self, name: str, target: str, summary: str = "") -> None:
        """Register ``name`` as the object at ``target`` (``"package.module:attribute"``),
        imported when first read; ``summary`` describes it without importing it."""
        self._entries.pop(name, None)  # replacing an entry: read from target
        self._declared[name] = (target, summary)
        self._order[name] = None

    def lookup(self, name: str) -> V:
        """The entry registered as ``name``.

        Raises:
            ArgumentError: for an unknown name, with the closest known one and the list.
        """
        if name not in self:
            close = difflib.get_close_matches(str(name), list(self), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ArgumentError(
                f"unknown {self.kind} {name!r}{hint}; known {self.plural}: "
                f"{', '.join(sorted(self))}"
            )
        return self[name]

    def summary(self, name: str) -> str:
        """One line about ``name``: its declared summary, else the first line of the
        entry's docstring (a declared entry is not imported for it)."""
        if name in self._declared:
            return self._declared[name][1]
        doc = getattr(self[name], "__doc__", None) or ""
        return doc.strip().split("\n", 1)[0]

    def __getitem__(self, name: str) -> V:
        if name not in self._entries and name in self._declared:
            module, _, attribute = self._declared[name][0].partition(":")
            self._entries[name] = getattr(importlib.import_module(module), attribute)
        return self._entries[name]

    def __setitem__(self, name: str, entry: V) -> None:
        self._declared.pop(name, None)
        self._entries[name] = entry
        self._order[name] = None

    def __delitem__(self, name: str) -> None:
        del self._order[name]  # an unknown name: KeyError, as a mapping's
        self._entries.pop(name, None)
        self._declared.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._order

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"NamedRegistry({self.kind!r}: {', '.join(self)})"
