"""ONNX emitter: export, clean with onnx-graphsurgeon, check with onnx and onnxruntime.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is tried first: on
torchvision CNNs it is up to ~10x faster than the ``torch.export``-based (dynamo) exporter
(about equal on weight-heavy models such as alexnet) and gives the same numbers. If it raises
(an op it cannot translate, such as adaptive pooling to a size that does not divide the input,
or a future PyTorch without it) the dynamo exporter is tried. Either way the result is one
self-contained ``.onnx`` file; only a model over protobuf's 2 GiB limit gets a
``<name>.onnx.data`` file beside it.

The file is ready for TensorRT 10's ONNX parser: static shapes unless ``dynamic_batch``,
opset 17 from the TorchScript exporter (TensorRT 10 reads 9-20; the dynamo exporter's
default, 18, too), constants folded and dead nodes removed with onnx-graphsurgeon, optional
float16 weights, and the compile's budget, method, strategy, parameters and MACs as model
metadata. Build an engine with ``trtexec --onnx=model.onnx`` (``--fp16`` for half-precision
kernels) or see ``examples/06_tensorrt.py``.

Note that ``torch.fx`` freezes control flow at trace time: a branch on ``self.training``
(torchvision's auxiliary heads) is exported as it was traced, whatever the mode at export.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import torch

from reconvene_fx._atomic import atomic_write, check_writable
from reconvene_fx._mode import eval_mode, flatten_tensors
from reconvene_fx.composite import bake_masks
from reconvene_fx.emit._guards import without_guards
from reconvene_fx.emit.torch import _example_inputs, _first_line, _run_example
from reconvene_fx.errors import ArgumentError, ArgumentTypeError, ExportError

__all__ = ["export_onnx"]

# Largest model protobuf can serialize in one message; larger ones get external data.
_MAX_PROTO_BYTES = 2**31 - 1

# (label, use the dynamo exporter), in the order they are tried.
_EXPORTERS: tuple[tuple[str, bool], ...] = (("torchscript", False), ("dynamo", True))
# The TorchScript exporter's opset when none is given: read by TensorRT 10 (opsets 9-20),
# onnxruntime >= 1.12 and every current ONNX tool.
DEFAULT_OPSET = 17
# float32 constants with fewer elements stay float32 under fp16_weights (shapes, scales).
_FP16_MIN_ELEMENTS = 16
# Name of the batch axis with dynamic_batch=True.
BATCH_AXIS = "batch"


def export_onnx(
    gm: torch.nn.Module,
    path: str | os.PathLike,
    example_inputs: tuple | list | torch.Tensor,
    *,
    opset: int | None = None,
    check: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    dynamic_batch: bool = False,
    fp16_weights: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``gm`` in eval mode to an ONNX file and check it against PyTorch.

    Composite masks (``compile(..., composite=True)``) are multiplied into the weights of a
    copy first, so the file holds plain weights with zeros. The module is exported in eval
    mode (BatchNorm uses running statistics, dropout is off); the ``training`` flag of every
    submodule is restored afterwards. The graph is cleaned with onnx-graphsurgeon (dead
    nodes removed, constants folded, topologically sorted) and validated with
    ``onnx.checker``. With ``check=True`` it is run with onnxruntime on ``example_inputs``
    (and, with ``dynamic_batch``, on them repeated to twice the batch) and every output
    (nested outputs flattened in order) must satisfy ``max|onnx - torch| <= atol + rtol *
    max|torch|``: float noise is judged against the output's scale (integer and boolean
    outputs must be equal).

    Run-time checks of the traced graph (``torch._assert`` on a fixed ``concrete_args``
    value such as ``return_features=False``, reconvene_fx's branch guards) run in PyTorch
    on ``example_inputs`` and are left out of the exported graph, as are the inputs that
    only they read and that have a default.

    Args:
        gm: the module to export, usually a ``torch.fx.GraphModule``.
        path: the ``.onnx`` file to write (other suffixes are refused: ``.pt`` and
            ``.pt2`` are :func:`reconvene_fx.emit.save`'s); parent folders are created. It
            is checked to be writable first, and written atomically: an existing file is
            replaced only by a complete, checked new one (an error, a failed check or a
            killed process leaves it as it was).
        example_inputs: positional inputs, used for tracing and for the check: a tuple,
            a list or one bare tensor, as :func:`reconvene_fx.compile` takes them.
        opset: ONNX opset version; ``None``: 17 (:data:`DEFAULT_OPSET`), or the dynamo
            exporter's default when it is the one that succeeds.
        check: run the exported model with onnxruntime and compare with PyTorch.
        rtol: relative tolerance of the check, times the output's largest magnitude.
        atol: absolute tolerance of the check.
        input_names: graph input names; default the GraphModule's placeholder names.
        output_names: graph output names; default the keys of a returned dict (nested
            values get ``key_0``, ...), else ``output`` (one output) or ``output_0``, ...
        dynamic_batch: make dim 0 of every input and output a symbolic ``batch`` axis
            (default: every shape static, as TensorRT builds fastest for). Every input
            must be a tensor with a batch dim.
        fp16_weights: store float32 weights as float16, each followed by a ``Cast`` to
            float32 (half the file; inputs, outputs and arithmetic stay float32). The
            check's tolerances are then at least 1e-2.
        metadata: extra ``key: value`` strings for the model's ``metadata_props``; a model
            from :func:`reconvene_fx.compile` also carries ``reconvene_fx.*`` entries (budget,
            method, strategy, params and MACs before/after) from its report.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ArgumentError: ``path`` does not end in ``.onnx``, or no ``example_inputs``.
        ArgumentTypeError: ``metadata`` holds a value that is not a string.
        InputError: the model rejects ``example_inputs`` (the message names their shapes,
            the node and the error).
        ExportError: both exporters failed, the file fails ``onnx.checker`` or does not
            run in onnxruntime, or an output differs from PyTorch (the message names the
            output index and the largest absolute error).
        OSError: ``path`` cannot be written.

    Example:
        >>> import tempfile, torch
        >>> from reconvene_fx.emit import export_onnx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = export_onnx(gm, f"{d}/tiny.onnx", (torch.randn(2, 3, 8, 8),))
        ...     print(path.name, gm.training)
        tiny.onnx True
    """
    path = _onnx_path(path)
    check_writable(path)
    properties = {**_report_metadata(gm), **_user_metadata(metadata)}
    usage = f"rfx.export_onnx(gm, {path.name!r}, (x,))"
    example_inputs = _example_inputs(gm, example_inputs, "export_onnx", usage)
    gm = bake_masks(gm)  # composite masks go into the weights; the caller's gm keeps them
    if dynamic_batch:
        _check_batched(example_inputs)
    flat_inputs = flatten_tensors(example_inputs)
    with eval_mode(gm), torch.no_grad():
        outputs = _run_example(gm, example_inputs)  # InputError when the model rejects them
        expected = flatten_tensors(outputs)
        exported = without_guards(gm, len(example_inputs))  # a copy when it has guards
        exported.eval()  # its submodules are gm's: eval_mode(gm) restores their flags
        in_names = _input_names(exported, example_inputs, input_names)
        if dynamic_batch and in_names is None:
            in_names = [f"input_{i}" for i in range(len(example_inputs))]
        out_names = _output_names(outputs, len(expected), output_names)
        batch_axes = _batch_axes(in_names, out_names) if dynamic_batch else None
        doubled = tuple(torch.cat([x, x]) for x in example_inputs) if dynamic_batch else ()
        expected_doubled = flatten_tensors(gm(*doubled)) if dynamic_batch and check else []
        with tempfile.TemporaryDirectory(prefix="reconvene_onnx_") as tmp:
            raw = _export_raw(exported, example_inputs, Path(tmp), opset, in_names, out_names,
                              batch_axes)  # fmt: skip
            model = onnx.load(str(raw))  # loads any external data into memory
    model = _cleanup(model, fp16_weights=fp16_weights)
    _set_metadata(model, properties)
    if fp16_weights:
        rtol, atol = max(rtol, 1e-2), max(atol, 1e-2)
    with atomic_write(path) as tmp:  # the checks read the new file before it replaces path
        _save(model, tmp)
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise ExportError(
                f"the exported {path.name} fails onnx.checker: {_first_line(exc)}"
            ) from exc
        if check:
            _check_outputs(tmp, in_names, flat_inputs, expected, rtol=rtol, atol=atol)
            if dynamic_batch:
                _check_outputs(tmp, in_names, list(doubled), expected_doubled,
                               rtol=rtol, atol=atol)  # fmt: skip
    return path


