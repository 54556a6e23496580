"""Parameter and MAC counts: of a real model, and of a planned model as channels go."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from .layers import Layer, LayerRegistry, consumed_input, layer_calls
from .meta import CHANNELS, TENSOR_META, ChannelInfo

__all__ = ["LayerCosts", "count_macs", "count_params"]


def count_params(model: nn.Module) -> int:
    """Parameters of ``model``, shared ones counted once."""
    return sum(p.numel() for p in model.parameters())


def count_macs(gm: torch.fx.GraphModule, layers: LayerRegistry | None = None) -> int:
    """Multiply-accumulates of the conv and linear calls of ``gm`` (needs ShapePass): of
    the layers ``layers`` knows (default the built-in handlers)."""
    total = 0
    for node, layer in layer_calls(gm, layers):
        meta = node.meta.get(TENSOR_META)
        if isinstance(meta, TensorMetadata):
            total += layer.handler.macs(layer, meta.shape)
    return total


_Call = tuple[str, "ChannelInfo | None", "ChannelInfo | None", int]


@dataclass(frozen=True)
class CostedLayer:
    """A layer whose size follows the plan: the channel spaces it consumes and produces."""

    layer: Layer
    in_info: ChannelInfo | None
    out_info: ChannelInfo | None

    @property
    def module(self) -> nn.Module:
        return self.layer.module


class LayerCosts:
    """Parameter and MAC counts of the model for any set of removed atoms, vectorised.

    Built from a graph annotated by ChannelGroupPass. ``evaluate(removed)`` takes a bool
    mask over atoms and returns ``(params, macs)`` of the model with those atoms removed.
    ``layers`` holds every layer whose size can change, by module name, in graph order;
    ``calls`` every conv/linear call counted in MACs, with :meth:`call_widths` giving its
    kept widths. ``registry`` is the layer registry the layers were read with (default
    the built-in handlers); a shrunk candidate of the plan is read with it too.
    """

    def __init__(self, gm: torch.fx.GraphModule, registry: LayerRegistry | None = None) -> None:
        self.registry = registry
        self.layers: dict[str, CostedLayer] = {}
        macs_full = 0
        calls: list[_Call] = []
        self.calls: list[tuple[torch.fx.Node, Layer]] = []
        for node, layer in layer_calls(gm, registry):
            info = _channel_info(node)
            name = layer.name
            if layer.weighted:
                out_meta = node.meta.get(TENSOR_META)
                if not isinstance(out_meta, TensorMetadata):
                    continue
                in_info = consumed_input(node, layer)
                macs = layer.handler.macs(layer, out_meta.shape)
                macs_full += macs
                unit = macs // max(layer.out_channels * (layer.in_channels // layer.groups), 1)
                self.layers.setdefault(name, CostedLayer(layer, in_info, info))
                calls.append((name, in_info, info, unit))
                self.calls.append((node, layer))
            elif info is not None:
                self.layers.setdefault(name, CostedLayer(layer, None, info))
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
            [_param_row(lay.layer, slot(lay.in_info), slot(lay.out_info), 0)
             for lay in self.layers.values()]
        )  # fmt: skip
        self._macs = _Terms.stack(
            [_param_row(self.layers[name].layer, slot(i), slot(o), unit)
             for name, i, o, unit in calls]
        )  # fmt: skip
        self._atoms = torch.cat(atoms) if atoms else torch.zeros(0, dtype=torch.long)
        sizes = torch.tensor([a.numel() for a in atoms], dtype=torch.long)
        self._segment = torch.repeat_interleave(torch.arange(len(atoms)), sizes)
        self._num_slots = len(atoms)
        variable_full = int(self._params.params(sizes).sum())
        self.params_fixed = self.params_full - variable_full

    @property
    def num_atoms(self) -> int:
        """Length of the ``removed`` masks the counts take (atoms of every channel space)."""
        return int(self._atoms.max()) + 1 if self._atoms.numel() else 0

    def _kept_counts(self, removed: torch.Tensor) -> torch.Tensor:
        """Kept atoms per channel space: a scatter-add of the kept flags (~5x faster than
        a bincount of the kept atoms' spaces picked by advanced indexing)."""
        kept = removed.index_select(0, self._atoms).logical_not_().to(torch.long)
        counts = torch.zeros(self._num_slots, dtype=torch.long)
        return counts.index_add_(0, self._segment, kept)

    def evaluate(self, removed: torch.Tensor) -> tuple[int, int]:
        """``(params, macs)`` of the model with the atoms in ``removed`` taken out."""
        counts = self._kept_counts(removed)
        params = self.params_fixed + int(self._params.params(counts).sum())
        return params, int(self._macs.macs(counts).sum())

    def call_widths(self, removed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per entry of ``calls``: kept output channels, and kept input channels per group
        (1 for a depthwise conv), with the atoms in ``removed`` taken out."""
        if self._macs.cols["in_slot"].numel() == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty
        return self._macs.kept(self._kept_counts(removed))

    def layer_params(self, removed: torch.Tensor) -> torch.Tensor:
        """Parameters per entry of ``layers`` (in order) with the atoms in ``removed`` out."""
        return self._params.params(self._kept_counts(removed))

    def untouched(self, removed: torch.Tensor) -> torch.Tensor:
        """Bool per entry of ``layers`` (in order): the layer keeps all its channels."""
        out_whole, in_whole = self.whole_sides(removed)
        return out_whole & in_whole

    def whole_sides(self, removed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bools per entry of ``layers`` (in order): the layer keeps all its output
        channels; it keeps all its input channels."""
        counts = self._kept_counts(removed)
        c = self._params.cols
        if c["in_slot"].numel() == 0:
            empty = torch.zeros(0, dtype=torch.bool)
            return empty, empty
        kout, kept_per_in = self._params.kept(counts)
        return kout == c["out_full"], kept_per_in == c["in_full"] // c["groups"]


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


def _param_row(layer: Layer, in_slot: int, out_slot: int, unit: int) -> _Row:
    return _Row(
        in_slot=in_slot if layer.weighted else -1,
        out_slot=out_slot,
        in_full=layer.in_channels,
        out_full=layer.out_channels,
        groups=layer.groups,
        per_weight=layer.unit,
        bias=int(layer.bias),
        is_norm=not layer.weighted,
        unit=unit,
    )


def _channel_info(node: torch.fx.Node) -> ChannelInfo | None:
    info = node.meta.get(CHANNELS)
    return info if isinstance(info, ChannelInfo) else None
