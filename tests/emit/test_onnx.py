"""Tests of reconvene_fx.emit.onnx: exported files must run in onnxruntime like PyTorch eval."""

from __future__ import annotations

import copy
import doctest
import json
import operator

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from models import randomize_norms
from torch import nn

import reconvene_fx._mode as emit_mode
import reconvene_fx.emit.onnx as emit_onnx
from reconvene_fx.emit import export_onnx
from reconvene_fx.emit._guards import without_guards
from reconvene_fx.errors import (
    ArgumentError,
    ArgumentTypeError,
    ExportError,
    InputError,
    ReconveneError,
)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stack with pooling, dropout and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.drop(x))


class Branchy(nn.Module):
    """Residual add, concat, channel shuffle and nested outputs ``(logits, [feat, pooled])``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8))
        self.right = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor):
        s = self.stem(x)
        a = torch.relu(self.left(s) + s)
        y = torch.cat([a, self.right(s)], dim=1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        pooled = y.mean(dim=(2, 3))
        return self.fc(pooled), [y, pooled]


class OddPool(nn.Module):
    """Adaptive pooling to a size that does not divide the input: TorchScript export fails."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


MODELS = {
    "small_cnn": SmallCNN,
    "branchy": Branchy,
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "mobilenet_v3_small": lambda: torchvision.models.mobilenet_v3_small(weights=None),
    "shufflenet_v2_x0_5": lambda: torchvision.models.shufflenet_v2_x0_5(weights=None),
    "squeezenet1_0": lambda: torchvision.models.squeezenet1_0(weights=None),
}


def traced(name: str) -> torch.fx.GraphModule:
    """A traced model in train mode with one submodule frozen in eval mode; norm statistics
    are randomised so that eval mode differs from train mode and from the identity."""
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(randomize_norms(MODELS[name]()))
    gm.train()
    next(m for m in gm.modules() if m is not gm).eval()  # mixed flags must survive
    return gm


