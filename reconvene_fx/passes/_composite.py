"""Composite plans: which layers keep their PaI masks, what the masks save, the masks.

A scored conv/linear whose *output* channels all stay keeps its unstructured PaI mask,
sliced to the input channels it keeps (and its sliced original weights: the mask chose
those weights). A layer whose output channels were narrowed is dense at its new width
(RLR). Before, a layer lost its mask as soon as any input channel went, so narrowing one
group made its consumers dense: at 1/16 of the weights no plan kept a mask.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..costs import LayerCosts
from ..errors import ArgumentError
from ..layers import Layer, LayerHandler
from ..meta import LayerSensitivity
from ..scoring import kth_largest
from ..scoring.threshold import break_ties

__all__ = ["MASK_MODES", "THIN_FLOOR", "CompositeMasks"]

# How a composite plan's masks fill the room the params budget leaves them:
# "as_is": the PaI masks as they are; "thin": each mask keeps the same fraction f of what
# its PaI mask kept (its best scores), f >= THIN_FLOOR, so the layer-wise densities keep
# their ratios and no layer empties; "rethreshold": one global threshold over the masked
# layers' scores (the unstructured PaI model at exactly the budget).
MASK_MODES = ("as_is", "thin", "rethreshold")
THIN_FLOOR = 0.5


@dataclass(frozen=True)
class _Masked:
    """A scored layer that may keep its mask: its place in ``costs.layers``, the atoms of
    its input channels (None: inputs never narrow) and whether its weight can be sliced."""

    name: str
    index: int
    layer: Layer
    in_atoms: torch.Tensor | None
    sliceable: bool


class CompositeMasks:
    """The masks of a composite plan for any set of removed atoms.

    ``savings(removed)`` is how many weights the masks hold at zero (what the params
    budget does not count); ``masks(removed, room)`` the masks themselves, shaped like the
    sliced weights. ``mode`` (one of :data:`MASK_MODES`) says how masks fill ``room``:
    ``"as_is"`` the PaI masks; ``"thin"`` every mask thinned by one factor, at most to
    :data:`THIN_FLOOR` of what it kept (``savings`` counts them at that floor);
    ``"rethreshold"`` the top scores of all masked layers together (``savings`` counts
    every weight of a masked layer: what it keeps is decided by the room).

    Example:
        >>> import torch.fx
        >>> import reconvene_fx as rfx
        >>> from reconvene_fx.passes import ShapePass, ChannelGroupPass, SensitivityPass
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(8, 4, 1))
        >>> gm, x = torch.fx.symbolic_trace(net), torch.randn(1, 3, 8, 8)
        >>> for p in (ShapePass((x,)), ChannelGroupPass(),
        ...           SensitivityPass(0.5, example_inputs=(x,), keep_scores=True)):
        ...     _ = p(gm)
        >>> sens = gm.meta["reconvene.sensitivity_table"].layers
        >>> masks = CompositeMasks(LayerCosts(gm), sens)
        >>> removed = torch.zeros(LayerCosts(gm).num_atoms, dtype=torch.bool)
        >>> masks.savings(removed) == sum(lay.total - lay.kept for lay in sens.values())
        True
    """

    def __init__(
        self,
        costs: LayerCosts,
        sens: Mapping[str, LayerSensitivity],
        *,
        mode: str = "as_is",
        floor: float = 0.0,
    ) -> None:
        if mode not in MASK_MODES:
            raise ArgumentError(f"unknown mask mode {mode!r}; one of {', '.join(MASK_MODES)}")
        self.costs, self.sens, self.mode = costs, sens, mode
        # what the last masks() did: "as_is" unless it had to thin or re-threshold
        self.applied = "as_is"
        # the PaI masks, each raised to at least ``floor`` of its weights (best scores)
        self._pai = {name: _floored(lay, floor, costs.layers[name].layer)
                     for name, lay in sens.items() if name in costs.layers}  # fmt: skip
        self._layers: list[_Masked] = []
        entries: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for index, (name, costed) in enumerate(costs.layers.items()):
            lay = sens.get(name)
            if lay is None or not costed.layer.weighted:
                continue
            layer, info = costed.layer, costed.in_info
            sliceable = info is not None and info.size == layer.in_channels
            sliceable = sliceable and _can_slice(layer)
            self._layers.append(_Masked(name, index, layer, info.atoms if info else None,
                                        sliceable))  # fmt: skip
            # weights each input channel holds, dense and inside the mask
            dense = torch.full((layer.in_channels,), lay.total // max(layer.in_channels, 1))
            inside = layer.handler.channel_mass(layer, self._pai[name].to(torch.float32))[1]
            keeps = {"as_is": 1.0, "thin": THIN_FLOOR, "rethreshold": 0.0}[mode]
            saved = dense.double() - keeps * inside.round().double()
            atoms = info.atoms if sliceable and info is not None else torch.full_like(dense, -1)
            entries.append((len(self._layers) - 1, atoms, saved))
        self._owner = torch.cat([torch.full_like(a, i) for i, a, _ in entries]) if entries \
            else torch.zeros(0, dtype=torch.long)  # fmt: skip
        self._atom = torch.cat([a for _, a, _ in entries]) if entries else self._owner
        self._saved = torch.cat([s for _, _, s in entries]) if entries else self._owner

    def _keeping(self, removed: torch.Tensor) -> torch.Tensor:
        """Bool per masked-capable layer: it keeps a mask (all its outputs stay, and its
        inputs stay or its weight can be sliced to them)."""
        out_whole, in_whole = self.costs.whole_sides(removed)
        index = torch.tensor([m.index for m in self._layers], dtype=torch.long)
        sliceable = torch.tensor([m.sliceable for m in self._layers], dtype=torch.bool)
        return out_whole[index] & (in_whole[index] | sliceable)

    def savings(self, removed: torch.Tensor) -> int:
        """Weights the masks hold at zero with the atoms in ``removed`` taken out."""
        if not self._layers:
            return 0
        keeping = self._keeping(removed)[self._owner]
        atom_kept = (self._atom < 0) | ~removed[self._atom.clamp(min=0)]
        return int(self._saved[keeping & atom_kept].sum().floor())

    def masks(self, removed: torch.Tensor, room: int | None = None) -> dict[str, torch.Tensor]:
        """``{layer: mask}`` shaped like each masked layer's sliced weight. ``room``: the
        weights the masked layers may keep in all (re-thresholded plans; None: the PaI
        masks as they are)."""
        if not self._layers:
            return {}
        keeping = self._keeping(removed).tolist()
        chosen = [m for m, keep in zip(self._layers, keeping, strict=True) if keep]
        kept_inputs = {m.name: self._kept_inputs(m, removed) for m in chosen}
        masks = {m.name: self._slice(m, self._pai[m.name], kept_inputs[m.name])
                 for m in chosen}  # fmt: skip
        if self.mode == "as_is" or room is None or not masks:
            return masks
        if room >= sum(int(mask.sum()) for mask in masks.values()):
            return masks
        self.applied = self.mode
        if room < 1:
            return {n: torch.zeros_like(mask) for n, mask in masks.items()}
        scores = {m.name: self._slice(m, self.sens[m.name].scores, kept_inputs[m.name])
                  for m in chosen}  # fmt: skip
        weights = {m.name: self._slice(m, m.layer.module.weight, kept_inputs[m.name])
                   for m in chosen}  # fmt: skip
        if self.mode == "thin":
            return _thinned(masks, scores, weights, room)
        # room < kept <= their count, so the (room + 1)-th largest exists: keeping what lies
        # strictly above it keeps <= room, and scores tied at it (SNIP's exact zeros) fill
        # the rest by larger |w|, as the PaI mask itself broke its ties
        threshold = kth_largest(list(scores.values()), room + 1)
        masks = {n: s > threshold for n, s in scores.items()}
        tied = {n: (s == threshold).flatten().nonzero().flatten() for n, s in scores.items()}
        break_ties({n: t for n, t in tied.items() if t.numel()}, weights, masks, room)
        return masks

    def dense_size(self, removed: torch.Tensor) -> int:
        """Weights (dense) of the layers that keep masks, at their kept inputs."""
        if not self._layers:
            return 0
        keeping = self._keeping(removed)[self._owner]
        atom_kept = (self._atom < 0) | ~removed[self._atom.clamp(min=0)]
        per_input = torch.tensor(
            [self.sens[m.name].total // max(m.layer.in_channels, 1) for m in self._layers],
            dtype=torch.long,
        )[self._owner]
        return int(per_input[keeping & atom_kept].sum())

    @staticmethod
    def _kept_inputs(m: _Masked, removed: torch.Tensor) -> torch.Tensor | None:
        if m.in_atoms is None or not m.sliceable:
            return None
        kept = ~removed[m.in_atoms]
        return None if bool(kept.all()) else kept.nonzero().flatten()

    @staticmethod
    def _slice(
        m: _Masked, tensor: torch.Tensor | None, in_idx: torch.Tensor | None
    ) -> torch.Tensor:
        assert tensor is not None
        if in_idx is None:
            return tensor.detach().clone()
        return m.layer.handler.slice_weight(m.layer, tensor.detach(), in_idx, None)


def _can_slice(layer: Layer) -> bool:
    """Whether the layer's handler slices weights (the base class refuses)."""
    return type(layer.handler).slice_weight is not LayerHandler.slice_weight


