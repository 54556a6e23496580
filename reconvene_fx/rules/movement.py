"""Rules for data-movement ops (view, reshape, flatten, permute, transpose, indexing, ...).

These ops move elements without computing on them, so the rule runs the op itself on a
tensor of channel ids and reads the result: if each index along one output dimension holds
a single channel id, that dimension carries the channels (a flatten before a Linear maps
each feature to its channel; a permute moves the channel dim); otherwise the output is
:class:`Scrambled` (mid-way through a channel shuffle) until a later op tidies it up.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from ..meta import SIZE_PEERS
from .context import NoValue, RuleContext
from .layout import Layout, Scrambled
from .registry import DEFAULT_RULES
from .sizes import ARITHMETIC, channel_count, literal_int, shape_read

__all__ = [
    "channel_range", "channel_shuffle", "counter", "data_movement", "follows_source",
]  # fmt: skip

_SHAPE_METHODS = ("view", "reshape", "expand", "unflatten")
_METHODS = (
    *_SHAPE_METHODS, "flatten", "permute", "transpose", "squeeze", "unsqueeze",
    "movedim", "narrow", "select", "t", "swapaxes", "swapdims",
)  # fmt: skip
_FUNCTIONS = (
    torch.reshape, torch.flatten, torch.permute, torch.transpose, torch.squeeze,
    torch.unsqueeze, torch.movedim, torch.narrow, torch.select, torch.swapaxes, torch.t,
    torch.unflatten,
)  # fmt: skip


def _shrink(ids: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Narrow every dim along which the ids do not vary to size 1; return the varying dims.

    Largest dims are tried first, so each check runs on an already smaller tensor.
    """
    small, varying = ids, []
    for dim in sorted(range(ids.dim()), key=lambda d: -ids.shape[d]):
        if small.shape[dim] <= 1:
            continue
        first = small.narrow(dim, 0, 1)
        if bool((small == first).all()):
            small = first
        else:
            varying.append(dim)
    return small, sorted(varying)


def _describe(
    ctx: RuleContext, small: torch.Tensor, varying: list[int], shape: tuple[int, ...]
) -> Layout | Scrambled:
    """Ids varying along one dim only: that dim carries the channels. Along several: the
    channels are spread out (Scrambled)."""
    if len(varying) > 1:
        return Scrambled(small, shape)
    if varying:
        dim = varying[0]
        row = small.reshape(-1)
    else:  # one id everywhere: any dim of the right size will do, dim 1 first
        dim = min(range(len(shape)), key=lambda d: (d != 1, d))
        row = small.reshape(-1)[:1].expand(shape[dim])
    space = int(ctx.graph.space_of(row[:1])[0]) if row.numel() else -1
    if space >= 0 and torch.equal(row, ctx.graph.ids(space)):
        return Layout(space, dim, row.numel())
    out = ctx.new(row.numel(), dim)
    ctx.tie_ids(ctx.ids(out), row)
    return out


def _distinct(ids: torch.Tensor) -> int:
    """How many different ids ``ids`` holds (a presence map; no sort)."""
    flat = ids.reshape(-1)
    if flat.numel() == 0:
        return 0
    low = int(flat.min())
    present = torch.zeros(int(flat.max()) - low + 1, dtype=torch.bool)
    present[flat - low] = True
    return int(present.sum())


