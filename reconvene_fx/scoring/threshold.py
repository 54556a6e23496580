"""Thresholding scores: the global top-k mask, its tie-break, and each layer's rating.

The engine behind :class:`~reconvene_fx.passes.SensitivityPass`: :func:`rate_layers`
keeps the highest scores of all prunable weights together and rates every layer by the
fraction of its weights kept; :func:`break_ties` fills a mask to exactly ``k`` weights
with those tied at the threshold (by larger ``|w|``), as composite plans also do.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx

from ..layers import LayerRegistry, module_layer
from ..layers.base import submodule
from ..meta import LayerSensitivity
from .base import _SMALL, check_finite, kth_in_band, kth_largest, prunable_weights, sample_bracket

__all__ = ["break_ties", "rate_layers"]


# lazy scores of a larger weight are computed this many elements at a time (by rows):
# vgg16's classifier.0 holds 103 M weights, and |w| of it at once would cost 411 MB
_CHUNK = 1 << 22


def rate_layers(
    gm: torch.fx.GraphModule,
    scores: Mapping[str, torch.Tensor],
    density: float,
    *,
    keep_scores: bool = False,
    keep_masks: bool = True,
    label: str = "scores",
    layers: LayerRegistry | None = None,
) -> dict[str, LayerSensitivity]:
    """The global top-k mask at ``density`` over every prunable weight of ``gm``, and each
    layer's rating, keyed by module name.

    ``k = N - int((1 - density) N)`` of the ``N`` weights are kept: those scored above the
    k-th largest score, then those tied at it with the largest ``|w|`` (then by position,
    :func:`break_ties`), so exactly ``k``. Per layer: its mask, its ``density`` (fraction
    inside the mask), its ``sensitivity`` (density / global density, Reconvene's PSE),
    ``selected`` (``sensitivity < 1``) and its score mass per output and input channel.
    Without ``keep_masks`` the same counts are made without writing a mask (a bool per
    weight: 138 MB for vgg16), and each rating's ``mask`` is None.
    Scores are read layer by layer (lazy ones, with ``rows``, in row blocks of at most
    ``_CHUNK`` elements), never concatenated, and once: a seeded sample brackets the k-th
    largest score (:func:`~.base.sample_bracket`); the one pass writes the masks of the
    scores above the bracket, keeps the bracket's few members (a few percent of the
    scores) and sums the masses; the k-th largest is then selected exactly among those
    members, verified by the count above (:func:`~.base.kth_in_band`). A sample that
    missed (many ties) costs a second pass with :func:`~.base.kth_largest` instead.

    Args:
        gm: the model; its prunable weights are those of :func:`~.base.prunable_weights`.
        scores: ``{weight name: scores shaped like the weight}`` (a scorer's result).
        density: the fraction of the weights to keep, in (0, 1].
        keep_scores: keep each layer's scores in its rating (composite plans need them).
        keep_masks: keep each layer's mask in its rating (composite plans need them).
        label: names the scores in errors (the scoring method).
        layers: the layer registry that knows the layers (None: the built-in one).

    Returns:
        ``{module name: LayerSensitivity}`` in the order of the weights.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(8, 4, 1))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> scores = {"0.weight": torch.ones(8, 3, 3, 3), "2.weight": torch.zeros(4, 8, 1, 1)}
        >>> layers = rate_layers(gm, scores, 0.5)  # keeps 124 of 248, all tied at 1
        >>> [(name, lay.kept, lay.total, lay.selected) for name, lay in layers.items()]
        [('0', 124, 216, False), ('2', 0, 32, True)]
    """
    weights = dict(prunable_weights(gm, layers))
    modules = {name: name.rpartition(".")[0] for name in weights}
    layers_of = {n: module_layer(m, submodule(gm, m), layers) for n, m in modules.items()}
    lazy = bool(getattr(scores, "lazy", False)) and hasattr(scores, "rows")
    pieces = _pieces(weights, layers_of, lazy)
    parts = _Parts(scores, pieces, weights)
    sizes = [parts.size(i) for i in range(len(parts))]
    total = sum(sizes)
    k = total - int((1.0 - density) * total)
    keep_all = k >= total or not total
    # (lo, hi]: where the k-th largest score lies, from a sample (every score when few)
    lo, hi = (
        (-math.inf, math.inf) if keep_all or total <= _SMALL else sample_bracket(parts, sizes, k)
    )
    by_weight: dict[str, list[int]] = {}
    for index, piece in enumerate(pieces):
        by_weight.setdefault(piece[0], []).append(index)
    masks: dict[str, torch.Tensor] = {}  # with keep_masks
    masses: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    bands: list[tuple[str, int, torch.Tensor, torch.Tensor]] = []
    kept = dict.fromkeys(weights, 0)  # so far: the weights above the bracket
    scratch = _Scratch(max(sizes, default=0))
    for name, weight in weights.items():
        layer = layers_of[name]
        assert layer is not None
        if keep_masks:
            masks[name] = torch.empty(weight.shape, dtype=torch.bool)
        out_mass: list[torch.Tensor] = []
        in_mass: torch.Tensor | None = None
        for index in by_weight[name]:
            _, start, stop = pieces[index]
            s = parts.read(index, scratch)
            if lazy:
                check_finite(label, name, s)
            if keep_all:
                if keep_masks:
                    masks[name][start:stop].fill_(True)
                kept[name] += s.numel()
            else:  # above the bracket: kept; inside it: decided once the k-th is known
                block = (
                    masks[name][start:stop] if keep_masks
                    else scratch.flags(s.numel(), s.device, "above").view(s.shape)
                )  # fmt: skip
                torch.gt(s, hi, out=block)
                kept[name] += int(torch.count_nonzero(block))
                inside, values = _band(s.reshape(-1), lo, block.view(-1), scratch)
                offset = start * (weight.numel() // max(weight.shape[0], 1))
                bands.append((name, offset, inside, values))
            rows = layer if stop - start == weight.shape[0] else dataclasses.replace(
                layer, out_channels=stop - start)  # fmt: skip
            o, i = layer.handler.channel_mass(rows, s)
            out_mass.append(o)
            in_mass = i if in_mass is None else in_mass + i
        assert in_mass is not None
        masses[name] = (torch.cat(out_mass) if len(out_mass) > 1 else out_mass[0], in_mass)
    if not keep_all:
        _fill_masks(parts, pieces, masks, bands, kept, k, weights)
    global_density = sum(kept.values()) / max(total, 1)
    rated: dict[str, LayerSensitivity] = {}
    for name, weight in weights.items():
        module_name = modules[name]
        layer_density = kept[name] / max(weight.numel(), 1)
        sensitivity = layer_density / global_density if global_density > 0 else 0.0
        rated[module_name] = LayerSensitivity(
            name=module_name,
            density=layer_density,
            sensitivity=sensitivity,
            selected=sensitivity < 1.0,
            kept=kept[name],
            total=weight.numel(),
            mask=masks.get(name),
            out_mass=masses[name][0],
            in_mass=masses[name][1],
            scores=scores[name] if keep_scores else None,
        )
    return rated


def _fill_masks(
    parts: _Parts,
    pieces: list[_Piece],
    masks: dict[str, torch.Tensor],
    bands: list[tuple[str, int, torch.Tensor, torch.Tensor]],
    kept: dict[str, int],
    k: int,
    weights: Mapping[str, torch.Tensor],
) -> None:
    """Complete ``masks`` (which hold the scores above the bracket) to exactly ``k``: the
    bracket's members above the k-th largest score, then those tied at it by
    :func:`break_ties`; ``kept`` (the count above the bracket, per weight) is updated to
    the count in each mask (``masks`` empty: counted only). ``bands`` holds, per piece,
    the flat positions (from ``offset``) and scores of the bracket's members. When the
    count shows the k-th largest outside the bracket (a sample that missed, many ties),
    it is found exactly by :func:`~.base.kth_largest` and the masks are made again."""
    threshold = kth_in_band(torch.cat([b[3] for b in bands]), sum(kept.values()), k)
    tied: dict[str, list[torch.Tensor]] = {}
    if threshold is not None:
        for name, offset, inside, values in bands:
            over = values > threshold
            if masks:
                masks[name].view(-1).index_fill_(0, inside[over] + offset, True)
            kept[name] += int(torch.count_nonzero(over))
            at = inside[values == threshold]
            if at.numel():
                tied.setdefault(name, []).append(at + offset)
    else:
        threshold = kth_largest(parts, k, sizes=[parts.size(i) for i in range(len(parts))])
        kept.update(dict.fromkeys(kept, 0))
        for index, (name, start, stop) in enumerate(pieces):
            s = parts[index]
            over = torch.gt(s, threshold, out=masks[name][start:stop]) if masks else s > threshold
            kept[name] += int(torch.count_nonzero(over))
            at = (s == threshold).view(-1).nonzero().view(-1)
            if at.numel():
                w = weights[name]
                tied.setdefault(name, []).append(at + start * (w.numel() // max(w.shape[0], 1)))
    if tied:
        ties = {n: torch.cat(t) for n, t in tied.items()}
        chosen = _chosen_ties(ties, weights, k - sum(kept.values()))
        for name, at in ties.items():
            if masks:
                masks[name].view(-1)[at[chosen[name]]] = True
            kept[name] += int(torch.count_nonzero(chosen[name]))


def _band(
    flat: torch.Tensor, lo: float, above: torch.Tensor, scratch: _Scratch
) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions and values of the flat scores inside the bracket: above ``lo`` and
    not in ``above`` (those above its high end). ``nonzero`` over a layer's flags costs
    most of this; read eight flags at a time as one int64, it scans an eighth as much,
    then only the blocks that hold a member.

    Example:
        >>> flat = torch.arange(16.0)
        >>> at, values = _band(flat, 9.0, flat > 12.0, _Scratch(16))
        >>> at.tolist(), values.tolist()
        ([10, 11, 12], [10.0, 11.0, 12.0])
    """
    n = flat.numel()
    inside = torch.gt(flat, lo, out=scratch.flags(n, flat.device)).logical_xor_(above)
    if n % 8 or n < _PACKED:
        at = inside.nonzero().view(-1)
    else:
        blocks = inside.view(torch.int64).nonzero().view(-1)
        members = inside.view(-1, 8).index_select(0, blocks).view(-1).nonzero().view(-1)
        at = blocks.index_select(0, members >> 3).bitwise_left_shift_(3).add_(members & 7)
    return at, flat.index_select(0, at)


