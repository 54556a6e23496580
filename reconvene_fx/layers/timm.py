"""Layers of timm (registered lazily: timm is never imported here).

timm marks these ``nn.Conv2d`` subclasses as not FX-traceable, so they stay leaves:

* ``Conv2dSame``: a conv with TF "same" padding computed from the input; its tensors are a
  Conv2d's (:class:`~reconvene_fx.layers.conv.ConvHandler`).
* ``StdConv2d``/``ScaledStdConv2d`` (and their ``Same`` variants): weight-standardized
  convs (NF-Nets, BiT). The standardization runs over each output channel's inputs, so
  narrowing the inputs is approximate (the rule says so); the per-output ``gain`` is
  sliced with the outputs and ``scale`` (``gamma / sqrt(fan_in)``) follows the new fan-in.
"""

from __future__ import annotations

import torch

from .base import DEFAULT_LAYERS, Layer, new_param, take
from .conv import ConvHandler

__all__ = ["StdConvHandler"]


class StdConvHandler(ConvHandler):
    """A conv whose weight is standardized per output channel, with an optional per-output
    ``gain`` of shape ``[out, 1, 1, 1]`` and a ``scale`` of ``gamma / sqrt(fan_in)``."""

    def shrink(
        self, layer: Layer, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> None:
        m = layer.module
        fan_in = m.weight[0].numel()
        super().shrink(layer, in_idx, out_idx)
        gain = getattr(m, "gain", None)
        if isinstance(gain, torch.nn.Parameter):
            m.gain = new_param(take(gain, 0, out_idx), gain)
        scale = getattr(m, "scale", None)
        if isinstance(scale, float) and m.weight[0].numel():
            m.scale = scale * (fan_in / m.weight[0].numel()) ** 0.5

    # reinit (RLR): the weight redrawn from its own values, ``gain`` keeps its sliced values

    def fresh_init(self, layer: Layer, generator: torch.Generator) -> None:
        super().fresh_init(layer, generator)
        gain = getattr(layer.module, "gain", None)
        if isinstance(gain, torch.nn.Parameter):
            with torch.no_grad():
                gain.fill_(float(getattr(layer.module, "gain_init", 1.0)))


_LAYERS = "timm.layers"
DEFAULT_LAYERS.lazy("module", f"{_LAYERS}.conv2d_same", "Conv2dSame", ConvHandler())
for _name in ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame"):
    DEFAULT_LAYERS.lazy("module", f"{_LAYERS}.std_conv", _name, StdConvHandler())
