"""ShrinkPass: rewrite layers to the kept channels (the only pass that changes the model)."""

from __future__ import annotations

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from ..layers import LayerRegistry
from ..layers.init import InitScale, matched_init
from ..layers.reinit import InitFn, torchvision_init
from ..meta import KEEP, PLAN, SHRINK, TENSOR_META, VALUE
from ..shrinking import shrink_layers
from ._base import ReconvenePass

__all__ = ["InitScale", "ShrinkPass", "default_init", "matched_init", "torchvision_init"]

# torchvision_init, InitScale and matched_init live in reconvene_fx.layers (re-exported)
default_init = torchvision_init  # the name of the default before 0.3 (kept for callers)


class ShrinkPass(ReconvenePass):
    """Slices every conv, linear and norm layer to the kept channels of PlanPass.

    Requires PlanPass. The work is :func:`~reconvene_fx.shrinking.shrink_layers`: modules
    stay at their qualified names and keep their tensors' kinds (parameters stay
    parameters); each changed layer gets new tensors (none of the old ones is written to,
    so a graph module that shares modules with another model does not change that model's
    weights); ``groups`` is recomputed. With ``reinit=True`` narrowed layers are
    re-initialized from a generator seeded with ``seed``: by ``init_fn`` when given, else
    by their layer handler's ``reinit`` at the model's own initialization: convs and
    linears by :func:`matched_init` (a window of their initial values), norms keep
    their sliced affine values (zero-initialized norms stay zero) with fresh statistics. A
    layer that keeps a composite mask (``PlanSummary.masks``) keeps its sliced weights:
    the mask chose them. The shapes in ``tensor_meta`` are updated to the kept channels;
    the sizes that cut narrowed channels (split sizes, channel ranges, literal or computed
    from the tensor's own channel count) are rewritten to the kept counts where they would
    not follow by themselves, and any other use of a narrowed channel count
    (``t / c ** 0.5``) keeps its original value (the only graph edits; the code is
    regenerated); a :class:`~reconvene_fx.meta.ShrinkRecord` is written to
    ``gm.meta[SHRINK]``. ``layers``: the layer registry whose handlers slice the layers
    (None: the built-in :data:`~reconvene_fx.layers.DEFAULT_LAYERS`).

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = rfx.compile(net, budget=0.5, example_inputs=(torch.randn(1, 3, 8, 8),))
        >>> gm.get_submodule("0").out_channels < 16
        True
    """

    def __init__(
        self,
        *,
        reinit: bool = True,
        seed: int = 0,
        init_fn: InitFn | None = None,
        layers: LayerRegistry | None = None,
    ):
        super().__init__()
        self.reinit = reinit
        self.seed = seed
        self.init_fn = init_fn
        self.layers = layers

    reads = (PLAN,)
    uses = (KEEP,)
    writes = (SHRINK,)
    updates = (TENSOR_META, VALUE)

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        plan = PLAN.find(graph_module)
        # composite: a layer that keeps its PaI mask keeps the weights the mask chose
        masked = tuple(plan.masks) if plan is not None else ()
        record = shrink_layers(
            graph_module,
            reinit=self.reinit,
            seed=self.seed,
            init_fn=self.init_fn,
            masked=masked,
            layers=self.layers,
        )
        graph_module.meta[SHRINK] = record
        return PassResult(graph_module, bool(record.sliced))