# from this many scores on, the flags are read eight at a time (below, the extra calls
# cost more than the scan they save)
_PACKED = 1 << 16


class _Scratch:
    """Buffers for one piece's scores and flags at a time, reused from piece to piece (a
    fresh tensor the size of a large layer costs its page faults on every read)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def buffer(self, dtype: torch.dtype, device: torch.device, use: str = "scores") -> torch.Tensor:
        """A flat buffer of ``size`` elements of ``dtype`` on ``device``, one per ``use``."""
        key = (use, dtype, device)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = torch.empty(self.size, dtype=dtype, device=device)
        return held

    def flags(self, n: int, device: torch.device, use: str = "inside") -> torch.Tensor:
        """``n`` bools from the start of a buffer (aligned for an int64 view)."""
        return self.buffer(torch.bool, device, use)[:n]


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

    def read(self, i: int, scratch: _Scratch) -> torch.Tensor:
        """Piece ``i``; lazy scores that can (``rows_into``) are computed into a buffer of
        ``scratch``, valid until the next read."""
        rows_into = getattr(self.scores, "rows_into", None)
        if rows_into is None:
            return self[i]
        name, start, stop = self.pieces[i]
        w = self.weights[name]
        return rows_into(name, start, stop, scratch.buffer(w.dtype, w.device)).detach()

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


def break_ties(
    tied: dict[str, torch.Tensor],
    weights: Mapping[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    k: int,
) -> None:
    """Add to ``masks`` (which hold the scores above the threshold) the positions ``tied``
    at it with the largest ``|w|`` (then by position), until exactly ``k`` are kept.

    Args:
        tied: ``{weight name: flat positions}`` scored exactly at the threshold.
        weights: the weights by name, whose magnitudes break the ties.
        masks: ``{weight name: bool mask}``, filled in place.
        k: how many weights all the masks keep together afterwards.

    Example:
        >>> masks = {"w": torch.tensor([True, False, False, False])}
        >>> weights = {"w": torch.tensor([2.0, 0.1, -0.9, 0.5])}
        >>> break_ties({"w": torch.tensor([1, 2, 3])}, weights, masks, 3)
        >>> masks["w"]
        tensor([ True, False,  True,  True])
    """
    kept = sum(int(torch.count_nonzero(m)) for m in masks.values())
    for n, pick in _chosen_ties(tied, weights, k - kept).items():
        masks[n].view(-1)[tied[n][pick]] = True


def _chosen_ties(
    tied: dict[str, torch.Tensor], weights: Mapping[str, torch.Tensor], need: int
) -> dict[str, torch.Tensor]:
    """Which of the ``tied`` positions (per weight) are the ``need`` with the largest
    ``|w|``, then by position (weights in the order of ``tied``): a bool per position."""
    order = list(tied.items())
    magnitude = torch.cat([weights[n].detach().reshape(-1)[at].abs() for n, at in order])
    chosen = torch.zeros(magnitude.numel(), dtype=torch.bool)
    if need > 0:
        chosen[torch.sort(magnitude, descending=True, stable=True).indices[:need]] = True
    picks = chosen.split([at.numel() for _, at in order])
    return {n: pick for (n, _), pick in zip(order, picks, strict=True)}