def _onnx_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path; an :class:`ArgumentError` unless it ends in ``.onnx``.

    Example:
        >>> _onnx_path("out/model.ONNX").name
        'model.ONNX'
        >>> try:
        ...     _onnx_path("model.pt")
        ... except ArgumentError as exc:
        ...     print(str(exc).split(";")[0])
        export_onnx writes ONNX files: 'model.pt' must end in .onnx
    """
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        got = f"{path.suffix} is" if path.suffix else "no suffix is"
        raise ArgumentError(
            f"export_onnx writes ONNX files: {path.name!r} must end in .onnx; {got} not "
            "ONNX (to save a .pt or .pt2 file, use rfx.save(gm, path, example_inputs))"
        )
    return path


def _check_batched(example_inputs: tuple) -> None:
    for i, x in enumerate(example_inputs):
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            raise ExportError(
                f"dynamic_batch=True needs every example input to be a tensor with a batch "
                f"dim; input {i} is {type(x).__name__}"
                + (" of 0 dims" if isinstance(x, torch.Tensor) else "")
            )


def _batch_axes(in_names: list[str], out_names: list[str]) -> dict[str, dict[int, str]]:
    return {name: {0: BATCH_AXIS} for name in [*in_names, *out_names]}


def _report_metadata(gm: torch.nn.Module) -> dict[str, str]:
    """``reconvene_fx.*`` metadata from a compiled model's report (none otherwise)."""
    from ..meta import REPORT

    rep = getattr(gm, "meta", {}).get(REPORT) if isinstance(gm, torch.fx.GraphModule) else None
    if rep is None:
        return {}
    data = rep.to_dict()
    keys = ("budget", "method", "strategy", "composite", "params_before", "params_after",
            "macs_before", "macs_after", "nonzero_after")  # fmt: skip
    props = {f"reconvene_fx.{k}": data[k] if isinstance(data[k], str) else json.dumps(data[k])
             for k in keys if k in data}  # fmt: skip
    props["reconvene_fx.macs_per_sample"] = props.pop("reconvene_fx.macs_after", "null")
    props["reconvene_fx.macs_per_sample_before"] = props.pop("reconvene_fx.macs_before", "null")
    return props


