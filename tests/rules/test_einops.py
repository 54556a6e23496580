"""einops rearrange/repeat/reduce: traced as single calls, pruned through where the pattern
moves channels predictably, boundaries where it mixes them; compact models stay exact and
export to ONNX."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import einops
import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from einops import einsum, rearrange, reduce, repeat
from einops.layers.torch import Rearrange, Reduce

import reconvene_fx as rfx
from reconvene_fx.meta import CHANNELS, ChannelInfo
from reconvene_fx.passes import ChannelGroupPass, ShapePass, UnknownOpWarning
from reconvene_fx.tracing import _library_notrace, trace


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """The same weights on every run: which layers narrow depends on them."""
    torch.manual_seed(0)


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def _compile(model: nn.Module, tmp_path: Path) -> torch.fx.GraphModule:
    """Compile at budget 0.5, check it is exact against the original and that its ONNX
    export computes what PyTorch computes. ``round_to=1``: these nets are so small that
    the default widths may leave a layer whole, and the tests are about the narrowing."""
    x = _x()
    gm = rfx.compile(model, 0.5, (x,), reinit=False, round_to=1)
    assert rfx.verify(model, gm, (x,)).exact
    path = rfx.export_onnx(gm, tmp_path / "model.onnx", (x,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = gm.eval()(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    return gm


def _analyse(model: nn.Module) -> dict[str, ChannelInfo]:
    x = _x()
    gm = trace(model, example_inputs=(x,))
    ShapePass((x,))(gm)
    ChannelGroupPass()(gm)
    return {n.name: n.meta.get(CHANNELS) for n in gm.graph.nodes}


def _einops_node(gm: torch.fx.GraphModule) -> torch.fx.Node:
    (node,) = [n for n in gm.graph.nodes if getattr(n.target, "__module__", "") == "einops.einops"]
    return node


class Tokens(nn.Module):
    """Channels become the token features a Linear reads, then a feature map again."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 24)
        self.conv3 = nn.Conv2d(24, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv2(torch.relu(self.conv(x))))
        tokens = self.fc(rearrange(y, "b c h w -> b (h w) c"))
        return self.conv3(rearrange(tokens, "b (h w) c -> b c h w", h=8))


class ChannelsLast(nn.Module):
    """A permute-like pattern around a Linear, and back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 24)
        self.conv2 = nn.Conv2d(24, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(rearrange(torch.relu(self.conv(x)), "b c h w -> b h w c"))
        return self.conv2(rearrange(y, "b h w c -> b c h w"))


class PixelShuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rearrange(self.conv(x), "b (c p1 p2) h w -> b c (h p1) (w p2)", p1=2, p2=2)
        return self.conv2(y)


class SpaceToDepth(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rearrange(self.conv(x), "b c (h p1) (w p2) -> b (c p1 p2) h w", p1=2, p2=2)
        return self.conv2(y)


class GroupShuffle(nn.Module):
    """A channel shuffle with a fixed group count."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(rearrange(self.conv(x), "b (g c) h w -> b (c g) h w", g=4))


class FixedInner(nn.Module):
    """A fixed inner size: groups of 16 channels, split out, activated, merged back."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(rearrange(self.conv(x), "b (g c) h w -> b g c h w", c=16))
        return self.conv2(rearrange(y, "b g c h w -> b (g c) h w"))


class ComputedInner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(64, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.conv2(rearrange(y, "b (g c) h w -> b (c g) h w", c=y.shape[1] // 4))


class Repeat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(repeat(self.conv(x), "b c h w -> b (c r) h w", r=2))


class GlobalMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(reduce(torch.relu(self.conv(x)), "b c h w -> b c", "mean"))


class Pool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(reduce(self.conv(x), "b c (h 2) (w 2) -> b c h w", "max"))


class Maxout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(reduce(self.conv(x), "b (c p) h w -> b c h w", "max", p=4))


class Layers(nn.Module):
    """einops' own layers."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.ReLU(),
            Rearrange("b c h w -> b h w c"),
            nn.Linear(16, 24),
            Rearrange("b h w c -> b c h w"),
            nn.Conv2d(24, 8, 3),
            Reduce("b c h w -> b c", "mean"),
            nn.Linear(8, 4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ChannelMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(reduce(self.conv(x), "b c h w -> b 1 h w", "mean"))


class Stacked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = rearrange([self.a(x), self.b(x)], "n b c h w -> b (n c) h w")
        return self.conv2(y)


class Einsum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.conv(x)))
        return self.conv3(einsum(y, y, "b c h w, b c h w -> b c h w"))


# -- pruned through ----------------------------------------------------------------------


def test_rearrange_to_tokens_and_back_narrows_the_layers_around(tmp_path: Path) -> None:
    gm = _compile(Tokens(), tmp_path)
    assert gm.conv2.out_channels < 32 and gm.fc.in_features == gm.conv2.out_channels
    assert gm.fc.out_features < 24 and gm.conv3.in_channels == gm.fc.out_features


def test_channels_last_and_back_narrow_both_sides_of_the_linear(tmp_path: Path) -> None:
    gm = _compile(ChannelsLast(), tmp_path)
    assert gm.conv.out_channels < 16 and gm.fc.in_features == gm.conv.out_channels
    assert gm.fc.out_features < 24 and gm.conv2.in_channels == gm.fc.out_features


