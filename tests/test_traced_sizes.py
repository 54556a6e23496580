"""Python numbers computed from traced sizes: ``int()``/``float()``/``range()`` of a size
(a literal of the example inputs' value, guarded at run time), ``round()`` and
``torch.tensor``/``torch.as_tensor`` of one (calls computed at run time)."""

from __future__ import annotations

import math
import pickle
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import reconvene_fx as rfx
from reconvene_fx.guards import check_decision
from reconvene_fx.meta import VALUE

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class SplitByComputedSize(nn.Module):
    """Splits 32 channels in two halves whose size the forward computes in Python."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.left = nn.Conv2d(16, 8, 1)
        self.right = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        c = y.shape[1]
        if self.how == "int_product":
            k = int(c * 0.5)
        elif self.how == "int_division":
            k = int(y.size(1) / 2)
        elif self.how == "floor":
            k = math.floor(y.size(1) / 2)
        else:
            k = round(c * 0.5)
        a, b = torch.split(y, [k, c - k], 1)
        return torch.cat([self.left(a), self.right(b)], 1)


class ScaledByWidth(nn.Module):
    """Divides by the square root of its channel count, made from the traced size."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        if self.how == "tensor":
            scale = torch.tensor(y.shape[1], dtype=torch.float32).sqrt()
        else:
            scale = float(y.shape[1]) ** 0.5
        return self.head(y / scale)


class CropsHalfTheWidth(nn.Module):
    """Keeps the left half of the image, its width computed in Python."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = int(x.shape[-1] * 0.5)
        return self.head(torch.relu(self.stem(x))[..., :w])


class SumsTheLeftColumns(nn.Module):
    """Iterates over a range of the input's width (``__index__`` of a traced size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(x[..., i] for i in range(x.shape[-1] // 2))


class WeightsByPosition(nn.Module):
    """Scales by the input's height and width, as a tensor made at run time."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = torch.as_tensor([x.shape[-2], x.shape[-1]], dtype=torch.float32)
        return self.head(torch.relu(self.stem(x)) / size.prod())


class CountsPositives(nn.Module):
    """``int()`` of a value that depends on tensor data, not on sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : int(x.sum() > 0) + 1]


