"""Literal sizes in the graph that follow the plan: rewritten to the kept channel counts.

A rule may let channels flow through an op whose arguments hold channel counts as
literals (``x.split([16, 48], 1)``, ``x.split(32, 1)``, ``x[:, 4:20]``,
``gamma.view(1, 64, 1, 1)``) when the counts can be recomputed
from what the plan keeps. After ShrinkPass has sliced the layers, :func:`rewrite_literals`
writes the new counts into the node arguments, so the code matches the new widths.
"""

from __future__ import annotations

import operator
from typing import Any

import torch.fx
from torch.fx.passes.shape_prop import TensorMetadata

from ..errors import CompilerError
from ..meta import CHANNELS, KEEP, TENSOR_META, ChannelInfo, ChannelKeep
from ..rules.concat import literal_split
from ..rules.movement import channel_range

__all__ = ["rewrite_literals"]


def _kept(keep: Any, info: Any) -> int | None:
    if isinstance(keep, ChannelKeep):
        return int(keep.index.numel())
    return info.size if isinstance(info, ChannelInfo) else None


_VIEWS = ("view", "reshape")


def _rewrite_view(node: torch.fx.Node) -> bool:
    """A view/reshape whose output channel dim was narrowed and is given as a literal
    (``gamma.view(1, 64, 1, 1)``, reached by a per-channel parameter): the kept count."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    keep, info = node.meta.get(KEEP), node.meta.get(CHANNELS)
    if name not in _VIEWS or not isinstance(keep, ChannelKeep) or not keep.narrowed:
        return False
    assert isinstance(info, ChannelInfo)
    packed = len(node.args) == 2 and isinstance(node.args[1], (tuple, list))
    sizes = list(node.args[1] if packed else node.args[1:])
    if info.dim >= len(sizes) or sizes[info.dim] != info.size:
        return False  # -1 or a computed size: nothing to rewrite
    sizes[info.dim] = int(keep.index.numel())
    node.args = (node.args[0], type(node.args[1])(sizes)) if packed else (node.args[0], *sizes)
    return True


def _rewrite_range(node: torch.fx.Node) -> bool:
    """A literal channel range (``x[:, a:b]``, ``x.narrow(1, a, n)``) of a narrowed input:
    the bounds of the kept channels inside it."""
    source = node.args[0] if node.args else None
    if not isinstance(source, torch.fx.Node) or node.op not in ("call_function", "call_method"):
        return False
    keep, info = source.meta.get(KEEP), source.meta.get(CHANNELS)
    if not isinstance(keep, ChannelKeep) or not keep.narrowed or not isinstance(info, ChannelInfo):
        return False
    meta = source.meta.get(TENSOR_META)
    if not isinstance(meta, TensorMetadata):
        return False
    window = channel_range(node, info.dim, len(meta.shape))
    if window is None:
        return False
    kept = keep.index
    start = int((kept < window[0]).sum())
    stop = int((kept < window[1]).sum())
    if node.target is operator.getitem:
        index = node.args[1]
        entries = list(index) if isinstance(index, tuple) else [index]
        entries[info.dim] = slice(start, stop)
        node.args = (source, tuple(entries) if isinstance(index, tuple) else entries[0])
    else:
        node.args = (source, node.args[1], start, stop - start)
    return True


def rewrite_literals(gm: torch.fx.GraphModule) -> bool:
    """Write the kept channel counts into literal split sizes along narrowed channel dims,
    and into literal view sizes (read from the outputs' ``KEEP``/``CHANNELS`` meta). True
    if any node changed."""
    changed = False
    for node in gm.graph.nodes:
        if _rewrite_view(node) or _rewrite_range(node):
            changed = True
            continue
        found = literal_split(node)
        keeps, infos = node.meta.get(KEEP), node.meta.get(CHANNELS)
        if found is None or not isinstance(keeps, tuple) or not isinstance(infos, tuple):
            continue
        if not any(isinstance(k, ChannelKeep) and k.narrowed for k in keeps):
            continue
        position, how = found
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        source = node.args[0].meta.get(TENSOR_META) if node.args else None
        if not isinstance(dim, int) or not isinstance(source, TensorMetadata):
            continue
        dim %= len(source.shape)
        if any(isinstance(i, ChannelInfo) and i.dim != dim for i in infos):
            continue  # split along another dim: its sizes do not count channels
        counts = [_kept(k, i) for k, i in zip(keeps, infos, strict=False)]
        if any(c is None for c in counts):
            raise CompilerError(f"split {node.name} narrowed without channel info")
        new: Any = counts[0] if isinstance(how, int) else type(how)(counts)
        if position >= 0:
            args = list(node.args)
            args[position] = new
            node.args = tuple(args)
        else:
            key = "split_size_or_sections" if "split_size_or_sections" in node.kwargs \
                else "split_size"  # fmt: skip
            node.kwargs = {**node.kwargs, key: new}
        changed = True
    return changed
