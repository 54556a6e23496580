"""Channel rules for timm's leaf layers (registered lazily: timm is never imported here).

See :mod:`reconvene_fx.layers.timm` for what each layer holds.
"""

from __future__ import annotations

from typing import Any

from .context import RuleContext
from .layers import conv
from .pooling import per_channel_spatial
from .registry import DEFAULT_RULES

__all__ = ["standardized_conv"]


def standardized_conv(ctx: RuleContext) -> Any:
    """A conv whose weight is standardized over each output's inputs: channels flow as
    through a conv; removing inputs changes the standardization (approximate)."""
    out = conv(ctx)
    ctx.approximate("weight standardization is computed over the pruned input channels")
    return out


_LAYERS = "timm.layers"
DEFAULT_RULES.lazy("module", f"{_LAYERS}.conv2d_same", "Conv2dSame", conv)
for _name in ("StdConv2d", "StdConv2dSame", "ScaledStdConv2d", "ScaledStdConv2dSame"):
    DEFAULT_RULES.lazy("module", f"{_LAYERS}.std_conv", _name, standardized_conv)
for _name in ("AvgPool2dSame", "MaxPool2dSame"):
    DEFAULT_RULES.lazy("module", f"{_LAYERS}.pool2d_same", _name, per_channel_spatial)
