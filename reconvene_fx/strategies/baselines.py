"""The baseline strategies: ``uniform``, ``global`` and ``none`` (unstructured PaI)."""

from __future__ import annotations

import torch

from .base import PlanInputs, RemovalOrder, by_key, fraction_in_group

__all__ = ["global_ranking", "uniform", "unstructured"]


def uniform(inputs: PlanInputs) -> RemovalOrder:
    """Every coupled group loses the same fraction (the usual structured-PaI baseline)."""
    if inputs.removable.numel() == 0:
        return RemovalOrder(inputs.removable)
    return RemovalOrder(inputs.removable[by_key(inputs, fraction_in_group(inputs))])


def global_ranking(inputs: PlanInputs) -> RemovalOrder:
    """Channels ranked model-wide by score relative to their group's mean score."""
    if inputs.removable.numel() == 0:
        return RemovalOrder(inputs.removable)
    s = inputs.scores[inputs.removable]
    g = inputs.group[inputs.removable]
    num_groups = int(g.max()) + 1
    total = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, g, s)
    count = torch.bincount(g, minlength=num_groups).double()
    mean = total / count.clamp(min=1)
    key = torch.where(mean[g] > 0, s / mean[g], s)
    return RemovalOrder(inputs.removable[by_key(inputs, key)])


def unstructured(inputs: PlanInputs) -> RemovalOrder:
    """Nothing narrowed: with ``composite=True``, the unstructured PaI model (every scored
    layer keeps its mask, re-thresholded model-wide so the nonzero parameters, biases and
    norms included, fit the params budget)."""
    return RemovalOrder(inputs.removable[:0], adjust_masks=True)
