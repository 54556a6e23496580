"""Spending what rounding widths up leaves of the budget: whole rounding steps handed back."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["give_back_steps"]


def give_back_steps(
    removed: torch.Tensor,
    order: torch.Tensor,
    group: torch.Tensor,
    step: torch.Tensor,
    fits: Callable[[torch.Tensor], bool],
) -> torch.Tensor:
    """Put back whole rounding steps of removed atoms while ``fits`` still holds.

    A plan whose widths are rounded to ``step[g]`` atoms per coupled group ``g`` meets its
    budget with up to one step of a large group to spare (the removal that tipped it
    under the limit), often several percent of the budget on a small model. Each group's
    removed atoms are cut into steps from the most recently removed on (the first step
    holds ``step[g]`` atoms, the last what is left, so every kept width stays a multiple
    of the step or the whole group); groups are visited from the one whose last removal
    came latest in ``order`` (the removal order puts the most valuable atoms last), and
    each gets back steps until one no longer fits. Returns a new mask; ``removed`` is
    not changed.

    Example:
        >>> order = torch.arange(6)                  # atoms 0-5, removed in this order
        >>> group = torch.tensor([0, 0, 0, 0, 1, 1])  # two groups
        >>> removed = torch.tensor([True, True, True, True, False, False])
        >>> fits = lambda r: int(r.sum()) >= 2       # the budget: remove at least 2 atoms
        >>> give_back_steps(removed, order, group, torch.tensor([2, 2]), fits).tolist()
        [True, True, False, False, False, False]
    """
    position = torch.full_like(group, -1)
    position[order] = torch.arange(order.numel())
    atoms = removed.nonzero().flatten()
    atoms = atoms[torch.argsort(position[atoms], descending=True)]  # latest removed first
    by_group: dict[int, list[int]] = {}
    for atom, g in zip(atoms.tolist(), group[atoms].tolist(), strict=True):
        by_group.setdefault(g, []).append(atom)
    result = removed.clone()
    for g, latest_first in by_group.items():  # dicts keep insertion: latest group first
        size = int(step[g])
        for start in range(0, len(latest_first), size):
            trial = result.clone()
            trial[latest_first[start : start + size]] = False
            if not fits(trial):
                break
            result = trial
    return result
