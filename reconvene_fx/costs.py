"""Parameter and MAC counts: of a real model, and of a planned model as channels go."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from .meta import CHANNELS, TENSOR_META, ChannelInfo

__all__ = ["LayerCosts", "count_macs", "count_params", "layer_macs"]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm,
)  # fmt: skip


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``, shared ones counted once."""
    return sum(p.numel() for p in model.parameters())


def layer_macs(module: nn.Module, out_meta: TensorMetadata) -> int:
    """Multiply-accumulates of one call of a conv or linear module."""
    out = out_meta.shape
    if isinstance(module, CONV_TYPES):
        kernel = int(torch.tensor(module.kernel_size).prod())
        return out.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def count_macs(gm: torch.fx.GraphModule) -> int:
    """Multiply-accumulates of the conv and linear calls of ``gm`` (needs ShapePass)."""
    total = 0
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(node.meta.get(TENSOR_META), TensorMetadata):
            total += layer_macs(gm.get_submodule(str(node.target)), node.meta[TENSOR_META])
    return total


_Call = tuple[str, "ChannelInfo | None", "ChannelInfo | None", int]


@dataclass(frozen=True)
class _Layer:
    name: str
    module: nn.Module
    in_info: ChannelInfo | None
    out_info: ChannelInfo | None
    macs_per_out_channel_in_group: int  # MACs per (output channel x input-per-group)


