"""Rules for ops that join or cut along a dimension: cat, split, chunk, tuple getitem."""

from __future__ import annotations

import operator
from typing import Any

import torch

from .context import NoValue, RuleContext
from .layout import Layout
from .movement import data_movement
from .registry import DEFAULT_RULES

__all__ = ["cat", "getitem", "split"]


@DEFAULT_RULES.function(torch.cat, torch.concat, torch.concatenate)
def cat(ctx: RuleContext) -> Any:
    """Along the channel dim each input maps to a slice of the output (offsets);
    along another dim all inputs share one channel space."""
    tensors = ctx.arg(0, "tensors")
    out_shape = ctx.out_shape
    try:
        dim = ctx.value(ctx.arg(1, "dim", 0))
    except NoValue:
        return ctx.boundary()
    if not isinstance(tensors, (tuple, list)) or out_shape is None or not isinstance(dim, int):
        return ctx.boundary()
    dim %= len(out_shape)
    layouts = [ctx.layout(t) for t in tensors]
    if (
        not all(isinstance(lay, Layout) for lay in layouts)
        or len({lay.dim for lay in layouts}) != 1
    ):
        return ctx.boundary()
    if layouts[0].dim == dim:
        out = ctx.new(out_shape[dim], dim)
        out_ids = ctx.ids(out)
        offset = 0
        for lay in layouts:
            ctx.tie_ids(out_ids[offset : offset + lay.size], ctx.ids(lay))
            offset += lay.size
        return out
    for lay in layouts[1:]:
        ctx.tie(layouts[0], lay)
    return layouts[0]


@DEFAULT_RULES.function(torch.split, torch.chunk, torch.tensor_split)
@DEFAULT_RULES.method("split", "chunk", "tensor_split")
def split(ctx: RuleContext) -> Any:
    """Cutting the channel dim into equal pieces ties position ``j`` across pieces (so the
    pieces stay equal after pruning); literal piece sizes pin the channels."""
    x = ctx.layout(ctx.node.args[0])
    shape = ctx.shape(ctx.node.args[0])
    out_meta = ctx.node.meta.get("tensor_meta")
    if not isinstance(x, Layout) or shape is None or not isinstance(out_meta, (tuple, list)):
        return ctx.boundary()
    try:
        dim = ctx.value(ctx.arg(2, "dim", 0)) % len(shape)
    except NoValue:
        return ctx.boundary()
    if dim != x.dim:
        return tuple(x for _ in out_meta)
    sizes = [m.shape[dim] for m in out_meta]
    target = ctx.node.target
    is_chunk = target in (torch.chunk, "chunk")
    how = ctx.arg(1, "chunks" if is_chunk else "split_size_or_sections")
    dynamic = isinstance(how, torch.fx.Node)
    if len(set(sizes)) != 1 or not (is_chunk or dynamic):
        return ctx.boundary()
    pieces = ctx.ids(x).view(len(sizes), sizes[0])
    ctx.tie_ids(pieces[:1].expand_as(pieces), pieces)
    outs = []
    for row in pieces:
        out = ctx.new(sizes[0], dim)
        ctx.tie_ids(ctx.ids(out), row)
        outs.append(out)
    return tuple(outs)


@DEFAULT_RULES.function(operator.getitem)
def getitem(ctx: RuleContext) -> Any:
    """An element of a tuple- or dict-valued node, or indexing into a tensor (data
    movement)."""
    source = ctx.layout(ctx.node.args[0])
    index = ctx.node.args[1]
    if isinstance(source, tuple):
        return source[index] if isinstance(index, int) else ctx.boundary()
    if isinstance(source, dict):  # an entry of a dict a leaf module returned
        return source[index] if isinstance(index, str) and index in source else ctx.boundary()
    return data_movement(ctx)
