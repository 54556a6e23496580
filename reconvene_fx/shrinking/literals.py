"""Sizes in the graph that follow the plan: rewritten to the kept channel counts.

A rule may let channels flow through an op whose arguments hold channel counts as
literals (``x.split([16, 48], 1)``, ``x.split(32, 1)``, ``x[:, 4:20]``,
``gamma.view(1, 64, 1, 1)``) or as values computed from the cut tensor's own channel count
(``x.split([16, x.shape[1] - 16], 1)``, ``x[:, : x.size(1) // 2]``), when the counts can
be recomputed from what the plan keeps. After :func:`~reconvene_fx.shrinking.shrink_layers`
has sliced the layers, :func:`rewrite_literals` writes the new counts into the node
arguments, so the code matches the new widths; a computed size that gives the new count
by itself at run time (``x.split(x.size(1) // 2, 1)`` with both halves kept alike) is
left as it is.

Every other use of a channel count that the plan changed (``t / math.sqrt(t.shape[1])``,
``torch.tensor(c)``, a guard on ``x.shape[1]``, a spatial crop by it) keeps the value it had
in the original model: the narrowed size reads in it are replaced by their original
values, so the compact model computes what the original computed. The same holds for the
implicit ``1 / sqrt(head_dim)`` scale of scaled dot-product attention.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch.fx.passes.shape_prop import TensorMetadata

from ..errors import CompilerError
from ..meta import (
    CHANNELS,
    KEEP,
    SIZE_PEERS,
    TENSOR_META,
    VALUE,
    ChannelInfo,
    ChannelKeep,
    ConcreteValue,
)
from ..rules.concat import literal_split
from ..rules.movement import channel_range, follows_source
from ..rules.sizes import channel_count, evaluate, is_size_node, shape_read

__all__ = ["rewrite_literals"]

_VIEWS = ("view", "reshape")
_RESHAPES = ("view", "reshape", "expand", "unflatten")


def _kept(keep: Any, info: Any) -> int | None:
    if isinstance(keep, ChannelKeep):
        return int(keep.index.numel())
    return info.size if isinstance(info, ChannelInfo) else None


def _name(node: torch.fx.Node) -> str:
    return node.target if node.op == "call_method" else getattr(node.target, "__name__", "")  # type: ignore[return-value]


def _narrowed(node: Any) -> tuple[ChannelKeep, ChannelInfo] | None:
    if not isinstance(node, torch.fx.Node):
        return None
    keep, info = node.meta.get(KEEP), node.meta.get(CHANNELS)
    if isinstance(keep, ChannelKeep) and keep.narrowed and isinstance(info, ChannelInfo):
        return keep, info
    return None


class _Sizes:
    """Size values as they are after shrinking: each tensor's channel dim holds its kept
    count."""

    def __init__(self) -> None:
        self._memo: dict[torch.fx.Node, Any] = {}

    @staticmethod
    def shape(tensor: torch.fx.Node) -> torch.Size:
        meta = tensor.meta[TENSOR_META]
        shape = list(meta.shape)
        found = _narrowed(tensor)
        if found is not None:
            shape[found[1].dim] = int(found[0].index.numel())
        return torch.Size(shape)

    def now(self, arg: Any) -> Any:
        return evaluate(arg, self.shape, self._memo)

    def changed(self, node: Any) -> bool:
        """Whether a size node's value differs after shrinking."""
        if not is_size_node(node) or VALUE not in node.meta:
            return False
        try:
            return bool(self.now(node) != node.meta[VALUE].value)
        except Exception:  # a size arithmetic that fails on the new sizes: keep the old one
            return True

    def follow(self, arg: Any, new: int, default: int | None = None) -> Any:
        """``arg`` if it is a computed size that gives ``new`` after shrinking (or an open
        slice bound, None, when ``new`` is the ``default`` it stands for), else ``new``."""
        if arg is None and new == default:
            return None
        if isinstance(arg, torch.fx.Node):
            try:
                if self.now(arg) == new:
                    return arg
            except Exception:
                pass
        return new

    def frozen(self, arg: Any, before: torch.fx.Node) -> Any:
        """``arg`` with every size read that shrinking changed replaced by its original
        value (new nodes are inserted before ``before`` where part of it still varies)."""
        if isinstance(arg, torch.fx.Node):
            return self._frozen_node(arg, before)
        return torch.fx.node.map_aggregate(
            arg, lambda a: self._frozen_node(a, before) if isinstance(a, torch.fx.Node) else a
        )

    def _frozen_node(self, node: torch.fx.Node, before: torch.fx.Node) -> Any:
        if not self.changed(node):
            return node
        old = node.meta[VALUE].value
        graph = node.graph
        read = shape_read(node)
        if read is not None:
            if read[1] is not None:
                return old
            new = self.shape(read[0])
            dims: list[Any] = []
            for i, (was, now) in enumerate(zip(old, new, strict=True)):
                if was != now:
                    dims.append(was)
                    continue
                with graph.inserting_before(before):
                    dim = graph.call_function(operator.getitem, (node, i))
                dim.meta[VALUE] = ConcreteValue(was)
                dims.append(dim)
            return tuple(dims)
        args = torch.fx.node.map_aggregate(
            node.args, lambda a: self._frozen_node(a, before) if isinstance(a, torch.fx.Node) else a
        )
        kwargs = torch.fx.node.map_aggregate(
            node.kwargs,
            lambda a: self._frozen_node(a, before) if isinstance(a, torch.fx.Node) else a,
        )
        found: list[torch.fx.Node] = []
        torch.fx.node.map_arg((args, kwargs), found.append)
        if not found:
            return old  # every read in it is a narrowed channel count: the old value
        with graph.inserting_before(before):
            copy = graph.call_function(node.target, args, kwargs)  # type: ignore[arg-type]
        copy.meta = dict(node.meta)
        return copy


