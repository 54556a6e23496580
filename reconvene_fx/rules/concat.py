"""Rules for ops that join or cut along a dimension: cat, stack, split, chunk, getitem."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch

from .context import NoValue, RuleContext
from .layout import Layout
from .movement import counter, data_movement
from .registry import DEFAULT_RULES
from .sizes import literal_int

__all__ = ["cat", "getitem", "literal_split", "split", "stack", "unbind"]


def literal_split(
    node: torch.fx.Node, count: Callable[[Any], int | None] | None = None
) -> tuple[int, Any] | None:
    """``(position, sizes)`` of the fixed sizes of a ``split`` call (an int or a list of
    ints, positional or keyword), or None when they are not fixed or absent.

    ``count`` gives the value of a size, or None when it is not fixed
    (:func:`~reconvene_fx.rules.movement.counter`: a literal, or a size computed from the
    cut tensor's own channel count, as in ``x.split([16, x.shape[1] - 16], 1)``); without
    it only literal ints are fixed. ``sizes`` holds the values.

    Example:
        >>> g = torch.fx.Graph()
        >>> x = g.placeholder("x")
        >>> literal_split(g.call_method("split", (x, [16, 48], 1)))
        (1, [16, 48])
    """
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if node.op not in ("call_method", "call_function") or name != "split":
        return None
    if len(node.args) > 1:
        position, how = 1, node.args[1]
    else:
        key = next((k for k in ("split_size_or_sections", "split_size") if k in node.kwargs), None)
        if key is None:
            return None
        position, how = -1, node.kwargs[key]
    count = count or literal_int
    if isinstance(how, (list, tuple)):
        values = [count(s) for s in how]
        return None if any(v is None for v in values) else (position, type(how)(values))
    value = count(how)
    return None if value is None else (position, value)


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


@DEFAULT_RULES.function(torch.stack)
def stack(ctx: RuleContext) -> Any:
    """Stacking along a new dim: the inputs' channels line up (as in an elementwise op)
    and move one dim up when the new dim comes before them."""
    tensors = ctx.arg(0, "tensors")
    try:
        dim = ctx.value(ctx.arg(1, "dim", 0))
    except NoValue:
        return ctx.boundary()
    out_shape = ctx.out_shape
    if not isinstance(tensors, (tuple, list)) or out_shape is None or not isinstance(dim, int):
        return ctx.boundary()
    layouts = [ctx.layout(t) for t in tensors]
    if (
        not all(isinstance(lay, Layout) for lay in layouts)
        or len({(lay.dim, lay.size) for lay in layouts}) != 1
    ):
        return ctx.boundary()
    for lay in layouts[1:]:
        ctx.tie(layouts[0], lay)
    first = layouts[0]
    dim %= len(out_shape)
    return Layout(first.space, first.dim + (dim <= first.dim), first.size)


@DEFAULT_RULES.function(torch.unbind)
@DEFAULT_RULES.method("unbind")
def unbind(ctx: RuleContext) -> Any:
    """Removing a dim other than the channels: every piece keeps the channels (one dim
    lower when the removed dim came first). Unbinding the channel dim pins it."""
    x = ctx.layout(ctx.node.args[0])
    shape = ctx.shape(ctx.node.args[0])
    out_meta = ctx.node.meta.get("tensor_meta")
    try:
        dim = ctx.value(ctx.arg(1, "dim", 0))
    except NoValue:
        return ctx.boundary()
    if not isinstance(x, Layout) or shape is None or not isinstance(out_meta, (tuple, list)):
        return ctx.boundary()
    if not isinstance(dim, int) or dim % len(shape) == x.dim:
        return ctx.boundary()
    moved = Layout(x.space, x.dim - (dim % len(shape) < x.dim), x.size)
    return tuple(moved for _ in out_meta)


@DEFAULT_RULES.function(torch.split, torch.chunk, torch.tensor_split)
@DEFAULT_RULES.method("split", "chunk", "tensor_split")
def split(ctx: RuleContext) -> Any:
    """Cutting the channel dim: fixed piece sizes (``x.split([16, 48], 1)``, or sizes
    computed from the tensor's own channel count: ``x.split([16, x.shape[1] - 16], 1)``)
    give each piece the channels of its range, and ShrinkPass rewrites the sizes to the
    kept counts; equal pieces (``chunk``, ``split(32, 1)``, ``split(x.size(1) // 2, 1)``)
    tie position ``j`` across pieces so they stay equal (a size that would not follow is
    rewritten too); one size that leaves a shorter last piece (``split(5, 1)`` of 16
    channels) cuts ranges, and becomes the list of kept counts. A split size computed
    from anything else (another tensor's sizes, an input) and ``tensor_split`` with
    literal indices pin the channels."""
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
    literal = literal_split(ctx.node, counter(ctx, x.space))
    ranged = literal is not None and (isinstance(literal[1], (list, tuple)) or len(set(sizes)) > 1)
    if ranged and sum(sizes) == x.size:  # split(5) of 16 channels: ranges of 5, 5, 5, 1
        ids, offset, ranges = ctx.ids(x), 0, []
        for size in sizes:
            out = ctx.new(size, dim)
            ctx.tie_ids(ctx.ids(out), ids[offset : offset + size])
            offset += size
            ranges.append(out)
        return tuple(ranges)
    equal_literal = literal is not None and isinstance(literal[1], int)
    if len(set(sizes)) != 1 or not (is_chunk or equal_literal):
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
