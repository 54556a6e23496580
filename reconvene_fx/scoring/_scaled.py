"""SynFlow's flow in float32 on deep networks: every tensor carries a power-of-two exponent.

The linearised network (``|θ|``, all-ones input) grows its activations ~50x per conv, so
resnet50's flow is ~1e72, beyond float32. Running in float64 doubles the cost of every
pass. Instead, this interpreter stores each activation as ``mantissa * 2**exponent`` with
one integer exponent per tensor (block floating point): after every conv, linear and norm
the mantissa is divided by the power of two nearest its largest magnitude (exact in
binary floating point), additions and concatenations align exponents, and additive terms
(biases, BatchNorm shifts) are scaled into the tensor's exponent. Every supported op is
then computed to float32 relative precision, and the flow comes out as ``F * 2**-E`` for
a known ``E``: all scores share that factor, which changes no ranking.

Only ops whose result can be written this way are supported: positively homogeneous ones
(ReLU, pooling, reshapes, sums), affine layers, ``+``/``-``/``cat``, and products. Any
other op (sigmoid, hardswish, LayerNorm, ...) raises :class:`Unsupported`, and SynFlow
falls back to float64.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_map

__all__ = ["Unsupported", "scaled_flow"]


class Unsupported(Exception):
    """An op the exponent-carrying interpreter cannot run exactly."""


@dataclass
class _Scaled:
    """The value ``m * 2**e``."""

    m: torch.Tensor
    e: int


def _renormalized(m: torch.Tensor, e: int) -> _Scaled:
    with torch.no_grad():
        top = float(m.detach().abs().max()) if m.numel() else 0.0
    if top == 0.0 or not math.isfinite(top):
        return _Scaled(m, e)
    k = math.frexp(top)[1]  # top = f * 2**k with f in [0.5, 1)
    return _Scaled(m * (2.0**-k), e + k) if k else _Scaled(m, e)


def _aligned(values: list[Any]) -> tuple[list[Any], int]:
    """Tensors (scaled or plain, plain meaning exponent 0) rewritten at the largest
    exponent; other values unchanged."""
    exps = [v.e for v in values if isinstance(v, _Scaled)]
    exps += [0 for v in values if isinstance(v, torch.Tensor)]
    top = max(exps) if exps else 0
    out = []
    for v in values:
        if isinstance(v, _Scaled):
            out.append(v.m * (2.0 ** (v.e - top)) if v.e != top else v.m)
        elif isinstance(v, torch.Tensor):
            out.append(v * (2.0**-top) if top else v)
        else:
            out.append(v)
    return out, top


_HOMOGENEOUS_MODULES = (
    nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity, nn.Flatten,
)  # fmt: skip
_HOMOGENEOUS_FUNCTIONS: set[Callable[..., Any]] = {
    F.relu, torch.relu, torch.flatten, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.max_pool1d,
    F.max_pool2d, F.max_pool3d, F.adaptive_max_pool2d, F.dropout, torch.mean, torch.sum,
    operator.getitem, torch.squeeze, torch.unsqueeze, torch.permute, torch.transpose,
    torch.reshape,
}  # fmt: skip
_HOMOGENEOUS_METHODS = {
    "view", "reshape", "flatten", "permute", "transpose", "contiguous", "mean", "sum",
    "squeeze", "unsqueeze", "relu", "relu_", "chunk", "split", "expand", "expand_as",
    "__getitem__", "clone",
}  # fmt: skip
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class _Interpreter(torch.fx.Interpreter):
    """Runs a GraphModule on ``_Scaled`` values (see the module docstring)."""

    def call_module(self, target: Any, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(str(target))
        if not args or not isinstance(args[0], _Scaled) or kwargs:
            return _plain(module, args, kwargs)
        x = args[0]
        if isinstance(module, _CONV):
            bias = module.bias * (2.0**-x.e) if module.bias is not None else None
            return _renormalized(module._conv_forward(x.m, module.weight, bias), x.e)
        if isinstance(module, nn.Linear):
            bias = module.bias * (2.0**-x.e) if module.bias is not None else None
            return _renormalized(F.linear(x.m, module.weight, bias), x.e)
        if (
            isinstance(module, _BATCHNORM)
            and not module.training
            and module.running_var is not None
            and len(args) == 1
        ):
            scale = 2.0**-x.e
            mean = module.running_mean * scale if module.running_mean is not None else None
            bias = module.bias * scale if module.bias is not None else None
            out = F.batch_norm(x.m, mean, module.running_var, module.weight, bias, False, 0.0,
                               module.eps)  # fmt: skip
            return _renormalized(out, x.e)
        if isinstance(module, _HOMOGENEOUS_MODULES) and len(args) == 1:
            return _Scaled(module(x.m), x.e)
        raise Unsupported(f"module {target} ({type(module).__name__})")

    def call_function(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if not _has_scaled(args, kwargs):
            return target(*args, **kwargs)
        if target is operator.getitem and isinstance(args[0], (tuple, list)):
            return args[0][args[1]]
        if target in (operator.add, operator.iadd, torch.add, operator.sub, torch.sub):
            (a, b), e = _aligned(list(args[:2]))
            if kwargs or len(args) != 2:
                raise Unsupported(f"{target} with extra arguments")
            op = operator.sub if target in (operator.sub, torch.sub) else operator.add
            return _Scaled(op(a, b), e)
        if target in (operator.mul, torch.mul) and len(args) == 2 and not kwargs:
            return _product(args[0], args[1])
        if target in (operator.truediv, torch.div) and len(args) == 2 and not kwargs:
            a, b = args
            if isinstance(a, _Scaled) and not isinstance(b, _Scaled):
                return _Scaled(a.m / b, a.e)
            raise Unsupported(f"{target} of a scaled divisor")
        if target is torch.cat:
            tensors = args[0] if args else kwargs["tensors"]
            aligned, e = _aligned(list(tensors))
            rest = {k: v for k, v in kwargs.items() if k != "tensors"}
            return _Scaled(torch.cat(aligned, *args[1:], **rest), e)
        if target in _HOMOGENEOUS_FUNCTIONS:
            return _homogeneous(target, args, kwargs)
        raise Unsupported(f"function {getattr(target, '__name__', target)}")

    def call_method(self, target: Any, args: tuple, kwargs: dict) -> Any:
        if not _has_scaled(args, kwargs):
            return super().call_method(target, args, kwargs)
        self_arg = args[0]
        if target == "size" or target == "dim":
            return getattr(self_arg.m, target)(*args[1:], **kwargs)
        if target in _HOMOGENEOUS_METHODS and isinstance(self_arg, _Scaled):
            if _has_scaled(args[1:], kwargs):
                raise Unsupported(f"method {target} with scaled arguments")
            result = getattr(self_arg.m, target)(*args[1:], **kwargs)
            return _wrap(result, self_arg.e)
        if target in ("add", "add_", "__add__") and len(args) == 2 and not kwargs:
            (a, b), e = _aligned(list(args))
            return _Scaled(a + b, e)
        if target in ("mul", "mul_", "__mul__") and len(args) == 2 and not kwargs:
            return _product(args[0], args[1])
        raise Unsupported(f"method {target}")


def _plain(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    if _has_scaled(args, kwargs):
        raise Unsupported(f"module {type(module).__name__} with scaled arguments")
    return module(*args, **kwargs)


def _has_scaled(args: Any, kwargs: Any) -> bool:
    found = []
    tree_map(lambda v: found.append(v) if isinstance(v, _Scaled) else None, (args, kwargs))
    return bool(found)


def _wrap(result: Any, e: int) -> Any:
    if isinstance(result, torch.Tensor):
        return _Scaled(result, e) if result.is_floating_point() else result
    if isinstance(result, (tuple, list)):
        return type(result)(_wrap(r, e) for r in result)
    return result


def _homogeneous(target: Any, args: tuple, kwargs: dict) -> Any:
    first = args[0]
    if not isinstance(first, _Scaled) or _has_scaled(args[1:], kwargs):
        raise Unsupported(f"function {getattr(target, '__name__', target)} layout")
    return _wrap(target(first.m, *args[1:], **kwargs), first.e)


def _product(a: Any, b: Any) -> _Scaled:
    if isinstance(a, _Scaled) and isinstance(b, _Scaled):
        return _renormalized(a.m * b.m, a.e + b.e)
    if isinstance(a, _Scaled):
        return _Scaled(a.m * b, a.e)
    return _Scaled(a * b.m, b.e)


def scaled_flow(gm: torch.fx.GraphModule, inputs: tuple[Any, ...]) -> torch.Tensor:
    """``sum(outputs) * 2**-E`` for some integer ``E``, computed exponent by exponent.

    Run it inside the reparametrisation that holds the linearised state.

    Raises:
        Unsupported: the graph holds an op that cannot carry an exponent.
    """
    wrapped = [_Scaled(x, 0) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
               for x in inputs]  # fmt: skip
    output = _Interpreter(gm).run(*wrapped)
    leaves: list[_Scaled] = []
    tree_map(lambda v: leaves.append(v) if isinstance(v, _Scaled) else None, output)
    if not leaves:
        raise Unsupported("the output holds no floating-point tensor")
    top = max(v.e for v in leaves)
    return sum((v.m.sum() * (2.0 ** (v.e - top)) for v in leaves), torch.zeros(()))
