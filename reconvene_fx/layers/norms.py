"""Normalisation layers: per-channel affine parameters and running statistics."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from ..meta import CHANNELS, TENSOR_META, ChannelInfo
from .base import DEFAULT_LAYERS, Layer, LayerHandler, new_param, take
from .init import InitScale

__all__ = ["NormHandler"]


@DEFAULT_LAYERS.module(
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm,
)  # fmt: skip
class NormHandler(LayerHandler):
    """Every parameter and buffer with one entry per channel is sliced with the channels.

    A LayerNorm's tensors follow the channels only when it normalises the channel dim
    alone (the last one); otherwise the call is not described as a layer.

    Example:
        >>> from reconvene_fx.layers import module_layer
        >>> bn = torch.nn.BatchNorm2d(8)
        >>> lay = module_layer("bn", bn)
        >>> lay.out_channels, lay.params
        (8, 16)
        >>> lay.handler.shrink(lay, None, torch.tensor([0, 3]))
        >>> bn.num_features, tuple(bn.running_mean.shape)
        (2, (2,))
    """

    weighted = False

    def describe(self, name: str, module: nn.Module, node: torch.fx.Node | None) -> Layer | None:
        channels = _channels(module)
        if channels is None or (node is not None and not _follows_channels(module, node)):
            return None
        per_channel = sum(p.numel() for p in module._parameters.values() if p is not None)
        return self.view(
            name,
            module,
            node,
            in_channels=channels,
            out_channels=channels,
            unit=per_channel // max(channels, 1),
            in_dim=-1 if isinstance(module, nn.LayerNorm) else 1,
            out_dim=-1 if isinstance(module, nn.LayerNorm) else 1,
        )

    def shrink(
        self, layer: Layer, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> None:
        m, size = layer.module, layer.out_channels
        idx = out_idx if out_idx is not None else in_idx
        if idx is None:
            return
        for name, p in list(m.named_parameters(recurse=False)):
            keep = idx if p.dim() >= 1 and p.shape[0] == size else None
            setattr(m, name, new_param(take(p, 0, keep), p))
        for name, b in list(m.named_buffers(recurse=False)):
            if b is not None:
                keep = idx if b.dim() >= 1 and b.shape[0] == size else None
                m.register_buffer(name, take(b, 0, keep), persistent=name not in
                                  m._non_persistent_buffers_set)  # fmt: skip
        if isinstance(m, nn.LayerNorm):
            m.normalized_shape = (idx.numel(),)
        elif isinstance(m, nn.GroupNorm):
            m.num_channels = idx.numel()
        else:
            m.num_features = idx.numel()

    def reinit(self, layer: Layer, generator: torch.Generator, before: InitScale | None) -> None:
        """The affine weight and bias keep their sliced initial values (a norm the model
        initialized to zero, the last of a zero-init residual block, stays zero); the
        running statistics start afresh (the layer's input changed).

        Example:
            >>> from reconvene_fx.layers import module_layer
            >>> bn = torch.nn.BatchNorm2d(4)
            >>> with torch.no_grad():
            ...     _ = bn.weight.zero_()
            ...     _ = bn.running_mean.fill_(3.0)
            >>> lay = module_layer("bn", bn)
            >>> lay.handler.reinit(lay, torch.Generator(), None)
            >>> bn.weight.tolist(), bn.running_mean.tolist()
            ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0])
        """
        reset = getattr(layer.module, "reset_running_stats", None)
        if reset is not None and getattr(layer.module, "track_running_stats", False):
            reset()

    def fresh_init(self, layer: Layer, generator: torch.Generator) -> None:
        """Weight 1, bias 0, fresh statistics."""
        reset = getattr(layer.module, "reset_parameters", None)
        if reset is not None:
            reset()


def _channels(m: nn.Module) -> int | None:
    if isinstance(m, nn.GroupNorm):
        return m.num_channels
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[0]) if len(m.normalized_shape) == 1 else None
    return int(m.num_features)


def _follows_channels(m: nn.Module, node: torch.fx.Node) -> bool:
    """A LayerNorm's tensors follow the channels only when it normalises them alone."""
    if not isinstance(m, nn.LayerNorm):
        return True
    info = node.meta.get(CHANNELS)
    meta = node.meta.get(TENSOR_META)
    return (
        isinstance(info, ChannelInfo)
        and isinstance(meta, TensorMetadata)
        and info.dim == len(meta.shape) - 1
        and info.size == m.normalized_shape[0]
    )
