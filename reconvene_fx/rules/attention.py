"""The rule for scaled dot-product attention: pruning through the attention blocks of CNNs.

``F.scaled_dot_product_attention(q, k, v)`` computes ``softmax(q @ k.T * scale) @ v`` over
the last two dims (sequence, features). Its channels are the features (the last dim) and
whatever dims before the sequence dim carry them too (the heads, after
``q.view(n, -1, heads, head_dim).transpose(1, 2)``):

* feature ``d`` of ``q`` and feature ``d`` of ``k`` are multiplied together, so they are
  pruned together: the dot products over the kept features are exactly those of the
  original model with the removed features of ``q`` zeroed, as long as ``scale`` stays
  what it was (ShrinkPass writes the original ``1 / sqrt(head_dim)`` into the call, see
  ``reconvene_fx.shrinking.literals``). ``verify`` zeroes them by zeroing the removed
  outputs of the layer that computes ``q`` (:func:`query_layer`); where ``q`` is not a
  layer's output moved into place, its features and ``k``'s are kept;
* the output holds the channels of ``v`` (each output feature is a mix of one feature of
  ``v`` across the sequence);
* ``v`` is tied to ``q`` and ``k`` as well when they have the same shape, so each head
  keeps the same features of all three, which the usual code needs: it reshapes the
  output back with a head size read off ``k`` (``heads * (k.shape[-1] // heads)``).

The head count itself stays: a literal ``heads`` in the view ties feature ``d`` across the
heads (:func:`~reconvene_fx.rules.movement.data_movement`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .context import RuleContext
from .layout import Layout, Scrambled
from .registry import DEFAULT_RULES

__all__ = ["query_layer", "scaled_dot_product_attention"]

_NAMES = ("query", "key", "value")
# ops that only move the query's features into place (each value is read once on the way)
_MOVES = frozenset({
    "view", "reshape", "transpose", "permute", "contiguous", "flatten", "unflatten",
    "unsqueeze", "squeeze", "movedim", "swapaxes", "to", "float", "type_as",
})  # fmt: skip
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _read_once(node: torch.fx.Node) -> bool:
    """Whether one user reads ``node``'s values (others may read its shape or dtype)."""
    reads_values = [
        u for u in node.users
        if not (u.op == "call_function" and u.target is getattr)
        and not (u.op == "call_method" and u.target in ("size", "dim"))
    ]  # fmt: skip
    return len(reads_values) == 1


def query_layer(node: torch.fx.Node) -> str | None:
    """The module whose outputs are the features of attention ``node``'s query, moved into
    place by views and transposes and read by nothing else (its shape and dtype may be);
    None when there is none.

    Zeroing that module's removed outputs (weight rows and bias) zeroes the removed
    features of the query, which is what pruning them computes.

    Example:
        >>> class Attend(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.q = torch.nn.Linear(8, 8)
        ...     def forward(self, x):
        ...         q = self.q(x).view(1, -1, 2, 4).transpose(1, 2)
        ...         return F.scaled_dot_product_attention(q, q, q) + q
        >>> gm = torch.fx.symbolic_trace(Attend())
        >>> attend = [n for n in gm.graph.nodes if n.op == "call_function"][-2]
        >>> query_layer(attend) is None  # q is also read by the addition
        True
    """
    gm = node.graph.owning_module
    query = node.args[0] if node.args else node.kwargs.get("query")
    while gm is not None and isinstance(query, torch.fx.Node) and _read_once(query):
        if query.op == "call_module":
            module = gm.get_submodule(str(query.target))
            return str(query.target) if isinstance(module, _LAYERS) else None
        if query.op != "call_method" or query.target not in _MOVES:
            return None
        query = query.args[0]
    return None


def _small_ids(ctx: RuleContext, layout: Any, ndim: int) -> torch.Tensor | None:
    """The channel ids of a q/k/v operand, narrowed to size 1 along every dim where they do
    not vary; None when the operand has no clean channels."""
    if isinstance(layout, Scrambled):
        return layout.small if layout.small.dim() == ndim else None
    if isinstance(layout, Layout):
        view = [1] * ndim
        view[layout.dim] = layout.size
        return ctx.ids(layout).view(view)
    return None


@DEFAULT_RULES.function(F.scaled_dot_product_attention)
def scaled_dot_product_attention(ctx: RuleContext) -> Any:
    """Tie the features of ``q`` and ``k`` (and ``v`` when shaped alike), or pin them when
    ``q`` is not a layer's output (:func:`query_layer`); the output has the channels of
    ``v`` (see the module docstring). An attention mask that carries
    channels, channels along the sequence dim, or operands shaped differently make the
    call a boundary.

    Example:
        >>> import reconvene_fx as rfx
        >>> class Attend(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv = torch.nn.Conv2d(3, 16, 1)
        ...         self.q, self.k, self.v = (torch.nn.Linear(16, 16) for _ in range(3))
        ...         self.out = torch.nn.Linear(16, 10)
        ...     def forward(self, x):
        ...         t = self.conv(x).flatten(2).transpose(1, 2)
        ...         a = F.scaled_dot_product_attention(self.q(t), self.k(t), self.v(t))
        ...         return self.out(a).mean(1)
        >>> gm = rfx.compile(Attend(), 0.5, (torch.randn(1, 3, 4, 4),), method="magnitude")
        >>> gm.q.out_features == gm.k.out_features == gm.v.out_features < 16
        True
    """
    operands = [ctx.arg(i, name) for i, name in enumerate(_NAMES)]
    layouts = [ctx.layout(t) for t in operands]
    shapes = [ctx.shape(t) for t in operands]
    out_shape = ctx.out_shape
    others = [n for n in ctx.tensor_args() if n not in operands]
    if any(ctx.layout(n) is not None for n in others):
        return ctx.boundary("an attention mask with channels")
    if all(lay is None for lay in layouts):
        return None
    if out_shape is None or any(s is None or len(s) < 2 for s in shapes):
        return ctx.boundary()
    ndim = len(shapes[0])  # type: ignore[arg-type]
    smalls = [_small_ids(ctx, lay, ndim) for lay in layouts]
    if any(s is None or s.shape[-2] != 1 for s in smalls) or len(out_shape) != ndim:
        return ctx.boundary("attention whose channels are not the features of q, k and v")
    q, k, v = smalls
    assert q is not None and k is not None and v is not None
    if q.shape != k.shape:
        return ctx.boundary("attention whose q and k carry their channels differently")
    if query_layer(ctx.node) is None:
        ctx.pin(layouts[0], layouts[1], reason="the attention's query is not a layer's output")
    else:
        ctx.tie_ids(q, k)
        if v.shape == q.shape:
            ctx.tie_ids(q, v)
    out = v.expand(*out_shape[:-2], 1, out_shape[-1]) if v.shape[:-2] != out_shape[:-2] else v
    if isinstance(layouts[2], Layout) and out.shape == v.shape:
        return Layout(layouts[2].space, layouts[2].dim, layouts[2].size)
    return Scrambled(out, tuple(out_shape))