def flags(module: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def flat(value) -> list[np.ndarray]:
    """Flatten nested tuple/list outputs to numpy arrays (independent of the emitter)."""
    if isinstance(value, torch.Tensor):
        return [value.detach().numpy()]
    return [a for v in value for a in flat(v)]


def eval_outputs(gm: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    model = copy.deepcopy(gm).eval()
    with torch.no_grad():
        return flat(model(x))


def ort_outputs(path, x: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def assert_close(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for got, ref in zip(actual, expected, strict=True):
        assert got.shape == ref.shape
        scale = float(np.abs(ref).max())
        assert scale > 1e-3, "reference too small to compare meaningfully"
        assert float(np.abs(got - ref).max()) <= 1e-4 * scale + 1e-6


@pytest.mark.parametrize("name", list(MODELS))
def test_export_matches_pytorch_eval(tmp_path, name):
    gm = traced(name)
    before = flags(gm)
    x = torch.randn(2, 3, 64, 64)

    path = export_onnx(gm, tmp_path / "model.onnx", (x,))

    assert path == tmp_path / "model.onnx"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # self-contained
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert flags(gm) == before
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))


def test_exports_eval_not_train_behaviour(tmp_path):
    gm = traced("small_cnn")
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(1)
    with torch.no_grad():
        train_out = gm(x).numpy()
    got = ort_outputs(export_onnx(gm, tmp_path / "m.onnx", (x,)), x)[0]
    assert not np.allclose(got, train_out, atol=1e-3)
    assert_close([got], eval_outputs(gm, x))


def test_graph_is_cleaned_and_sorted(tmp_path):
    model = onnx.load(
        str(export_onnx(traced("branchy"), tmp_path / "m.onnx", (torch.randn(1, 3, 8, 8),)))
    )
    produced = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    for node in model.graph.node:  # topological order: inputs exist before use
        assert all(not i or i in produced for i in node.input), node.name
        produced.update(node.output)
    used = {i for node in model.graph.node for i in node.input}
    assert all(t.name in used for t in model.graph.initializer)  # no dead weights


def test_nested_outputs_flattened_in_order_with_default_names(tmp_path):
    gm = traced("branchy")
    x = torch.randn(2, 3, 8, 8)
    path = export_onnx(gm, tmp_path / "m.onnx", (x,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["output_0", "output_1", "output_2"]
    placeholder = next(n.name for n in gm.graph.nodes if n.op == "placeholder")
    assert [i.name for i in session.get_inputs()] == [placeholder]
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))


def test_custom_names_and_opset(tmp_path):
    gm = traced("small_cnn")
    x = torch.randn(2, 3, 8, 8)
    path = export_onnx(
        gm, tmp_path / "m.onnx", (x,), opset=17, input_names=["images"], output_names=["logits"]
    )
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert {o.domain: o.version for o in model.opset_import}[""] == 17


def perturb_run(monkeypatch, index: int, delta: float) -> None:
    """Make onnxruntime return output ``index`` shifted by ``delta``."""
    real_run = ort.InferenceSession.run

    def run(self, output_names, feeds, run_options=None):
        outs = real_run(self, output_names, feeds, run_options)
        outs[index] = outs[index] + np.float32(delta)
        return outs

    monkeypatch.setattr(ort.InferenceSession, "run", run)


@pytest.mark.parametrize("index", [0, 2])
def test_mismatch_raises_export_error(tmp_path, monkeypatch, index):
    gm = traced("branchy")
    before = flags(gm)
    perturb_run(monkeypatch, index, 0.5)
    with pytest.raises(ExportError, match=rf"output {index} .*max abs error 0\.5") as info:
        export_onnx(gm, tmp_path / "m.onnx", (torch.randn(2, 3, 8, 8),))
    assert isinstance(info.value, ReconveneError)
    assert info.value.output_index == index
    assert info.value.max_error == pytest.approx(0.5, rel=1e-3)
    assert flags(gm) == before


def test_tolerances_are_respected(tmp_path, monkeypatch):
    gm = traced("small_cnn")
    x = torch.randn(2, 3, 8, 8)
    perturb_run(monkeypatch, 0, 1e-6)
    export_onnx(gm, tmp_path / "a.onnx", (x,))  # within atol=1e-4
    with pytest.raises(ExportError, match="output 0"):
        export_onnx(gm, tmp_path / "b.onnx", (x,), atol=1e-8, rtol=0.0)


def test_check_false_skips_onnxruntime(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("onnxruntime must not run with check=False")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    path = export_onnx(
        traced("small_cnn"), tmp_path / "m.onnx", (torch.randn(1, 3, 8, 8),), check=False
    )
    onnx.checker.check_model(str(path))


def fail_exporter(monkeypatch, failing: set[bool]) -> list[bool]:
    """Make torch.onnx.export raise for the exporters in ``failing``; record the calls."""
    real_export = torch.onnx.export
    calls: list[bool] = []

    def export(*args, dynamo=True, **kwargs):
        calls.append(dynamo)
        if dynamo in failing:
            raise RuntimeError(f"simulated failure (dynamo={dynamo})\nsecond line")
        return real_export(*args, dynamo=dynamo, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    return calls


def test_torchscript_first_then_dynamo_fallback(tmp_path, monkeypatch):
    gm = traced("branchy")
    x = torch.randn(2, 3, 8, 8)
    calls = fail_exporter(monkeypatch, {False})
    path = export_onnx(gm, tmp_path / "m.onnx", (x,))
    assert calls == [False, True]
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))


def test_real_fallback_to_dynamo_keeps_stderr_clean(tmp_path, capfd):
    gm = torch.fx.symbolic_trace(OddPool())
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(Exception, match="adaptive_avg_pool2d"):  # precondition
        torch.onnx.export(gm, (x,), str(tmp_path / "ts.onnx"), dynamo=False)
    assert "Torch IR graph" in capfd.readouterr().out  # what the fallback must hold back

    path = export_onnx(gm, tmp_path / "m.onnx", (x,))

    captured = capfd.readouterr()
    assert "Torch IR graph" not in captured.out + captured.err
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))


def test_every_exporter_failing_raises_and_restores_flags(tmp_path, monkeypatch):
    gm = traced("small_cnn")
    before = flags(gm)
    fail_exporter(monkeypatch, {False, True})
    with pytest.raises(ExportError, match=r"torchscript: RuntimeError.*; dynamo: RuntimeError"):
        export_onnx(gm, tmp_path / "m.onnx", (torch.randn(1, 3, 8, 8),))
    assert flags(gm) == before
    assert not (tmp_path / "m.onnx").exists()


def test_model_over_size_limit_gets_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(emit_onnx, "_MAX_PROTO_BYTES", 1000)
    gm = traced("small_cnn")
    x = torch.randn(2, 3, 8, 8)
    path = export_onnx(gm, tmp_path / "big.onnx", (x,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))


@pytest.mark.parametrize("module", [emit_onnx, emit_mode])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


