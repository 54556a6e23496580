"""The registry that maps an FX node to the rule describing its channel flow."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._registry import TypeRegistry

if TYPE_CHECKING:
    from .context import RuleContext

__all__ = ["DEFAULT_RULES", "Rule", "RuleRegistry", "get_default_registry"]

Rule = Callable[["RuleContext"], Any]


class RuleRegistry(TypeRegistry[Rule]):
    """Rules keyed by module type, function object or method name.

    A rule is ``rule(ctx) -> layout`` (see :class:`reconvene_fx.rules.RuleContext`). A module
    subclass inherits its base class's rule only if it does not override ``forward``.
    Registering, ``lazy``, ``lookup``, ``for_module`` and ``copy`` are those of every
    type-keyed registry (:class:`~reconvene_fx._registry.TypeRegistry`), as for the layer
    handlers (:class:`~reconvene_fx.layers.LayerRegistry`).

    Example:
        >>> import torch
        >>> registry = get_default_registry()
        >>> @registry.module(torch.nn.Hardtanh)
        ... def passthrough(ctx):
        ...     return ctx.layout(ctx.node.args[0])
        >>> torch.nn.Hardtanh in registry.modules
        True
    """


DEFAULT_RULES = RuleRegistry()


def get_default_registry() -> RuleRegistry:
    """A copy of the built-in rules, safe to extend."""
    return DEFAULT_RULES.copy()
