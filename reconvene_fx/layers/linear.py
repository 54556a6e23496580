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
        return _rows_then_columns(w, out_idx, in_idx)

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


# rows gathered at a time when slicing both dims: a 4 MB block of the weight's rows
_BLOCK = 1 << 20


def _rows_then_columns(w: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``w[rows][:, cols]`` gathered block of rows by block into the result, so the rows
    taken but not yet narrowed never exceed ``_BLOCK`` elements (``w[rows[:, None], cols]``
    expands both indices to the result's shape: for vgg16's first linear, 400 MB of
    int64 and twice the time).

    Example:
        >>> w = torch.arange(12.0).view(3, 4)
        >>> _rows_then_columns(w, torch.tensor([2, 0]), torch.tensor([1, 3]))
        tensor([[ 9., 11.],
                [ 1.,  3.]])
    """
    out = w.new_empty((rows.numel(), cols.numel()))
    step = max(1, _BLOCK // max(w.shape[1], 1))
    for start in range(0, rows.numel(), step):
        block = w.index_select(0, rows[start : start + step])
        torch.index_select(block, 1, cols, out=out[start : start + step])
    return out
