"""Re-initialization of narrowed layers (RLR) at the model's own initialization.

A narrowed layer is redrawn so that it starts where the model's own initialization would
have started a layer of its new shape: a conv/linear weight keeps the spread it was drawn
with, rescaled to its new fan-in (:func:`matched_init`); its bias keeps its distribution;
per-channel tensors (norm weights and biases, a standardized conv's ``gain``) keep their
sliced initial values, so a norm the model initialized to zero (a zero-init residual
block) stays at zero. :class:`InitScale` is what is measured of a layer before it is
sliced; each layer handler's ``reinit`` applies it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["InitScale", "matched_init"]


@dataclass(frozen=True, eq=False)
class InitScale:
    """How a layer's weights were drawn, measured before it was narrowed: the standard
    deviation and mean of its weight and bias, its fan-in, and (when measured by
    :meth:`of`) the initial values themselves, whose distribution a redraw follows.

    :meth:`of` does not copy the values: for float32 tensors they are flat views of the
    module's own weight and bias, which slicing replaces and never writes into, so they
    keep the initial values at no cost in memory; :func:`matched_init` into the very
    tensors they view (re-initializing a module in place) copies them first. Do not
    write into a measured module's tensors otherwise while its scale is in use.

    Example:
        >>> lin = torch.nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = lin.bias.fill_(0.5)
        >>> InitScale.of(lin).bias_mean  # a single bias keeps its value
        0.5
    """

    weight_std: float
    fan_in: int
    bias_mean: float = 0.0
    bias_std: float = 0.0
    weight_values: torch.Tensor | None = None
    bias_values: torch.Tensor | None = None

    @classmethod
    def of(cls, module: nn.Module) -> InitScale | None:
        """The scale of ``module.weight`` (and ``bias``), or None for a module without a
        weight of at least two dims and two entries."""
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2 or weight.numel() < 2:
            return None
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bias = getattr(module, "bias", None)
        with torch.no_grad():
            w = weight.detach().flatten().float()  # a view (see the class's docstring)
            scale = cls(float(w.std()), int(fan_in), weight_values=w)
            if isinstance(bias, torch.Tensor) and bias.numel() > 0:
                b = bias.detach().flatten().float()
                spread = float(b.std()) if b.numel() > 1 else 0.0
                scale = dataclasses.replace(scale, bias_mean=float(b.mean()), bias_std=spread,
                                            bias_values=b)  # fmt: skip
        return scale


def matched_init(module: nn.Module, generator: torch.Generator, before: InitScale) -> None:
    """Redraw a narrowed conv/linear as the model's own initialization drew it, at the
    new fan-in.

    Each weight is drawn from the layer's own initial values (with replacement), its
    distance from their mean scaled by ``sqrt(before.fan_in / fan_in)``: the original
    distribution, whatever scheme drew it (PyTorch's default uniform, Kaiming fan-out
    normal, truncated normal, ...), with its spread rescaled to the new fan-in, so a
    narrowed layer trains at the same effective step size as the layers left whole; for
    PyTorch's default it is exactly what a fresh layer of the new shape would get. Biases
    alike (zero biases stay zero, constant ones keep their value). Without recorded
    values (an ``InitScale`` built by hand): a normal of the recorded mean and spread.
    Nothing else of the module is touched.

    Example:
        >>> conv = torch.nn.Conv2d(64, 32, 3)
        >>> before = InitScale.of(conv)
        >>> narrow = torch.nn.Conv2d(16, 32, 3)  # a quarter of the fan-in
        >>> matched_init(narrow, torch.Generator().manual_seed(0), before)
        >>> round(float(narrow.weight.detach().std()) / before.weight_std, 1)
        2.0
    """
    weight = module.weight
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
    ratio = math.sqrt(before.fan_in / max(fan_in, 1))
    with torch.no_grad():
        _redraw(weight, before.weight_values, 0.0, before.weight_std, ratio, generator)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            _redraw(bias, before.bias_values, before.bias_mean, before.bias_std, ratio,
                    generator)  # fmt: skip


def _redraw(
    t: torch.Tensor,
    values: torch.Tensor | None,
    mean: float,
    std: float,
    ratio: float,
    generator: torch.Generator,
) -> None:
    """Fill ``t`` from ``values`` (resampled, spread about their mean scaled by ``ratio``),
    or from a normal of ``mean`` and ``std * ratio`` when there are none.

    The picks are drawn as int32 (the same numbers as int64: the generator's stream does
    not depend on the output dtype), ``_PICKS`` at a time (the same numbers as one draw),
    and gathered with ``index_select`` straight into ``t`` when it is a contiguous
    float32 tensor, then spread in place: the same values as
    ``center + (values[pick] - center) * ratio``, op for op, without advanced indexing
    (~10x slower on CPU) or temporaries of ``t``'s size.
    """
    if values is None or values.numel() == 0:
        if std > 0:
            t.normal_(mean, std * ratio, generator=generator)
        else:
            t.fill_(mean)
        return
    if values.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
        values = values.clone()  # they view the tensor being redrawn (see InitScale)
    center = values.mean()
    kind = torch.int32 if values.numel() < 2**31 else torch.int64
    direct = t.dtype == values.dtype and t.is_contiguous() and t.device == values.device
    out = t.view(-1) if direct else values.new_empty(t.numel())
    flat = values.view(-1)
    for start in range(0, t.numel(), _PICKS):  # the same stream as one draw of them all
        part = out[start : start + _PICKS]
        pick = torch.randint(values.numel(), (part.numel(),), generator=generator, dtype=kind)
        torch.index_select(flat, 0, pick.to(values.device), out=part)
    out.sub_(center).mul_(ratio).add_(center)
    if not direct:
        t.copy_(out.view_as(t))


# picks drawn at a time: the generator gives the same numbers in one draw or in several
# (one 32-bit draw each, in order), and 16 MB of them at a time bounds the memory
_PICKS = 1 << 22