def _user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """``metadata`` as a dict, checked before anything is exported."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ArgumentTypeError(
            f"metadata must map strings to strings, got a {type(metadata).__name__}"
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ArgumentTypeError(
                f"metadata must map strings to strings, got {key!r}: {value!r} "
                f"(pass str(value), or json.dumps(value) for structured values)"
            )
    return dict(metadata)


def _set_metadata(model: onnx.ModelProto, properties: Mapping[str, str]) -> None:
    from .. import __version__

    model.producer_name, model.producer_version = "reconvene_fx", __version__
    for key, value in properties.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _input_names(
    gm: torch.nn.Module, example_inputs: tuple, names: Sequence[str] | None
) -> list[str] | None:
    """The user's names, else a GraphModule's placeholder names when they match the inputs."""
    if names is not None:
        return list(names)
    if not isinstance(gm, torch.fx.GraphModule):
        return None
    placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    tensors_only = all(isinstance(x, torch.Tensor) for x in example_inputs)
    if tensors_only and len(placeholders) == len(example_inputs):
        return placeholders
    return None


def _output_names(outputs: Any, count: int, names: Sequence[str] | None) -> list[str]:
    """The user's names; else a returned dict's keys (``key_0``, ... for the tensors of a
    nested value), in the order :func:`flatten_tensors` gives; else ``output`` (one
    output) or ``output_0``, ...

    Example:
        >>> t = torch.zeros(1)
        >>> _output_names({"logits": t, "aux": [t, t]}, 3, None)
        ['logits', 'aux_0', 'aux_1']
        >>> _output_names((t, t), 2, None)
        ['output_0', 'output_1']
    """
    if names is not None:
        return list(names)
    default = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    if not isinstance(outputs, Mapping):
        return default
    keyed = _tensor_paths(outputs)
    unique = len(set(keyed)) == len(keyed) == count
    return keyed if unique and all(keyed) else default


def _tensor_paths(value: Any, prefix: str = "") -> list[str]:
    """One name per tensor of ``value``, joined with ``_`` from keys and indices."""
    if isinstance(value, torch.Tensor):
        return [prefix]
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (tuple, list)):
        items = list(enumerate(value))
    else:
        return []
    paths = []
    for key, item in items:
        paths += _tensor_paths(item, f"{prefix}_{key}" if prefix else str(key))
    return paths


def _export_raw(
    gm: torch.nn.Module,
    example_inputs: tuple,
    folder: Path,
    opset: int | None,
    input_names: list[str] | None,
    output_names: list[str],
    batch_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Run ``torch.onnx.export`` with each exporter in turn; return the first file written."""
    failures: list[str] = []
    last: Exception | None = None
    for label, dynamo in _EXPORTERS:
        target = folder / f"{label}.onnx"
        extra: dict[str, Any] = {"external_data": True, "verbose": False} if dynamo else {}
        if batch_axes is not None and dynamo:
            batch = torch.export.Dim(BATCH_AXIS, min=1)
            extra["dynamic_shapes"] = tuple({0: batch} for _ in example_inputs)
        elif batch_axes is not None:
            extra["dynamic_axes"] = batch_axes
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                # The TorchScript exporter dumps its whole IR to stdout when it fails, even
                # when the other exporter then succeeds: hold the output back until we know.
                with _fd_to(1, out), _fd_to(2, err), warnings.catch_warnings():
                    # The TorchScript exporter is deprecated upstream; we use it on purpose.
                    warnings.filterwarnings("ignore", category=DeprecationWarning)
                    torch.onnx.export(
                        gm,
                        example_inputs,
                        str(target),
                        dynamo=dynamo,
                        opset_version=opset if opset is not None or dynamo else DEFAULT_OPSET,
                        input_names=input_names,
                        output_names=output_names,
                        **extra,
                    )
            except Exception as exc:
                first_line = (str(exc).strip().splitlines() or [""])[0]
                failures.append(f"{label}: {type(exc).__name__}: {first_line}")
                last = exc
                continue
            for held, stream in ((out, sys.stdout), (err, sys.stderr)):
                held.seek(0)
                text = held.read().decode(errors="replace")
                if text and stream is not None:
                    stream.write(text)
        return target
    raise ExportError(
        "torch.onnx.export failed with every exporter (" + "; ".join(failures) + "). "
        "Check that the model runs on example_inputs, or try another opset."
    ) from last


