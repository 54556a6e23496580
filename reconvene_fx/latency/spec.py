"""One conv or linear call at given widths: what the per-layer latency table times."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

__all__ = ["LayerSpec", "layer_spec"]


@dataclass(frozen=True)
class LayerSpec:
    """A conv (``kind="conv"``, channels on dim 1) or linear (``kind="linear"``, features
    on the last dim) call: its input shape (batch included), output channels and geometry.

    Example:
        >>> spec = layer_spec(torch.nn.Conv2d(8, 16, 3, padding=1), (1, 8, 32, 32))
        >>> spec.key()
        'conv|1x8x32x32|16|k3x3|s1x1|p1x1|d1x1|g1|b1'
        >>> spec.with_widths(4, 8, 1).key()
        'conv|1x4x32x32|8|k3x3|s1x1|p1x1|d1x1|g1|b1'
    """

    kind: str
    in_shape: tuple[int, ...]
    out_channels: int
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True

    @property
    def in_channels(self) -> int:
        return self.in_shape[1] if self.kind == "conv" else self.in_shape[-1]

    def key(self) -> str:
        """A stable text key (the table's key on disk)."""

        def dims(values: tuple[int, ...]) -> str:
            return "x".join(str(v) for v in values)

        parts = [self.kind, dims(self.in_shape), str(self.out_channels)]
        if self.kind == "conv":
            geometry = (self.kernel, self.stride, self.padding, self.dilation)
            geometry = zip("kspd", geometry, strict=True)
            parts += [f"{letter}{dims(values)}" for letter, values in geometry]
            parts.append(f"g{self.groups}")
        return "|".join([*parts, f"b{int(self.bias)}"])

    def with_widths(self, in_channels: int, out_channels: int, groups: int) -> LayerSpec:
        """The same call with other channel counts (and groups, for depthwise convs)."""
        shape = list(self.in_shape)
        shape[1 if self.kind == "conv" else -1] = in_channels
        return replace(self, in_shape=tuple(shape), out_channels=out_channels, groups=groups)

    def module(self) -> nn.Module:
        """A fresh module of this geometry (float32, default init)."""
        if self.kind == "linear":
            return nn.Linear(self.in_channels, self.out_channels, bias=self.bias)
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(self.kernel)]
        return conv(self.in_channels, self.out_channels, self.kernel, stride=self.stride,
                    padding=self.padding, dilation=self.dilation, groups=self.groups,
                    bias=self.bias)  # fmt: skip


def layer_spec(module: nn.Module, in_shape: tuple[int, ...]) -> LayerSpec | None:
    """The spec of ``module`` called on an input of ``in_shape``, or None when the table
    cannot time it on its own (transposed, string or non-zero padding, other types)."""
    in_shape = tuple(int(s) for s in in_shape)
    if type(module) is nn.Linear:
        return LayerSpec("linear", in_shape, module.out_features, bias=module.bias is not None)
    if type(module) not in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        return None
    assert isinstance(module, nn.modules.conv._ConvNd)
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        return None
    if len(in_shape) != 2 + len(module.kernel_size):
        return None  # an unbatched call
    return LayerSpec(
        "conv",
        in_shape,
        module.out_channels,
        kernel=tuple(module.kernel_size),
        stride=tuple(module.stride),
        padding=tuple(module.padding),  # type: ignore[arg-type]
        dilation=tuple(module.dilation),
        groups=module.groups,
        bias=module.bias is not None,
    )


def random_input(spec: LayerSpec) -> torch.Tensor:
    """A standard-normal float32 input of the spec's shape (fixed seed)."""
    return torch.randn(spec.in_shape, generator=torch.Generator().manual_seed(0))
