"""The Reconvene strategy: narrow each coupled group so its layers keep their PaI densities."""

from __future__ import annotations

import torch

from ..errors import ArgumentError
from .base import PlanInputs, RemovalOrder, by_key, fraction_in_group

__all__ = ["ALLOCATIONS", "group_targets", "reconvene", "solve_log_widths"]

# exponent applied to the solved log widths: "density" matches the PaI densities, "sqrt"
# tempers them halfway towards uniform widths
ALLOCATIONS = {"density": 1.0, "sqrt": 0.5}

# densities are clamped here before taking logs (a layer the mask empties is not -inf wide)
_MIN_DENSITY = 1e-4


def solve_log_widths(
    layer_groups: torch.Tensor, layer_density: torch.Tensor, free: torch.Tensor
) -> torch.Tensor:
    """Per coupled group, the log of the kept width fraction that makes every layer's dense
    size match its PaI mask, in the least-squares sense.

    A layer whose input group keeps ``w_in`` and output group ``w_out`` of their channels
    keeps ``w_in * w_out`` of its weights; its PaI mask kept ``d``. So each layer gives
    ``log w_in + log w_out = log d`` over the *free* groups (the others stay whole and add
    nothing; a layer whose input and output are the same group, a depthwise conv, counts
    it once), and the system is solved for the free groups' ``log w``. Groups no equation
    reaches get 0 (whole).

    Example:
        >>> # conv a: input pinned (group 0), output group 1; conv b: group 1 -> group 2
        >>> groups = torch.tensor([[0, 1], [1, 2]])
        >>> free = torch.tensor([False, True, True])
        >>> x = solve_log_widths(groups, torch.tensor([0.5, 0.125], dtype=torch.float64), free)
        >>> [round(v, 3) for v in x.exp().tolist()]
        [1.0, 0.5, 0.25]
    """
    num_groups = free.numel()
    log_width = torch.zeros(num_groups, dtype=torch.float64)
    if layer_groups.numel() == 0 or not bool(free.any()):
        return log_width
    free_ids = free.nonzero().flatten()
    column = torch.full((num_groups + 1,), -1, dtype=torch.long)  # index -1 -> the extra slot
    column[free_ids] = torch.arange(free_ids.numel())
    g_in, g_out = layer_groups[:, 0], layer_groups[:, 1]
    c_in, c_out = column[g_in], column[g_out]
    c_out = torch.where(g_out == g_in, -1, c_out)  # one group on both sides: counted once
    rows = ((c_in >= 0) | (c_out >= 0)).nonzero().flatten()
    if rows.numel() == 0:
        return log_width
    a = torch.zeros(rows.numel(), free_ids.numel(), dtype=torch.float64)
    for side in (c_in[rows], c_out[rows]):
        hit = side >= 0
        a[hit.nonzero().flatten(), side[hit]] += 1.0
    b = layer_density[rows].clamp(min=_MIN_DENSITY).log().unsqueeze(1)
    # gelsd: minimum-norm solution where the system leaves a group undetermined
    solution = torch.linalg.lstsq(a, b, driver="gelsd").solution.flatten()
    log_width[free_ids] = solution
    return log_width


def group_targets(
    inputs: PlanInputs, *, composite: bool | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coupled group, the target width fraction ``t_g`` and whether it is selected.

    A group is *selected* (Reconvene's PSE) when every scored layer producing it is pruned
    harder than the model as a whole (sensitivity below 1). Targets come from
    :func:`solve_log_widths` over the groups the plan may narrow: every group with
    removable channels, or with ``composite=True`` only the selected ones (the others keep
    their masks). ``allocation="sqrt"`` takes the square root of those widths (halfway to
    uniform). With ``inputs.price`` (channels priced by their time, not their MACs) each
    target is divided by its group's price: the scale ``s`` that sets the plan is then a
    width per unit of time rather than per MAC. Other groups get 1. ``composite``
    overrides ``inputs.composite``.

    Example:
        >>> from reconvene_fx.strategies import PlanInputs
        >>> inputs = PlanInputs(
        ...     removable=torch.tensor([0, 1, 2, 3]), scores=torch.ones(4, dtype=torch.float64),
        ...     group=torch.tensor([0, 0, 1, 1]),
        ...     producers=torch.tensor([[0.25, 0.5], [0.9, 1.8]], dtype=torch.float64),
        ...     composite=True, sensitivity={},
        ...     layer_groups=torch.tensor([[-1, 0], [0, 1], [1, -1]]),
        ...     layer_density=torch.tensor([0.25, 0.2, 0.9], dtype=torch.float64))
        >>> t, sel = group_targets(inputs)
        >>> [round(v, 3) for v in t.tolist()], sel.tolist()
        ([0.224, 1.0], [True, False])
    """
    density, sensitivity = inputs.producers[:, 0], inputs.producers[:, 1]
    selected = (sensitivity >= 0) & (sensitivity < 1.0) & (density >= 0)
    free = torch.zeros(selected.numel(), dtype=torch.bool)
    free[inputs.group[inputs.removable]] = True
    if inputs.composite if composite is None else composite:
        free &= selected
    if inputs.allocation not in ALLOCATIONS:
        raise ArgumentError(
            f"unknown allocation {inputs.allocation!r}; choose one of {', '.join(ALLOCATIONS)}"
        )
    log_width = solve_log_widths(inputs.layer_groups, inputs.layer_density, free)
    target = (ALLOCATIONS[inputs.allocation] * log_width).exp()
    if inputs.price is not None:  # dear channels go sooner (see reconvene_fx.latency.price)
        target = target / inputs.price
    target[~free] = 1.0
    return target.clamp(min=1e-6), selected


def reconvene(inputs: PlanInputs) -> RemovalOrder:
    """At scale ``s`` a group keeps ``min(1, s * t_g)`` of its atoms, weakest going first.

    At ``s = 1`` every group has its target width (:func:`group_targets`): the layers keep
    about the densities the PaI mask gave them, so layers the mask prunes hardest (the
    PSE's least sensitive ones) are narrowed most. The budget sets ``s``. With
    ``composite=True`` only the selected groups narrow, never less than to their targets
    (the plan starts at ``s = 1``), and the layers left whole keep their own PaI masks;
    the other groups follow (with the structured targets) only when a budget cannot be
    met otherwise.
    """
    removable = inputs.removable
    if removable.numel() == 0:
        return RemovalOrder(removable)
    fraction = fraction_in_group(inputs)
    g = inputs.group[removable]

    def order_by(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # removed once the scale s <= (1 - fraction) / t_g; ascending key = -that
        key = (fraction - 1.0) / target[g]
        idx = by_key(inputs, key)
        return idx, key[idx]

    if not inputs.composite:
        idx, _ = order_by(group_targets(inputs)[0])
        return RemovalOrder(removable[idx])
    target, selected = group_targets(inputs)
    idx, key = order_by(target)
    narrowing = selected[g[idx]]
    start = int(((key <= -1.0 + 1e-12) & narrowing).sum())
    rest, _ = order_by(group_targets(inputs, composite=False)[0])
    rest = rest[~selected[g[rest]]]
    head = idx[narrowing]
    return RemovalOrder(
        removable[torch.cat([head, rest])],
        start=start,
        phase_ends=(head.numel(),),
        preferred=head.numel(),
    )
