"""MaskPass: composite plans keep the unstructured PaI masks on the untouched layers."""

from __future__ import annotations

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from ..composite import apply_masks
from ..meta import PLAN, SHRINK
from ._base import ReconvenePass

__all__ = ["MaskPass"]


class MaskPass(ReconvenePass):
    """Registers the plan's masks (``PlanSummary.masks``) as weight parametrizations.

    Requires ShrinkPass (the masks have the shapes of the layers that kept all their
    channels). A plan without masks (``composite=False``) leaves the model as it is.
    Masked weights stay zero through training: see :mod:`reconvene_fx.composite`.

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = rfx.compile(net, budget=0.5, example_inputs=(torch.randn(1, 3, 8, 8),),
        ...                  composite=True)
        >>> rfx.report(gm).nonzero_after <= 0.5 * rfx.report(gm).params_before
        True
    """

    reads = (SHRINK,)
    uses = (PLAN,)

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        plan = PLAN.find(graph_module)
        masks = plan.masks if plan is not None else {}
        apply_masks(graph_module, masks)
        return PassResult(graph_module, bool(masks))
