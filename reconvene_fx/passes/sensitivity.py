"""SensitivityPass: the unstructured PaI mask at the budget and each layer's sensitivity."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from ..budget import Budget, as_budget
from ..config import CompileConfig
from ..errors import ModelError
from ..meta import LIFTED, SENSITIVITY, SENSITIVITY_TABLE, SensitivityTable
from ..scoring.base import prunable_weights, run_scorer
from ..scoring.threshold import break_ties, rate_layers
from ._base import ReconvenePass

# break_ties lives in reconvene_fx.scoring.threshold; re-exported for earlier callers
__all__ = ["SensitivityPass", "break_ties", "mask_density"]


def mask_density(budget: float | Budget) -> float:
    """The fraction of prunable weights the unstructured mask keeps for ``budget``.

    The parameter fraction when given, else the MACs fraction, else the latency fraction;
    the smallest when several are given (every limit must hold).

    Example:
        >>> mask_density(Budget(params=0.5, macs=0.3))
        0.3
    """
    limits = [v for v in as_budget(budget).limits().values() if v is not None]
    return float(min(limits))


class SensitivityPass(ReconvenePass):
    """Scores every conv/linear weight, keeps the global top-k and rates each layer.

    ``k = N - int((1 - density) N)`` of the ``N`` prunable weights are kept, the density
    from :func:`mask_density`: the highest scores, ties at the threshold (SynFlow's and
    GraSP's exact zeros) broken by larger ``|w|``, so the global density is the budget's
    (:func:`reconvene_fx.scoring.threshold.rate_layers` does the thresholding).
    Per layer: ``density`` (its fraction inside the mask), ``sensitivity`` (density / global
    density: the Pruning Sensitivity Evaluator of Reconvene), ``selected`` (``sensitivity <
    1``: pruned harder than the model as a whole, so least sensitive), the mask, and the
    score mass per output and input channel (what PlanPass ranks channels by). Writes a
    :class:`~reconvene_fx.meta.LayerSensitivity` to ``node.meta[SENSITIVITY]`` of every
    conv/linear ``call_module`` node and a :class:`~reconvene_fx.meta.SensitivityTable`
    to ``gm.meta[SENSITIVITY_TABLE]``. Needs no other pass.

    Args:
        budget: the compile budget (see :func:`mask_density`).
        example_inputs: inputs for the data-dependent scorers (SNIP, GraSP; SynFlow takes
            their shape).
        config: the compile options; the pass reads ``method`` (a registered scorer name
            or a scorer function), ``data``, ``max_batches``, ``targets``, ``seed``,
            ``method_options``, ``progress`` and ``layers`` (the layer registry: which
            weights are scored).
        keep_scores: keep every weight's score in the meta (composite plans need them; it
            costs a copy of the weights in memory). Default: ``config.composite``.
        keep_masks: keep every layer's mask in the meta (a bool per weight; composite
            plans need them). Default True; :func:`~reconvene_fx.passes.compile_passes`
            asks for them only for composite plans, and each rating's ``mask`` is then None.
        **options: fields of :class:`~reconvene_fx.config.CompileConfig` that replace
            those of ``config`` (``method="snip"``).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> _ = SensitivityPass(0.5, example_inputs=(torch.randn(1, 3, 8, 8),))(gm)
        >>> table = gm.meta["reconvene.sensitivity_table"]
        >>> round(table.global_density, 2), sorted(table.layers)
        (0.5, ['0', '2'])
    """

    uses = (LIFTED,)
    writes = (SENSITIVITY, SENSITIVITY_TABLE)

    def __init__(
        self,
        budget: float | Budget,
        *,
        example_inputs: tuple[Any, ...],
        config: CompileConfig | None = None,
        keep_scores: bool | None = None,
        keep_masks: bool = True,
        **options: Any,
    ) -> None:
        super().__init__()
        self.config = dataclasses.replace(config or CompileConfig(), **options)
        self.density = mask_density(budget)
        self.budget = as_budget(budget)
        self.example_inputs = tuple(example_inputs)
        self.keep_scores = self.config.composite if keep_scores is None else keep_scores
        self.keep_masks = keep_masks

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        config = self.config
        if next(prunable_weights(graph_module, config.layers), None) is None:
            raise ModelError(
                "the model has no conv or linear layer, so there is nothing to prune; "
                "pass the model whose convolutions should shrink (a leaf module's layers "
                "are not seen: see leaf_modules= and the AutoLeafWarning)"
            )
        stats: dict[str, Any] = {}
        scores = run_scorer(
            config.method,
            graph_module,
            self.example_inputs,
            config.targets,
            seed=config.seed,
            density=self.density,
            progress=config.progress,
            options=config.method_options,
            data=config.data,
            max_batches=config.max_batches,
            stats=stats,
            layers=config.layers,
        )
        method = config.method if isinstance(config.method, str) else getattr(
            config.method, "__name__", repr(config.method))  # fmt: skip
        layers = rate_layers(
            graph_module,
            scores,
            self.density,
            keep_scores=self.keep_scores,
            keep_masks=self.keep_masks or self.config.composite,
            label=method,
            layers=config.layers,
        )
        for node in graph_module.graph.nodes:
            if node.op == "call_module" and str(node.target) in layers:
                node.meta[SENSITIVITY] = layers[str(node.target)]
            else:
                node.meta.pop(SENSITIVITY, None)
        kept = sum(lay.kept for lay in layers.values())
        total = sum(lay.total for lay in layers.values())
        graph_module.meta[SENSITIVITY_TABLE] = SensitivityTable(
            layers=layers,
            global_density=kept / max(total, 1),
            budget=self.budget,
            method=method,
            batches_read=stats.get("batches_read"),
        )
        return PassResult(graph_module, False)
