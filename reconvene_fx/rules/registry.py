"""The registry that maps an FX node to the rule describing its channel flow."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

from .._lookup import for_type
from ..errors import ArgumentError

if TYPE_CHECKING:
    from .context import RuleContext

__all__ = ["DEFAULT_RULES", "Rule", "RuleRegistry", "get_default_registry"]

Rule = Callable[["RuleContext"], Any]


class RuleRegistry:
    """Rules keyed by module type, function object or method name.

    A rule is ``rule(ctx) -> layout`` (see :class:`reconvene_fx.rules.RuleContext`). A module
    subclass inherits its base class's rule only if it does not override ``forward``.

    Example:
        >>> registry = get_default_registry()
        >>> @registry.module(torch.nn.Hardtanh)
        ... def passthrough(ctx):
        ...     return ctx.layout(ctx.node.args[0])
        >>> torch.nn.Hardtanh in registry.modules
        True
    """

    def __init__(self) -> None:
        self.modules: dict[type, Rule] = {}
        self.functions: dict[Callable[..., Any], Rule] = {}
        self.methods: dict[str, Rule] = {}
        # rules for types/functions of libraries not imported yet: (kind, module, name, rule)
        self._pending: list[tuple[str, str, str, Rule]] = []

    def module(self, *types: type) -> Callable[[Rule], Rule]:
        def register(rule: Rule) -> Rule:
            for t in types:
                self.modules[t] = rule
            return rule

        return register

    def function(self, *functions: Callable[..., Any]) -> Callable[[Rule], Rule]:
        def register(rule: Rule) -> Rule:
            for f in functions:
                self.functions[f] = rule
            return rule

        return register

    def method(self, *names: str) -> Callable[[Rule], Rule]:
        def register(rule: Rule) -> Rule:
            for name in names:
                self.methods[name] = rule
            return rule

        return register

    def lazy(self, kind: str, module: str, name: str, rule: Rule) -> None:
        """Register ``rule`` for ``module.name`` (a module type when ``kind`` is
        ``"module"``, a function when ``"function"``) once that module is imported, without
        importing it: a model that uses it has imported it already."""
        if kind not in ("module", "function"):
            raise ArgumentError(f"kind must be 'module' or 'function', got {kind!r}")
        self._pending.append((kind, module, name, rule))

    def _resolve_pending(self) -> None:
        waiting = []
        for kind, module, name, rule in self._pending:
            target = getattr(sys.modules.get(module), name, None)
            if target is None:
                waiting.append((kind, module, name, rule))
            else:
                (self.modules if kind == "module" else self.functions)[target] = rule
        self._pending = waiting

    def for_module(self, module: torch.nn.Module) -> Rule | None:
        """The rule for calls of ``module``, or ``None``."""
        if self._pending:
            self._resolve_pending()
        return for_type(self.modules, type(module))

    def lookup(self, node: torch.fx.Node, gm: torch.fx.GraphModule) -> Rule | None:
        """The rule for ``node``, or ``None`` when no rule is known (the node is a boundary)."""
        if self._pending:
            self._resolve_pending()
        if node.op == "call_module":
            return self.for_module(gm.get_submodule(str(node.target)))
        if node.op == "call_function":
            try:
                return self.functions.get(node.target)  # type: ignore[arg-type]
            except TypeError:  # unhashable target
                return None
        if node.op == "call_method":
            return self.methods.get(str(node.target))
        return None

    def copy(self) -> RuleRegistry:
        other = RuleRegistry()
        other.modules = copy.copy(self.modules)
        other.functions = copy.copy(self.functions)
        other.methods = copy.copy(self.methods)
        other._pending = list(self._pending)
        return other


DEFAULT_RULES = RuleRegistry()


def get_default_registry() -> RuleRegistry:
    """A copy of the built-in rules, safe to extend."""
    return DEFAULT_RULES.copy()
