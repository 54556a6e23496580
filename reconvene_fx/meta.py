"""Keys under which the passes write ``node.meta`` and ``gm.meta``, and their value types.

Every key is defined here once. Values are frozen dataclasses; tensors inside them are
never modified after they are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "APPROXIMATE",
    "CHANNELS",
    "KEEP",
    "REPORT",
    "TENSOR_META",
    "VALUE",
    "ChannelInfo",
    "ChannelKeep",
    "ConcreteValue",
]

TENSOR_META = "tensor_meta"  # torch.fx ShapeProp's own key
VALUE = "reconvene.value"  # ConcreteValue: a non-tensor result (int, torch.Size, ...)
CHANNELS = "reconvene.channels"  # ChannelInfo, or a tuple of them for tuple-valued nodes
APPROXIMATE = "reconvene.approximate"  # str: why pruning through this node is not exact
KEEP = "reconvene.keep"  # ChannelKeep, or a tuple of them for tuple-valued nodes
REPORT = "reconvene.report"  # gm.meta: PruningReport


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
