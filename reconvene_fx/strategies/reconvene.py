"""The Reconvene strategy: narrow the groups the PaI mask prunes hardest, to its densities."""

from __future__ import annotations

import torch

from .base import PlanInputs, RemovalOrder, by_key, fraction_in_group, register_strategy

__all__ = ["group_targets", "reconvene"]


def group_targets(producers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coupled group, the target width ``t_g`` and whether it is selected.

    ``producers`` holds per group ``(max density, max sensitivity)`` of the scored layers
    producing it. A group is selected when its producers' largest sensitivity is below 1
    (every producer is PSE-selected); its target is ``sqrt(max density)`` (a layer narrowed
    to ``r`` on both sides keeps ``r**2`` of its weights, so this keeps about what its
    unstructured mask keeps). Other groups get ``sqrt(max sensitivity)`` (>= 1); groups no
    scored layer produces get 1.

    Example:
        >>> t, sel = group_targets(torch.tensor([[0.25, 0.5], [0.9, 1.8], [-1.0, -1.0]]))
        >>> [round(v, 3) for v in t.tolist()], sel.tolist()
        ([0.5, 1.342, 1.0], [True, False, False])
    """
    density, sensitivity = producers[:, 0], producers[:, 1]
    selected = (sensitivity >= 0) & (sensitivity < 1.0)
    target = torch.where(selected, density.clamp(min=0).sqrt(), sensitivity.clamp(min=1).sqrt())
    target[sensitivity < 0] = 1.0
    return target.clamp(min=1e-6), selected


@register_strategy("reconvene")
def reconvene(inputs: PlanInputs) -> RemovalOrder:
    """At scale ``s`` a group keeps ``min(1, s * t_g)`` of its atoms, weakest going first.

    At ``s = 1`` exactly the selected groups are narrowed, to their density-derived widths;
    a generous budget stops at ``s > 1`` (less narrowing), a tight one goes below 1, where
    the other groups narrow too, the least sensitive first. With ``composite=True`` the
    plan never stops before ``s = 1``, the selected groups go first (a phase of their
    own: narrowing a masked layer can raise the nonzero count), and the masks of the
    untouched layers are re-thresholded to fill the params budget.
    """
    removable = inputs.removable
    if removable.numel() == 0:
        return RemovalOrder(removable)
    target, selected = group_targets(inputs.producers)
    g = inputs.group[removable]
    # removed once the scale s <= (1 - fraction) / t_g; ascending key = -that
    key = (fraction_in_group(inputs) - 1.0) / target[g]
    idx = by_key(inputs, key)
    if not inputs.composite:
        return RemovalOrder(removable[idx])
    late = ~selected
    idx = idx[torch.argsort(late[g[idx]].to(torch.int8), stable=True)]
    start = int((key <= -1.0 + 1e-12).sum())
    return RemovalOrder(
        removable[idx],
        start=start,
        phase_ends=(int((~late[g]).sum()),),
        adjust_masks=True,
    )
