"""Rules for ops that work on each channel separately: pooling, resizing, reductions."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .context import NoValue, RuleContext
from .layout import Layout
from .registry import DEFAULT_RULES

__all__ = ["pad", "per_channel_spatial", "reduction", "softmax"]

_SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d, nn.Upsample,
    nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad2d,
    nn.ReflectionPad2d, nn.ReplicationPad2d,
)  # fmt: skip
_SPATIAL_FUNCTIONS = (
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.lp_pool2d,
    F.interpolate, F.upsample, torch.max_pool2d, torch.avg_pool1d, torch.adaptive_avg_pool1d,
)  # fmt: skip


@DEFAULT_RULES.module(*_SPATIAL_MODULES)
@DEFAULT_RULES.function(*_SPATIAL_FUNCTIONS)
def per_channel_spatial(ctx: RuleContext) -> Any:
    """Pooling and resizing act on dims >= 2 of each channel: pass-through on dim 1."""
    x = ctx.layout(ctx.node.args[0])
    if isinstance(x, Layout) and x.dim == 1 and len(ctx.tensor_args()) == 1:
        return x
    return ctx.boundary()


@DEFAULT_RULES.function(F.pad, torch.constant_pad_nd)
def pad(ctx: RuleContext) -> Any:
    """Padding other dims than the channels' (the padding may be computed from the input's
    shape, as TF-style "same" padding is): pass-through. Padding the channel dim pins it.

    Example:
        >>> import reconvene_fx as rfx
        >>> class Same(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.a, self.b = torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 4, 3)
        ...     def forward(self, x):
        ...         h = F.pad(self.a(x), [1, 1, 1, 1]).relu()
        ...         return self.b(F.pad(h, [x.shape[-1] % 2, 1, 1, 1]))
        >>> gm = rfx.compile(Same(), 0.5, (torch.randn(1, 3, 9, 9),), method="magnitude")
        >>> gm.a.out_channels < 8
        True
    """
    x = ctx.layout(ctx.node.args[0])
    shape = ctx.shape(ctx.node.args[0])
    try:
        widths = ctx.value(ctx.arg(1, "pad"))
    except NoValue:
        return ctx.boundary()
    if not isinstance(x, Layout) or shape is None or not isinstance(widths, (tuple, list)):
        return ctx.boundary()
    padded = {len(shape) - 1 - i // 2 for i, w in enumerate(widths) if w != 0}
    if x.dim in padded or any(ctx.layout(n) is not None for n in ctx.tensor_args()[1:]):
        return ctx.boundary("it pads the channels")
    return x


@DEFAULT_RULES.function(torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var)
@DEFAULT_RULES.method("mean", "sum", "amax", "amin", "std", "var")
def reduction(ctx: RuleContext) -> Any:
    """Reducing other dims keeps the channels; reducing the channel dim pins them."""
    x = ctx.layout(ctx.node.args[0])
    in_shape = ctx.shape(ctx.node.args[0])
    if not isinstance(x, Layout) or in_shape is None:
        return ctx.boundary()
    try:
        dims = ctx.value(ctx.arg(1, "dim"))
        keepdim = bool(ctx.value(ctx.arg(2, "keepdim", False)))
    except NoValue:
        return ctx.boundary()
    ndim = len(in_shape)
    if dims is None or (isinstance(dims, (tuple, list)) and len(dims) == 0):
        dims = list(range(ndim))
    if isinstance(dims, int):
        dims = [dims]
    if not all(isinstance(d, int) for d in dims):
        return ctx.boundary()
    dims = {d % ndim for d in dims}
    if x.dim in dims:
        return ctx.boundary()
    new_dim = x.dim if keepdim else x.dim - sum(1 for d in dims if d < x.dim)
    return Layout(x.space, new_dim, x.size)


@DEFAULT_RULES.module(nn.Softmax, nn.LogSoftmax, nn.Softmin)
@DEFAULT_RULES.function(F.softmax, F.log_softmax, torch.softmax, torch.log_softmax)
@DEFAULT_RULES.method("softmax", "log_softmax")
def softmax(ctx: RuleContext) -> Any:
    """Exact when normalising another dim; a boundary when normalising over the channels."""
    x = ctx.layout(ctx.node.args[0])
    shape = ctx.shape(ctx.node.args[0])
    if ctx.module is not None:
        dim = getattr(ctx.module, "dim", None)
    else:
        try:
            dim = ctx.value(ctx.arg(1, "dim"))
        except NoValue:
            dim = None
    if not isinstance(x, Layout) or shape is None or not isinstance(dim, int):
        return ctx.boundary()
    if dim % len(shape) == x.dim:
        return ctx.boundary()
    return x
