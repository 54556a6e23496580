"""ShapePass: tensor shapes (torch.fx ShapeProp) and small concrete values on every node."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata, _extract_tensor_metadata
from torch.nn.utils.stateless import _reparametrize_module

from .._copy import attributes_restored
from ..errors import InputError
from ..meta import TENSOR_META, VALUE, ConcreteValue
from ._base import ReconvenePass

__all__ = ["ShapePass"]


def _is_small_value(value: Any) -> bool:
    if isinstance(value, (bool, int, float, str, torch.Size, torch.dtype, torch.device)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_small_value(v) for v in value)
    return value is None


# modules whose output has the input's shape, dtype and layout: on meta tensors their
# result is known without running them (BatchNorm's meta decomposition costs ~1.5 ms a call)
_SAME_SHAPE = (
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
    torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU, torch.nn.GELU, torch.nn.Hardswish,
    torch.nn.Hardsigmoid, torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.LeakyReLU, torch.nn.ELU,
    torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
    torch.nn.Identity,
)  # fmt: skip


def _module_output_shape(module: torch.nn.Module, x: torch.Tensor) -> list[int] | None:
    """Output shape of a plain conv or linear module on ``x``, None when not that simple."""
    if not x.is_contiguous() or x.dtype != getattr(module, "weight", x).dtype:
        return None
    kind = type(module)
    if kind in _ADAPTIVE_POOLS:
        return _adaptive_pool_shape(module, x, _ADAPTIVE_POOLS[kind])
    if kind is torch.nn.Linear:
        ok = x.dim() >= 1 and x.shape[-1] == module.in_features
        return [*x.shape[:-1], module.out_features] if ok else None
    if kind not in (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d):
        return None
    assert isinstance(module, torch.nn.modules.conv._ConvNd)
    dims = len(module.kernel_size)
    if isinstance(module.padding, str) or x.dim() != dims + 2:
        return None
    if x.shape[1] != module.in_channels:
        return None
    spatial = [
        (size + 2 * pad - dil * (k - 1) - 1) // stride + 1
        for size, pad, dil, k, stride in zip(x.shape[2:], module.padding, module.dilation,
                                             module.kernel_size, module.stride, strict=True)
    ]  # fmt: skip
    if min(spatial) <= 0:
        return None
    return [x.shape[0], module.out_channels, *spatial]


# adaptive average pools and the dims they pool (the output size is the module's)
_ADAPTIVE_POOLS = {
    torch.nn.AdaptiveAvgPool1d: 1, torch.nn.AdaptiveAvgPool2d: 2, torch.nn.AdaptiveAvgPool3d: 3,
}  # fmt: skip


def _adaptive_pool_shape(module: torch.nn.Module, x: torch.Tensor, dims: int) -> list[int] | None:
    """Output shape of an adaptive average pool over the last ``dims`` dims of a floating
    ``x`` (batched or not): the module's output size, a None entry keeping the input's."""
    if not x.is_floating_point() or x.dim() not in (dims + 1, dims + 2) or 0 in x.shape:
        return None
    size = module.output_size
    sizes = [size] * dims if isinstance(size, int) else list(size)  # type: ignore[list-item]
    if len(sizes) != dims:
        return None
    kept, spatial = x.shape[: x.dim() - dims], x.shape[x.dim() - dims :]
    return [*kept, *(int(d) if s is None else int(s) for s, d in zip(sizes, spatial, strict=True))]


# elementwise arithmetic whose meta result follows from its arguments' shapes (a residual
# add, a squeeze-excitation scale): the broadcast, in the dtype of floating tensors
_ELEMENTWISE = frozenset({
    operator.add, operator.sub, operator.mul, operator.truediv,
    torch.add, torch.sub, torch.mul, torch.div,
})  # fmt: skip


def _elementwise_shape(*args: Any, **kwargs: Any) -> tuple[list[int], torch.dtype] | None:
    """Shape and dtype of an elementwise op on contiguous floating meta tensors of one
    dtype and Python numbers (which take the tensors' dtype), None otherwise."""
    if kwargs or len(args) != 2:
        return None
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    numbers = [a for a in args if not isinstance(a, torch.Tensor)]
    if not tensors or any(type(a) not in (int, float) for a in numbers):
        return None
    dtype = tensors[0].dtype
    if not all(t.is_meta and t.dtype == dtype and _row_major(t) for t in tensors):
        return None
    if not dtype.is_floating_point:
        return None
    try:
        return list(torch.broadcast_shapes(*(t.shape for t in tensors))), dtype
    except RuntimeError:  # not broadcastable: the op's own error names it
        return None


def _row_major(t: torch.Tensor) -> bool:
    """Whether ``t`` has the strides ``torch.empty`` gives its shape (a contiguous tensor
    with a size-1 dim may have others: a channels-last ``[n, c, 1, 1]``)."""
    expected = 1
    for size, stride in zip(reversed(t.shape), reversed(t.stride()), strict=True):
        if stride != expected:
            return False
        expected *= max(int(size), 1)
    return True


def _cat_shape(
    tensors: Any, dim: int = 0, *, out: Any = None
) -> tuple[list[int], torch.dtype] | None:
    """Shape and dtype of ``torch.cat`` of contiguous meta tensors of one dtype and rank."""
    if out is not None or not isinstance(tensors, (list, tuple)) or not tensors:
        return None
    if not all(isinstance(t, torch.Tensor) and t.is_meta and t.is_contiguous() for t in tensors):
        return None
    first = tensors[0]
    if any(t.dtype != first.dtype or t.dim() != first.dim() for t in tensors) or first.dim() == 0:
        return None
    d = dim % first.dim()
    rest = [s for i, s in enumerate(first.shape) if i != d]
    if any([s for i, s in enumerate(t.shape) if i != d] != rest for t in tensors):
        return None
    shape = list(first.shape)
    shape[d] = sum(t.shape[d] for t in tensors)
    return shape, first.dtype


class _ValueProp(ShapeProp):
    """ShapeProp that also keeps small values, and fails with the real cause (ShapeProp
    itself prints a traceback and raises an error that hides the message)."""

    input_shapes = ""

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.input_shapes = _shapes(args)
        self.extra_traceback = False  # our message names the node already
        return super().run(*args, **kwargs)

    def _shortcut_on_meta(self, n: torch.fx.Node) -> torch.Tensor | None:
        """The meta result of a common op computed from shapes alone (meta kernels of
        convolutions, concatenations, adaptive pools and broadcasting arithmetic run
        Python decompositions, ~0.1-0.6 ms a call), or None to run the op. Only
        contiguous inputs of the op's own dtype qualify."""
        if n.op == "call_module" and len(n.args) == 1 and not n.kwargs:
            (arg,) = self.fetch_args_kwargs_from_env(n)[0]
            if not (isinstance(arg, torch.Tensor) and arg.is_meta):
                return None
            module = self.fetch_attr(str(n.target))
            if isinstance(module, _SAME_SHAPE):
                if arg.is_contiguous():  # empty_like of a meta tensor runs a Python ref
                    return torch.empty(arg.shape, dtype=arg.dtype, device="meta")
                return torch.empty_like(arg)
            shape = _module_output_shape(module, arg)
            return None if shape is None else torch.empty(shape, dtype=arg.dtype, device="meta")
        if n.op == "call_function" and (n.target is torch.cat or n.target in _ELEMENTWISE):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            how = _cat_shape if n.target is torch.cat else _elementwise_shape
            shape = how(*args, **kwargs)
            return None if shape is None else torch.empty(shape[0], dtype=shape[1], device="meta")
        return None

    def run_node(self, n: torch.fx.Node) -> Any:
        try:
            result = self._shortcut_on_meta(n)
            if result is None:
                result = torch.fx.Interpreter.run_node(self, n)
        except Exception as exc:
            raise InputError(
                f"the model rejected example_inputs of shape {self.input_shapes} at node "
                f"{n.name!r} ({n.op} {_target_name(n)}): {type(exc).__name__}: "
                f"{_own_message(exc)}"
            ) from exc
        found_tensor = False

        def extract(obj: Any) -> Any:
            nonlocal found_tensor
            if isinstance(obj, torch.Tensor):
                found_tensor = True
                return _tensor_metadata(obj)
            return obj

        meta = torch.fx.node.map_aggregate(result, extract)
        if found_tensor:
            n.meta[TENSOR_META] = meta
        n.meta["type"] = type(result)
        if _is_small_value(result):
            n.meta[VALUE] = ConcreteValue(result)
        return result


def _tensor_metadata(t: torch.Tensor) -> TensorMetadata:
    """What torch.fx's ``_extract_tensor_metadata`` records, without its Python
    memory-format queries for a contiguous dense tensor of plain sizes (~30 us a tensor
    under the profiler; the first format it asks, the contiguous one, is the answer);
    other tensors are left to it.

    Example:
        >>> t = torch.empty(2, 3, device="meta")
        >>> _tensor_metadata(t) == _extract_tensor_metadata(t)
        True
    """
    if t.layout is not torch.strided or t.is_quantized or not t.is_contiguous():
        return _extract_tensor_metadata(t)
    if any(not isinstance(d, int) for d in t.shape):  # symbolic sizes
        return _extract_tensor_metadata(t)
    return TensorMetadata(
        t.shape, t.dtype, t.requires_grad, t.stride(), torch.contiguous_format, False, {}
    )


def _target_name(n: torch.fx.Node) -> str:
    return n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))


