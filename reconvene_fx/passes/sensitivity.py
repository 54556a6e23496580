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
from ..errors import ModelError
from ..layers import module_layer
from ..meta import SENSITIVITY, SENSITIVITY_TABLE, LayerSensitivity, SensitivityTable
from ..scoring.base import check_finite, kth_largest, prunable_weights, run_scorer
from ._base import ReconvenePass

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
            or a scorer function), ``data``, ``max_batches``, ``targets``, ``seed``,
            ``method_options`` and ``progress``.
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
        if next(prunable_weights(graph_module), None) is None:
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
            batches_read=stats.get("batches_read"),
        )
        return PassResult(graph_module, False)


# lazy scores of a larger weight are computed this many elements at a time (by rows):
# vgg16's classifier.0 holds 103 M weights, and |w| of it at once would cost 411 MB
_CHUNK = 1 << 22


def _rate_layers(
    gm: torch.fx.GraphModule,
    scores: Mapping[str, torch.Tensor],
    density: float,
    keep_scores: bool,
    label: str,
) -> dict[str, LayerSensitivity]:
    """The mask, masses and ratings of every layer. Scores are read layer by layer (lazy
    ones in row blocks of at most ``_CHUNK`` elements), never concatenated: the threshold's
    passes, then one pass for masks, masses and the positions tied at the threshold."""
    weights = dict(prunable_weights(gm))
    modules = {name: name.rpartition(".")[0] for name in weights}
    layers_of = {n: module_layer(m, gm.get_submodule(m)) for n, m in modules.items()}
    lazy = bool(getattr(scores, "lazy", False)) and hasattr(scores, "rows")
    pieces = _pieces(weights, layers_of, lazy)
    threshold, k = _threshold(pieces, scores, weights, density)
    by_weight: dict[str, list[_Piece]] = {}
    for piece in pieces:
        by_weight.setdefault(piece[0], []).append(piece)
    masks: dict[str, torch.Tensor] = {}
    masses: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    tied: dict[str, torch.Tensor] = {}
    for name, weight in weights.items():
        layer = layers_of[name]
        assert layer is not None
        mask = torch.empty(weight.shape, dtype=torch.bool)
        out_mass: list[torch.Tensor] = []
        in_mass: torch.Tensor | None = None
        ties: list[torch.Tensor] = []
        for _, start, stop in by_weight[name]:
            s = _read(scores, name, start, stop, weight).detach()
            if lazy:
                check_finite(label, name, s)
            block = mask[start:stop]
            if threshold is None:
                block.fill_(True)
            else:
                torch.gt(s, threshold, out=block)
                at = (s == threshold).view(-1).nonzero().view(-1)
                if at.numel():
                    ties.append(at + start * (weight.numel() // max(weight.shape[0], 1)))
            rows = layer if stop - start == weight.shape[0] else dataclasses.replace(
                layer, out_channels=stop - start)  # fmt: skip
            o, i = layer.handler.channel_mass(rows, s)
            out_mass.append(o)
            in_mass = i if in_mass is None else in_mass + i
        masks[name] = mask
        assert in_mass is not None
        masses[name] = (torch.cat(out_mass) if len(out_mass) > 1 else out_mass[0], in_mass)
        if ties:
            tied[name] = torch.cat(ties)
    if tied:
        break_ties(tied, weights, masks, k)
    kept = {n: int(torch.count_nonzero(m)) for n, m in masks.items()}
    global_density = sum(kept.values()) / max(sum(m.numel() for m in masks.values()), 1)
    layers: dict[str, LayerSensitivity] = {}
    for name in weights:
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


_Piece = tuple[str, int, int]  # weight name, first row, end row


def _pieces(
    weights: Mapping[str, torch.Tensor], layers: Mapping[str, Any], lazy: bool
) -> list[_Piece]:
    """Row blocks to read the scores in: whole weights, except that lazy scores of large
    ungrouped layers are split into blocks of at most ``_CHUNK`` elements."""
    pieces: list[_Piece] = []
    for name, w in weights.items():
        rows = w.shape[0] if w.dim() else 1
        layer = layers[name]
        if not lazy or w.numel() <= _CHUNK or layer is None or layer.groups != 1:
            pieces.append((name, 0, rows))
            continue
        step = max(1, _CHUNK // max(w.numel() // rows, 1))
        pieces.extend((name, a, min(a + step, rows)) for a in range(0, rows, step))
    return pieces


def _read(
    scores: Mapping[str, torch.Tensor], name: str, start: int, stop: int, weight: torch.Tensor
) -> torch.Tensor:
    if start == 0 and stop == (weight.shape[0] if weight.dim() else 1):
        return scores[name]
    return scores.rows(name, start, stop)  # type: ignore[attr-defined]


class _Parts(Sequence[torch.Tensor]):
    """The scores of each piece in order, read on access (lazy scores stay lazy)."""

    def __init__(
        self,
        scores: Mapping[str, torch.Tensor],
        pieces: list[_Piece],
        weights: Mapping[str, torch.Tensor],
    ) -> None:
        self.scores, self.pieces, self.weights = scores, pieces, weights

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        name, start, stop = self.pieces[i]
        return _read(self.scores, name, start, stop, self.weights[name]).detach()

    def gather(self, i: int, positions: torch.Tensor) -> torch.Tensor:
        """Piece ``i`` at flat ``positions``, without computing all of a lazy piece."""
        gather = getattr(self.scores, "gather", None)
        if gather is None:
            return self[i].reshape(-1)[positions]
        name, start, _ = self.pieces[i]
        w = self.weights[name]
        return gather(name, positions + start * (w.numel() // max(w.shape[0] if w.dim() else 1, 1)))

    def size(self, i: int) -> int:
        name, start, stop = self.pieces[i]
        w = self.weights[name]
        return w.numel() // max(w.shape[0] if w.dim() else 1, 1) * (stop - start)

    def __len__(self) -> int:
        return len(self.pieces)


def _threshold(
    pieces: list[_Piece],
    scores: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    density: float,
) -> tuple[float | None, int]:
    """The k-th largest score, ``k = N - int((1 - density) N)`` of the ``N`` weights
    (None when every weight is kept), and k."""
    parts = _Parts(scores, pieces, weights)
    sizes = [parts.size(i) for i in range(len(parts))]
    total = sum(sizes)
    k = total - int((1.0 - density) * total)
    if k >= total or not total:
        return None, k
    return kth_largest(parts, k, sizes=sizes), k


def break_ties(
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