@contextmanager
def _fd_to(fd: int, file) -> Iterator[None]:
    """Redirect file descriptor ``fd`` (so C++ output too) into ``file`` for the duration."""
    _flush_std_streams()
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (e.g. a detached process): nothing to hold back
        saved = None
    if saved is None:
        yield
        return
    try:
        os.dup2(file.fileno(), fd)
        yield
    finally:
        _flush_std_streams()
        os.dup2(saved, fd)
        os.close(saved)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


def _cleanup(model: onnx.ModelProto, *, fp16_weights: bool = False) -> onnx.ModelProto:
    """Fold constants, remove dead nodes and unused tensors, optionally store weights as
    float16, and sort the graph topologically."""
    graph = gs.import_onnx(model)
    with tempfile.TemporaryFile() as err, _fd_to(2, err):  # folding logs what it skips
        graph.fold_constants(error_ok=True)
    graph.cleanup()
    if fp16_weights:
        _store_weights_fp16(graph)
    graph.toposort()
    cleaned = gs.export_onnx(graph)
    cleaned.ir_version = model.ir_version
    return cleaned


def _store_weights_fp16(graph: gs.Graph) -> None:
    """Replace each float32 constant of at least _FP16_MIN_ELEMENTS elements by a float16
    one and a Cast back to float32 in front of its consumers."""
    for tensor in list(graph.tensors().values()):
        if not isinstance(tensor, gs.Constant) or tensor.values.dtype != np.float32:
            continue
        if tensor.values.size < _FP16_MIN_ELEMENTS:
            continue
        consumers = list(tensor.outputs)
        half = gs.Constant(f"{tensor.name}_fp16", tensor.values.astype(np.float16))
        restored = gs.Variable(f"{tensor.name}_fp32", dtype=np.float32, shape=tensor.shape)
        cast = gs.Node("Cast", name=f"{tensor.name}_cast", inputs=[half], outputs=[restored],
                       attrs={"to": onnx.TensorProto.FLOAT})  # fmt: skip
        graph.nodes.append(cast)
        for node in consumers:  # in place: graphsurgeon keeps tensor.outputs in step
            for i, t in enumerate(node.inputs):
                if t is tensor:
                    node.inputs[i] = restored


