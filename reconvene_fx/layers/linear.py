"""``nn.Linear``: features on the last dimension."""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn as nn

from .base import DEFAULT_LAYERS, Layer, LayerHandler, new_param, take

__all__ = ["LinearHandler"]


@DEFAULT_LAYERS.module(nn.Linear)
class LinearHandler(LayerHandler):
    """Weight ``[out_features, in_features]``; features on the last dim.

    Example:
        >>> from reconvene_fx.layers import module_layer
        >>> lay = module_layer("fc", torch.nn.Linear(6, 4))
        >>> lay.in_channels, lay.out_channels, lay.in_dim, lay.params
        (6, 4, -1, 28)
    """

    def describe(self, name: str, module: nn.Module, node: torch.fx.Node | None) -> Layer:
        assert isinstance(module, nn.Linear)
        return self.view(
            name,
            module,
            node,
            in_channels=module.in_features,
            out_channels=module.out_features,
            bias=module.bias is not None,
            in_dim=-1,
            out_dim=-1,
        )

    def macs(self, layer: Layer, out_shape: torch.Size) -> int:
        return out_shape.numel() * layer.in_channels

    def channel_mass(self, layer: Layer, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return scores.sum(1).to(torch.float64), scores.sum(0).to(torch.float64)

    def shrink(
        self, layer: Layer, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> None:
        m = layer.module
        assert isinstance(m, nn.Linear)
        weight = self.slice_weight(layer, m.weight, in_idx, out_idx)
        m.weight = new_param(weight, m.weight)
        if m.bias is not None:
            m.bias = new_param(take(m.bias, 0, out_idx), m.bias)
        m.out_features, m.in_features = weight.shape

    def slice_weight(
        self,
        layer: Layer,
        weight: torch.Tensor,
        in_idx: torch.Tensor | None,
        out_idx: torch.Tensor | None,
    ) -> torch.Tensor:
        w = weight.detach()
        if in_idx is None:
            return take(w, 0, out_idx)
        if out_idx is None:
            return w.index_select(1, in_idx)
        return w[out_idx[:, None], in_idx]  # one gather, not two copies

    def input_of_weights(self, layer: Layer) -> torch.Tensor:
        return torch.arange(layer.in_channels).expand(layer.module.weight.shape)

    def zero_inputs(self, layer: Layer, removed: torch.Tensor) -> None:
        with torch.no_grad():
            layer.module.weight[:, removed] = 0.0

    def fresh_init(self, layer: Layer, generator: torch.Generator) -> None:
        """PyTorch's default at the new fan-in: Kaiming uniform (a=sqrt(5)), uniform bias."""
        m = layer.module
        with torch.no_grad():
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1 / math.sqrt(m.in_features) if m.in_features else 0
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
