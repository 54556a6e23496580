"""``analyze``: the per-layer PaI sensitivity table, without changing the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._inputs import check_inputs
from .budget import Budget, as_budget
from .config import CompileConfig
from .layers import LayerRegistry
from .log import progress_to_stderr
from .meta import SENSITIVITY_TABLE, SensitivityTable
from .passes import SensitivityPass, compile_passes, passes_for, run_passes
from .scoring import get_scorer
from .tracing import trace

__all__ = ["SensitivityTable", "analyze"]  # SensitivityTable lives in meta


def analyze(
    model: torch.nn.Module,
    budget: float | Budget,
    example_inputs: tuple[Any, ...] | torch.Tensor,
    *,
    method: str = "magnitude",
    targets: torch.Tensor | None = None,
    data: Any = None,
    max_batches: int | None = 8,
    seed: int = 0,
    progress: bool | None = None,
    method_options: Mapping[str, Any] | None = None,
    keep_scores: bool = False,
    leaf_modules: Sequence[Any] = (),
    concrete_args: dict[str, Any] | None = None,
    layers: LayerRegistry | None = None,
) -> SensitivityTable:
    """Score ``model`` with a PaI method and rate every conv/linear layer; nothing is pruned.

    Traces the model and runs the passes of :func:`~reconvene_fx.compile` that the
    sensitivity table needs (:func:`~reconvene_fx.passes.passes_for`: ShapePass,
    LiftLayersPass, :class:`~reconvene_fx.passes.SensitivityPass`). The caller's model
    is not modified (scorers use detached copies of the weights; training flags are
    restored).

    Args:
        model: an ``nn.Module`` that ``torch.fx`` can trace.
        budget: fraction of parameters kept, or a :class:`Budget`; the mask keeps this
            fraction of the prunable (conv and linear) weights.
        example_inputs: a tuple of inputs (or one tensor).
        method: ``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow`` or a registered
            name.
        targets: class indices for SNIP/GraSP; drawn with ``seed`` when None.
        data: labelled batches for SNIP/GraSP, ``(inputs, targets)`` or an iterable of
            them (see :class:`~reconvene_fx.config.CompileConfig`).
        max_batches: at most this many batches of ``data`` are scored; ``None``: all.
        seed: seeds drawn targets and the random scorer.
        progress: ``None`` (default): a progress bar on stderr for scoring that runs
            longer than a few seconds; ``True``: from the start; ``False``: silent.
        method_options: extra keyword arguments for the scorer, e.g. ``{"iterations": 20}``.
        keep_scores: also keep every weight's score (``.layers[name].scores``).
        leaf_modules, concrete_args: passed to tracing (see :func:`reconvene_fx.trace`).
        layers: the layer registry that says which layers are scored (as
            ``compile(layers=...)``; None: the built-in one).

    Example:
        >>> import reconvene_fx as rfx
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(32, 10, 1))
        >>> table = rfx.analyze(net, 0.3, (torch.randn(2, 3, 16, 16),), method="snip")
        >>> sorted(table.layers) == ["0", "2"], abs(table.global_density - 0.3) < 0.01
        (True, True)
        >>> table.layers["0"].selected == (table.layers["0"].density < table.global_density)
        True
    """
    budget = as_budget(budget)
    get_scorer(method)
    example_inputs = check_inputs(model, example_inputs, concrete_args)
    config = CompileConfig(
        method=method,
        targets=targets,
        data=data,
        max_batches=max_batches,
        seed=seed,
        progress=progress,
        method_options=method_options or {},
        leaf_modules=leaf_modules,
        concrete_args=concrete_args,
        layers=layers,
    )
    with progress_to_stderr(progress is True):
        gm = trace(model, leaf_modules=leaf_modules, concrete_args=concrete_args,
                   example_inputs=example_inputs)  # fmt: skip
        passes = passes_for([SENSITIVITY_TABLE], compile_passes(budget, example_inputs, config))
        for p in passes:
            if isinstance(p, SensitivityPass):
                p.keep_scores = keep_scores
                p.keep_masks = True
        run_passes(gm, passes)
    return SENSITIVITY_TABLE.get(gm)
