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

        # parameters: one row per module; MACs: one row per call (shared modules repeat)
        self._params = _Terms.stack(
            [_param_row(lay.module, slot(lay.in_info), slot(lay.out_info), 0)
             for lay in self.layers.values()]
        )  # fmt: skip
        self._macs = _Terms.stack(
            [_param_row(self.layers[name].module, slot(i), slot(o), unit)
             for name, i, o, unit in calls]
        )  # fmt: skip
        self._atoms = torch.cat(atoms) if atoms else torch.zeros(0, dtype=torch.long)
        sizes = torch.tensor([a.numel() for a in atoms], dtype=torch.long)
        self._segment = torch.repeat_interleave(torch.arange(len(atoms)), sizes)
        self._num_slots = len(atoms)
        variable_full = int(self._params.params(sizes).sum())
        self.params_fixed = self.params_full - variable_full

    def _kept_counts(self, removed: torch.Tensor) -> torch.Tensor:
        kept = ~removed[self._atoms]
        return torch.bincount(self._segment[kept], minlength=self._num_slots)

    def evaluate(self, removed: torch.Tensor) -> tuple[int, int]:
        """``(params, macs)`` of the model with the atoms in ``removed`` taken out."""
        counts = self._kept_counts(removed)
        params = self.params_fixed + int(self._params.params(counts).sum())
        return params, int(self._macs.macs(counts).sum())

    def untouched(self, removed: torch.Tensor) -> torch.Tensor:
        """Bool per entry of ``layers`` (in order): the layer keeps all its channels."""
        counts = self._kept_counts(removed)
        c = self._params.cols
        if c["in_slot"].numel() == 0:
            return torch.zeros(0, dtype=torch.bool)
        kout, kept_per_in = self._params.kept(counts)
        return (kout == c["out_full"]) & (kept_per_in == c["in_full"] // c["groups"])


@dataclass(frozen=True)
class _Row:
    in_slot: int  # index of the consumed channel space, -1 if fixed
    out_slot: int  # index of the produced (or normalised) channel space, -1 if fixed
    in_full: int
    out_full: int
    groups: int
    per_weight: int  # kernel size (weighted layers) or parameters per channel (norms)
    bias: int  # 1 if a bias per output channel
    is_norm: bool
    unit: int  # MACs per (output channel x input channel per group), for call rows


@dataclass(frozen=True)
class _Terms:
    """Columns of :class:`_Row` as tensors, to count many layers at once."""

    cols: dict[str, torch.Tensor]

    @staticmethod
    def stack(rows: list[_Row]) -> _Terms:
        names = list(_Row.__dataclass_fields__)
        return _Terms({n: torch.tensor([getattr(r, n) for r in rows], dtype=torch.long)
                       for n in names})  # fmt: skip

    def kept(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept output channels and kept input channels per group, per row."""
        c = self.cols
        kin = torch.where(c["in_slot"] >= 0, counts[c["in_slot"].clamp(min=0)], c["in_full"])
        kout = torch.where(c["out_slot"] >= 0, counts[c["out_slot"].clamp(min=0)], c["out_full"])
        per_in = c["in_full"] // c["groups"]
        # grouped convs keep their groups (positions tied); depthwise ones keep 1 per group
        return kout, torch.where(per_in > 1, kin // c["groups"], per_in)

    def params(self, counts: torch.Tensor) -> torch.Tensor:
        c = self.cols
        if c["in_slot"].numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        kout, kept_per_in = self.kept(counts)
        weighted = kout * kept_per_in * c["per_weight"] + kout * c["bias"]
        return torch.where(c["is_norm"] > 0, kout * c["per_weight"], weighted)

    def macs(self, counts: torch.Tensor) -> torch.Tensor:
        if self.cols["in_slot"].numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        kout, kept_per_in = self.kept(counts)
        return kout * kept_per_in * self.cols["unit"]


def _param_row(m: nn.Module, in_slot: int, out_slot: int, unit: int) -> _Row:
    bias = 1 if getattr(m, "bias", None) is not None else 0
    if isinstance(m, CONV_TYPES):
        kernel = int(torch.tensor(m.kernel_size).prod())
        return _Row(in_slot, out_slot, m.in_channels, m.out_channels, m.groups, kernel, bias,
                    False, unit)  # fmt: skip
    if isinstance(m, nn.Linear):
        return _Row(in_slot, out_slot, m.in_features, m.out_features, 1, 1, bias, False, unit)
    per_channel = sum(p.numel() for p in m.parameters(recurse=False))
    channels = _norm_channels(m)
    return _Row(-1, out_slot, channels, channels, 1, per_channel // max(channels, 1), 0, True, 0)


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
