"""SensitivityPass: the unstructured PaI mask at the budget and each layer's sensitivity."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult

from ..budget import Budget, as_budget
from ..config import CompileConfig
from ..layers import module_layer
from ..meta import SENSITIVITY, SENSITIVITY_TABLE, LayerSensitivity, SensitivityTable
from ..scoring.base import check_finite, kth_largest, prunable_weights, run_scorer
from ._base import ReconvenePass

__all__ = ["SensitivityPass", "mask_density"]


def mask_density(budget: float | Budget) -> float:
    """The fraction of prunable weights the unstructured mask keeps for ``budget``.

    The parameter fraction when given, else the FLOPs fraction, else the latency fraction;
    the smallest when several are given (every limit must hold).

    Example:
        >>> mask_density(Budget(params=0.5, flops=0.3))
        0.3
    """
    limits = [v for v in as_budget(budget).limits().values() if v is not None]
    return float(min(limits))


class SensitivityPass(ReconvenePass):
    """Scores every conv/linear weight, keeps the global top-k and rates each layer.

    ``k = N - int((1 - density) N)`` of the ``N`` prunable weights are kept, the density
    from :func:`mask_density`: the highest scores, ties at the threshold (SynFlow's and
    GraSP's exact zeros) broken by larger ``|w|``, so the global density is the budget's.
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
            or a scorer function), ``targets``, ``seed``, ``method_options`` and
            ``progress``.
        keep_scores: keep every weight's score in the meta (composite plans need them; it
            costs a copy of the weights in memory). Default: ``config.composite``.
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

    def __init__(
        self,
        budget: float | Budget,
        *,
        example_inputs: tuple[Any, ...],
        config: CompileConfig | None = None,
        keep_scores: bool | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.config = dataclasses.replace(config or CompileConfig(), **options)
        self.density = mask_density(budget)
        self.budget = as_budget(budget)
        self.example_inputs = tuple(example_inputs)
        self.keep_scores = self.config.composite if keep_scores is None else keep_scores

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        config = self.config
        scores = run_scorer(
            config.method,
            graph_module,
            self.example_inputs,
            config.targets,
            seed=config.seed,
            density=self.density,
            progress=config.progress,
            options=config.method_options,
        )
        method = config.method if isinstance(config.method, str) else getattr(
            config.method, "__name__", repr(config.method))  # fmt: skip
        layers = _rate_layers(graph_module, scores, self.density, self.keep_scores, method)
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
        )
        return PassResult(graph_module, False)


def _rate_layers(
    gm: torch.fx.GraphModule,
    scores: Mapping[str, torch.Tensor],
    density: float,
    keep_scores: bool,
    label: str,
) -> dict[str, LayerSensitivity]:
    """The mask, masses and ratings of every layer. Scores are read layer by layer, never
    concatenated: the threshold's passes, then one pass for masks, masses and the
    positions tied at the threshold (lazy scores are recomputed on each read)."""
    weights = dict(prunable_weights(gm))
    modules = {name: name.rpartition(".")[0] for name in weights}
    names = list(weights)
    threshold, k = _threshold(names, scores, weights, density)
    masks: dict[str, torch.Tensor] = {}
    masses: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    tied: dict[str, torch.Tensor] = {}
    lazy = bool(getattr(scores, "lazy", False))
    for name in names:
        s = scores[name].detach()
        if lazy:
            check_finite(label, name, s)
        if threshold is None:
            masks[name] = torch.ones_like(s, dtype=torch.bool)
        else:
            masks[name] = s > threshold
            at = (s == threshold).view(-1).nonzero().view(-1)
            if at.numel():
                tied[name] = at
        layer = module_layer(modules[name], gm.get_submodule(modules[name]))
        assert layer is not None
        masses[name] = layer.handler.channel_mass(layer, s)
    if tied:
        _break_ties(tied, weights, masks, k)
    kept = {n: int(torch.count_nonzero(m)) for n, m in masks.items()}
    global_density = sum(kept.values()) / max(sum(m.numel() for m in masks.values()), 1)
    layers: dict[str, LayerSensitivity] = {}
    for name in names:
        module_name, mask = modules[name], masks[name]
        layer_density = kept[name] / max(mask.numel(), 1)
        sensitivity = layer_density / global_density if global_density > 0 else 0.0
        layers[module_name] = LayerSensitivity(
            name=module_name,
            density=layer_density,
            sensitivity=sensitivity,
            selected=sensitivity < 1.0,
            kept=kept[name],
            total=mask.numel(),
            mask=mask,
            out_mass=masses[name][0],
            in_mass=masses[name][1],
            scores=scores[name] if keep_scores else None,
        )
    return layers


class _Parts(Sequence[torch.Tensor]):
    """``scores[names[i]]`` in order, read on access (lazy scores stay lazy)."""

    def __init__(self, scores: Mapping[str, torch.Tensor], names: list[str]) -> None:
        self.scores, self.names = scores, names

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        return self.scores[self.names[i]].detach()

    def gather(self, i: int, positions: torch.Tensor) -> torch.Tensor:
        """Part ``i`` at flat ``positions``, without computing all of a lazy part."""
        gather = getattr(self.scores, "gather", None)
        if gather is not None:
            return gather(self.names[i], positions)
        return self[i].reshape(-1)[positions]

    def __len__(self) -> int:
        return len(self.names)


def _threshold(
    names: list[str],
    scores: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    density: float,
) -> tuple[float | None, int]:
    """The k-th largest score, ``k = N - int((1 - density) N)`` of the ``N`` weights
    (None when every weight is kept), and k."""
    sizes = [weights[n].numel() for n in names]
    total = sum(sizes)
    k = total - int((1.0 - density) * total)
    if k >= total or not total:
        return None, k
    return kth_largest(_Parts(scores, names), k, sizes=sizes), k


def _break_ties(
    tied: dict[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    k: int,
) -> None:
    """Add to ``masks`` (which hold the scores above the threshold) the positions ``tied``
    at it with the largest ``|w|`` (then by position), until exactly ``k`` are kept."""
    need = k - sum(int(torch.count_nonzero(m)) for m in masks.values())
    if need <= 0:
        return
    order = list(tied.items())
    magnitude = torch.cat([weights[n].detach().view(-1)[at].abs() for n, at in order])
    chosen = torch.zeros(magnitude.numel(), dtype=torch.bool)
    chosen[torch.sort(magnitude, descending=True, stable=True).indices[:need]] = True
    for (n, at), pick in zip(order, chosen.split([at.numel() for _, at in order]), strict=True):
        masks[n].view(-1)[at[pick]] = True