class Flattens(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.narrow(torch.reshape(x, (x.shape[0], -1)), 1, 0, x.shape[1] // 3)


def _compile(model: nn.Module, x: torch.Tensor = X) -> tuple[torch.fx.GraphModule, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm = rfx.compile(model, 0.5, (x,), reinit=False)
    return gm, [str(w.message) for w in caught if w.category is rfx.BranchDecisionWarning]


def _guards(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in gm.graph.nodes if n.target is check_decision]


def _assert_onnx_equal(gm: torch.fx.GraphModule, path: Path) -> None:
    """The exported file run by onnxruntime gives the compiled model's outputs."""
    with warnings.catch_warnings():  # torch.tensor of a size: a constant in the file
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        rfx.export_onnx(gm, path, (X,), check=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: X.numpy()})
    with torch.no_grad():
        expected = gm.eval()(X).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("how", "number"),
    [("int_product", "int() = 16"), ("int_division", "int() = 16"), ("floor", None),
     ("round", None)],
)  # fmt: skip
def test_a_split_by_a_computed_size_narrows_exactly(
    how: str, number: str | None, tmp_path: Path
) -> None:
    model = SplitByComputedSize(how).eval()
    gm, warned = _compile(model)
    stem, left, right = (gm.get_submodule(n) for n in ("stem", "left", "right"))
    assert stem.out_channels < 32
    assert left.in_channels + right.in_channels == stem.out_channels
    assert left.in_channels < 16 or right.in_channels < 16
    (split,) = [n for n in gm.graph.nodes if getattr(n.target, "__name__", "") == "split"]
    # literals the plan rewrote, or computed sizes that give the kept counts by themselves
    sizes = [a if isinstance(a, int) else a.meta[VALUE].value for a in split.args[1]]
    assert sizes == [left.in_channels, right.in_channels]
    assert rfx.verify(model, gm, (X,)).exact
    _assert_onnx_equal(gm, tmp_path / "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rfx.BranchDecisionWarning)
        traced = rfx.trace(model, example_inputs=(X,))
    if number is None:  # math.floor and round() are calls computed at run time
        assert {math.floor, round} & {n.target for n in traced.graph.nodes}
        assert not warned and not _guards(gm) and not _guards(traced)
        return
    # int(): the example's value is a literal, warned once with its line, and guarded
    assert len(warned) == 1 and number in warned[0] and "int(" in warned[0]
    assert "test_traced_sizes.py:" in warned[0]
    (guard,) = _guards(gm)
    assert guard.args[1] == 16
    decisions = traced.meta["reconvene.trace_decisions"]
    assert len(decisions) == 1 and decisions[0].endswith("= 16")


@pytest.mark.parametrize("how", ["tensor", "float"])
def test_a_scale_made_from_the_channel_count_keeps_its_original_value(
    how: str, tmp_path: Path
) -> None:
    model = ScaledByWidth(how).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rfx.BranchDecisionWarning)
        traced = rfx.trace(model, example_inputs=(X,))
    made = [n for n in traced.graph.nodes if n.target is torch.tensor]
    # torch.tensor is a call computed at run time; float() a literal with its guard
    assert len(made) == (how == "tensor")
    assert len(_guards(traced)) == (how == "float")
    gm, warned = _compile(model)
    assert gm.get_submodule("stem").out_channels < 16
    assert gm.get_submodule("head").in_channels == gm.get_submodule("stem").out_channels
    assert len(warned) == (how == "float")
    # exact only if the scale is still sqrt(16), not the square root of the kept count
    assert rfx.verify(model, gm, (X,)).exact
    _assert_onnx_equal(gm, tmp_path / "m.onnx")


def test_a_tensor_made_from_spatial_sizes_follows_the_inputs_at_run_time() -> None:
    model = WeightsByPosition().eval()
    gm, warned = _compile(model)
    assert not warned and not _guards(gm)
    assert gm.get_submodule("stem").out_channels < 16
    assert rfx.verify(model, gm, (X,)).exact
    wider = torch.randn(1, 3, 12, 20)
    # the size is read at run time: inputs of another size are still computed exactly
    assert rfx.verify(model, gm, (wider,)).exact


def test_a_literal_guard_refuses_inputs_that_give_another_number(tmp_path: Path) -> None:
    model = CropsHalfTheWidth().eval()
    gm, warned = _compile(model, torch.randn(2, 3, 16, 16))
    assert len(warned) == 1 and "int() = 8" in warned[0]
    assert "w = int(x.shape[-1] * 0.5)" in warned[0]
    assert gm.get_submodule("stem").out_channels < 16
    x = torch.randn(1, 3, 12, 16)  # another batch and height, the same width: runs
    assert rfx.verify(model, gm, (x,)).exact
    wider = torch.randn(1, 3, 16, 24)
    message = r"give int\(\) = 8 at test_traced_sizes.py:\d+ .*these inputs give 12"
    with pytest.raises(rfx.InputError, match=message):
        gm(wider)
    # still guarded after pickling (the graph is traced again, without example inputs)
    with pytest.raises(rfx.InputError, match=message):
        pickle.loads(pickle.dumps(gm))(wider)
    rfx.save(gm, tmp_path / "m.pt", (x,))
    with pytest.raises(rfx.InputError, match=message):
        rfx.load(tmp_path / "m.pt")(wider)


def test_range_of_a_size_is_a_guarded_literal() -> None:
    model = SumsTheLeftColumns()
    x = torch.randn(2, 3, 8, 10)
    with pytest.warns(rfx.BranchDecisionWarning, match=r"index\(\) = 5"):
        gm = rfx.trace(model, example_inputs=(x,))
    assert gm.meta["reconvene.trace_decisions"] == ["forward: index(floordiv) = 5"]
    same_width = torch.randn(1, 3, 4, 10)
    torch.testing.assert_close(gm(same_width), model(same_width))
    with pytest.raises(rfx.InputError, match=r"give int\(\) = 5 .*give 6"):
        gm(torch.randn(1, 3, 4, 12))


def test_sizes_given_to_torch_functions_stay_computed_at_run_time() -> None:
    # torch's argument parser asks the proxy for __index__ before dispatching the call:
    # that check is not a number the forward used, and leaves no literal and no guard
    with warnings.catch_warnings():
        warnings.simplefilter("error", rfx.BranchDecisionWarning)
        gm = rfx.trace(Flattens(), example_inputs=(torch.randn(2, 6, 4, 4),))
    assert "reconvene.trace_decisions" not in gm.meta and not _guards(gm)
    x = torch.randn(3, 9, 2, 2)
    torch.testing.assert_close(gm(x), Flattens()(x))


def test_a_number_that_depends_on_tensor_data_is_a_clear_trace_error() -> None:
    with pytest.raises(rfx.TraceError, match="not a size known from the example inputs") as info:
        rfx.trace(CountsPositives(), example_inputs=(X,))
    assert "int() argument must be" not in str(info.value)
    with pytest.raises(rfx.TraceError, match="not known without example inputs"):
        rfx.trace(SplitByComputedSize("int_product"))