class LayerCosts:
    """Parameter and MAC counts of the model for any set of removed atoms, vectorised.

    Built from a graph annotated by ChannelGroupPass. ``evaluate(removed)`` takes a bool
    mask over atoms and returns ``(params, macs)`` of the model with those atoms removed.
    """

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.layers: dict[str, _Layer] = {}
        macs_full = 0
        calls: list[_Call] = []
        for node in gm.graph.nodes:
            if node.op != "call_module":
                continue
            module = gm.get_submodule(str(node.target))
            info = _channel_info(node)
            if isinstance(module, (*CONV_TYPES, nn.Linear)):
                out_meta = node.meta.get(TENSOR_META)
                if not isinstance(out_meta, TensorMetadata):
                    continue
                in_info = _consumed_info(node, module)
                out_ch = module.out_channels if isinstance(module, CONV_TYPES) else (
                    module.out_features)  # fmt: skip
                macs = layer_macs(module, out_meta)
                macs_full += macs
                per_in = _per_in(module)
                unit = macs // max(out_ch * per_in, 1)
                name = str(node.target)
                if name not in self.layers:
                    self.layers[name] = _Layer(name, module, in_info, info, unit)
                calls.append((name, in_info, info, unit))
            elif isinstance(module, NORM_TYPES) and _norm_is_variable(module, info, _shape(node)):
                name = str(node.target)
                if name not in self.layers:
                    self.layers[name] = _Layer(name, module, None, info, 0)
        self.params_full = count_params(gm)
        self.macs_full = macs_full
        self._build(calls)

    def _build(self, calls: list[_Call]) -> None:
        space_index: dict[int, int] = {}
        atoms: list[torch.Tensor] = []

        def slot(info: ChannelInfo | None) -> int:
            if info is None:
                return -1
            if info.space not in space_index:
                space_index[info.space] = len(atoms)
                atoms.append(info.atoms)
            return space_index[info.space]

        # per unique module: parameter formula terms
        p_rows = []
        for layer in self.layers.values():
            m = layer.module
            p_rows.append(_param_row(m, slot(layer.in_info), slot(layer.out_info)))
        m_rows = []
        for name, in_info, out_info, unit in calls:
            m = self.layers[name].module
            row = _param_row(m, slot(in_info), slot(out_info))
            m_rows.append((*row[:5], unit))
        self._atoms = torch.cat(atoms) if atoms else torch.zeros(0, dtype=torch.long)
        sizes = torch.tensor([a.numel() for a in atoms], dtype=torch.long)
        self._segment = torch.repeat_interleave(torch.arange(len(atoms)), sizes)
        self._num_slots = len(atoms)
        self._full_counts = sizes
        cols = list(zip(*p_rows, strict=True)) if p_rows else [()] * 7
        self._p = [torch.tensor(c, dtype=torch.long) for c in cols]
        mcols = list(zip(*m_rows, strict=True)) if m_rows else [()] * 6
        self._m = [torch.tensor(c, dtype=torch.long) for c in mcols]
        self._params_variable_full = int(self._param_terms(self._full_counts).sum())
        self.params_fixed = self.params_full - self._params_variable_full

    def _kept_counts(self, removed: torch.Tensor) -> torch.Tensor:
        kept = ~removed[self._atoms]
        return torch.bincount(self._segment[kept], minlength=self._num_slots)

    def _param_terms(self, counts: torch.Tensor) -> torch.Tensor:
        in_slot, out_slot, in_full, out_full, groups, kernel, extra = self._p
        if in_slot.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        kin = _take(counts, in_slot, in_full)
        kout = _take(counts, out_slot, out_full)
        per_in = in_full // groups
        kept_per_in = torch.where(per_in > 1, kin // groups, per_in)
        # kind encoded in `extra`: >= 0 weighted layer with `extra` bias terms per output;
        # -1 norm layer with `kernel` params per channel
        weighted = kout * kept_per_in * kernel + kout * extra.clamp(min=0)
        norm = kout * kernel
        return torch.where(extra >= 0, weighted, norm)

    def evaluate(self, removed: torch.Tensor) -> tuple[int, int]:
        """``(params, macs)`` of the model with the atoms in ``removed`` taken out."""
        counts = self._kept_counts(removed)
        params = self.params_fixed + int(self._param_terms(counts).sum())
        if self._m[0].numel() == 0:
            return params, 0
        in_slot, out_slot, in_full, out_full, groups, unit = self._m
        kin = _take(counts, in_slot, in_full)
        kout = _take(counts, out_slot, out_full)
        per_in = in_full // groups
        kept_per_in = torch.where(per_in > 1, kin // groups, per_in)
        return params, int((kout * kept_per_in * unit).sum())


def _take(counts: torch.Tensor, slot: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    return torch.where(slot >= 0, counts[slot.clamp(min=0)], full)


def _param_row(m: nn.Module, in_slot: int, out_slot: int) -> tuple[int, ...]:
    if isinstance(m, CONV_TYPES):
        kernel = int(torch.tensor(m.kernel_size).prod())
        bias = 1 if m.bias is not None else 0
        return (in_slot, out_slot, m.in_channels, m.out_channels, m.groups, kernel, bias)
    if isinstance(m, nn.Linear):
        bias = 1 if m.bias is not None else 0
        return (in_slot, out_slot, m.in_features, m.out_features, 1, 1, bias)
    per_channel = sum(p.numel() for p in m.parameters(recurse=False))
    channels = _norm_channels(m)
    return (-1, out_slot, channels, channels, 1, per_channel // max(channels, 1), -1)


def _norm_channels(m: nn.Module) -> int:
    if isinstance(m, nn.GroupNorm):
        return m.num_channels
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[-1])
    return int(m.num_features)


def _norm_is_variable(m: nn.Module, info: ChannelInfo | None, shape: torch.Size | None) -> bool:
    if info is None or not any(True for _ in m.parameters(recurse=False)):
        return False
    if isinstance(m, nn.LayerNorm):
        return (
            len(m.normalized_shape) == 1
            and m.normalized_shape[0] == info.size
            and (info.dim == len(shape) - 1 if shape is not None else False)
        )
    return True


def _shape(node: torch.fx.Node) -> torch.Size | None:
    meta = node.meta.get(TENSOR_META)
    return meta.shape if isinstance(meta, TensorMetadata) else None


def _per_in(m: nn.Module) -> int:
    if isinstance(m, CONV_TYPES):
        return m.in_channels // m.groups
    return m.in_features


def _channel_info(node: torch.fx.Node) -> ChannelInfo | None:
    info = node.meta.get(CHANNELS)
    return info if isinstance(info, ChannelInfo) else None


def _consumed_info(node: torch.fx.Node, module: nn.Module) -> ChannelInfo | None:
    """The channel info of the input a conv/linear consumes, if it can be narrowed."""
    if not node.args or not isinstance(node.args[0], torch.fx.Node):
        return None
    source = node.args[0]
    info = _channel_info(source)
    shape = source.meta.get(TENSOR_META)
    if info is None or not isinstance(shape, TensorMetadata):
        return None
    if isinstance(module, CONV_TYPES):
        ok = info.dim == 1 and info.size == module.in_channels
    else:
        ok = info.dim == len(shape.shape) - 1 and info.size == module.in_features
    return info if ok else None
