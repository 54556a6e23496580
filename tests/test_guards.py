"""Branches on shapes taken for the example inputs: warned once per source line,
guarded in the compiled graph (and in a saved one)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import reconvene_fx as rfx


class PoolsLargeInputs(nn.Module):
    """Pools only inputs wider than 16 pixels: a branch on the input's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        if x.shape[-1] > 16:
            y = nn.functional.max_pool2d(y, 2)
        return self.head(torch.relu(self.body(y)).mean((2, 3)))


def _compile(model: nn.Module, x: torch.Tensor) -> tuple[torch.fx.GraphModule, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm = rfx.compile(model, 0.5, (x,), reinit=False)
    return gm, [w for w in caught if issubclass(w.category, rfx.BranchDecisionWarning)]


def test_a_branch_on_the_input_shape_is_warned_once_with_its_source_line() -> None:
    model = PoolsLargeInputs().eval()
    gm, caught = _compile(model, torch.randn(2, 3, 32, 32))
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "test_guards.py:" in message and "if x.shape[-1] > 16:" in message
    assert "True branch" in message
    assert rfx.verify(model, gm, (torch.randn(2, 3, 32, 32),)).exact


def test_inputs_taking_the_other_branch_are_refused_at_run_time(tmp_path: Path) -> None:
    model = PoolsLargeInputs().eval()
    gm, _ = _compile(model, torch.randn(2, 3, 32, 32))
    gm(torch.randn(1, 3, 24, 24))  # wider than 16: the traced branch, runs
    with pytest.raises(rfx.InputError, match=r"if x.shape\[-1\] > 16:"):
        gm(torch.randn(1, 3, 16, 16))
    rfx.save(gm, tmp_path / "m.pt", (torch.randn(1, 3, 32, 32),))
    loaded = rfx.load(tmp_path / "m.pt")
    with pytest.raises(rfx.InputError):
        loaded(torch.randn(1, 3, 16, 16))
    # compiled for small inputs, the other branch is traced and guarded the other way
    small, caught = _compile(model, torch.randn(2, 3, 16, 16))
    assert "False branch" in str(caught[0].message)
    x = torch.randn(1, 3, 8, 8)
    assert small(x).shape == (1, 4)
    with pytest.raises(rfx.InputError):
        small(torch.randn(1, 3, 32, 32))


class RepeatedBlocks(nn.Module):
    """The same shape test in a block used three times: one warning, three guards."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_Block() for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:
            return x + self.conv(x)
        return x


def test_one_warning_per_source_line_and_a_guard_per_decision() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm = rfx.trace(RepeatedBlocks(), example_inputs=(torch.randn(1, 3, 8, 8),))
    branch = [w for w in caught if issubclass(w.category, rfx.BranchDecisionWarning)]
    assert len(branch) == 1 and "(3 times)" in str(branch[0].message)
    guards = [n for n in gm.graph.nodes if n.target is rfx.guards.check_decision]
    assert len(guards) == 3
    gm.graph.eliminate_dead_code()  # no users, and still kept
    assert sum(n.target is rfx.guards.check_decision for n in gm.graph.nodes) == 3


def test_a_model_without_shape_branches_is_not_warned() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", rfx.BranchDecisionWarning)
        gm = rfx.compile(net, 0.5, (torch.randn(1, 3, 8, 8),))
    assert not any(n.target is rfx.guards.check_decision for n in gm.graph.nodes)