def _save(model: onnx.ModelProto, path: Path) -> None:
    """Write one self-contained file, or external data beside it past protobuf's limit."""
    try:
        too_big = model.ByteSize() > _MAX_PROTO_BYTES
    except Exception:  # some protobuf builds refuse to size messages over 2 GiB
        too_big = True
    if not too_big:
        onnx.save_model(model, str(path))
        return
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=1024,
    )


def _check_outputs(
    path: Path,
    input_names: list[str] | None,
    inputs: list[torch.Tensor],
    expected: list[torch.Tensor],
    *,
    rtol: float,
    atol: float,
) -> None:
    """Run ``path`` with onnxruntime and compare each output with PyTorch's: a float
    output within ``atol + rtol * max|expected|`` of it, any other one equal to it."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ImportError(
            "export_onnx(check=True) needs onnxruntime: pip install onnxruntime, "
            "or pass check=False"
        ) from exc
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = _feeds([i.name for i in session.get_inputs()], input_names, inputs)
        got = session.run(None, feeds)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"onnxruntime cannot run the exported {path.name} "
            f"({type(exc).__name__}: {_first_line(exc)}); pass check=False to keep it"
        ) from exc
    if len(got) != len(expected):
        raise ExportError(
            f"{path.name} has {len(got)} outputs but the PyTorch module returns "
            f"{len(expected)} tensors"
        )
    names = [o.name for o in session.get_outputs()]
    for index, (actual, reference) in enumerate(zip(got, expected, strict=True)):
        ref = reference.detach().cpu().numpy()
        label = f"output {index} ({names[index]!r})"
        if actual.shape != ref.shape:
            raise ExportError(
                f"ONNX {label} has shape {tuple(actual.shape)}, PyTorch {tuple(ref.shape)}",
                output_index=index,
            )
        err, scale = _max_error(actual, ref)
        if np.issubdtype(ref.dtype, np.floating):
            tolerance = atol + rtol * scale
            rule = f"atol={atol:g} + rtol={rtol:g} * max|expected| {scale:.3g} = {tolerance:.3g}"
        else:  # integer and boolean outputs: any difference is a real one
            tolerance, rule = 0.0, "0: not a float output"
        if err <= tolerance:
            continue
        raise ExportError(
            f"ONNX {label} differs from PyTorch: max abs error {err:.3g} (tolerance {rule})",
            output_index=index,
            max_error=err,
        )


def _max_error(actual: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """The largest ``|actual - ref|`` and the largest finite ``|ref|``. Equal pairs (equal
    infinities, NaN and NaN) count 0; a NaN or an infinity on one side only counts inf.

    Example:
        >>> _max_error(np.array([1.0, np.nan, 3e4]), np.array([1.5, np.nan, 3e4 + 2]))
        (2.0, 30002.0)
        >>> _max_error(np.array([np.nan]), np.array([0.0]))
        (inf, 0.0)
    """
    a, r = actual.astype(np.float64), ref.astype(np.float64)
    same = (a == r) | (np.isnan(a) & np.isnan(r))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a - r))
    diff = np.nan_to_num(diff, nan=np.inf)
    finite = np.abs(r[np.isfinite(r)])
    err = float(diff.max()) if diff.size else 0.0
    return err, float(finite.max()) if finite.size else 0.0


def _feeds(
    session_names: list[str], input_names: list[str] | None, inputs: list[torch.Tensor]
) -> dict[str, np.ndarray]:
    """Map onnxruntime input names to arrays: by name when known, else by position."""
    arrays = [t.detach().cpu().numpy() for t in inputs]
    if input_names is not None and len(input_names) == len(arrays):
        by_name = dict(zip(input_names, arrays, strict=True))
        if all(name in by_name for name in session_names):
            return {name: by_name[name] for name in session_names}
    if len(session_names) == len(arrays):
        return dict(zip(session_names, arrays, strict=True))
    raise ExportError(
        f"cannot match the ONNX inputs {session_names} to the {len(arrays)} example input "
        "tensors; pass input_names"
    )
