"""The passes of :func:`reconvene_fx.compile`, in order, and a runner that keeps error types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.fx
from torch.fx.passes.infra.pass_base import PassBase

from ..budget import Budget, as_budget
from ..config import CompileConfig
from ..errors import ReconveneError
from .channels import ChannelGroupPass
from .detach import DetachPass
from .lift import LiftLayersPass
from .masks import MaskPass
from .plan import PlanPass
from .report import ReportPass
from .sensitivity import SensitivityPass
from .shape import ShapePass
from .shrink import ShrinkPass

__all__ = ["compile_passes", "run_passes"]


def compile_passes(
    budget: float | Budget,
    example_inputs: tuple[Any, ...],
    config: CompileConfig | None = None,
) -> list[PassBase]:
    """The passes :func:`reconvene_fx.compile` runs, in order, for your own ``PassManager``.

    ShapePass (on meta tensors) -> LiftLayersPass -> ChannelGroupPass -> SensitivityPass ->
    PlanPass ->
    ShrinkPass -> MaskPass -> ReportPass -> DetachPass. Run on ``reconvene_fx.trace(model)``
    they give the model and report ``compile`` gives. ``config.rules`` and ``config.layers``
    (the rule and layer-handler registries) reach every pass that looks either up.

    Example:
        >>> import torch, reconvene_fx as rfx
        >>> from torch.fx.passes.infra.pass_manager import PassManager
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> x = torch.randn(1, 3, 8, 8)
        >>> gm = PassManager(compile_passes(0.5, (x,)))(rfx.trace(net)).graph_module
        >>> rfx.report(gm).params_after <= 0.5 * rfx.report(gm).params_before
        True
    """
    budget = as_budget(budget)
    config = config or CompileConfig()
    example_inputs = tuple(example_inputs)
    return [
        ShapePass(example_inputs, fake=True),
        LiftLayersPass(),
        ChannelGroupPass(config.rules),
        SensitivityPass(budget, example_inputs=example_inputs, config=config),
        PlanPass(budget, example_inputs=example_inputs, config=config),
        ShrinkPass(
            reinit=config.reinit, seed=config.seed, init_fn=config.init_fn, layers=config.layers
        ),
        MaskPass(),
        ReportPass(layers=config.layers),
        DetachPass(),
    ]


def run_passes(gm: torch.fx.GraphModule, passes: Sequence[PassBase]) -> torch.fx.GraphModule:
    """Run ``passes`` in order, as torch.fx's ``PassManager`` does; return the graph module.

    Two differences, both for the caller's sake: the code is regenerated only after a pass
    that changed something and may have edited the graph (``PassManager`` recompiles after
    every pass, ~40 ms each on densenet201; our passes declare ``edits_graph = False``),
    and a failure keeps its type: our own errors (and bad-argument errors) are re-raised
    as they are, anything else as a :class:`~reconvene_fx.errors.ReconveneError` naming
    the pass. ``PassManager(passes)`` gives the same model.

    Example:
        >>> import torch, reconvene_fx as rfx
        >>> from reconvene_fx.passes import ChannelGroupPass
        >>> run_passes(rfx.trace(torch.nn.Conv2d(3, 4, 3)), [ChannelGroupPass()])
        Traceback (most recent call last):
        ...
        reconvene_fx.errors.PassOrderError: ChannelGroupPass needs ShapePass to run first ...
    """
    for p in passes:
        try:
            result = p(gm)
        except (ReconveneError, ValueError, TypeError, NotImplementedError):
            raise
        except Exception as exc:
            raise ReconveneError(f"{type(p).__name__} failed: {exc}") from exc
        if result is not None:
            gm = result.graph_module
            if result.modified and getattr(p, "edits_graph", True):
                gm.recompile()
    return gm