# ----------------------------------------------------------------- TensorRT-ready files


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_static_shapes_and_opset_17_by_default(tmp_path):
    x = torch.randn(2, 3, 16, 16)
    model = onnx.load(str(export_onnx(traced("branchy"), tmp_path / "m.onnx", (x,))))
    assert {o.domain: o.version for o in model.opset_import}[""] == emit_onnx.DEFAULT_OPSET
    assert _dims(model.graph.input[0]) == [2, 3, 16, 16]
    assert all(isinstance(d, int) and d > 0 for o in model.graph.output for d in _dims(o))


def test_dynamic_batch_runs_at_other_batch_sizes(tmp_path):
    gm = traced("branchy")
    path = export_onnx(gm, tmp_path / "m.onnx", (torch.randn(1, 3, 8, 8),), dynamic_batch=True)
    model = onnx.load(str(path))
    assert _dims(model.graph.input[0]) == ["batch", 3, 8, 8]
    assert all(_dims(o)[0] == "batch" for o in model.graph.output)
    x = torch.randn(5, 3, 8, 8)
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))


def test_dynamic_batch_needs_tensor_inputs(tmp_path):
    with pytest.raises(ExportError, match="dynamic_batch=True needs every example input"):
        export_onnx(traced("small_cnn"), tmp_path / "m.onnx", (torch.tensor(1.0),),
                    dynamic_batch=True)  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_fp16_weights_halve_the_file_and_keep_outputs_close(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Conv2d(64, 8, 1)).eval()  # fmt: skip
    gm = torch.fx.symbolic_trace(net)
    x = torch.randn(2, 3, 16, 16)
    full = export_onnx(gm, tmp_path / "fp32.onnx", (x,))
    half = export_onnx(gm, tmp_path / "fp16.onnx", (x,), fp16_weights=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model = onnx.load(str(half))
    big = [t for t in model.graph.initializer if np.prod(t.dims) >= 16]
    assert big and all(t.data_type == onnx.TensorProto.FLOAT16 for t in big)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    (got,), (ref,) = ort_outputs(half, x), eval_outputs(gm, x)
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()
    assert np.abs(got - ref).max() > 0  # the weights really were rounded


def test_constants_are_folded(tmp_path):
    class ConstantChain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.register_buffer("base", torch.arange(4.0).view(1, 4, 1, 1))

        def forward(self, x):  # a chain on a buffer only: nothing of it needs the input
            return self.conv(x) * (torch.exp(self.base) + torch.sqrt(self.base + 1.0))

    gm = torch.fx.symbolic_trace(ConstantChain())
    x = torch.randn(1, 3, 4, 4)
    model = onnx.load(str(export_onnx(gm, tmp_path / "m.onnx", (x,))))
    assert sorted(n.op_type for n in model.graph.node) == ["Conv", "Mul"]
    assert_close(ort_outputs(tmp_path / "m.onnx", x), eval_outputs(gm, x))


def test_metadata_of_the_compile_and_of_the_user(tmp_path):
    import reconvene_fx as rfx

    net = SmallCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    gm = rfx.compile(net, rfx.Budget(params=0.5), (x,), strategy="uniform", round_to=4)
    path = export_onnx(gm, tmp_path / "m.onnx", (x,), metadata={"dataset": "none"})
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    rep = rfx.report(gm)
    assert props["dataset"] == "none" and props["reconvene_fx.strategy"] == "uniform"
    assert props["reconvene_fx.method"] == "magnitude"
    assert json.loads(props["reconvene_fx.budget"])["params"] == 0.5
    assert int(props["reconvene_fx.params_after"]) == rep.params_after
    assert int(props["reconvene_fx.macs_per_sample"]) == rep.macs_after
    assert model.producer_name == "reconvene_fx"
    with pytest.raises(ArgumentTypeError, match="metadata must map strings to strings"):
        export_onnx(gm, tmp_path / "bad.onnx", (x,), metadata={"n": 3})
    assert not (tmp_path / "bad.onnx").exists()


def test_cleanup_folds_a_chain_on_constants_into_one_initializer():
    from onnx import TensorProto, helper, numpy_helper

    c = numpy_helper.from_array(np.arange(4, dtype=np.float32).reshape(1, 4), "c")
    nodes = [helper.make_node("Exp", ["c"], ["e"]), helper.make_node("Add", ["e", "c"], ["f"]),
             helper.make_node("Mul", ["x", "f"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], initializer=[c],
    )  # fmt: skip
    cleaned = emit_onnx._cleanup(helper.make_model(graph))
    assert [n.op_type for n in cleaned.graph.node] == ["Mul"]
    (folded,) = cleaned.graph.initializer
    base = np.arange(4, dtype=np.float32)
    np.testing.assert_allclose(
        numpy_helper.to_array(folded).ravel(), np.exp(base) + base, rtol=1e-6
    )


# ------------------------------------------------------------------- example inputs


@pytest.mark.parametrize("form", ["bare", "list"])
def test_example_inputs_as_compile_takes_them(tmp_path, form):
    gm = traced("small_cnn")  # BatchNorm: a bare tensor iterated over its batch dim breaks it
    x = torch.randn(2, 3, 16, 16)
    path = export_onnx(gm, tmp_path / "m.onnx", x if form == "bare" else [x])
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))


