"""Rules for normalisation layers."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .context import RuleContext
from .layout import Layout
from .registry import DEFAULT_RULES

__all__ = ["batch_norm", "group_norm", "layer_norm"]


@DEFAULT_RULES.module(
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)
def batch_norm(ctx: RuleContext) -> Any:
    """Per-channel statistics and affine: channels pass through unchanged (exact)."""
    x = ctx.layout(ctx.node.args[0])
    if isinstance(x, Layout) and x.dim == 1:
        return x
    return ctx.boundary()


@DEFAULT_RULES.module(nn.GroupNorm)
def group_norm(ctx: RuleContext) -> Any:
    """Statistics over groups of channels: position ``j`` is tied across groups so every
    group keeps the same count; removing channels changes the statistics (approximate)."""
    m = ctx.module
    assert isinstance(m, nn.GroupNorm)
    x = ctx.layout(ctx.node.args[0])
    if not (isinstance(x, Layout) and x.dim == 1):
        return ctx.boundary()
    g = m.num_groups
    ids = ctx.ids(x).view(g, x.size // g)
    ctx.tie_ids(ids[:1].expand_as(ids), ids)
    if x.size // g > 1:
        ctx.approximate("GroupNorm statistics are computed over the pruned channels")
    return x


@DEFAULT_RULES.module(nn.LayerNorm)
def layer_norm(ctx: RuleContext) -> Any:
    """Exact when channels are outside the normalised dims; approximate when the channels
    alone are normalised; a boundary when channels are normalised together with others."""
    m = ctx.module
    assert isinstance(m, nn.LayerNorm)
    x = ctx.layout(ctx.node.args[0])
    shape = ctx.shape(ctx.node.args[0])
    if not isinstance(x, Layout) or shape is None:
        return ctx.boundary()
    first_normalised = len(shape) - len(m.normalized_shape)
    if x.dim < first_normalised:
        return x
    if x.dim == len(shape) - 1 and len(m.normalized_shape) == 1:
        ctx.approximate("LayerNorm statistics are computed over the pruned channels")
        return x
    return ctx.boundary()