def _fixed_dims(ctx: RuleContext, out_ndim: int) -> list[tuple[int, list[torch.fx.Node]]]:
    """Output dims whose size is fixed in the graph: a literal int (not -1), or a value
    computed from anything but the reshaped tensor's own sizes (with the tensors whose
    channel counts it reads).

    A size read off another tensor with as many channels as the reshaped one (the head
    size ``k.shape[-1] // heads`` that reshapes ``q``) follows the plan when the plan keeps
    their counts equal: the two are recorded as size peers (``node.meta[SIZE_PEERS]``) and
    pinned only if the finished coupling does not keep their counts equal
    (:meth:`~reconvene_fx.coupling.ChannelGraph.pin_unless_same_count`)."""
    node = ctx.node
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if name not in (*_SHAPE_METHODS, "reshape"):
        return []
    spec = node.args[1:]
    if name == "unflatten":
        dim, sizes = ctx.value(node.args[1]) % out_ndim, node.args[2]
        return [(dim + i, []) for i, s in enumerate(sizes) if isinstance(s, int) and s > 1]
    if len(spec) == 1 and isinstance(spec[0], (tuple, list)):
        spec = spec[0]
    source = node.args[0]
    mine = ctx.layout(source)
    peers: dict[torch.fx.Node, Any] = {}
    read: dict[torch.fx.Node, Any] = {}  # the peers of the size being looked at

    def same_count(tensor: torch.fx.Node) -> bool:
        theirs = ctx.layout(tensor)
        if _count(theirs) is None or _count(theirs) != _count(mine):
            return False
        read[tensor] = theirs
        return True

    sizes = [ctx.value(s) if isinstance(s, torch.fx.Node) else s for s in spec]
    fixed = []
    for i, (s, size) in enumerate(zip(spec, sizes, strict=True)):
        if isinstance(size, int) and size > 1:
            read.clear()
            follows, foreign = follows_source(s, source, ctx.layout, same_count)
            if follows:
                peers.update(read)
            else:
                fixed.append((i, foreign))
    if peers:
        why = f"{node.name!r} reshapes them with a size read off another tensor"
        for theirs in peers.values():
            ctx.graph.pin_unless_same_count(_id_set(ctx, mine), _id_set(ctx, theirs), why, node)
        node.meta[SIZE_PEERS] = tuple(peers)
    return fixed


def _count(layout: Any) -> int | None:
    """How many channels a Layout or Scrambled layout holds."""
    if isinstance(layout, Layout):
        return layout.size
    return _distinct(layout.small) if isinstance(layout, Scrambled) else None


def _id_set(ctx: RuleContext, layout: Layout | Scrambled) -> torch.Tensor:
    return ctx.ids(layout) if isinstance(layout, Layout) else layout.small.reshape(-1)


def follows_source(
    arg: Any,
    source: Any,
    channels_of: Callable[[Any], Any],
    same_count: Callable[[torch.fx.Node], bool] | None = None,
) -> tuple[bool, list[torch.fx.Node]]:
    """Whether a shape argument of a reshape of ``source`` is computed from the sizes of
    ``source`` itself (``c // groups`` with ``c = x.size(1)``), or from the channel count
    of another value of the same channels (the input of a pass-through op), so that it
    follows the pruned channel count (a whole shape read off such a value, as in
    ``y.view(x.shape)``, follows too); and the other tensors whose channel counts it reads
    (a change of theirs would change it).

    ``channels_of(tensor)`` gives an object with ``space`` and ``dim`` for a tensor with
    channels (a :class:`Layout` while the rules run, a ChannelInfo afterwards). A size
    read off a dim that holds no channels never changes with pruning; a whole shape read
    off another tensor counts as reading its channels. ``same_count(tensor)``, if given,
    says whether the plan keeps ``tensor``'s channel count equal to ``source``'s, so that
    its channel count read counts as ``source``'s own.

    Example:
        >>> g = torch.fx.Graph()
        >>> x = g.placeholder("x")
        >>> c = g.call_method("size", (x, 1))
        >>> follows_source(g.call_function(operator.floordiv, (c, 2)), x, lambda t: None)
        (True, [])
        >>> follows_source(16, x, lambda t: None)
        (False, [])
    """
    if not isinstance(arg, torch.fx.Node):
        return False, []
    mine = channels_of(source)
    stack, seen, foreign = [arg], set(), []
    follows = True
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        read = shape_read(n)
        if read is None and n.op == "call_method" and n.target == "size":
            read = (n.args[0], None)  # a dim given by a computed value: the whole shape
        if read is None:
            if n.op == "call_function" and n.target in ARITHMETIC:
                stack.extend(n.all_input_nodes)
            else:
                follows = False
            continue
        tensor, dim = read
        if tensor is source:
            continue
        theirs = channels_of(tensor)
        holds = getattr(theirs, "dim", None) == dim and dim is not None
        same = getattr(mine, "space", None) is not None and \
            getattr(theirs, "space", None) == mine.space  # fmt: skip
        if same and (holds or dim is None):
            continue  # the same channels (and other dims), read off another value
        if same_count is not None and (holds or dim is None) and same_count(tensor):
            continue  # another tensor whose count the plan keeps equal to the source's
        follows = False
        if theirs is not None and (dim is None or not hasattr(theirs, "dim") or holds):
            foreign.append(tensor)  # its channel count: pruning it would change the size
    return follows, foreign


