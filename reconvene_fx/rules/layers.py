"""Rules for layers with weights: convolutions and linear layers start new channel spaces."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .context import RuleContext
from .layout import Layout
from .registry import DEFAULT_RULES

__all__ = ["conv", "conv_transpose", "linear"]


@DEFAULT_RULES.module(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv(ctx: RuleContext) -> Any:
    """Output channels are a new space. Grouped convs constrain, depthwise convs couple.

    * ``groups == 1``: input and output spaces are independent.
    * one input channel per group (depthwise, any multiplier): input channel ``k`` is tied to
      the outputs of group ``k``, so whole groups go and ``groups`` shrinks with them.
    * several input channels per group: position ``j`` is tied across all groups, for input
      and output separately, so every group keeps the same count and ``groups`` stays valid.
    """
    m = ctx.module
    assert isinstance(m, nn.modules.conv._ConvNd)
    x = ctx.layout(ctx.node.args[0])
    out = ctx.new(m.out_channels, 1)
    usable = isinstance(x, Layout) and x.dim == 1 and x.size == m.in_channels
    if not usable:
        ctx.pin(x)
    g = m.groups
    if g == 1:
        return out
    per_in, per_out = m.in_channels // g, m.out_channels // g
    out_ids = ctx.ids(out).view(g, per_out)
    if per_in == 1:
        if usable:
            ctx.tie_ids(ctx.ids(x).view(g, 1).expand(g, per_out), out_ids)
        else:
            ctx.pin(out)
        return out
    if usable:
        in_ids = ctx.ids(x).view(g, per_in)
        ctx.tie_ids(in_ids[:1].expand(g, per_in), in_ids)
    ctx.tie_ids(out_ids[:1].expand(g, per_out), out_ids)
    return out


@DEFAULT_RULES.module(nn.Linear)
def linear(ctx: RuleContext) -> Any:
    """Output features are a new space on the last dimension; input features are consumed."""
    m = ctx.module
    assert isinstance(m, nn.Linear)
    x = ctx.layout(ctx.node.args[0])
    in_shape = ctx.shape(ctx.node.args[0])
    last = len(in_shape) - 1 if in_shape is not None else -1
    if not (isinstance(x, Layout) and x.dim == last and x.size == m.in_features):
        ctx.pin(x)
    out_shape = ctx.out_shape
    return ctx.new(m.out_features, len(out_shape) - 1)


@DEFAULT_RULES.module(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_transpose(ctx: RuleContext) -> Any:
    """As a conv with ``groups == 1``: output channels are a new space, inputs consumed.
    A grouped transposed conv is a boundary."""
    m = ctx.module
    assert isinstance(m, nn.modules.conv._ConvTransposeNd)
    if m.groups != 1:
        return ctx.boundary()
    x = ctx.layout(ctx.node.args[0])
    if not (isinstance(x, Layout) and x.dim == 1 and x.size == m.in_channels):
        ctx.pin(x)
    return ctx.new(m.out_channels, 1)
