"""Keys under which the passes write ``node.meta`` and ``gm.meta``, and their value types.

Every key is defined here once. Values are frozen dataclasses; tensors inside them are
never modified after they are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "APPROXIMATE",
    "CHANNELS",
    "KEEP",
    "REPORT",
    "SENSITIVITY",
    "SENSITIVITY_TABLE",
    "TENSOR_META",
    "VALUE",
    "ChannelInfo",
    "ChannelKeep",
    "ConcreteValue",
    "LayerSensitivity",
    "PLAN",
    "PlanSummary",
]

TENSOR_META = "tensor_meta"  # torch.fx ShapeProp's own key
VALUE = "reconvene.value"  # ConcreteValue: a non-tensor result (int, torch.Size, ...)
CHANNELS = "reconvene.channels"  # ChannelInfo, or a tuple of them for tuple-valued nodes
APPROXIMATE = "reconvene.approximate"  # str: why pruning through this node is not exact
KEEP = "reconvene.keep"  # ChannelKeep, or a tuple of them for tuple-valued nodes
REPORT = "reconvene.report"  # gm.meta: PruningReport
SENSITIVITY = "reconvene.sensitivity"  # LayerSensitivity, on conv/linear call_module nodes
SENSITIVITY_TABLE = "reconvene.sensitivity_table"  # gm.meta: analysis.SensitivityTable
PLAN = "reconvene.plan"  # gm.meta: PlanSummary


@dataclass(frozen=True)
class ConcreteValue:
    """A small non-tensor value a node produced on the example inputs (a size, an int)."""

    value: Any


@dataclass(frozen=True, eq=False)
class ChannelInfo:
    """How the channel dimension of one tensor value is coupled to the rest of the graph.

    Attributes:
        space: id of the channel space; nodes whose channels are the same (pass-through ops)
            share a space.
        dim: which dimension of the tensor holds the channels.
        size: number of channels.
        atoms: int64 ``[size]``; channels with the same atom id must be pruned together.
        pinned: bool ``[size]``; channels that may never be pruned (they reach an output, an
            op without a rule, a constant, ...).
        group: id of the coupled group (connected channel spaces) this space belongs to.
    """

    space: int
    dim: int
    size: int
    atoms: torch.Tensor
    pinned: torch.Tensor
    group: int


@dataclass(frozen=True, eq=False)
class ChannelKeep:
    """Which channels of a tensor value the plan keeps: sorted indices into ``size``."""

    index: torch.Tensor
    size: int

    @property
    def narrowed(self) -> bool:
        return int(self.index.numel()) < self.size


@dataclass(frozen=True, eq=False)
class LayerSensitivity:
    """What the PaI scores say about one conv or linear module (written by SensitivityPass).

    Attributes:
        name: the module's qualified name.
        density: fraction of the module's weights inside the global top-k unstructured mask.
        sensitivity: ``density`` relative to the global density (PSE); below 1 means the
            PaI method pruned this layer harder than the model as a whole.
        selected: ``sensitivity < 1``: the Pruning Sensitivity Evaluator picks this layer to
            be narrowed structurally.
        kept: weights inside the mask.
        total: weights of the module.
        mask: bool, the weight's shape: the unstructured mask of this module.
        out_mass: float64 ``[out_channels]``: summed scores per output channel.
        in_mass: float64 ``[in_channels]`` (input features of a Linear): summed scores per
            input channel, over all groups of a grouped conv.
        scores: the weight's PaI scores (its shape) when SensitivityPass was asked to keep
            them (composite plans re-threshold them), else None.
    """

    name: str
    density: float
    sensitivity: float
    selected: bool
    kept: int
    total: int
    mask: torch.Tensor
    out_mass: torch.Tensor
    in_mass: torch.Tensor
    scores: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class PlanSummary:
    """What PlanPass decided, model-wide (``gm.meta[PLAN]``).

    Attributes:
        strategy: the width-allocation strategy used.
        composite: whether the params budget counted masked weights of untouched layers
            as removed.
        removed_atoms: coupled channel sets removed.
        removable_atoms: coupled channel sets that could have been removed.
        latency_before, latency_after: the latency cost of the model before and of the
            chosen plan (seconds, or the unit of a user ``latency_fn``); None unless the
            budget limits latency.
        masks: composite plans: ``{module_name: bool mask}`` for the conv/linear modules
            that keep all their channels (empty otherwise).
    """

    strategy: str
    composite: bool
    removed_atoms: int
    removable_atoms: int
    latency_before: float | None = None
    latency_after: float | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
