"""``compile``: trace, analyse, plan and shrink a model in one call."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from ._inputs import check_inputs
from ._submodules import SubmoduleCompileWarning, compile_in_place
from .budget import Budget, as_budget
from .config import config_from
from .errors import TraceError, TraceMismatchError
from .log import progress_to_stderr
from .passes import compile_passes, run_passes
from .scoring import get_scorer
from .tracing import trace

__all__ = ["SubmoduleCompileWarning", "compile"]


def compile(
    model: torch.nn.Module,
    budget: float | Budget,
    example_inputs: tuple[Any, ...] | torch.Tensor,
    *,
    progress: bool | None = None,
    **options: Any,
) -> torch.nn.Module:
    """Return a physically smaller ``GraphModule`` of ``model`` that fits ``budget``.

    The caller's model is not modified. Module qualified names are kept: the compact
    ``layer1.0.conv1`` is at ``layer1.0.conv1``. The result carries its
    :class:`~reconvene_fx.PruningReport` (see :func:`reconvene_fx.report`).

    When the model's own ``forward`` cannot be traced (torchvision's detectors iterate
    over their list of images), its largest traceable submodules are compiled in place
    instead, with one :class:`SubmoduleCompileWarning`: the result is then a copy of the
    model, of its type, in which each of those submodules is a ``GraphModule`` whose
    input and output channels are the original's (everything inside them is pruned, on
    one plan for all of them); the rest is left as it was. A submodule is traced on the
    inputs the model gives it in one eval-mode forward on ``example_inputs``; one that
    cannot be traced is searched one level down, one never called is left. The params
    budget is the whole model's (MACs and latency limits apply to the compiled
    submodules). ``rfx.report(result).submodules`` lists what was compiled and what was
    left, and :func:`reconvene_fx.verify` checks each compiled submodule (see
    :mod:`reconvene_fx._submodules`). ``data=`` and ``targets=`` are refused there.

    Args:
        model: an ``nn.Module`` that ``torch.fx`` can trace.
        budget: fraction of parameters kept, in (0, 1], or a :class:`Budget`.
        example_inputs: a tuple of inputs (or one tensor) to run the model on.
        progress: ``None`` (default): a progress bar on stderr for each step that runs
            longer than a few seconds; ``True``: also each pass's time, bars from the
            start; ``False``: silent.
        **options: fields of :class:`~reconvene_fx.config.CompileConfig` (``method``,
            ``strategy``, ``composite``, ``seed``, ``round_to``, ``ignore``, ``reinit``,
            ``targets``, ``method_options``, ``rules`` and ``layers`` (registries of your
            own channel rules and layer handlers), ...).

    The steps: :func:`~reconvene_fx.trace` (which shares the model's tensors instead of
    copying them), then one ``PassManager`` run of
    :func:`~reconvene_fx.passes.compile_passes`: ShapePass, LiftLayersPass (functional
    layers on parameters become modules) and ChannelGroupPass (which channels are
    coupled); SensitivityPass (score every conv/linear weight with ``method``, global
    top-k mask at the budget, per-layer density and sensitivity); PlanPass
    (``strategy``, default ``reconvene``: narrow the least sensitive layers first);
    ShrinkPass (slice, and with ``reinit=True`` re-initialize what was narrowed: RLR);
    MaskPass (``composite=True``: the untouched layers keep their masks); ReportPass;
    DetachPass (copies the tensors still shared with ``model``).

    Raises:
        ArgumentError: ``data=`` or ``targets=`` for a model compiled in place.
        TraceError: the model's own forward cannot be traced and no submodule could be
            compiled in its place, or ``auto_leaf=False`` (a submodule that cannot be
            traced otherwise becomes a leaf, with an
            :class:`~reconvene_fx.tracing.AutoLeafWarning`).
        BudgetError: the budget is below what the unprunable layers keep.

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.BatchNorm2d(32),
        ...                           torch.nn.ReLU(), torch.nn.Conv2d(32, 10, 1))
        >>> gm = rfx.compile(net, budget=0.5, example_inputs=(torch.randn(2, 3, 16, 16),))
        >>> gm.get_submodule("0").out_channels, net[0].out_channels  # a multiple of 8
        (8, 32)
        >>> gm = rfx.compile(net, 0.5, (torch.randn(2, 3, 16, 16),), round_to=1)  # any width
        >>> gm.get_submodule("0").out_channels
        15
    """
    budget = as_budget(budget)
    config = config_from(progress=progress, **options)
    if isinstance(config.method, str):
        get_scorer(config.method)  # fail fast on an unknown method
    example_inputs = check_inputs(model, example_inputs, config.concrete_args)
    with progress_to_stderr(progress is True):
        try:
            gm = trace(model, leaf_modules=config.leaf_modules,
                       concrete_args=config.concrete_args, auto_leaf=config.auto_leaf,
                       example_inputs=example_inputs)  # fmt: skip
        except TraceError as exc:
            if not config.auto_leaf or isinstance(exc, TraceMismatchError):
                raise
            return compile_in_place(model, budget, example_inputs, config, exc)
        return run_passes(gm, compile_passes(budget, example_inputs, config))
