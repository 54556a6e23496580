"""trace: what it gets through beyond torch.fx.symbolic_trace, and what it still refuses."""

from __future__ import annotations

import pickle
import re
import warnings

import pytest
import torch
import torch.nn as nn

import reconvene_fx as rfx
from reconvene_fx.passes import UnknownOpWarning


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.gate = DataDependent()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gate(self.conv(x)))


def test_an_untraceable_submodule_becomes_a_leaf_with_one_warning() -> None:
    with pytest.warns(rfx.AutoLeafWarning, match=r"'gate' \(DataDependent: TraceError") as seen:
        gm = rfx.trace(Gated())
    assert len([w for w in seen if issubclass(w.category, rfx.AutoLeafWarning)]) == 1
    assert [n.target for n in gm.graph.nodes if n.op == "call_module"] == ["conv", "gate", "head"]
    assert list(gm.meta["reconvene.auto_leaves"]) == ["gate"]
    torch.testing.assert_close(gm(_x()), Gated.forward(gm, _x()))
    # pruned around: the leaf's channels are pinned, the rest compiles
    with pytest.warns(UnknownOpWarning, match="gate"):
        out = rfx.compile(Gated(), budget=1.0, example_inputs=(_x(),))
    assert out.get_submodule("conv").out_channels == 8
    rep = rfx.report(out)
    assert list(rep.leaves) == ["gate"] and "DataDependent" in rep.leaves["gate"]
    assert "leaf (not pruned through): gate" in rep.format_table()


def test_auto_leaf_off_gives_the_trace_error_naming_the_module() -> None:
    with pytest.raises(rfx.TraceError, match=r"(?s)gate \(DataDependent\).*leaf_modules") as info:
        rfx.compile(Gated(), budget=0.5, example_inputs=(_x(),), auto_leaf=False)
    assert isinstance(info.value, rfx.ReconveneError)
    # the suggested remedy works: the leaf is kept opaque and the channels it reads pinned
    with pytest.warns(UnknownOpWarning, match="gate"):
        gm = rfx.compile(Gated(), budget=1.0, example_inputs=(_x(),), leaf_modules=["gate"],
                         auto_leaf=False)  # fmt: skip
    assert gm.get_submodule("conv").out_channels == 8
    with (
        pytest.warns(UnknownOpWarning),
        pytest.raises(
            rfx.BudgetError,
            match=r"smallest reachable params budget .*keep the most of the params: 'conv'",
        ),
    ):
        rfx.compile(Gated(), budget=0.2, example_inputs=(_x(),), leaf_modules=[DataDependent])


def test_the_models_own_forward_failing_is_a_trace_error() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(rfx.TraceError, match=r"Branchy\.forward"):
        rfx.trace(Branchy())


class C2f(nn.Module):
    """Ultralytics' C2f in short: iterates over a chunk and takes len() of a split."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.cv1 = nn.Conv2d(3, 2 * c, 1)
        self.m = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(2))
        self.cv2 = nn.Conv2d(4 * c + 8, 8, 1)
        self.extra = nn.Conv2d(3, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        parts = self.extra(x).split([4, 4], 1)
        assert len(parts) == 2
        return self.cv2(torch.cat([*y, *parts], 1))


def test_iterating_over_chunks_and_len_of_splits_trace_and_compile() -> None:
    model = C2f().eval()
    gm = rfx.trace(model)
    torch.testing.assert_close(gm(_x()), model(_x()))
    with warnings.catch_warnings():
        warnings.simplefilter("error", rfx.AutoLeafWarning)
        out = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False)
    assert out.get_submodule("m.0").out_channels < 16  # a chunk's consumer is narrowed
    assert rfx.verify(model, out, (_x(),)).exact


def test_a_traced_model_with_leaves_pickles() -> None:
    with pytest.warns(rfx.AutoLeafWarning):
        gm = rfx.trace(Gated())
    again = pickle.loads(pickle.dumps(gm))
    torch.testing.assert_close(again(_x()), gm(_x()))


class ConvMlp(nn.Module):
    """timm's ConvMlp head in short: pools up small inputs, a branch on the input's shape."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(8, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] < 3 or x.shape[-1] < 3:
            x = torch.nn.functional.adaptive_avg_pool2d(x, (3, 3))
        return self.fc1(x)


