"""Sizes the graph reads off tensors (``x.shape[1]``, ``x.size(1) // 2``) and the Python
arithmetic done on them.

A split size, a slice bound or a ``narrow`` length is often computed from the cut tensor's
own channel count instead of written as a literal (``x.split([16, x.shape[1] - 16], 1)``,
``x[:, : c // 2]``). Such a value is fixed by the layers' weights, like a literal:
:func:`channel_count` gives it to the rules, which treat it as the literal it evaluated
to, and ShrinkPass writes the kept count in its place (``reconvene_fx.shrinking.literals``).
:func:`evaluate` recomputes an expression for other shapes (the narrowed ones), so a
computed size that is right by itself after shrinking is left as it is.
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
from torch.fx.passes.shape_prop import TensorMetadata

from ..errors import CompilerError
from ..meta import TENSOR_META, VALUE

__all__ = [
    "ARITHMETIC", "channel_count", "evaluate", "is_size_node", "literal_int", "shape_read",
]  # fmt: skip

# Python functions that compute on sizes (a node calling them on size values is a size)
ARITHMETIC = frozenset({
    operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
    operator.mod, operator.neg, operator.pos, operator.pow, operator.abs, operator.index,
    operator.getitem, builtins.int, builtins.float, builtins.round, builtins.max,
    builtins.min, builtins.abs, math.floor, math.ceil, math.sqrt, math.trunc,
})  # fmt: skip


def _ndim(node: Any) -> int | None:
    meta = node.meta.get(TENSOR_META) if isinstance(node, torch.fx.Node) else None
    return len(meta.shape) if isinstance(meta, TensorMetadata) else None


def _whole_shape(node: torch.fx.Node) -> torch.fx.Node | None:
    """The tensor whose whole shape ``node`` reads (``x.shape``, ``x.size()``), else None."""
    sized = node.op == "call_method" and node.target == "size"
    if sized and len(node.args) == 1 and "dim" not in node.kwargs:
        return node.args[0] if _ndim(node.args[0]) is not None else None
    if node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",):
        return node.args[0] if _ndim(node.args[0]) is not None else None
    return None


def shape_read(node: Any) -> tuple[torch.fx.Node, int | None] | None:
    """``(tensor, dim)`` when ``node`` reads one size of a tensor (``x.size(1)``,
    ``x.shape[1]``, ``x.size()[-3]``; ``dim`` made non-negative), ``(tensor, None)`` when
    it reads the whole shape (``x.shape``, ``x.size()``), None for any other node.

    Example:
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x.shape[-3] // 2
        >>> gm = torch.fx.symbolic_trace(Net())
        >>> from reconvene_fx.passes import ShapePass
        >>> _ = ShapePass((torch.randn(1, 8, 4, 4),))(gm)
        >>> read = [n for n in gm.graph.nodes if shape_read(n) and shape_read(n)[1] is not None]
        >>> shape_read(read[0])[1]
        1
    """
    if not isinstance(node, torch.fx.Node) or node.op not in ("call_method", "call_function"):
        return None
    whole = _whole_shape(node)
    if whole is not None:
        return whole, None
    if node.op == "call_method" and node.target == "size":
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        ndim = _ndim(node.args[0])
        if isinstance(dim, int) and ndim is not None:
            return node.args[0], dim % ndim
        return None
    if node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
        tensor = _whole_shape(node.args[0])
        index = node.args[1]
        if tensor is not None and isinstance(index, int) and not isinstance(index, bool):
            return tensor, index % (_ndim(tensor) or 1)
    return None


def is_size_node(node: Any) -> bool:
    """Whether ``node`` reads a size or does Python arithmetic on values (not tensors)."""
    if not isinstance(node, torch.fx.Node) or TENSOR_META in node.meta:
        return False
    if shape_read(node) is not None:
        return True
    return node.op == "call_function" and node.target in ARITHMETIC and VALUE in node.meta


def literal_int(value: Any) -> int | None:
    """``value`` if it is a literal int (not a bool), else None.

    Example:
        >>> literal_int(5), literal_int(True), literal_int(None)
        (5, None, None)
    """
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def channel_count(arg: Any, space: int, channels_of: Callable[[Any], Any]) -> int | None:
    """The value of ``arg`` when it is an int literal, or an int computed by Python
    arithmetic from literals and sizes read off channel dims of channel space ``space``
    only (so it is fixed by the layers' weights, as a literal is); None otherwise.

    ``channels_of(tensor)`` gives an object with ``space`` and ``dim`` for a tensor node
    (a :class:`~reconvene_fx.rules.Layout` while the rules run, a
    :class:`~reconvene_fx.meta.ChannelInfo` afterwards), or anything else when it has no
    clean channel dim.

    Example:
        >>> channel_count(5, space=0, channels_of=lambda n: None)
        5
    """
    if not isinstance(arg, torch.fx.Node) or VALUE not in arg.meta:
        return literal_int(arg)
    value = arg.meta[VALUE].value
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    stack, seen = [arg], set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        read = shape_read(node)
        if read is not None:
            tensor, dim = read
            found = channels_of(tensor)
            if dim is None or getattr(found, "space", None) != space or found.dim != dim:
                return None
        elif node.op == "call_function" and node.target in ARITHMETIC:
            stack.extend(node.all_input_nodes)
        else:
            return None
    return value


def evaluate(
    arg: Any, shape_of: Callable[[torch.fx.Node], torch.Size], memo: dict[torch.fx.Node, Any]
) -> Any:
    """The value of ``arg`` (a literal, a node or a container of them) when every tensor
    ``t`` has the shape ``shape_of(t)``: size reads and the arithmetic on them are
    recomputed; any other node gives its recorded value. ``memo`` caches node values.

    Example:
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x.size(1) - 3
        >>> gm = torch.fx.symbolic_trace(Net())
        >>> from reconvene_fx.passes import ShapePass
        >>> _ = ShapePass((torch.randn(1, 8),))(gm)
        >>> sub = [n for n in gm.graph.nodes if n.target is operator.sub][0]
        >>> evaluate(sub, lambda t: torch.Size([1, 5]), {})
        2
    """

    def one(node: torch.fx.Node) -> Any:
        if node in memo:
            return memo[node]
        read = shape_read(node)
        if read is not None:
            shape = shape_of(read[0])
            value = shape if read[1] is None else shape[read[1]]
        elif is_size_node(node):
            args = evaluate(node.args, shape_of, memo)
            kwargs = evaluate(node.kwargs, shape_of, memo)
            value = node.target(*args, **kwargs)  # type: ignore[operator]
        elif VALUE in node.meta:
            value = node.meta[VALUE].value
        else:
            raise CompilerError(f"node {node.name!r} has no recorded value")
        memo[node] = value
        return value

    return torch.fx.node.map_aggregate(arg, lambda a: one(a) if isinstance(a, torch.fx.Node) else a)
