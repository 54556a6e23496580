"""Rounding widths up leaves part of the budget unused; the plan hands back whole rounding
steps while the budget still holds, and the default steps of a concatenation follow its
narrowest part."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx
import reconvene_fx.passes._search as search
from reconvene_fx.passes._rounding import give_back_steps

X = torch.randn(2, 3, 16, 16)


@pytest.mark.parametrize("seed", range(8))
def test_steps_handed_back_keep_widths_on_the_step_and_the_budget(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    group = torch.randint(0, 5, (60,), generator=gen)
    step = torch.randint(1, 5, (5,), generator=gen)
    cost = torch.rand(60, generator=gen)
    order = torch.randperm(60, generator=gen)
    size = torch.bincount(group, minlength=5)
    # a rounded plan: each group removes its first atoms in order, keeping a multiple of
    # its step (or all of them)
    removed = torch.zeros(60, dtype=torch.bool)
    for g in range(5):
        atoms = order[group[order] == g]
        keep = int(torch.randint(0, int(size[g]) + 1, (), generator=gen))
        keep = min(int(size[g]), -(-keep // int(step[g])) * int(step[g]))
        removed[atoms[: int(size[g]) - keep]] = True
    limit = float(cost[~removed].sum()) + 1.5 * float(cost.mean())  # room for a few atoms

    def fits(r: torch.Tensor) -> bool:
        return float(cost[~r].sum()) <= limit

    given = give_back_steps(removed, order, group, step, fits)
    assert fits(given)
    assert not bool((given & ~removed).any())  # nothing new removed
    kept = size - torch.bincount(group[given], minlength=5)
    assert bool(((kept % step == 0) | (kept == size)).all()), (kept, step, size)
    for g in range(5):  # within a group, the atoms removed last come back first
        back = order[(group[order] == g) & removed[order] & ~given[order]]
        still = order[(group[order] == g) & given[order]]
        if back.numel() and still.numel():
            pos = {int(a): i for i, a in enumerate(order)}
            assert min(pos[int(a)] for a in back) > max(pos[int(a)] for a in still)


@pytest.mark.parametrize(
    ("name", "budget"),
    [
        ("shufflenet", 0.4),
        ("depthwise", 0.3),
        ("grouped", 0.2),
        ("flatten", 0.4),
        ("conv_head", 0.4),
    ],
)
def test_the_default_widths_spend_budget_that_rounding_up_left(
    name: str, budget: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = rfx.report(rfx.compile(build(name), budget, (X,)))
    with monkeypatch.context() as patch:
        patch.setattr(search, "give_back_steps", lambda removed, *_: removed)
        rounded_up = rfx.report(rfx.compile(build(name), budget, (X,)))
    assert got.params_after <= budget * got.params_before
    assert got.params_after > rounded_up.params_after
    for name_, lp in got.layers.items():  # it only hands back: no layer narrower
        assert lp.out_idx.numel() >= rounded_up.layers[name_].out_idx.numel(), name_
