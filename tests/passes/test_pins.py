"""A BudgetError names, for the layers that keep the most parameters, the node that pins
each side of them, why, and the line of the model's forward that made that node."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn as nn

import reconvene_fx as rfx
from reconvene_fx.passes.channels import UnknownOpWarning

X = torch.randn(1, 3, 16, 16)


def line_of(method: Callable[..., object], text: str) -> str:
    """``file.py:N (code)``: the line of ``method``'s source holding ``text``."""
    lines, start = inspect.getsourcelines(method)
    name = os.path.basename(inspect.getsourcefile(method) or "")
    found = [(start + i, line.strip()) for i, line in enumerate(lines) if text in line]
    assert len(found) == 1, found
    return f"{name}:{found[0][0]} ({found[0][1]})"


def refusal(model: nn.Module, budget: float = 0.05, **options: object) -> rfx.BudgetError:
    with pytest.raises(rfx.BudgetError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownOpWarning)
        rfx.compile(model, budget, (X,), method="magnitude", **options)
    return info.value


def sides(error: rfx.BudgetError, layer: str) -> dict[str, list[tuple[str, str, str | None]]]:
    """``{side: [(node, reason, source), ...]}`` of ``layer`` in ``error.pinned_by``."""
    found: dict[str, list[tuple[str, str, str | None]]] = {}
    for name, side, node, reason, source in error.pinned_by:
        if name == layer:
            found.setdefault(side, []).append((node, reason, source))
    return found


class Cumsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 64, 3, padding=1)
        self.mix = nn.Conv2d(64, 64, 3, padding=1)
        self.head = nn.Conv2d(64, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self.stem(x).relu()).relu()
        y = torch.cumsum(y, 1)
        return self.head(self.mix(y))


def test_an_op_without_a_rule_is_named_with_its_source_line() -> None:
    error = refusal(Cumsum(), round_to=1)  # the floor alone keeps the free side
    where = line_of(Cumsum.forward, "torch.cumsum")
    cumsum = ("cumsum", "no channel rule for function torch.cumsum", where)
    mix = sides(error, "mix")
    assert mix["input"] == [cumsum]  # its output channels, pinned where cumsum makes them
    assert sides(error, "body")["output"] == [cumsum]  # what cumsum reads
    # the other side of "mix" is free: only the min_width floor keeps some of it
    ((node, reason, source),) = mix["output"]
    assert node == "" and "min_width=0.1 floor" in reason and source is None
    text = str(error)
    assert "'mix' (" in text.splitlines()[0]  # the summary line names the largest layers
    assert f"node 'cumsum' (function torch.cumsum) at {where}: no channel rule" in text


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(16 * 4 * 4, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stem(x)), 1))


def test_the_models_output_pins_the_classifier() -> None:
    error = refusal(Classifier())
    fc = sides(error, "fc")
    assert fc["output"] == [("output", "they reach the model's output", None)]
    assert "'fc' output (1000 of 1000 kept): node 'output' (the model's output)" in str(error)


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.mid = nn.Conv2d(32, 64, 3, padding=1)
        self.head = nn.Conv2d(64, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x).relu()
        y = self.mid(y).relu()
        return self.head(y)


def test_ignore_names_the_ignored_layer_and_its_call() -> None:
    error = refusal(Chain(), ignore=["mid"])
    ignored = ("mid", "ignore= names it ('mid')", line_of(Chain.forward, "self.mid("))
    mid = sides(error, "mid")
    assert mid == {"input": [ignored], "output": [ignored]}
    assert sides(error, "stem")["output"] == [ignored]  # the channels "mid" reads


class Mixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 128, 3, padding=1, stride=4)
        self.fc = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(self.stem(x).relu())  # [n, 128, 4, 4]
        y = y.reshape(y.shape[0], 64, -1)  # channel c = 2 i + j // 16: mixed with h, w
        return self.fc(y)


def test_a_reshape_that_mixes_channels_with_another_dim_is_named() -> None:
    error = refusal(Mixer())
    where = line_of(Mixer.forward, ".reshape(")
    ((node, reason, source),) = sides(error, "body")["output"]
    assert (node, source) == ("reshape", where)
    assert reason == "it mixes the channels with another dim ('fc' reads them)"
    # the linear reads features that are no channel dim: the same node is to blame
    ((node, reason, source),) = sides(error, "fc")["input"]
    assert (node, source) == ("reshape", where)
    assert "no channel dim the compiler follows" in reason


class Normalized(nn.Module):
    """An op that cannot pass channels on after one that pinned them: both are named."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.wide = nn.Conv2d(16, 256, 1)
        self.head = nn.Conv2d(256, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cumsum(self.stem(x), 1)
        y = y.softmax(1)  # normalises over the channels
        return self.head(self.wide(y))


def test_a_pin_after_a_pin_names_the_first_one_too() -> None:
    error = refusal(Normalized(), budget=0.02)
    ((node, reason, source),) = sides(error, "wide")["input"]
    assert (node, source) == ("softmax", line_of(Normalized.forward, "y.softmax(1)"))
    cumsum = line_of(Normalized.forward, "torch.cumsum")
    assert reason == (
        "it normalises over the channels; its input was pinned already: node 'cumsum' "
        f"(function torch.cumsum) at {cumsum}: no channel rule for function torch.cumsum"
    )


def test_levit_names_the_nodes_that_pin_it() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("levit_128s", pretrained=False)
    with pytest.raises(rfx.BudgetError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rfx.compile(model, 0.05, (torch.randn(1, 3, 224, 224),), method="magnitude")
    error = info.value
    assert error.pinned_by
    assert sides(error, "head.linear")["output"] == [
        ("output", "they reach the model's output", None)
    ]
    for _, _, node, _, source in error.pinned_by:  # every op node is cited at its line
        if node not in ("", "output"):
            assert source is not None and source.startswith("levit.py:"), (node, source)
