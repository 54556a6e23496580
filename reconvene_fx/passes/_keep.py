"""Writing a plan's kept channels into the graph (``node.meta[KEEP]``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from ..meta import CHANNELS, KEEP, ChannelInfo, ChannelKeep

__all__ = ["write_keep"]


def write_keep(gm: torch.fx.GraphModule, removed: torch.Tensor) -> None:
    """Write, on every node with channel info, the channels left when the atoms flagged in
    ``removed`` go."""
    cache: dict[int, ChannelKeep] = {}

    def keep(info: Any) -> Any:
        if isinstance(info, tuple):
            return tuple(keep(i) for i in info)
        if not isinstance(info, ChannelInfo):
            return None
        if info.space not in cache:
            index = (~removed[info.atoms]).nonzero().flatten()
            cache[info.space] = ChannelKeep(index=index, size=info.size)
        return cache[info.space]

    for node in gm.graph.nodes:
        if CHANNELS in node.meta:
            node.meta[KEEP] = keep(node.meta[CHANNELS])
        else:
            node.meta.pop(KEEP, None)
