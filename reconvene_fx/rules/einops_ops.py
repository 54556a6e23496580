"""Rules for einops' ``rearrange``, ``repeat`` and ``reduce`` (and its ``Rearrange`` and
``Reduce`` layers).

einops is not a dependency: the rules are registered lazily (known once the model has
imported einops), and the tracer keeps these functions as single calls
(:func:`reconvene_fx.tracing.trace`). Each rule runs the very call on a tensor of channel
ids, as :func:`~reconvene_fx.rules.movement.data_movement` does, and reads where the
channels went:

* ``rearrange`` moves channels: ``'b c h w -> b (h w) c'`` puts them last (a Linear after
  it narrows with them), ``'b c (h p) w -> b (c p) h w'`` ties each new channel to the
  channel it comes from, ``'b (g c) h w -> b (c g) h w'`` is a channel shuffle.
* ``repeat`` duplicates channel ids: each copy is tied to its channel.
* ``reduce`` (any string reduction) over axes along which the channel does not change
  (``'b c h w -> b c'``, ``'b c (h 2) (w 2) -> b c h w'``) keeps the channels; over an
  axis that mixes channels (``'b c h w -> b h w'``) it is a boundary.

An axis length given as a keyword (``g=4``) or as a number in the pattern is a literal
size that pruning must keep valid: position ``j`` is tied across that axis wherever it
splits the channels, and the literal is left as it is. A fixed group count
(``'b (g c) h w -> b g c h w', g=4``) keeps ``g`` groups of equal width; a fixed inner
size (``c=16``, pixel shuffle's ``p1=2, p2=2``) makes each block of channels one unit,
pruned whole, and the tensors after it carry one channel per block; a reduction over
such a block (maxout: ``'b (c p) h w -> b c h w', 'max', p=4``) then keeps the channels.
A size computed from a tensor's shape (``c=x.shape[1] // 4``) is fixed the same way:
ShrinkPass writes its original value back. A list of tensors as input, a callable
reduction or a size with no recorded value is a boundary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.fx

from ..errors import ArgumentError
from .context import NoValue, RuleContext
from .layout import Layout, Scrambled
from .movement import _describe, _shrink
from .registry import DEFAULT_RULES

__all__ = ["EINOPS_FUNCTIONS", "EinopsCall", "einops_call", "opened_axes"]

EINOPS_FUNCTIONS = ("rearrange", "repeat", "reduce")
_REDUCTIONS = frozenset({"min", "max", "sum", "mean", "prod", "any", "all"})
_TOKENS = re.compile(r"\.\.\.|…|\(|\)|[^\s()]+")


@dataclass(frozen=True)
class EinopsCall:
    """What one einops call does: ``kind`` is ``rearrange``, ``repeat`` or ``reduce``."""

    kind: str
    pattern: str
    reduction: str | None = None
    axes: dict[str, int] = field(default_factory=dict)

    def run(self, tensor: torch.Tensor) -> torch.Tensor:
        """The call on ``tensor``.

        Example:
            >>> call = EinopsCall("reduce", "b (c p) -> b c", "max", {"p": 2})
            >>> call.run(torch.tensor([[1, 5, 2, 0]]))
            tensor([[5, 2]])
        """
        import einops  # the model that made this call has imported it already

        function = getattr(einops, self.kind)
        if self.kind == "reduce":
            return function(tensor, self.pattern, self.reduction, **self.axes)
        return function(tensor, self.pattern, **self.axes)


def opened_axes(side: str) -> tuple[str, list[str], dict[str, int]]:
    """One side of an einops pattern with its anonymous axes named, its elementary axes
    (composite axes opened, unit axes ``1``/``()`` left out, ``...`` kept) and the lengths
    of the named anonymous axes.

    Raises:
        ArgumentError: the side is malformed (nested or unbalanced parentheses).

    Example:
        >>> opened_axes("b (c 2) 1 h w")
        ('b ( c x0 ) 1 h w', ['b', 'c', 'x0', 'h', 'w'], {'x0': 2})
    """
    tokens = _TOKENS.findall(side)
    out: list[str] = []
    names: list[str] = []
    lengths: dict[str, int] = {}
    taken = set(tokens)
    depth = 0
    for token in tokens:
        if token in ("(", ")"):
            depth += 1 if token == "(" else -1
            if depth not in (0, 1):
                raise ArgumentError(f"einops pattern side {side!r}: nested or unbalanced")
        elif token in ("...", "…"):
            names.append("...")
        elif token.isdecimal() and int(token) > 1:
            name = next(f"x{i}" for i in range(len(tokens) + 1) if f"x{i}" not in taken)
            taken.add(name)
            lengths[name] = int(token)
            names.append(name)
            token = name
        elif token.isidentifier():
            names.append(token)
        out.append(token)
    if depth:
        raise ArgumentError(f"einops pattern side {side!r}: unbalanced parentheses")
    return " ".join(out), names, lengths


def _read_call(ctx: RuleContext) -> EinopsCall | None:
    """The call a node makes, from a function's arguments or a layer's attributes; None
    when it cannot be followed (a callable reduction, an unknown size)."""
    node, module = ctx.node, ctx.module
    if module is not None:
        kind = "reduce" if hasattr(module, "reduction") else "rearrange"
        pattern, reduction = module.pattern, getattr(module, "reduction", None)
        axes = dict(module.axes_lengths)
    else:
        kind = getattr(node.target, "__name__", "")
        if kind not in EINOPS_FUNCTIONS:
            return None
        pattern = ctx.arg(1, "pattern")
        reduction = ctx.arg(2, "reduction") if kind == "reduce" else None
        named = ("tensor", "pattern", "reduction")
        try:
            axes = {k: ctx.value(v) for k, v in node.kwargs.items() if k not in named}
        except NoValue:
            return None
    if not isinstance(pattern, str) or "->" not in pattern:
        return None
    if kind == "reduce" and reduction not in _REDUCTIONS:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in axes.values()):
        return None
    return EinopsCall(kind, pattern, reduction, axes)


def _channel_ids(ctx: RuleContext, call: EinopsCall, ids: torch.Tensor) -> torch.Tensor | None:
    """The call run on the channel ids ``ids``, after tying position ``j`` across every
    axis of fixed length that splits the channels; each element then holds the id of the
    first channel of its unit. None when a reduction mixes units."""
    left, right = call.pattern.split("->")
    left, names, anonymous = opened_axes(left)
    flat = " ".join(names)
    fixed = {**{k: v for k, v in call.axes.items() if k in names}, **anonymous}
    opened = replace(call, kind="rearrange", pattern=f"{left} -> {flat}", axes=fixed).run(ids)
    small, varying = _shrink(opened)
    for name in fixed:
        at = names.index(name)
        dim = at if "..." not in names[:at] else at - len(names) + opened.dim()
        if dim in varying:
            across = small.movedim(dim, -1).reshape(-1, small.shape[dim])
            ctx.tie_ids(across[:, :1].expand_as(across), across)
            small = small.narrow(dim, 0, 1)
    units = small.expand(opened.shape)
    call = replace(call, pattern=f"{flat} -> {right}", axes={**call.axes, **anonymous})
    if call.kind != "reduce":
        return call.run(units)
    high = replace(call, reduction="max").run(units)
    return high if torch.equal(high, replace(call, reduction="min").run(units)) else None


def einops_call(ctx: RuleContext) -> Any:
    """Run an einops call on channel ids and describe the result (see the module
    docstring): a :class:`Layout` where the channels end up along one dim,
    :class:`Scrambled` where they are spread over several, a boundary where the call
    cannot be followed or a reduction mixes channels.
    """
    source = ctx.arg(0, "tensor")
    if isinstance(source, (list, tuple)):
        return ctx.boundary("einops is given a list of tensors")
    lay = ctx.layout(source)
    in_shape, out_shape = ctx.shape(source), ctx.out_shape
    if lay is None:
        return None
    if not isinstance(lay, (Layout, Scrambled)) or in_shape is None or out_shape is None:
        return ctx.boundary()
    call = _read_call(ctx)
    if call is None:
        return ctx.boundary("its einops call cannot be followed (sizes or reduction)")
    try:
        ids = _channel_ids(ctx, call, ctx.id_tensor(lay, in_shape))
    except (RuntimeError, ValueError, TypeError, IndexError):  # EinopsError is a RuntimeError
        return ctx.boundary()
    if ids is None:
        return ctx.boundary(f"einops reduce {call.pattern!r} mixes channels")
    if tuple(ids.shape) != tuple(out_shape):
        return ctx.boundary()
    if ids.dim() == 0:
        return None
    small, varying = _shrink(ids)
    return _describe(ctx, small, varying, tuple(ids.shape))


# known once the model has imported einops, without importing it here
for _name in EINOPS_FUNCTIONS:
    DEFAULT_RULES.lazy("function", "einops", _name, einops_call)
for _name in ("Rearrange", "Reduce"):
    DEFAULT_RULES.lazy("module", "einops.layers.torch", _name, einops_call)