@DEFAULT_RULES.function(*_FUNCTIONS)
@DEFAULT_RULES.method(*_METHODS)
@DEFAULT_RULES.module(nn.Flatten, nn.Unflatten)
def data_movement(ctx: RuleContext) -> Any:
    """Run the op on channel ids and describe the result (see the module docstring).

    Two cases constrain pruning. A fixed size on a dim that carries channels (the literal
    ``groups`` of ``x.view(n, groups, c // groups, h, w)``, or a size read off another
    tensor, whose channels are then pinned) ties position ``j`` across that dim, so the size
    stays valid. A fixed range of channels (``x[:, 4:20]``, ``x.narrow(1, 4, 16)``, or
    bounds computed from the tensor's own channel count: ``x[:, : x.shape[1] // 2]``) gives
    the output the channels of that range, and ShrinkPass rewrites the bounds to the kept
    positions; any other op that drops channels by position pins its input, because the
    position would not survive pruning. A view of a Linear's features as channels and
    positions (``y.view(-1, 256, 4, 4)``) gives channels whose blocks of features are
    pruned whole.
    """
    node = ctx.node
    source = node.args[0]
    lay = ctx.layout(source)
    in_shape = ctx.shape(source)
    out_shape = ctx.out_shape
    if lay is None:
        return None
    if not isinstance(lay, (Layout, Scrambled)) or in_shape is None or out_shape is None:
        return ctx.boundary()
    if isinstance(lay, Layout):
        window = channel_range(node, lay.dim, len(in_shape), counter(ctx, lay.space))
        if window is not None:
            start, stop = window
            out = ctx.new(stop - start, lay.dim)
            ctx.tie_ids(ctx.ids(out), ctx.ids(lay)[start:stop])
            return out
    ids_in = ctx.id_tensor(lay, in_shape)
    try:
        ids = _apply(ctx, ids_in)
    except (NoValue, RuntimeError, TypeError, IndexError):
        return ctx.boundary()
    if tuple(ids.shape) != tuple(out_shape):
        return ctx.boundary()
    small, varying = _shrink(ids)
    had = lay.size if isinstance(lay, Layout) else _distinct(lay.small)
    if ids.numel() and _distinct(small) != had:
        ctx.pin(lay)
        return ctx.pinned_output() if ids.dim() else None
    fixed = _fixed_dims(ctx, ids.dim())
    if _unfolds_features(ctx, lay, in_shape, varying, fixed):
        return _unfolded(ctx, small)
    for dim, foreign in fixed:
        if dim in varying:
            across = small.movedim(dim, -1).reshape(-1, small.shape[dim])
            ctx.tie_ids(across[:, :1].expand_as(across), across)
            ctx.pin(*[ctx.layout(n) for n in foreign])  # their sizes must not change
    if ids.dim() == 0:
        return None
    return _describe(ctx, small, varying, tuple(ids.shape))


def _unfolds_features(
    ctx: RuleContext,
    lay: Any,
    in_shape: torch.Size,
    varying: list[int],
    fixed: list[tuple[int, list[torch.fx.Node]]],
) -> bool:
    """Whether the node views the features of a ``[n, features]`` tensor (a Linear's
    output) as channels and positions, ``y.view(-1, 256, 4, 4)``: the inverse of a flatten
    before a Linear. The channel count (dim 1) must be a literal, ``-1``, or computed from
    the tensor's own size, so that ShrinkPass can write the kept count."""
    node = ctx.node
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return (
        name in ("view", "reshape")
        and isinstance(lay, Layout)
        and len(in_shape) == 2
        and lay.dim == 1
        and len(varying) >= 2
        and varying == list(range(1, len(varying) + 1))
        and not any(foreign for dim, foreign in fixed if dim == 1)
    )


def _unfolded(ctx: RuleContext, small: torch.Tensor) -> Layout:
    """Channels on dim 1, each the block of features it was unfolded from: the block is
    pruned as one (so a Linear before it loses whole blocks of outputs)."""
    blocks = small.reshape(small.shape[1], -1)
    ctx.tie_ids(blocks[:, :1].expand_as(blocks), blocks)
    out = ctx.new(blocks.shape[0], 1)
    ctx.tie_ids(ctx.ids(out), blocks[:, 0])
    return out