def _own_message(exc: Exception) -> str:
    """The error's own message, without what torch.fx's interpreter appends to it (the
    node's graph text, "Original traceback", a pointer to tlparse)."""
    text = str(exc)
    for marker in ("\n\nWhile executing", "\nWhile executing"):
        text = text.split(marker, 1)[0]
    return " ".join(text.split())


def _shapes(values: tuple[Any, ...]) -> str:
    shown = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
             for v in values]  # fmt: skip
    return ", ".join(map(str, shown))


class ShapePass(ReconvenePass):
    """Runs the graph once on ``example_inputs`` and records shapes and small values.

    Writes ``node.meta["tensor_meta"]`` (as torch.fx ShapeProp does) and, for nodes whose
    result is a plain value (``x.size(0)``, ``c // 2``), ``node.meta[VALUE]``. The graph runs
    in eval mode (BatchNorm statistics are left alone); training flags are restored. With
    ``fake=True`` it runs on meta tensors (shapes without arithmetic: the cost no longer
    grows with the input size) and falls back to a real run if an op does not support them.

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)))
        >>> _ = ShapePass((torch.randn(1, 3, 8, 8),))(gm)
        >>> [tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if n.op == "call_module"]
        [(1, 8, 6, 6)]
    """

    writes = (TENSOR_META, VALUE)

    def __init__(self, example_inputs: tuple[Any, ...], *, fake: bool = False) -> None:
        super().__init__()
        self.example_inputs = tuple(example_inputs)
        self.fake = fake

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        # eval mode: the run must not update BatchNorm statistics or draw dropout masks
        modes = {m: m.training for m in graph_module.modules()}
        graph_module.eval()
        try:
            with torch.no_grad():
                if self.fake and _run_fake(graph_module, self.example_inputs):
                    return PassResult(graph_module, False)
                _ValueProp(graph_module).run(*self.example_inputs)
        finally:
            for module, training in modes.items():
                module.training = training
        return PassResult(graph_module, False)


def _run_fake(gm: torch.fx.GraphModule, example_inputs: tuple[Any, ...]) -> bool:
    """Propagate on the meta device (shapes without arithmetic, nothing copied): parameters
    and buffers are swapped for meta tensors for the run. False if an op refuses."""
    state = {
        name: torch.empty_like(t, device="meta")
        for name, t in (*gm.named_parameters(), *gm.named_buffers())
    }
    inputs = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in example_inputs]
    try:
        # a leaf that caches what it computed must not keep meta tensors
        with attributes_restored(gm), _reparametrize_module(gm, state):
            _ValueProp(gm).run(*inputs)
    except Exception:
        return False
    return True