def _count(info: ChannelInfo) -> Any:
    """Values of the sizes that cut ``info``'s channels, as ChannelGroupPass read them."""
    return lambda arg: channel_count(arg, info.space, lambda t: t.meta.get(CHANNELS))


def _rewrite_view(node: torch.fx.Node) -> bool:
    """A view/reshape whose output channel dim was narrowed and is given as a literal
    (``gamma.view(1, 64, 1, 1)``, reached by a per-channel parameter): the kept count."""
    keep, info = node.meta.get(KEEP), node.meta.get(CHANNELS)
    if _name(node) not in _VIEWS or not isinstance(keep, ChannelKeep) or not keep.narrowed:
        return False
    assert isinstance(info, ChannelInfo)
    packed = len(node.args) == 2 and isinstance(node.args[1], (tuple, list))
    sizes = list(node.args[1] if packed else node.args[1:])
    if info.dim >= len(sizes) or sizes[info.dim] != info.size:
        return False  # -1 or a computed size: nothing to rewrite
    sizes[info.dim] = int(keep.index.numel())
    node.args = (node.args[0], type(node.args[1])(sizes)) if packed else (node.args[0], *sizes)
    return True


def _range_of(node: torch.fx.Node) -> tuple[ChannelKeep, ChannelInfo, tuple[int, int]] | None:
    """The kept channels of a narrowed input and the fixed range of them ``node`` cuts."""
    if node.op not in ("call_function", "call_method") or not node.args:
        return None
    found = _narrowed(node.args[0])
    meta = node.args[0].meta.get(TENSOR_META) if found is not None else None  # type: ignore[union-attr]
    if found is None or not isinstance(meta, TensorMetadata):
        return None
    keep, info = found
    window = channel_range(node, info.dim, len(meta.shape), _count(info))
    return None if window is None else (keep, info, window)


