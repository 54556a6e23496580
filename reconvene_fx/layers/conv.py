"""Convolutions (``nn.Conv1d/2d/3d``: grouped and depthwise included) and transposed
convolutions (``groups == 1``)."""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn as nn

from ..errors import CompilerError
from .base import DEFAULT_LAYERS, Layer, LayerHandler, new_param, take

__all__ = ["ConvHandler", "ConvTransposeHandler"]


@DEFAULT_LAYERS.module(nn.Conv1d, nn.Conv2d, nn.Conv3d)
class ConvHandler(LayerHandler):
    """Weight ``[out, in / groups, *kernel]``; channels on dim 1 of input and output.

    Example:
        >>> from reconvene_fx.layers import module_layer
        >>> lay = module_layer("c", torch.nn.Conv2d(4, 8, 3, groups=2))
        >>> lay.in_channels, lay.out_channels, lay.groups, lay.unit, lay.params
        (4, 8, 2, 9, 152)
    """

    def describe(self, name: str, module: nn.Module, node: torch.fx.Node | None) -> Layer:
        assert isinstance(module, nn.modules.conv._ConvNd)
        return self.view(
            name,
            module,
            node,
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            groups=module.groups,
            unit=math.prod(module.kernel_size),
            bias=module.bias is not None,
        )

    def macs(self, layer: Layer, out_shape: torch.Size) -> int:
        return out_shape.numel() * (layer.in_channels // layer.groups) * layer.unit

    def channel_mass(self, layer: Layer, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # sums run in the scores' dtype: sum(dtype=float64) would copy a layer's scores
        g = layer.groups
        out_mass = scores.flatten(1).sum(1).to(torch.float64)
        # over the outputs first (whole rows added: ~15x faster than one sum over the
        # outputs and the kernel together on a 3x3 conv), then over the kernel
        per_group = scores.reshape(g, layer.out_channels // g, -1).sum(1)
        in_mass = per_group.view(g, layer.in_channels // g, -1).sum(2)
        return out_mass, in_mass.reshape(-1).to(torch.float64)

    def shrink(
        self, layer: Layer, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> None:
        m = layer.module
        assert isinstance(m, nn.modules.conv._ConvNd)
        weight, new_groups = _sliced(layer, m.weight, in_idx, out_idx)
        m.weight = new_param(weight, m.weight)
        if m.bias is not None:
            m.bias = new_param(take(m.bias, 0, out_idx), m.bias)
        kept_in = in_idx.numel() if in_idx is not None else m.in_channels
        m.in_channels, m.out_channels, m.groups = kept_in, weight.shape[0], new_groups

    def slice_weight(
        self,
        layer: Layer,
        weight: torch.Tensor,
        in_idx: torch.Tensor | None,
        out_idx: torch.Tensor | None,
    ) -> torch.Tensor:
        return _sliced(layer, weight, in_idx, out_idx)[0]

    def input_of_weights(self, layer: Layer) -> torch.Tensor:
        """Weight ``[out, in / g, *k]``: element ``(o, j, ...)`` reads input channel
        ``(o // (out / g)) * (in / g) + j``.

        Example:
            >>> from reconvene_fx.layers import module_layer
            >>> lay = module_layer("c", torch.nn.Conv2d(4, 4, 1, groups=2))
            >>> lay.handler.input_of_weights(lay).flatten().tolist()
            [0, 1, 0, 1, 2, 3, 2, 3]
        """
        w = layer.module.weight
        per_in, per_out = layer.in_channels // layer.groups, layer.out_channels // layer.groups
        group = torch.arange(layer.out_channels) // per_out
        index = group[:, None] * per_in + torch.arange(per_in)[None, :]
        return index.view(*index.shape, *([1] * (w.dim() - 2))).expand(w.shape)

    def zero_inputs(self, layer: Layer, removed: torch.Tensor) -> None:
        m = layer.module
        g = layer.groups
        w = m.weight.view(g, layer.out_channels // g, layer.in_channels // g, -1)
        with torch.no_grad():
            w.masked_fill_(removed.view(g, 1, -1, 1), 0.0)

    def fresh_init(self, layer: Layer, generator: torch.Generator) -> None:
        """Kaiming normal (fan-out, ReLU) as torchvision initializes CNNs; zero bias."""
        m = layer.module
        with torch.no_grad():
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                    generator=generator)  # fmt: skip
            if m.bias is not None:
                m.bias.zero_()


def _sliced(
    layer: Layer, weight: torch.Tensor, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """A conv weight ``[out, in / groups, *kernel]`` sliced to the kept channels, and the
    groups of the sliced conv: a depthwise conv keeps whole groups with their inputs; a
    grouped one must keep the same input positions in every group."""
    g, per_in = layer.groups, layer.in_channels // layer.groups
    kept_in = in_idx if in_idx is not None else torch.arange(layer.in_channels)
    # only the inputs narrowed: the one copy is the slice below, not a whole copy first
    only_inputs = out_idx is None and in_idx is not None and per_in > 1
    sliced = weight.detach() if only_inputs else take(weight, 0, out_idx)
    if per_in == 1:  # depthwise (any multiplier): whole groups go with their input
        new_groups = g if g == 1 else kept_in.numel()
        if g > 1 and new_groups * (layer.out_channels // g) != sliced.shape[0]:
            raise CompilerError("depthwise groups lost some but not all of their outputs")
        return sliced, new_groups
    positions = (kept_in % per_in).view(g, -1) if kept_in.numel() % g == 0 else None
    if positions is None or not bool((positions == positions[:1]).all()):
        raise CompilerError("grouped conv keeps different input positions in its groups")
    if in_idx is not None:
        sliced = sliced.index_select(1, positions[0])
    return sliced, g


@DEFAULT_LAYERS.module(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
class ConvTransposeHandler(LayerHandler):
    """Transposed convs (``groups == 1``): weight ``[in, out, *kernel]``, channels on dim 1.
    A grouped one is not described (its channels are left alone).

    Example:
        >>> from reconvene_fx.layers import module_layer
        >>> lay = module_layer("up", torch.nn.ConvTranspose2d(4, 8, 2, stride=2))
        >>> lay.in_channels, lay.out_channels, lay.params
        (4, 8, 136)
    """

    def describe(self, name: str, module: nn.Module, node: torch.fx.Node | None) -> Layer | None:
        assert isinstance(module, nn.modules.conv._ConvTransposeNd)
        if module.groups != 1:
            return None
        return self.view(
            name,
            module,
            node,
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            unit=math.prod(module.kernel_size),
            bias=module.bias is not None,
        )

    def macs(self, layer: Layer, out_shape: torch.Size) -> int:
        # every input pixel scatters in_channels x kernel taps into each output channel:
        # counted per output element, as for a conv of the same kernel
        return out_shape.numel() * layer.in_channels * layer.unit

    def channel_mass(self, layer: Layer, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        per = scores.flatten(2).sum(2)  # [in, out]
        return per.sum(0).to(torch.float64), per.sum(1).to(torch.float64)

    def shrink(
        self, layer: Layer, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> None:
        m = layer.module
        assert isinstance(m, nn.modules.conv._ConvTransposeNd)
        weight = self.slice_weight(layer, m.weight, in_idx, out_idx)
        m.weight = new_param(weight, m.weight)
        if m.bias is not None:
            m.bias = new_param(take(m.bias, 0, out_idx), m.bias)
        m.in_channels, m.out_channels = weight.shape[0], weight.shape[1]

    def slice_weight(
        self,
        layer: Layer,
        weight: torch.Tensor,
        in_idx: torch.Tensor | None,
        out_idx: torch.Tensor | None,
    ) -> torch.Tensor:
        sliced = take(weight, 0, in_idx)
        return sliced if out_idx is None else sliced.index_select(1, out_idx)

    def input_of_weights(self, layer: Layer) -> torch.Tensor:
        w = layer.module.weight  # [in, out, *k]
        index = torch.arange(layer.in_channels)
        return index.view(-1, *([1] * (w.dim() - 1))).expand(w.shape)

    def zero_inputs(self, layer: Layer, removed: torch.Tensor) -> None:
        with torch.no_grad():
            layer.module.weight[removed] = 0.0

    def fresh_init(self, layer: Layer, generator: torch.Generator) -> None:
        """PyTorch's default at the new shape (Kaiming uniform, a=sqrt(5)), zero bias."""
        m = layer.module
        with torch.no_grad():
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                m.bias.zero_()