@pytest.mark.parametrize("example_inputs", [(), []])
def test_no_example_inputs_is_argument_error(tmp_path, example_inputs):
    with pytest.raises(ArgumentError, match=r"export_onnx needs example_inputs.*\(x,\)"):
        export_onnx(traced("small_cnn"), tmp_path / "m.onnx", example_inputs)
    assert not list(tmp_path.iterdir())


def test_rejected_example_inputs_raise_input_error(tmp_path):
    gm = traced("small_cnn")
    before = flags(gm)
    x = torch.randn(2, 1, 16, 16)  # one channel; the first conv takes three
    with pytest.raises(InputError, match=r"shape \(2, 1, 16, 16\) at node 'features_0'.*3 ch"):
        export_onnx(gm, tmp_path / "m.onnx", (x,))
    assert flags(gm) == before
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("filename", ["m.pt", "m.pt2", "m.ONNX.bak", "m"])
def test_refuses_a_path_not_ending_in_onnx(tmp_path, filename):
    with pytest.raises(ArgumentError, match=r"must end in \.onnx.*use rfx\.save"):
        export_onnx(traced("small_cnn"), tmp_path / filename, (torch.randn(1, 3, 8, 8),))
    assert not list(tmp_path.iterdir())


def test_onnx_suffix_is_case_insensitive(tmp_path):
    gm = traced("small_cnn")
    x = torch.randn(1, 3, 8, 8)
    assert_close(ort_outputs(export_onnx(gm, tmp_path / "M.ONNX", (x,)), x), eval_outputs(gm, x))


# ------------------------------------------------------------- run-time checks of the graph


class WithFeatures(nn.Module):
    """A ``return_features`` flag with a default: tracing fixes it and asserts it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())  # fmt: skip
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = self.body(x)
        logits = self.fc(features.mean(dim=(2, 3)))
        if return_features:
            return logits, features
        return logits


def targets(gm: torch.fx.GraphModule) -> list:
    return [n.target for n in gm.graph.nodes]


def test_concrete_arg_assertions_export_with_torchscript_alone(tmp_path, monkeypatch):
    import reconvene_fx as rfx

    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    gm = rfx.compile(randomize_norms(WithFeatures()), 0.5, (x,), reinit=False)
    assert torch._assert in targets(gm)  # precondition: the graph asserts the flag
    code, placeholders = gm.code, [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    assert len(placeholders) == 2
    calls = fail_exporter(monkeypatch, {True})  # as without onnxscript: no dynamo exporter

    path = export_onnx(gm, tmp_path / "m.onnx", (x,))

    assert calls == [False]  # the TorchScript exporter took the graph
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == placeholders[:1]
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))
    assert gm.code == code and torch._assert in targets(gm)  # the user's graph is untouched


def test_concrete_arg_assertion_still_checks_the_example_inputs(tmp_path):
    import reconvene_fx as rfx

    x = torch.randn(1, 3, 8, 8)
    gm = rfx.compile(WithFeatures(), 0.5, (x,), reinit=False)
    with pytest.raises(InputError, match="return_features has been specialized"):
        export_onnx(gm, tmp_path / "m.onnx", (x, True))
    assert not list(tmp_path.iterdir())


def with_branch_guard(check_decision) -> torch.fx.GraphModule:
    """SmallCNN traced, with a guard ``check_decision(x.size(-1) > 8, True, ...)`` added as
    compile's tracer adds one for ``if x.shape[-1] > 8:``."""
    gm = torch.fx.symbolic_trace(randomize_norms(SmallCNN()))
    graph = gm.graph
    x = next(n for n in graph.nodes if n.op == "placeholder")
    with graph.inserting_after(x):
        width = graph.call_method("size", (x, -1))
    with graph.inserting_after(width):
        wide = graph.call_function(operator.gt, (width, 8))
    with graph.inserting_after(wide):
        graph.call_function(check_decision, (wide, True, "net.py:7 (if x.shape[-1] > 8:)"))
    gm.recompile()
    return gm


