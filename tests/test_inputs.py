"""Bad input to compile/analyze: a typed error that names the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx

X = torch.randn(2, 3, 16, 16)


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(3, 8, 3)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.head(torch.relu(self.a(x) + self.b(y)) * scale)


@pytest.mark.parametrize("entry", [rfx.compile, rfx.analyze])
def test_too_many_inputs_are_refused(entry) -> None:
    with pytest.raises(rfx.InputError, match=r"holds 2 inputs; .*forward takes 1 \(x\)"):
        entry(build("residual"), 0.5, (X, X))


def test_missing_inputs_are_named_and_concrete_args_fill_them() -> None:
    with pytest.raises(rfx.InputError, match=r"also needs y .*concrete_args"):
        rfx.compile(TwoInputs(), 0.5, (X,))
    model = TwoInputs()
    gm = rfx.compile(model, 0.5, (X, X), reinit=False)  # scale keeps its default
    assert rfx.verify(model, gm, (X, X)).exact


def test_a_wrong_input_shape_names_shape_and_node_without_the_fx_dump() -> None:
    with pytest.raises(rfx.InputError) as caught:
        rfx.compile(build("residual"), 0.5, (torch.randn(2, 1, 16, 16),))
    message = str(caught.value)
    assert "rejected example_inputs of shape (2, 1, 16, 16) at node 'stem_0'" in message
    assert "expected input" in message
    assert "While executing" not in message and "tlparse" not in message
    assert "\n" not in message


def test_a_model_on_the_meta_device_is_refused() -> None:
    with torch.device("meta"):
        model = build("residual")
    for entry in (rfx.compile, rfx.analyze):
        with pytest.raises(rfx.ModelError, match=r"meta device.*to_empty"):
            entry(model, 0.5, (X,))


def test_a_model_without_layers_is_refused() -> None:
    model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    with pytest.raises(rfx.ModelError, match="no conv or linear layer"):
        rfx.compile(model, 0.5, (X,))
