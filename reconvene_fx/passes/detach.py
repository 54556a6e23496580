"""DetachPass: the compiled model owns its tensors; the caller's model stays untouched."""

from __future__ import annotations

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.infra.pass_base import PassResult

from ..meta import BORROWED, BorrowedTensors
from ._base import ReconvenePass

__all__ = ["DetachPass"]


class DetachPass(ReconvenePass):
    """Copies every parameter and buffer the graph module still shares with the model it
    was traced from, so training the result never changes that model.

    :func:`reconvene_fx.trace` shares the model's tensors instead of copying them (the
    passes never write into a tensor; ShrinkPass makes new ones for what it slices), and
    records them in ``gm.meta[BORROWED]``; only the tensors still in use after shrinking
    are copied here, once each (tied weights stay tied). Without that record it does
    nothing.

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> gm = rfx.trace(net)
        >>> gm.get_submodule("0").weight is net[0].weight
        True
        >>> _ = DetachPass()(gm)
        >>> w = gm.get_submodule("0").weight
        >>> w is net[0].weight, torch.equal(w, net[0].weight)
        (False, True)
    """

    uses = (BORROWED,)

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        borrowed = graph_module.meta.pop(BORROWED, None)
        if not isinstance(borrowed, BorrowedTensors):
            return PassResult(graph_module, False)
        ids = borrowed.ids()
        copies: dict[int, torch.Tensor] = {}

        def own(t: torch.Tensor) -> torch.Tensor:
            if id(t) not in copies:
                value = t.detach().clone()
                if isinstance(t, nn.Parameter):
                    value = nn.Parameter(value, requires_grad=t.requires_grad)
                copies[id(t)] = value
            return copies[id(t)]

        for module in graph_module.modules():
            for store in (module._parameters, module._buffers):
                for key, t in store.items():
                    if t is not None and id(t) in ids:
                        store[key] = own(t)
        return PassResult(graph_module, bool(copies))