def _rewrite_range(node: torch.fx.Node, sizes: _Sizes) -> bool:
    """A fixed channel range (``x[:, a:b]``, ``x.narrow(1, a, n)``, ``x[:, : c // 2]``) of
    a narrowed input: the bounds of the kept channels inside it."""
    found = _range_of(node)
    if found is None:
        return False
    keep, info, window = found
    kept = keep.index
    start = int((kept < window[0]).sum())
    stop = int((kept < window[1]).sum())
    source = node.args[0]
    if node.target is operator.getitem:
        index = node.args[1]
        entries = list(index) if isinstance(index, tuple) else [index]
        old = entries[info.dim]
        total = int(kept.numel())
        entries[info.dim] = slice(
            sizes.follow(old.start, start, 0), sizes.follow(old.stop, stop, total)
        )
        node.args = (source, tuple(entries) if isinstance(index, tuple) else entries[0])
    else:
        length = sizes.follow(node.args[3], stop - start)
        node.args = (source, node.args[1], sizes.follow(node.args[2], start), length)
    return True


def _split_of(node: torch.fx.Node) -> tuple[int, tuple[Any, ...], tuple[Any, ...]] | None:
    """``(position of the sizes, keeps, infos)`` of a split with fixed sizes whose pieces
    were narrowed along the dim it cuts."""
    keeps, infos = node.meta.get(KEEP), node.meta.get(CHANNELS)
    if not isinstance(keeps, tuple) or not isinstance(infos, tuple) or not node.args:
        return None
    info = node.args[0].meta.get(CHANNELS) if isinstance(node.args[0], torch.fx.Node) else None
    found = literal_split(node, _count(info)) if isinstance(info, ChannelInfo) else None
    if found is None or not any(isinstance(k, ChannelKeep) and k.narrowed for k in keeps):
        return None
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    source = node.args[0].meta.get(TENSOR_META)  # type: ignore[union-attr]
    if not isinstance(dim, int) or not isinstance(source, TensorMetadata):
        return None
    dim %= len(source.shape)
    if any(isinstance(i, ChannelInfo) and i.dim != dim for i in infos):
        return None  # split along another dim: its sizes do not count channels
    return found[0], keeps, infos


def _rewrite_split(node: torch.fx.Node, sizes: _Sizes) -> bool:
    """Split sizes along a narrowed channel dim: the kept count of each piece."""
    found = _split_of(node)
    if found is None:
        return False
    position, keeps, infos = found
    counts = [_kept(k, i) for k, i in zip(keeps, infos, strict=False)]
    if any(c is None for c in counts):
        raise CompilerError(f"split {node.name} narrowed without channel info")
    key = "split_size_or_sections" if "split_size_or_sections" in node.kwargs else "split_size"
    how = node.args[position] if position >= 0 else node.kwargs[key]
    new: Any
    if isinstance(how, (list, tuple)):
        new = type(how)(sizes.follow(h, c) for h, c in zip(how, counts, strict=True))
    elif len(set(counts[:-1])) == 1 and 0 < counts[-1] <= counts[0]:
        new = sizes.follow(how, counts[0])  # equal pieces, the last one maybe shorter
    else:
        new = list(counts)  # split(5) of 16 channels, narrowed unevenly: the sections
    if position >= 0:
        args = list(node.args)
        args[position] = new
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, key: new}
    return True


def _is_reshape(node: torch.fx.Node) -> bool:
    return node.op in ("call_method", "call_function") and (
        _name(node) in _RESHAPES or node.target is torch.reshape
    )


def _following(node: torch.fx.Node) -> set[Any]:
    """Positions of ``node``'s arguments whose sizes follow the plan by themselves or are
    rewritten to it: an int for a positional argument, a kwarg name, or ``("index", i)``
    for entry ``i`` of a tensor index."""
    if _split_of(node) is not None:
        return {1, "split_size", "split_size_or_sections"}
    found = _range_of(node)
    if found is None:
        return set()
    if node.target is operator.getitem:
        return {("index", found[1].dim)}
    return {2, 3}


