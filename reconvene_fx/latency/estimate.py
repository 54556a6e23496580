"""Predicted latency of a planned model, from the per-layer latency table."""

from __future__ import annotations

import math

import torch
import torch.fx
from torch.fx.passes.shape_prop import TensorMetadata

from ..costs import LayerCosts
from ..meta import TENSOR_META
from .spec import LayerSpec, layer_spec
from .table import LatencyTable

__all__ = ["LatencyEstimate"]

# The table is sampled at multiples of 1/GRID of a layer's width (finer when round_to says
# so) and read between them linearly, so a search that moves every width a little reuses
# the layers it timed before instead of timing each width.
GRID = 16


class LatencyEstimate:
    """Seconds of the model with some channels removed, predicted without running it.

    Each conv/linear call the table can time costs the table's seconds at its kept widths
    (read linearly between samples on a grid of 1/16 of the layer's widths, or of
    ``round_to`` channels when that is coarser); the rest of the model (norms, activations,
    pooling, adds, layers the table cannot time) costs what the whole model measured,
    ``before``, minus its layers at full width, scaled by the share of the layers' output
    activations kept. :class:`~reconvene_fx.passes.PlanPass` corrects what remains of the
    error by measuring the chosen plan.

    Example:
        >>> from reconvene_fx.passes import ChannelGroupPass, ShapePass
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(32, 8, 1))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> x = torch.randn(1, 3, 16, 16)
        >>> _ = ShapePass((x,))(gm); _ = ChannelGroupPass()(gm)
        >>> costs = LayerCosts(gm)
        >>> est = LatencyEstimate(gm, costs, LatencyTable("torch", None, repeats=2), 1.0)
        >>> removed = torch.zeros(costs.num_atoms, dtype=torch.bool)
        >>> abs(est.seconds(removed) - 1.0) < 1e-12  # nothing removed: the measured time
        True
        >>> hidden = [n for n in gm.graph.nodes if n.target == "0"][0]
        >>> removed[hidden.meta["reconvene.channels"].atoms[:16]] = True
        >>> est.seconds(removed) < 1.0
        True
    """

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        costs: LayerCosts,
        table: LatencyTable,
        before: float,
        *,
        round_to: int = 1,
    ) -> None:
        self.costs, self.table, self.round_to = costs, table, round_to
        self.specs = [_spec(node, layer.module) for node, layer in costs.calls]
        spatial = [_out_spatial(node, layer.out_dim) for node, layer in costs.calls]
        self.spatial = torch.tensor(spatial, dtype=torch.float64)
        full_out = torch.tensor([layer.out_channels for _, layer in costs.calls],
                                dtype=torch.float64)  # fmt: skip
        self.activations_full = float((full_out * self.spatial).sum())
        layers_full = sum(table.seconds(s) for s in self.specs if s is not None)
        self.rest = max(before - layers_full, 0.0)

    @property
    def timed_calls(self) -> int:
        """How many conv/linear calls the table times (the others count in the rest)."""
        return sum(s is not None for s in self.specs)

    def seconds(self, removed: torch.Tensor) -> float:
        """Predicted seconds with the atoms in ``removed`` taken out."""
        kout, kin_per_group = self.costs.call_widths(removed)
        total = 0.0
        for spec, out, per_in in zip(self.specs, kout.tolist(), kin_per_group.tolist(),
                                     strict=True):  # fmt: skip
            if spec is not None:
                total += self._layer_seconds(spec, out, per_in)
        kept = float((kout.to(torch.float64) * self.spatial).sum())
        share = kept / self.activations_full if self.activations_full else 1.0
        return total + self.rest * share

    def _layer_seconds(self, spec: LayerSpec, out: int, per_in: int) -> float:
        g = spec.groups
        full_per_in = spec.in_channels // g
        if g > 1 and full_per_in == 1:  # depthwise: groups follow the kept channels
            multiplier = spec.out_channels // g
            return sum(
                w * self.table.seconds(spec.with_widths(groups, groups * multiplier, groups))
                for groups, w in self._bracket(out // multiplier, g)
            )
        # grouped convs keep their groups: widths move by one channel per group, so the
        # grid counts channels per group (a grid point of 7 outputs would not split in 13)
        return sum(
            wi * wo * self.table.seconds(spec.with_widths(i * g, o * g, g))
            for i, wi in self._bracket(per_in, full_per_in, per=g)
            for o, wo in self._bracket(out // g, spec.out_channels // g, per=g)
        )

    def _bracket(self, value: int, full: int, *, per: int = 1) -> list[tuple[int, float]]:
        """Grid points around ``value`` (in units of ``per`` channels) with their linear
        weights."""
        step = max(math.ceil(self.round_to / per), math.ceil(full / GRID))
        if value % step == 0 or value >= full or value < step:
            return [(value, 1.0)]
        low = value // step * step
        high = min(low + step, full)
        t = (value - low) / (high - low)
        return [(low, 1.0 - t), (high, t)]


def _spec(node: torch.fx.Node, module: torch.nn.Module) -> LayerSpec | None:
    if node.op != "call_module" or not node.args or not isinstance(node.args[0], torch.fx.Node):
        return None
    meta = node.args[0].meta.get(TENSOR_META)
    if not isinstance(meta, TensorMetadata):
        return None
    return layer_spec(module, tuple(meta.shape))


def _out_spatial(node: torch.fx.Node, channel_dim: int) -> float:
    """Output elements per channel of a call (conv: batch x spatial; linear: rows)."""
    meta = node.meta.get(TENSOR_META)
    if not isinstance(meta, TensorMetadata) or len(meta.shape) == 0:
        return 0.0
    shape = tuple(meta.shape)
    channels = shape[channel_dim]
    return math.prod(shape) / max(channels, 1)