def channel_range(
    node: torch.fx.Node, dim: int, ndim: int, count: Callable[[Any], int | None] | None = None
) -> tuple[int, int] | None:
    """``(start, stop)`` when ``node`` keeps a fixed range of dim ``dim`` and leaves the
    dims before it whole: ``x[:, a:b]`` (step 1, no ``...`` before it) or
    ``x.narrow(dim, start, length)``. None otherwise.

    ``count`` gives the value of a bound, or None when it is not fixed (see
    :func:`counter`); without it only literal ints (and None bounds) are fixed."""
    count = count or literal_int
    size = node.args[0].meta["tensor_meta"].shape[dim]  # type: ignore[union-attr]
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    if name == "narrow" and len(node.args) == 4:
        d, start, length = node.args[1], count(node.args[2]), count(node.args[3])
        if isinstance(d, int) and start is not None and length is not None and d % ndim == dim:
            start %= size
            return (start, start + length) if length < size else None
        return None
    if node.target is not operator.getitem:
        return None
    index = node.args[1]
    index = index if isinstance(index, tuple) else (index,)
    if len(index) <= dim or any(i != slice(None) for i in index[:dim]):
        return None
    entry = index[dim]
    if not isinstance(entry, slice) or entry.step not in (None, 1):
        return None
    bounds = [None if v is None else count(v) for v in (entry.start, entry.stop)]
    given = (entry.start, entry.stop)
    if any(b is None and v is not None for b, v in zip(bounds, given, strict=True)):
        return None
    start, stop, _ = slice(*bounds).indices(size)
    return (start, stop) if 0 < stop - start < size else None


def counter(ctx: RuleContext, space: int) -> Callable[[Any], int | None]:
    """The value of a size argument that cuts channel space ``space``: a literal, or one
    computed from that space's own channel count (``x[:, : x.shape[1] // 2]``), which the
    layers' weights fix as they fix a literal (:func:`~reconvene_fx.rules.sizes.channel_count`).
    ShrinkPass writes the kept count in its place where the computed one would be wrong."""
    return lambda arg: channel_count(arg, space, ctx.layout)


def _apply(ctx: RuleContext, ids_in: torch.Tensor) -> torch.Tensor:
    node = ctx.node
    args = [ids_in, *(_concrete(ctx, a) for a in node.args[1:])]
    kwargs = {k: _concrete(ctx, v) for k, v in node.kwargs.items()}
    if node.op == "call_module":
        module = ctx.module
        if isinstance(module, nn.Flatten):
            return torch.flatten(ids_in, module.start_dim, module.end_dim)
        assert isinstance(module, nn.Unflatten)
        return ids_in.unflatten(module.dim, module.unflattened_size)
    if node.op == "call_method":
        return getattr(ids_in, str(node.target))(*args[1:], **kwargs)
    if node.target is operator.getitem:
        return ids_in[args[1]]
    return node.target(*args, **kwargs)  # type: ignore[operator]


def _concrete(ctx: RuleContext, arg: Any) -> Any:
    """Concrete value of an argument; tensor-valued nodes become zeros of their shape."""

    def one(n: torch.fx.Node) -> Any:
        shape = ctx.shape(n)
        if shape is not None:
            return torch.zeros(shape, dtype=torch.long)
        return ctx.value(n)

    return torch.fx.node.map_aggregate(arg, lambda a: one(a) if isinstance(a, torch.fx.Node) else a)


@DEFAULT_RULES.module(nn.ChannelShuffle)
@DEFAULT_RULES.function(torch.channel_shuffle, torch.native_channel_shuffle)
def channel_shuffle(ctx: RuleContext) -> Any:
    """A permutation of the channels; position ``j`` is tied across the shuffle groups."""
    x = ctx.layout(ctx.node.args[0])
    if ctx.module is not None:
        groups = ctx.module.groups
    else:
        try:
            groups = ctx.value(ctx.arg(1, "groups"))
        except NoValue:
            return ctx.boundary()
    if not isinstance(x, Layout) or x.dim != 1 or not isinstance(groups, int):
        return ctx.boundary()
    ids = ctx.ids(x).view(groups, x.size // groups)
    ctx.tie_ids(ids[:1].expand_as(ids), ids)
    out = ctx.new(x.size, 1)
    ctx.tie_ids(ctx.ids(out), ids.t().reshape(-1))
    return out
