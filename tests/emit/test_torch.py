"""Tests of reconvene_fx.emit.torch: .pt2 / .pt / .onnx files reproduce the module's outputs."""

from __future__ import annotations

import copy
import doctest

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision
from models import randomize_norms
from torch import nn
from torch.nn.utils import parametrize

import reconvene_fx as rfx
import reconvene_fx.emit._state as emit_state
import reconvene_fx.emit.torch as emit_torch
from reconvene_fx.emit import load, save
from reconvene_fx.errors import ArgumentError, ExportError, InputError, ReconveneError


class TinyNet(nn.Module):
    """Conv-BN-ReLU, a residual add and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class Mask(nn.Module):
    """A fixed unstructured mask, as composite pruning would register it."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


MODELS = {
    "tiny": TinyNet,
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "shufflenet_v2_x0_5": lambda: torchvision.models.shufflenet_v2_x0_5(weights=None),
}


def traced(name: str) -> torch.fx.GraphModule:
    """A traced model in train mode with one submodule frozen in eval mode; norm statistics
    are randomised so that eval mode differs from train mode and from the identity."""
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(randomize_norms(MODELS[name]()))
    gm.train()
    next(m for m in gm.modules() if m is not gm).eval()
    return gm


def flags(module: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def eval_output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model = copy.deepcopy(module).eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("name", list(MODELS))
def test_pt2_round_trip(tmp_path, name):
    gm = traced(name)
    before = flags(gm)
    x = torch.randn(2, 3, 64, 64)

    path = save(gm, tmp_path / "model.pt2", (x,))

    assert path == tmp_path / "model.pt2" and path.is_file()
    assert flags(gm) == before
    loaded = load(path)
    with torch.no_grad():
        got = loaded(x)
    torch.testing.assert_close(got, eval_output(gm, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["tiny", "shufflenet_v2_x0_5"])
def test_pt_round_trip_keeps_module_and_flags(tmp_path, name):
    gm = traced(name)
    before = flags(gm)
    x = torch.randn(2, 3, 64, 64)

    path = save(gm, tmp_path / "sub" / "model.pt", (x,))

    assert path.is_file()
    loaded = load(path)
    assert isinstance(loaded, torch.fx.GraphModule)
    assert flags(loaded) == before == flags(gm)
    assert loaded.code == gm.code
    torch.testing.assert_close(eval_output(loaded, x), eval_output(gm, x), rtol=0, atol=0)


def test_pt_loads_with_weights_only_and_refuses_pickled_files(tmp_path):
    path = save(traced("tiny"), tmp_path / "m.pt", ())
    state = torch.load(path, weights_only=True)  # plain data: no pickled objects
    assert state["format"].startswith("reconvene_fx.graph_module")
    old = tmp_path / "old.pt"
    torch.save(traced("tiny"), old)  # a pickled GraphModule, as before 0.3
    with pytest.raises(ReconveneError, match=r"weights_only=False\) only if you trust it"):
        load(old)


class _Custom(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 2


def test_pt_refuses_classes_outside_the_trusted_modules(tmp_path):
    gm = rfx.trace(nn.Sequential(_Custom(3, 4, 3)), leaf_modules=[_Custom])
    path = save(gm, tmp_path / "m.pt", ())
    with pytest.raises(ReconveneError, match=r"outside the trusted modules.*trusted=\["):
        load(path)
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(load(path, trusted=[__name__.split(".")[0]])(x), gm(x))


def test_onnx_suffix_uses_export_onnx(tmp_path):
    gm = traced("tiny")
    before = flags(gm)
    x = torch.randn(2, 3, 16, 16)
    path = save(gm, tmp_path / "model.onnx", (x,))
    assert flags(gm) == before
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, eval_output(gm, x).numpy(), rtol=1e-4, atol=1e-5)


def test_suffix_is_case_insensitive(tmp_path):
    gm = traced("tiny")
    x = torch.randn(1, 3, 8, 8)
    loaded = load(save(gm, tmp_path / "MODEL.PT2", (x,)))
    torch.testing.assert_close(loaded(x), eval_output(gm, x))


@pytest.mark.parametrize("filename", ["model.h5", "model", "model.pth.tar"])
def test_bad_suffix_raises_argument_error(tmp_path, filename):
    with pytest.raises(
        ArgumentError, match=r"unsupported suffix.*'\.pt', '\.pt2', '\.onnx'"
    ) as info:
        save(traced("tiny"), tmp_path / filename, (torch.randn(1, 3, 8, 8),))
    assert isinstance(info.value, ValueError)  # what it raised before, still caught as such
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_onnx(tmp_path):
    with pytest.raises(ArgumentError, match=r"unsupported suffix '\.onnx'.*'\.pt', '\.pt2'"):
        load(tmp_path / "model.onnx")


# ------------------------------------------------------------------- example inputs


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
@pytest.mark.parametrize("form", ["bare", "list"])
def test_example_inputs_as_compile_takes_them(tmp_path, suffix, form):
    gm = traced("tiny")  # BatchNorm: a bare tensor iterated over its batch dim breaks it
    x = torch.randn(2, 3, 16, 16)
    path = save(gm, tmp_path / f"m{suffix}", x if form == "bare" else [x])
    if suffix == ".pt2":
        with torch.no_grad():
            got = load(path)(x).numpy()
    else:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, eval_output(gm, x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("example_inputs", [None, (), []])
@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_formats_that_trace_need_example_inputs(tmp_path, suffix, example_inputs):
    with pytest.raises(ArgumentError, match=rf"the \{suffix} format needs example_inputs") as info:
        save(traced("tiny"), tmp_path / f"m{suffix}", example_inputs)
    assert f"rfx.save(gm, 'm{suffix}', (x,))" in str(info.value)  # how to pass them
    assert list(tmp_path.iterdir()) == []


def test_pt_needs_no_example_inputs(tmp_path):
    gm = traced("tiny")
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(eval_output(load(save(gm, tmp_path / "m.pt")), x),
                               eval_output(gm, x), rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_rejected_example_inputs_raise_input_error(tmp_path, suffix):
    gm = traced("tiny")
    before = flags(gm)
    x = torch.randn(2, 1, 16, 16)  # one channel; conv1 takes three
    with pytest.raises(InputError, match=r"shape \(2, 1, 16, 16\) at node 'conv1'.*3 channels"):
        save(gm, tmp_path / f"m{suffix}", (x,))
    assert flags(gm) == before
    assert list(tmp_path.iterdir()) == []


def test_too_many_example_inputs_raise_input_error(tmp_path):
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(InputError, match=r"holds 2 inputs; .*forward takes 1"):
        save(traced("tiny"), tmp_path / "m.pt2", (x, x))


def test_pt2_capture_failure_is_export_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("simulated torch.export failure\nsecond line")

    monkeypatch.setattr(torch.export, "export", refuse)
    with pytest.raises(ExportError, match=r"torch.export could not capture.*simulated.*\.pt or"):
        save(traced("tiny"), tmp_path / "m.pt2", (torch.randn(1, 3, 8, 8),))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------- what .pt cannot hold: typed errors


def test_pt_refuses_values_it_cannot_encode_with_export_error(tmp_path):
    gm = traced("tiny")
    gm.conv1.extra = object()  # a module attribute of no encodable kind
    with pytest.raises(ExportError, match=r"'conv1'.*attribute 'extra' is a object.*\.pt2"):
        save(gm, tmp_path / "m.pt", ())
    with pytest.raises(ExportError, match="values of type object are not supported"):
        emit_state._encode(object())  # was a TypeError


def test_pt_refuses_unnamed_functions_with_export_error(tmp_path):
    gm = traced("tiny")
    output = next(n for n in gm.graph.nodes if n.op == "output")
    with gm.graph.inserting_before(output):
        doubled = gm.graph.call_function(lambda t: t * 2, (output.args[0],))
    output.args = (doubled,)
    gm.recompile()
    with pytest.raises(ExportError, match=r"cannot save node .*importable path.*\.pt2 or \.onnx"):
        save(gm, tmp_path / "m.pt", ())
    assert list(tmp_path.iterdir()) == []


def test_parametrized_module(tmp_path):
    gm = traced("tiny")
    mask = (torch.rand_like(gm.conv2.weight) > 0.5).float()
    parametrize.register_parametrization(gm.conv2, "weight", Mask(mask))
    x = torch.randn(2, 3, 16, 16)

    with pytest.raises(ExportError, match=r"WeightMask.*\.pt2"):
        save(gm, tmp_path / "m.pt", (x,))  # not a composite mask: .pt cannot hold it
    loaded = load(save(gm, tmp_path / "m.pt2", (x,)))  # the mask is baked into the program
    torch.testing.assert_close(loaded(x), eval_output(gm, x))
    assert parametrize.is_parametrized(gm.conv2)


def test_docstring_examples():
    result = doctest.testmod(emit_torch)
    assert result.attempted > 0
    assert result.failed == 0