def _freeze_values(node: torch.fx.Node, sizes: _Sizes, keep: set[Any]) -> bool:
    """Give every use of a channel count that shrinking changed, other than the sizes that
    follow the plan (at the positions ``keep``, and the sizes of a reshape computed from
    the reshaped tensor's own channel count), the value it had in the original model."""
    if node.op in ("placeholder", "get_attr") or is_size_node(node):
        return False
    uses: list[torch.fx.Node] = []
    torch.fx.node.map_arg((node.args, node.kwargs), uses.append)
    if not any(sizes.changed(n) for n in uses):
        return False
    if _is_reshape(node):
        source = node.args[0]
        peers = node.meta.get(SIZE_PEERS, ())

        def fix(arg: Any) -> Any:
            if isinstance(arg, (tuple, list)):
                return type(arg)(fix(a) for a in arg)
            follows, _ = follows_source(
                arg, source, lambda t: t.meta.get(CHANNELS), peers.__contains__
            )
            return arg if follows else sizes.frozen(arg, node)

        node.args = (source, *(fix(a) for a in node.args[1:]))
        node.kwargs = {k: fix(v) for k, v in node.kwargs.items()}
        return True
    args = list(node.args)
    for i, arg in enumerate(args):
        if i in keep:
            continue
        if i == 1 and node.target is operator.getitem and isinstance(arg, tuple):
            args[i] = tuple(
                entry if ("index", d) in keep else sizes.frozen(entry, node)
                for d, entry in enumerate(arg)
            )
        elif i == 1 and node.target is operator.getitem and ("index", 0) in keep:
            continue
        else:
            args[i] = sizes.frozen(arg, node)
    kwargs = {k: v if k in keep else sizes.frozen(v, node) for k, v in node.kwargs.items()}
    node.args, node.kwargs = tuple(args), kwargs
    return True


def _freeze_attention_scale(node: torch.fx.Node) -> bool:
    """A scaled dot-product attention that leaves its scale implicit (``1 / sqrt(E)`` of
    the query's feature count ``E``, which pruning may change): the original scale,
    written into the call."""
    if node.op != "call_function" or node.target is not F.scaled_dot_product_attention:
        return False
    if len(node.args) > 6 or node.kwargs.get("scale") is not None:
        return False
    query = node.args[0] if node.args else node.kwargs.get("query")
    meta = query.meta.get(TENSOR_META) if isinstance(query, torch.fx.Node) else None
    if not isinstance(meta, TensorMetadata) or not meta.shape:
        return False
    node.kwargs = {**node.kwargs, "scale": 1 / math.sqrt(meta.shape[-1])}
    return True


def rewrite_literals(gm: torch.fx.GraphModule) -> bool:
    """Write the kept channel counts into the sizes of splits and channel ranges along
    narrowed channel dims and into literal view sizes (read from the nodes'
    ``KEEP``/``CHANNELS`` meta); give other uses of a changed channel count their original
    value; drop the size reads left unused and record the new size values. True if any
    node changed."""
    sizes = _Sizes()
    graph = gm.graph
    used = {n for n in graph.nodes if is_size_node(n) and n.users}
    changed = False
    for node in list(graph.nodes):
        following = _following(node)  # read before the rewrite changes the arguments
        if _rewrite_view(node) or _rewrite_range(node, sizes) or _rewrite_split(node, sizes):
            changed = True
        if _freeze_values(node, sizes, following):
            changed = True
        if _freeze_attention_scale(node):
            changed = True
    if not changed:
        return False
    for node in reversed(list(graph.nodes)):
        if node in used and not node.users:
            graph.erase_node(node)
    for node in graph.nodes:
        if is_size_node(node) and sizes.changed(node):
            node.meta[VALUE] = ConcreteValue(sizes.now(node))
    return True
