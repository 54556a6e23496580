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


@dataclass(frozen=True)
class InitScale:
    """How a layer's weights were drawn, measured before it was narrowed: the standard
    deviation and mean of its weight and bias, and its fan-in.

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
            scale = cls(float(weight.float().std()), int(fan_in))
            if isinstance(bias, torch.Tensor) and bias.numel() > 0:
                b = bias.float()
                spread = float(b.std()) if b.numel() > 1 else 0.0
                scale = dataclasses.replace(scale, bias_mean=float(b.mean()), bias_std=spread)
        return scale


def matched_init(module: nn.Module, generator: torch.Generator, before: InitScale) -> None:
    """Redraw a narrowed conv/linear at the scale the model's own initialization gave it.

    Weights ~ N(0, s^2) with ``s = before.weight_std * sqrt(before.fan_in / fan_in)``: the
    original spread, rescaled to the new fan-in, whatever scheme drew the original
    (PyTorch's default, Kaiming fan-out, truncated normal, ...), so a narrowed layer trains
    at the same effective step size as the layers left whole. Biases: the original mean
    and spread, rescaled alike (zero biases stay zero). Nothing else of the module is
    touched.

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
        weight.normal_(0.0, before.weight_std * ratio, generator=generator)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            if before.bias_std > 0:
                bias.normal_(before.bias_mean, before.bias_std * ratio, generator=generator)
            else:
                bias.fill_(before.bias_mean)
