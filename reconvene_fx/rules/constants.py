"""Rules for tensors made from nothing but sizes and values (``torch.arange``,
``x.new_full``), and for ops that take only the shape or dtype of another tensor."""

from __future__ import annotations

from typing import Any

import torch

from .context import RuleContext
from .registry import DEFAULT_RULES

__all__ = ["constant", "same_channels"]

_FACTORIES = (
    torch.arange, torch.zeros, torch.ones, torch.full, torch.empty, torch.linspace,
    torch.logspace, torch.eye, torch.rand, torch.randn, torch.meshgrid, torch.tensor,
)  # fmt: skip
_FACTORY_METHODS = ("new_full", "new_zeros", "new_ones", "new_empty", "new_tensor")
_LIKE = (
    torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like, torch.rand_like,
    torch.randn_like,
)  # fmt: skip


@DEFAULT_RULES.function(*_FACTORIES)
@DEFAULT_RULES.method(*_FACTORY_METHODS)
def constant(ctx: RuleContext) -> Any:
    """A new tensor whose values follow no channel: a constant (anchor grids, masks). The
    tensor a ``new_*`` method is called on gives only its dtype and device; a factory fed
    with tensors that carry channels (``meshgrid`` of features) is a boundary."""
    inputs = ctx.node.all_input_nodes[1:] if ctx.node.op == "call_method" else \
        ctx.node.all_input_nodes  # fmt: skip
    if any(ctx.layout(n) is not None for n in inputs):
        return ctx.boundary()
    return None


@DEFAULT_RULES.function(*_LIKE)
@DEFAULT_RULES.method("type_as")
def same_channels(ctx: RuleContext) -> Any:
    """Same shape as the first argument (``zeros_like``), or its values in another dtype
    (``type_as``: the second tensor gives only the dtype): its channels."""
    return ctx.layout(ctx.node.args[0])
