"""A traced graph that computes something else than its model is refused, naming where.

torch.fx records one path through the forward. ``torch.jit.isinstance(x, torch.Tensor)``
now answers for a traced value as in eager mode (MONAI's BasicUNet concatenates its skips
only when it holds), and a graph that still differs from the model on the example inputs
is a TraceError that names the module call or node where it goes its own way.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.fx._symbolic_trace import is_fx_tracing

import reconvene_fx as rfx

_JIT_ISINSTANCE = torch.jit.isinstance


def _x(size: int = 16) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


class UpCat(nn.Module):
    """MONAI's UpCat in short: the skip is concatenated only when it is a tensor."""

    def __init__(self, c_in: int, c_skip: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2)
        self.conv = nn.Sequential(nn.Conv2d(c_in + c_skip, c_out, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor, x_e: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if torch.jit.isinstance(x_e, torch.Tensor):
            x = torch.cat([x_e, x], dim=1)
        elif torch.jit.is_scripting():
            raise RuntimeError("not scripted here")
        return self.conv(x)


class SkipUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.up = UpCat(32, 16, 16)
        self.head = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.stem(x)
        return self.head(self.up(self.down(x0), x0))


def test_jit_isinstance_keeps_the_skips_and_the_model_compiles(tmp_path: Path) -> None:
    model, x = SkipUNet().eval(), _x()
    gm = rfx.trace(model, example_inputs=(x,))
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [torch.cat]
    torch.testing.assert_close(gm(x), model(x), rtol=0, atol=0)
    assert torch.jit.isinstance is _JIT_ISINSTANCE  # put back after tracing
    assert torch.jit.isinstance(torch.zeros(1), torch.Tensor)
    assert not torch.jit.isinstance([1], list[torch.Tensor])
    # without example inputs a traced value is taken for a tensor
    assert len([n for n in rfx.trace(model).graph.nodes if n.target is torch.cat]) == 1

    out = rfx.compile(model, budget=0.5, example_inputs=(x,), reinit=False)
    rep = rfx.report(out)
    assert rep.params_after <= 0.5 * rep.params_before
    assert rep.layers["up.conv.0"].in_channels == 48  # the skip's 16 channels and 32
    assert len([n for n in out.graph.nodes if n.target is torch.cat]) == 1
    assert rfx.verify(model, out, (x,)).exact
    rfx.export_onnx(out, tmp_path / "m.onnx", (x,))
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_jit_isinstance_is_put_back_when_tracing_fails() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert torch.jit.isinstance(x, torch.Tensor)
            return x if x.sum() > 0 else -x  # data-dependent: cannot be traced

    with pytest.raises(rfx.TraceError, match=r"Broken\.forward"):
        rfx.trace(Broken())
    assert torch.jit.isinstance is _JIT_ISINSTANCE


_FLAG = {"scaled": False}


def _mark_scaled(*_: object) -> None:
    _FLAG["scaled"] = True


class Block(nn.Module):
    """Scales its output when a hook on its (leaf) conv ran: the hook runs when the model
    runs, never while it is traced, so the graph leaves the scaling out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.conv.register_forward_hook(_mark_scaled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _FLAG["scaled"] = False
        y = self.conv(x)
        if _FLAG["scaled"]:
            y = y * 0.5
        return y.relu()


class Flagged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.block = Block()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


def test_a_graph_that_computes_other_values_names_the_node_and_module() -> None:
    model = Flagged().eval()
    pattern = (
        r"(?s)does not compute what Flagged\.forward computes.*input 0 of module 'head' "
        r"\(node 'head'\) differs by up to .*node 'relu' in the forward of 'block' \(Block\)"
        r".*leaf_modules=\['block'\]"
    )
    with pytest.raises(rfx.TraceMismatchError, match=pattern) as info:
        rfx.trace(model, example_inputs=(_x(),))
    assert isinstance(info.value, rfx.TraceError)
    # a graph that computes something else is not compiled around (in place) either
    with pytest.raises(rfx.TraceMismatchError, match=pattern):
        rfx.compile(model, budget=0.5, example_inputs=(_x(),))
    # the remedy it names works: the block runs as written
    gm = rfx.trace(model, example_inputs=(_x(),), leaf_modules=["block"])
    torch.testing.assert_close(gm(_x()), model(_x()))
    assert rfx.trace(model, example_inputs=(_x(),), check=False) is not None


class Concat(nn.Module):
    """Concatenates its input only when not traced (as a forward testing builtin
    ``isinstance(x, torch.Tensor)`` would): the graph feeds ``fuse`` too few channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y if is_fx_tracing() else torch.cat([y, x], 1)


class Widening(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.cat = Concat()
        self.fuse = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.cat(self.stem(x)))


def test_a_graph_that_fails_where_the_model_runs_names_the_module() -> None:
    pattern = (
        r"(?s)input 0 of module 'fuse' \(node 'fuse'\) has shape \(2, 8, 14, 14\) instead of "
        r"\(2, 16, 14, 14\) in the graph; node 'cat_conv' in the forward of 'cat' \(Concat\)"
        r".*leaf_modules=\['cat'\]"
    )
    with pytest.raises(rfx.TraceError, match=pattern):
        rfx.trace(Widening(), example_inputs=(_x(),))


class Trimmed(nn.Module):
    """Keeps half of a branch's channels only when not traced: the graph's add fails."""

    def __init__(self) -> None:
        super().__init__()
        self.wide = nn.Conv2d(3, 8, 1)
        self.narrow = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.wide(x)
        if not is_fx_tracing():
            y = y[:, :4]
        return y + self.narrow(x)


def test_a_graph_failing_at_a_function_names_the_node_and_its_module() -> None:
    model = nn.Sequential(Trimmed(), nn.Conv2d(4, 2, 1))
    pattern = (
        r"(?s)node 'add' in the forward of '0' \(Trimmed\) fails \(RuntimeError: The size of "
        r"tensor a \(8\) must match.*, where the model runs.*leaf_modules=\['0'\]"
    )
    with pytest.raises(rfx.TraceError, match=pattern):
        rfx.trace(model, example_inputs=(_x(),))
    gm = rfx.trace(model, example_inputs=(_x(),), leaf_modules=["0"])
    torch.testing.assert_close(gm(_x()), model(_x()))


class StochasticDepth(nn.Module):
    """A residual block whose branch is dropped at random in training, with BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.bn(self.conv(x)))
        if self.training:
            keep = torch.rand_like(x[:, :1, :1, :1]) > 0.5
            y = y * keep / 0.5
        return x + y


def test_randomness_in_training_mode_is_compared_from_one_seed_and_changes_nothing() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), StochasticDepth(), nn.Conv2d(8, 4, 1)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    gm = rfx.trace(model, example_inputs=(_x(),))
    assert any(n.target is torch.rand_like for n in gm.graph.nodes)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's random stream is untouched
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(m.training for m in model.modules()) and all(m.training for m in gm.modules())


def test_a_model_that_differs_from_itself_is_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * random.random()  # a constant in the graph

    with caplog.at_level(logging.INFO, logger="reconvene_fx"):
        rfx.trace(Noisy(), example_inputs=(_x(),))
    assert "two runs of the model on the example inputs differ" in caplog.text


class _FeatureDict(nn.Module):
    """Returns an OrderedDict of features, as torchvision's FPN backbones do."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.a(x)
        return OrderedDict([("p2", a), ("p3", self.b(a))])


def test_an_ordered_dict_output_is_the_plain_dict_the_graph_returns() -> None:
    model = _FeatureDict().eval()
    x = torch.randn(1, 3, 16, 16)
    gm = rfx.trace(model, example_inputs=(x,))  # the check passes: same keys and values
    assert list(gm(x)) == ["p2", "p3"]


@dataclasses.dataclass
class _ModelOutput(OrderedDict):
    """An output as diffusers and transformers return it: a dataclass that is also a
    mapping of its fields that are not None."""

    sample: torch.Tensor
    loss: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                self[field.name] = value


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> _ModelOutput:
        return _ModelOutput(sample=self.out(self.conv(x).relu()))


def test_a_dataclass_mapping_output_counts_by_its_keys() -> None:
    """The mapping leaves out ``loss`` (None): the model and the graph have the same form,
    where reading the dataclass's fields would see an extra None in one of them."""
    model = _Decoder().eval()
    gm = rfx.trace(model, example_inputs=(_x(),))
    assert list(gm(_x())) == ["sample"]
    gm = rfx.compile(model, 0.5, (_x(),), method="magnitude")
    assert gm(_x())["sample"].shape == (2, 8, 16, 16)


# --------------------------------------------------------------- the corner and the replay


def test_the_corner_keeps_a_quarter_of_each_dim_past_the_second() -> None:
    from reconvene_fx._fidelity import _corner

    (image,) = _corner((torch.zeros(1, 3, 224, 224),))
    assert image.shape == (1, 3, 64, 64)
    (odd,) = _corner((torch.zeros(1, 3, 299, 299),))  # no power of two: a quarter, rounded up
    assert odd.shape == (1, 3, 75, 75)
    x, n, flag = _corner((torch.ones(2, 3, 128, 96), 7, True))
    assert x.shape == (2, 3, 64, 32) and (n, flag) == (7, True)
    assert _corner((_x(),)) is None  # 16x16: nothing to gain
    assert _corner((torch.zeros(4, 100),)) is None  # no dim past the second
    assert _corner((torch.zeros(1, 3, 224, 224, dtype=torch.long),)) is None  # not floating


def _spy_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The input shape of every run of the model by the fidelity check."""
    import reconvene_fx._fidelity as fidelity

    shapes: list[tuple[int, ...]] = []
    run_model = fidelity._run_model

    def spy(model, inputs, kwargs, recording=None):
        shapes.append(tuple(inputs[0].shape))
        return run_model(model, inputs, kwargs, recording)

    monkeypatch.setattr(fidelity, "_run_model", spy)
    return shapes


def _big_x() -> torch.Tensor:
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))


def test_a_faithful_graph_is_checked_on_a_corner_of_large_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = _spy_runs(monkeypatch)
    model = SkipUNet().eval()
    gm = rfx.trace(model, example_inputs=(_big_x(),))
    assert runs == [(2, 3, 64, 64)]  # the corner only: the graph reproduced the model there
    torch.testing.assert_close(gm(_big_x()), model(_big_x()), rtol=0, atol=0)


def test_a_graph_that_differs_is_named_on_the_whole_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _spy_runs(monkeypatch)
    pattern = (
        r"(?s)input 0 of module 'fuse' \(node 'fuse'\) has shape \(2, 8, 126, 126\) instead of "
        r"\(2, 16, 126, 126\) in the graph; node 'cat_conv' in the forward of 'cat' \(Concat\)"
    )
    with pytest.raises(rfx.TraceMismatchError, match=pattern):
        rfx.trace(Widening(), example_inputs=(_big_x(),))
    assert runs[0] == (2, 3, 64, 64) and (2, 3, 128, 128) in runs[1:]
    runs.clear()
    with pytest.raises(rfx.TraceMismatchError, match=r"input 0 of module 'head'"):
        rfx.trace(Flagged().eval(), example_inputs=(_big_x(),))
    assert runs[0] == (2, 3, 64, 64) and (2, 3, 128, 128) in runs[1:]


class SizeBranch(nn.Module):
    """Branches on its input's width: the graph holds the branch of 128 and is checked on
    the whole inputs (a corner would take the other branch)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * 2 if x.shape[-1] > 100 else y


def test_a_graph_holding_a_size_decision_is_checked_on_the_whole_inputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = _spy_runs(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rfx.BranchDecisionWarning)
        gm = rfx.trace(SizeBranch(), example_inputs=(_big_x(),))
    assert gm.meta["reconvene.trace_decisions"]
    assert runs == [(2, 3, 128, 128)]


class BigConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)  # 2x32x64x64 x 27: 7M MACs on the corner
        self.head = nn.Conv2d(32, 2, 1)  # 2x2x64x64 x 32: 0.5M, below what is replayed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).relu())


@pytest.mark.parametrize(
    "change",
    [
        lambda conv: setattr(conv, "weight", nn.Parameter(conv.weight.detach() * 2)),
        lambda conv: setattr(conv, "padding", (2, 2)),
    ],
    ids=["other-weight", "other-padding"],
)
def test_a_call_is_replayed_only_for_the_same_module(change) -> None:
    """The graph's conv no longer computes what the model's does: its call must be run,
    not taken from the model's run, and the difference found."""
    from reconvene_fx._fidelity import check_fidelity

    model = BigConv().eval()
    gm = rfx.trace(model, example_inputs=(_big_x(),), check=False)
    check_fidelity(model, gm, (_big_x(),), size_generic=True)  # as traced: the same
    change(gm.get_submodule("conv"))
    with pytest.raises(rfx.TraceMismatchError):
        check_fidelity(model, gm, (_big_x(),), size_generic=True)


def test_large_calls_are_replayed_and_hooked_modules_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import reconvene_fx._replay as replay

    taken: list[bool] = []
    same = replay._same_tensor

    def spy(a, b):
        taken.append(same(a, b))
        return taken[-1]

    monkeypatch.setattr(replay, "_same_tensor", spy)
    model = BigConv().eval()
    rfx.trace(model, example_inputs=(_big_x(),))
    assert taken == [True]  # the big conv's call was taken from the model's run; not head's
    model.conv.register_forward_hook(lambda *_: None)
    gm = rfx.trace(model, example_inputs=(_big_x(),), check=False)
    assert "conv" not in replay.replayable(gm) and "head" in replay.replayable(gm)