def _floored(lay: LayerSensitivity, floor: float, layer: Layer) -> torch.Tensor:
    """A mask keeping less than ``floor`` of its layer raised so that every input channel
    keeps at least ``floor`` of the weights reading it (so the share holds whichever
    inputs a plan keeps), by the best
    scores outside the mask, ties by larger ``|w|``. A mask that keeps almost nothing of
    a layer (magnitude PaI on a classifier initialized 5x smaller than the convs) starves
    it of gradient. Layers whose handler does not map weights to inputs keep their mask.

    Example:
        >>> from reconvene_fx.layers import module_layer
        >>> from reconvene_fx.meta import LayerSensitivity
        >>> fc = torch.nn.Linear(2, 4)
        >>> mask = torch.tensor([[True, False], [False, False], [False, False], [False, False]])
        >>> scores = torch.tensor([[8.0, 1.0], [7.0, 2.0], [6.0, 4.0], [5.0, 3.0]])
        >>> lay = LayerSensitivity("fc", 0.125, 1.0, False, 1, 8, mask, torch.zeros(4),
        ...                        torch.zeros(2), scores=scores)
        >>> _floored(lay, 0.5, module_layer("fc", fc)).int().tolist()  # 2 of 4 per input
        [[1, 0], [1, 0], [0, 1], [0, 1]]
    """
    if lay.scores is None or lay.density >= floor:
        return lay.mask
    try:
        column = layer.handler.input_of_weights(layer).flatten()
    except NotImplementedError:
        return lay.mask
    flat = lay.mask.flatten()
    per_input = flat.numel() // max(layer.in_channels, 1)
    need = math.ceil(floor * per_input - 1e-9)
    have = torch.bincount(column[flat], minlength=layer.in_channels)
    deficit = (need - have).clamp(min=0)
    if not bool(deficit.any()):
        return lay.mask
    outside = (~flat).nonzero().flatten()
    # best first within each input channel
    order = _best_first(outside, lay.scores, layer.module.weight)
    order = order[torch.argsort(column[outside][order], stable=True)]
    cols = column[outside][order]
    starts = torch.cumsum(torch.bincount(cols, minlength=layer.in_channels), 0)
    rank = (
        torch.arange(cols.numel())
        - (starts - torch.bincount(cols, minlength=layer.in_channels))[cols]
    )
    raised = flat.clone()
    raised[outside[order[rank < deficit[cols]]]] = True
    return raised.view_as(lay.mask)