class ShapeDriven(nn.Module):
    """A forward with *args/**kwargs (as Ultralytics writes it), iteration over unbind."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=4)
        self.mlp = ConvMlp()
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        y = self.stem(x)
        rows = [r for r in y.unsqueeze(2).unbind(2)]  # one piece
        return self.head(self.mlp(sum(rows))).mean((2, 3))


def test_shape_questions_are_answered_for_the_example_inputs() -> None:
    model = ShapeDriven().eval()
    small, large = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 24, 24)
    gm = rfx.trace(model, example_inputs=(small,))
    decisions = gm.meta["reconvene.trace_decisions"]
    assert any(d.startswith("mlp: lt(") and d.endswith("-> True") for d in decisions)
    assert any("len(unbind) = 1" in d for d in decisions)
    torch.testing.assert_close(gm(small), model(small))
    assert not any(n.op == "placeholder" and n.target.startswith("*") for n in gm.graph.nodes)
    # the other input takes the other branch, and is traced that way
    gm = rfx.trace(model, example_inputs=(large,))
    torch.testing.assert_close(gm(large), model(large))
    # without example inputs nothing can be answered: the branching module becomes a
    # leaf, and iterating in the model's own forward is a TraceError
    with pytest.warns(rfx.AutoLeafWarning, match="'1' \\(ConvMlp"):
        rfx.trace(nn.Sequential(nn.Conv2d(3, 8, 3), ConvMlp()))
    with pytest.raises(rfx.TraceError, match=r"ShapeDriven\.forward"):
        rfx.trace(model)


def test_a_model_that_branches_on_shapes_compiles_exactly() -> None:
    model = ShapeDriven().eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rfx.AutoLeafWarning)
        warnings.simplefilter("error", UnknownOpWarning)
        gm = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=False)
    assert gm.get_submodule("mlp.fc1").out_channels < 16
    assert rfx.verify(model, gm, (x,)).exact
    rep = rfx.report(gm)
    assert any(d.startswith("mlp: lt(") for d in rep.decisions)
    assert rep.to_dict()["decisions"] == list(rep.decisions)
    assert "traced for the example inputs: mlp: lt(" in rep.format_table()


class Optional(nn.Module):
    """Keyword options with defaults and a dict output, as model-hub forwards have."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3)
        self.head = nn.Linear(16, 4)

    def forward(
        self, pixel_values: torch.Tensor, scale: torch.Tensor | None = None, flag: bool = False
    ) -> dict[str, torch.Tensor]:
        f = self.conv(pixel_values).mean((2, 3))
        if scale is not None:
            f = f * scale
        return {"logits": self.head(f) * (2.0 if flag else 1.0)}


def test_options_the_inputs_leave_out_keep_their_defaults() -> None:
    model = Optional().eval()
    x = _x()
    gm = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=False)
    assert gm.get_submodule("conv").out_channels < 16
    out = gm(x)
    assert list(out) == ["logits"] and out["logits"].shape == (2, 4)
    assert rfx.verify(model, gm, (x,)).exact


def test_each_node_records_the_model_line_that_made_it() -> None:
    import torchvision

    gm = rfx.trace(torchvision.models.resnet18(), example_inputs=(torch.randn(1, 3, 32, 32),))
    sources = {n.name: n.meta.get("reconvene.source") for n in gm.graph.nodes}
    # torchvision's file, not torch's (whose folder name starts the same)
    assert re.fullmatch(r"resnet\.py:\d+ \(x = self\.conv1\(x\)\)", sources["conv1"])
    assert sources["x"] is None and sources["output"] is None  # made by tracing itself
