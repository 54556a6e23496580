"""Latency on onnxruntime's CPU provider: of a whole exported module, and of one layer."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArgumentError, InputError
from .spec import LayerSpec, random_input

__all__ = [
    "measure_onnxruntime",
    "measure_run",
    "onnxruntime_layer_seconds",
    "onnxruntime_run",
    "onnxruntime_session",
]


def onnxruntime_session(model: Any, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``model`` (a path or serialized bytes), graph
    optimizations on, ``threads`` intra-op threads (None: onnxruntime's default).

    Its threads do not spin-wait for work: two sessions timed in turn (a model and its
    candidate) would otherwise steal each other's cores; on this 2-core machine spinning
    made resnet18 no faster (57 ms vs 51 ms) and the ratio of two equal sessions noisier
    (0.98-1.16 vs 0.99-1.07)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise ImportError("latency_backend='onnxruntime' needs: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def measure_run(run: Callable[[], object], *, repeats: int, warmup: int) -> float:
    """Median seconds of ``run()`` after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ArgumentError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_onnxruntime(
    module: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    repeats: int = 7,
    warmup: int = 2,
    threads: int | None = None,
) -> float:
    """Median seconds of one run of ``module`` exported to ONNX, on onnxruntime's CPU
    provider (all graph optimizations, ``threads`` intra-op threads or its default).

    The module is exported with :func:`~reconvene_fx.export_onnx` (eval mode, composite
    masks baked in, no output check) to a temporary file, which is removed afterwards.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> measure_onnxruntime(net, (torch.randn(1, 3, 32, 32),), repeats=3) > 0
        True
    """
    run = onnxruntime_run(module, example_inputs, threads=threads)
    return measure_run(run, repeats=repeats, warmup=warmup)


def onnxruntime_run(
    module: torch.nn.Module, example_inputs: tuple[Any, ...], *, threads: int | None = None
) -> Callable[[], list[np.ndarray]]:
    """A function running ``module``, exported to ONNX, once on ``example_inputs`` with an
    onnxruntime session (:func:`onnxruntime_session`) that it keeps; no file is left."""
    from ..emit.onnx import export_onnx

    example_inputs = tuple(example_inputs)
    with tempfile.TemporaryDirectory(prefix="reconvene_latency_") as folder:
        path = export_onnx(module, Path(folder) / "candidate.onnx", example_inputs, check=False)
        session = onnxruntime_session(path.read_bytes(), threads)
    arrays = [x.detach().cpu().numpy() for x in example_inputs if isinstance(x, torch.Tensor)]
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(arrays):
        raise InputError(
            f"the exported model takes {len(names)} inputs, example_inputs hold "
            f"{len(arrays)} tensors"
        )
    feeds = dict(zip(names, arrays, strict=True))
    return lambda: session.run(None, feeds)


def onnxruntime_layer_seconds(
    spec: LayerSpec, *, repeats: int = 5, warmup: int = 2, threads: int | None = None
) -> float:
    """Median seconds of the one-node ONNX model of ``spec`` (Conv, or MatMul + Add) on
    onnxruntime, with random weights.

    Example:
        >>> from reconvene_fx.latency.spec import layer_spec
        >>> spec = layer_spec(torch.nn.Conv2d(8, 16, 3), (1, 8, 16, 16))
        >>> onnxruntime_layer_seconds(spec, repeats=2) > 0
        True
    """
    session = onnxruntime_session(_layer_model(spec).SerializeToString(), threads)
    feeds = {"x": random_input(spec).numpy()}
    return measure_run(lambda: session.run(None, feeds), repeats=repeats, warmup=warmup)


def _layer_model(spec: LayerSpec) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(spec.in_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    out = spec.out_channels
    if spec.kind == "conv":
        per_in = spec.in_channels // spec.groups
        weight = rng.standard_normal((out, per_in, *spec.kernel), dtype=np.float32)
        inits = [numpy_helper.from_array(weight, "w")]
        inputs = ["x", "w"]
        if spec.bias:
            inits.append(numpy_helper.from_array(np.zeros(out, np.float32), "b"))
            inputs.append("b")
        nodes = [helper.make_node(
            "Conv", inputs, ["y"], kernel_shape=list(spec.kernel), strides=list(spec.stride),
            pads=[*spec.padding, *spec.padding], dilations=list(spec.dilation),
            group=spec.groups,
        )]  # fmt: skip
    else:
        weight = rng.standard_normal((spec.in_channels, out), dtype=np.float32)
        inits = [numpy_helper.from_array(weight, "w")]
        if spec.bias:
            inits.append(numpy_helper.from_array(np.zeros(out, np.float32), "b"))
            nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
                     helper.make_node("Add", ["h", "b"], ["y"])]  # fmt: skip
        else:
            nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)  # readable by older onnxruntime builds
    return model