def _thinned(
    masks: dict[str, torch.Tensor],
    scores: Mapping[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    room: int,
) -> dict[str, torch.Tensor]:
    """Every mask keeps its best ``max(1, floor(f * kept))`` weights (by score, ties by
    larger ``|w|``), with the largest ``f`` whose total fits ``room``.

    Example:
        >>> masks = {"a": torch.tensor([True, True, True, True]), "b": torch.tensor([True, True])}
        >>> scores = {"a": torch.tensor([4.0, 3.0, 2.0, 1.0]), "b": torch.tensor([1.0, 2.0])}
        >>> thin = _thinned(masks, scores, {n: s for n, s in scores.items()}, 3)
        >>> thin["a"].tolist(), thin["b"].tolist()
        ([True, True, False, False], [False, True])
    """
    kept = {n: int(m.sum()) for n, m in masks.items()}

    def counts(f: float) -> dict[str, int]:
        return {n: min(k, max(1, int(f * k))) if k else 0 for n, k in kept.items()}

    lo, hi = 0.0, 1.0
    for _ in range(40):  # bisect f: the counts only grow with it
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(counts(mid).values()) <= room else (lo, mid)
    take = counts(lo)
    thinned = {}
    for name, mask in masks.items():
        flat_mask = mask.flatten()
        inside = flat_mask.nonzero().flatten()
        best = inside[_best_first(inside, scores[name], weights[name])[: take[name]]]
        new = torch.zeros_like(flat_mask)
        new[best] = True
        thinned[name] = new.view_as(mask)
    return thinned


def _best_first(
    positions: torch.Tensor, scores: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Order of ``positions`` (flat indices into the weight), best first: by score, ties
    by larger ``|w|`` (as the PaI mask broke its ties), then by position."""
    magnitude = weight.detach().flatten()[positions].abs()
    order = torch.argsort(magnitude, descending=True, stable=True)
    by_score = torch.argsort(scores.flatten()[positions][order], descending=True, stable=True)
    return order[by_score]
