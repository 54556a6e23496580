"""Channel counts read off a tensor's own shape (``t.shape[1] - 5``, ``x.size(1) // 2``)
follow the plan instead of pinning the channels; other uses of a narrowed channel count
keep their original value; only what cannot follow pins."""

from __future__ import annotations

import operator
import warnings

import pytest
import torch
import torch.nn as nn

import reconvene_fx as rfx
from reconvene_fx.meta import CHANNELS
from reconvene_fx.passes import ChannelGroupPass, ShapePass, UnknownOpWarning
from reconvene_fx.rules.sizes import channel_count, evaluate, shape_read
from reconvene_fx.tracing import trace

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # ONNX export


# a model may call int() and torch.tensor() on a traced size (torchvision's RAFT does
# torch.tensor(num_channels)): the tracer reads the first as a guarded literal and records
# the second as a call (tests/test_traced_sizes.py)


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class _TwoBranches(nn.Module):
    """A 16-channel stem cut into two pieces by ``cut``, each piece to its own conv."""

    def __init__(self, cut, first: int = 8) -> None:
        super().__init__()
        self.cut = cut
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(first, 8, 1)
        self.b = nn.Conv2d(16 - first, 8, 1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = self.cut(self.stem(x).relu())
        return self.head(torch.cat([self.a(p), self.b(q)], 1)).mean((2, 3))


def _split_rest(t: torch.Tensor):
    return torch.split(t, [5, t.shape[1] - 5], dim=1)


def _split_half(t: torch.Tensor):
    return t.split(t.size(1) // 2, 1)


def _slice_half(t: torch.Tensor):
    c = t.shape[1]
    return t[:, : c // 2], t[:, c // 2 :]


def _slice_ratio(t: torch.Tensor):
    k = int(t.shape[1] * 0.25)
    return t[:, :k], t[:, k:]


def _narrow_quarter(t: torch.Tensor):
    n = t.size(1) // 4
    return t.narrow(1, 0, n), t.narrow(1, n, t.size(1) - n)


CUTS = {
    "split-rest": (_split_rest, 5),
    "split-half": (_split_half, 8),
    "slice-half": (_slice_half, 8),
    "slice-int-ratio": (_slice_ratio, 4),
    "narrow": (_narrow_quarter, 4),
}


def _compile(model: nn.Module, tmp_path, **kwargs) -> torch.fx.GraphModule:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownOpWarning)
        gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False,
                         strategy="uniform", **kwargs)  # fmt: skip
    assert rfx.verify(model, gm, (_x(),)).exact
    rfx.export_onnx(gm, tmp_path / "m.onnx", (_x(),))
    return gm


@pytest.mark.parametrize("form", CUTS)
def test_a_cut_computed_from_the_own_channel_count_follows_the_plan(form: str, tmp_path) -> None:
    cut, first = CUTS[form]
    torch.manual_seed(0)
    model = _TwoBranches(cut, first).eval()
    gm = _compile(model, tmp_path)
    assert gm.stem.out_channels < 16
    assert gm.a.in_channels < first and gm.b.in_channels < 16 - first
    assert gm.a.in_channels + gm.b.in_channels == gm.stem.out_channels
    assert gm(_x()).shape == (2, 4)


def test_a_computed_size_that_is_right_by_itself_stays_in_the_code(tmp_path) -> None:
    torch.manual_seed(0)
    model = _TwoBranches(_split_half).eval()
    gm = _compile(model, tmp_path)
    (split,) = [n for n in gm.graph.nodes if n.target == "split"]
    assert isinstance(split.args[1], torch.fx.Node)  # x.size(1) // 2, halves kept alike
    assert gm.a.in_channels == gm.b.in_channels == gm.stem.out_channels // 2


def test_a_computed_size_that_would_be_wrong_is_rewritten_and_the_reads_go(tmp_path) -> None:
    torch.manual_seed(0)
    gm = _compile(_TwoBranches(_split_rest, 5).eval(), tmp_path)
    (split,) = [n for n in gm.graph.nodes if "split" in str(n.target)]
    assert list(split.args[1]) == [gm.a.in_channels, gm.b.in_channels]
    assert not any(shape_read(n) for n in gm.graph.nodes)  # t.shape[1] - 5 is gone


def test_an_int_split_size_leaving_a_short_last_piece_becomes_sections(tmp_path) -> None:
    class Thirds(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.heads = nn.ModuleList(nn.Conv2d(c, 4, 1) for c in (5, 5, 5, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.stem(x).relu()
            parts = t.split(t.shape[1] // 3, 1)  # 5, 5, 5, 1
            outs = [head(p) for head, p in zip(self.heads, parts, strict=True)]
            return sum(outs).mean((2, 3))

    torch.manual_seed(0)
    model = Thirds().eval()
    gm = _compile(model, tmp_path)
    assert gm.stem.out_channels < 16
    (split,) = [n for n in gm.graph.nodes if n.target == "split"]
    kept = [gm.get_submodule(f"heads.{i}").in_channels for i in range(4)]
    assert sum(kept) == gm.stem.out_channels
    sections = split.args[1]  # the sections, or a size that gives them (K // 3 for 2, 2, 2, 1)
    if isinstance(sections, list):
        assert sections == kept
    else:
        assert kept[:-1] == [kept[0]] * 3 and 0 < kept[-1] <= kept[0]


class _ScaledByWidth(nn.Module):
    """The channel count used as a value: a 1/sqrt(C) scale, and RAFT's
    ``torch.tensor(num_channels)``."""

    def __init__(self, as_tensor: bool) -> None:
        super().__init__()
        self.as_tensor = as_tensor
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stem(x).relu()
        _, c, _, _ = t.shape
        scale = torch.sqrt(torch.tensor(c)) if self.as_tensor else c**0.5
        return self.head(t / scale).mean((2, 3))


@pytest.mark.parametrize("as_tensor", [False, True], ids=["python", "torch.tensor"])
def test_a_channel_count_used_as_a_value_keeps_its_original_value(as_tensor, tmp_path) -> None:
    torch.manual_seed(0)
    model = _ScaledByWidth(as_tensor).eval()
    gm = _compile(model, tmp_path)
    assert gm.stem.out_channels < 16  # narrowed, and the scale is still that of 16
    values = {a for n in gm.graph.nodes for a in n.args if isinstance(a, (int, float))}
    assert (16 if as_tensor else 4.0) in values


def test_a_size_read_off_the_input_of_a_pass_through_op_follows(tmp_path) -> None:
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.fc = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.stem(x)
            n, c, h, w = t.shape
            return self.fc(t.relu().view(n, c, h * w).mean(-1))  # c is read off t

    torch.manual_seed(0)
    model = Pooled().eval()
    gm = _compile(model, tmp_path)
    assert gm.stem.out_channels == gm.fc.in_features < 16
    assert gm.stem.out_channels > 1  # not one atom: the channels are pruned one by one


def test_a_channel_count_sizing_a_dim_without_channels_keeps_its_value(tmp_path) -> None:
    class Reads(nn.Module):
        """maxvit's attention: ``out.reshape(B, G, P, D)`` with D read off the block's
        input, while ``out``'s own channels are elsewhere (here: pinned by a cumsum)."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.other = nn.Conv2d(3, 8, 1)
            self.head = nn.Conv2d(16, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = self.stem(x).relu()
            n, c, h, w = t.shape
            z = torch.cumsum(self.other(x), 2).reshape(n, 8, c * h * w // 16)
            return self.head(t).mean((2, 3)) + z.mean(2)

    torch.manual_seed(0)
    model = Reads().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownOpWarning)
        gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False)
    assert gm.stem.out_channels < 16
    (reshape,) = [n for n in gm.graph.nodes if n.target == "reshape"]
    assert isinstance(reshape.args[3], torch.fx.Node)  # 16 * h * w // 16: h, w still read
    assert rfx.verify(model, gm, (_x(),)).exact
    assert rfx.verify(model, gm, (torch.randn(1, 3, 12, 12),)).exact  # h, w follow the input
    rfx.export_onnx(gm, tmp_path / "m.onnx", (_x(),))


class _Reader(nn.Module):
    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> object:
        t = self.stem(x).relu()
        c = t.shape[1]
        if self.form == "chunk-count":  # 2 chunks, swapped: the count keeps its value
            y = torch.cat(list(t.chunk(c // 8, 1))[::-1], 1)
        elif self.form == "crop":  # a spatial crop by the channel count
            y = t[:, :, : c // 4]
        elif self.form == "narrow":
            y = t.narrow(2, 0, t.size(1) // 4)
        elif self.form == "spatial-split":
            y = t.split(c // 4, 2)[0]
        elif self.form == "view-whole-shape":  # the shape of the input of the relu
            y = t.relu().flatten(2).view(t.shape)
        else:  # "output": the count itself is returned
            return self.head(t).mean((2, 3)), c
        return self.head(y).mean((2, 3))


@pytest.mark.parametrize(
    "form", ["chunk-count", "crop", "narrow", "spatial-split", "view-whole-shape", "output"]
)
def test_other_reads_of_a_narrowed_channel_count_stay_exact(form: str) -> None:
    torch.manual_seed(0)
    model = _Reader(form).eval()
    gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False)
    assert gm.stem.out_channels < 16
    assert rfx.verify(model, gm, (_x(),)).exact
    if form == "output":
        assert gm(_x())[1] == 16


class _CutBy(nn.Module):
    """A 16-channel tensor cut at a bound read off something else: a spatial size
    (changes with the input), or the channel count of another layer's output."""

    def __init__(self, bound: str) -> None:
        super().__init__()
        self.bound = bound
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.other = nn.Conv2d(3, 32, 3, padding=1)
        self.a = nn.Conv2d(8, 4, 1)
        self.head = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, u = self.stem(x).relu(), self.other(x).relu()
        k = t.shape[-1] if self.bound == "spatial" else u.shape[1] // 4
        return (self.a(t[:, :k]) + self.head(u)).mean((2, 3))


@pytest.mark.parametrize("bound", ["spatial", "other-tensor"])
def test_a_bound_that_cannot_follow_pins_the_cut_tensor(bound: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = _CutBy(bound).eval()
    gm = trace(model, example_inputs=(_x(),))
    ShapePass((_x(),))(gm)
    ChannelGroupPass()(gm)
    stem = next(n for n in gm.graph.nodes if n.target == "stem")
    assert bool(stem.meta[CHANNELS].pinned.all())
    compiled = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False)
    assert compiled.stem.out_channels == 16 and compiled.other.out_channels < 32
    assert rfx.verify(model, compiled, (_x(),)).exact  # u.shape[1] // 4 keeps its value 8
    rfx.export_onnx(compiled, tmp_path / "m.onnx", (_x(),))


def test_channel_count_reads_only_the_channels_of_one_space() -> None:
    class Net(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, : x.shape[1] // 2 + x.size(-1) - 8]

    gm = torch.fx.symbolic_trace(Net())
    ShapePass((torch.randn(1, 8, 4, 8),))(gm)
    nodes = {n.name: n for n in gm.graph.nodes}
    x = nodes["x"]

    def channels(space: int):
        return lambda t: type("L", (), {"space": space, "dim": 1})() if t is x else None

    assert channel_count(nodes["floordiv"], 0, channels(0)) == 4
    assert channel_count(nodes["floordiv"], 0, channels(1)) is None  # another space
    assert channel_count(nodes["sub"], 0, channels(0)) is None  # reads the width too
    assert shape_read(nodes["size"]) == (x, 3)
    assert evaluate(nodes["sub"], lambda t: torch.Size([1, 6, 4, 8]), {}) == 3
    assert operator.floordiv in {n.target for n in nodes.values()}