def test_pixel_shuffle_prunes_whole_blocks_of_four(tmp_path: Path) -> None:
    info = _analyse(PixelShuffle())
    blocks = info["conv"].atoms.view(8, 4)
    assert bool((blocks == blocks[:, :1]).all()) and not bool(info["conv"].pinned.any())
    assert info["rearrange"].dim == 1 and info["rearrange"].size == 8
    gm = _compile(PixelShuffle(), tmp_path)
    kept = gm.conv.out_channels
    assert kept < 32 and kept % 4 == 0 and gm.conv2.in_channels == kept // 4
    assert _einops_node(gm).kwargs == {"p1": 2, "p2": 2}


def test_space_to_depth_ties_each_new_channel_to_its_source(tmp_path: Path) -> None:
    gm = _compile(SpaceToDepth(), tmp_path)
    assert gm.conv.out_channels < 16 and gm.conv2.in_channels == 4 * gm.conv.out_channels


def test_fixed_group_count_ties_position_j_across_groups(tmp_path: Path) -> None:
    info = _analyse(GroupShuffle())
    groups = info["conv"].atoms.view(4, 8)
    assert bool((groups == groups[:1]).all())
    assert len(set(groups[0].tolist())) == 8  # positions within a group stay apart
    gm = _compile(GroupShuffle(), tmp_path)
    kept = gm.conv.out_channels
    assert kept < 32 and kept % 4 == 0 and gm.conv2.in_channels == kept
    assert _einops_node(gm).kwargs == {"g": 4}


def test_fixed_inner_size_prunes_whole_groups_and_keeps_the_literal(tmp_path: Path) -> None:
    gm = _compile(FixedInner(), tmp_path)
    kept = gm.conv.out_channels
    assert kept < 64 and kept % 16 == 0 and gm.conv2.in_channels == kept
    (split, _) = [n for n in gm.graph.nodes if n.target is rearrange]
    assert split.kwargs == {"c": 16}


def test_computed_inner_size_keeps_its_original_value(tmp_path: Path) -> None:
    traced = trace(ComputedInner(), example_inputs=(_x(),))
    assert isinstance(_einops_node(traced).kwargs["c"], torch.fx.Node)
    gm = _compile(ComputedInner(), tmp_path)
    kept = gm.conv.out_channels
    assert kept < 64 and kept % 16 == 0 and gm.conv2.in_channels == kept
    assert _einops_node(gm).kwargs == {"c": 16}  # ShrinkPass wrote back the original value


def test_repeat_ties_each_copy_to_its_channel(tmp_path: Path) -> None:
    info = _analyse(Repeat())
    assert torch.equal(info["repeat"].atoms, info["conv"].atoms.repeat_interleave(2))
    gm = _compile(Repeat(), tmp_path)
    assert gm.conv.out_channels < 16 and gm.conv2.in_channels == 2 * gm.conv.out_channels


def test_reduce_mean_over_space_keeps_the_channels(tmp_path: Path) -> None:
    gm = _compile(GlobalMean(), tmp_path)
    assert gm.conv.out_channels < 16 and gm.fc.in_features == gm.conv.out_channels


def test_reduce_with_an_anonymous_axis_pools_each_channel(tmp_path: Path) -> None:
    gm = _compile(Pool(), tmp_path)
    assert gm.conv.out_channels < 16 and gm.conv2.in_channels == gm.conv.out_channels


def test_maxout_reduce_prunes_whole_blocks(tmp_path: Path) -> None:
    gm = _compile(Maxout(), tmp_path)
    kept = gm.conv2.in_channels
    assert kept < 16 and gm.conv.out_channels == 4 * kept


def test_einops_layers_are_kept_whole_and_pruned_through(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", rfx.AutoLeafWarning)
        gm = _compile(Layers(), tmp_path)
    conv, fc, conv2, head = (gm.get_submodule(f"net.{i}") for i in (0, 3, 5, 7))
    assert conv.out_channels < 16 and fc.in_features == conv.out_channels
    assert fc.out_features < 24 and conv2.in_channels == fc.out_features
    assert conv2.out_channels < 8 and head.in_features == conv2.out_channels


# -- boundaries --------------------------------------------------------------------------


def test_reduce_over_the_channels_is_a_boundary() -> None:
    info = _analyse(ChannelMean())
    assert bool(info["conv"].pinned.all())
    assert "mixes channels" in info["conv"].pinned_by(0).reason


def test_a_list_of_tensors_is_a_boundary() -> None:
    info = _analyse(Stacked())
    assert bool(info["a"].pinned.all()) and bool(info["b"].pinned.all())
    assert "list of tensors" in info["a"].pinned_by(0).reason


def test_einsum_is_one_call_without_a_rule() -> None:
    model, x = Einsum(), _x()
    with pytest.warns(UnknownOpWarning, match="einsum"):
        gm = rfx.compile(model, 0.7, (x,), reinit=False)
    assert [n.target for n in gm.graph.nodes if n.op == "call_function"] == [torch.relu, einsum]
    assert gm.conv2.out_channels == 16 and gm.conv.out_channels < 16
    assert rfx.verify(model, gm, (x,)).exact


# -- tracing -----------------------------------------------------------------------------


def test_trace_keeps_each_einops_call_as_one_node() -> None:
    gm = trace(FixedInner(), example_inputs=(_x(),))
    calls = [n for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
    assert [n.target for n in calls] == [rearrange, torch.relu, rearrange]
    assert calls[0].args[1] == "b (g c) h w -> b g c h w" and calls[0].kwargs == {"c": 16}


def test_einops_is_a_leaf_library_only_once_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = {einops.rearrange, einops.repeat, einops.reduce, einops.einsum}
    assert wrapped <= set(_library_notrace())
    monkeypatch.delitem(sys.modules, "einops")
    assert not wrapped & set(_library_notrace())


def test_importing_reconvene_fx_does_not_import_einops() -> None:
    code = "import sys, reconvene_fx; print('einops' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