def test_branch_guards_are_checked_then_left_out(tmp_path, monkeypatch):
    guards = pytest.importorskip("reconvene_fx.guards")
    gm = with_branch_guard(guards.check_decision)
    code = gm.code
    x = torch.randn(2, 3, 16, 16)

    guard_chain = (guards.check_decision, operator.gt, "size")
    assert targets(without_guards(gm, 1)) == [t for t in targets(gm) if t not in guard_chain]
    calls = fail_exporter(monkeypatch, {True})
    path = export_onnx(gm, tmp_path / "m.onnx", (x,))
    assert calls == [False]
    assert_close(ort_outputs(path, x), eval_outputs(gm, x))
    assert gm.code == code

    with pytest.raises(InputError, match=r"net.py:7"):  # the guard runs on example_inputs
        export_onnx(gm, tmp_path / "narrow.onnx", (torch.randn(2, 3, 8, 8),))
    assert not (tmp_path / "narrow.onnx").exists()


def test_guards_are_matched_by_name_without_importing_them():
    def check_decision(condition, taken, where):  # a stand-in named like reconvene_fx's
        assert bool(condition) == taken

    check_decision.__module__ = "reconvene_fx.guards"
    gm = with_branch_guard(check_decision)
    assert targets(without_guards(gm, 1)) == [
        t for t in targets(gm) if t not in (check_decision, operator.gt, "size")
    ]


def test_graph_without_guards_is_exported_as_it_is():
    gm = traced("small_cnn")
    assert without_guards(gm, 1) is gm


# ----------------------------------------------------- tolerance relative to the output


class Loud(nn.Module):
    """Outputs up to ~3e4 (an untrained deep net's scale), and their argmax."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 64)
        with torch.no_grad():
            self.fc.weight.mul_(2e4)

    def forward(self, x: torch.Tensor):
        y = self.fc(x)
        return y, y.argmax(dim=1)


def test_float_noise_is_judged_against_the_output_scale(tmp_path, monkeypatch):
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(Loud())
    x = torch.randn(4, 32)
    ref = eval_outputs(gm, x)[0]
    scale = float(np.abs(ref).max())
    assert scale > 1e4 and float(np.abs(ref).min()) < 1e3  # small entries too: an
    # element-wise |a - b| <= atol + rtol * |b| fails them for noise of 1.75
    perturb_run(monkeypatch, 0, 1.75)  # relative to the output: 1.75 / 3e4 ~ 6e-5

    export_onnx(gm, tmp_path / "m.onnx", (x,))


def test_real_mismatch_on_large_outputs_is_still_caught(tmp_path, monkeypatch):
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(Loud())
    x = torch.randn(4, 32)
    scale = float(np.abs(eval_outputs(gm, x)[0]).max())
    perturb_run(monkeypatch, 0, 0.01 * scale)
    with pytest.raises(ExportError, match=r"output 0 .*max abs error .*max\|expected\|") as info:
        export_onnx(gm, tmp_path / "m.onnx", (x,))
    assert info.value.output_index == 0
    assert info.value.max_error == pytest.approx(0.01 * scale, rel=1e-3)
    assert not (tmp_path / "m.onnx").exists()


def test_integer_outputs_must_be_equal(tmp_path, monkeypatch):
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(Loud())
    perturb_run(monkeypatch, 1, 1.0)  # an argmax one off: 1 against outputs up to 63
    with pytest.raises(ExportError, match=r"output 1 .*not a float output") as info:
        export_onnx(gm, tmp_path / "m.onnx", (torch.randn(4, 32),))
    assert info.value.output_index == 1 and info.value.max_error == 1.0


def test_max_error_counts_one_sided_nan_as_infinite():
    err, scale = emit_onnx._max_error(np.array([np.nan, 2.0]), np.array([1.0, 2.0]))
    assert err == np.inf and scale == 2.0
    assert emit_onnx._max_error(np.array([np.inf, 1.0]), np.array([np.inf, 1.0])) == (0.0, 1.0)


# ------------------------------------------------------------------------ dict outputs


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor):
        features = torch.relu(self.conv(x))
        return {"logits": self.fc(features.mean(dim=(2, 3))), "features": features}


def test_dict_outputs_are_named_by_their_keys(tmp_path):
    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(DictOut())
    x = torch.randn(2, 3, 8, 8)
    path = export_onnx(gm, tmp_path / "m.onnx", (x,))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "features"]  # not sorted
    with torch.no_grad():
        expected = gm.eval()(x)
    got = dict(zip(["logits", "features"], ort_outputs(path, x), strict=True))
    for key in ("logits", "features"):
        assert_close([got[key]], [expected[key].numpy()])
