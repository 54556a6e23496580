"""Channel-flow rules: how channel indices move through each op, and their registry.

Importing this package registers the built-in rules in :data:`DEFAULT_RULES`.
"""

from . import (
    attention,
    concat,
    constants,
    einops_ops,
    elementwise,
    layers,
    movement,
    norms,
    pooling,
    sizes,
    timm,
)
from .context import RuleContext
from .layout import Layout, Scrambled
from .registry import DEFAULT_RULES, Rule, RuleRegistry, get_default_registry

__all__ = [
    "DEFAULT_RULES",
    "Layout",
    "Rule",
    "RuleContext",
    "RuleRegistry",
    "Scrambled",
    "attention",
    "concat",
    "constants",
    "einops_ops",
    "elementwise",
    "get_default_registry",
    "layers",
    "movement",
    "norms",
    "pooling",
    "sizes",
    "timm",
]
