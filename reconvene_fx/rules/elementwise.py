"""Rules for elementwise ops: activations, dropout, arithmetic with broadcasting."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from .context import RuleContext
from .layout import Layout, Scrambled
from .registry import DEFAULT_RULES

__all__ = ["elementwise"]

_MODULES = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)  # fmt: skip
_FUNCTIONS = (
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.neg,
    operator.pos, operator.pow,
    torch.add, torch.sub, torch.subtract, torch.mul, torch.multiply, torch.div, torch.divide,
    torch.maximum, torch.minimum, torch.where, torch.relu, torch.sigmoid, torch.tanh,
    torch.abs, torch.neg, torch.exp, torch.sqrt, torch.rsqrt, torch.pow, torch.clamp,
    torch.clip, torch.square, torch.reciprocal, torch.erf,
    F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish,
    F.hardswish, F.hardsigmoid, F.hardtanh, F.sigmoid, F.tanh, F.softplus, F.logsigmoid,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
)  # fmt: skip
_METHODS = (
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "pow", "neg", "abs",
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "sqrt", "rsqrt",
    "clamp", "clamp_", "clip", "clamp_min", "clamp_max", "square", "reciprocal",
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to",
    "maximum", "minimum", "hardtanh_",
)  # fmt: skip


@DEFAULT_RULES.module(*_MODULES)
@DEFAULT_RULES.function(*_FUNCTIONS)
@DEFAULT_RULES.method(*_METHODS)
def elementwise(ctx: RuleContext) -> Any:
    """Operands broadcast against each other; channel dims that line up are unified.

    A constant operand that varies along the channel dim pins it, unless it is one value
    per channel read from a parameter or buffer (a layer scale: its entries follow the
    channels, see :meth:`RuleContext.parameter`); an operand whose channel dim lands
    elsewhere than the others' pins it too.
    """
    module = ctx.module
    if isinstance(module, nn.PReLU) and module.num_parameters != 1:
        return ctx.boundary()
    out_shape = ctx.out_shape
    if out_shape is None:
        return ctx.boundary()
    tensors = ctx.tensor_args()
    if module is not None:
        tensors = tensors[:1]
    layouts = [ctx.layout(t) for t in tensors]
    scrambled = [lay for lay in layouts if isinstance(lay, Scrambled)]
    if scrambled:
        only = len(tensors) == 1 and tuple(scrambled[0].shape) == tuple(out_shape)
        return scrambled[0] if only else ctx.boundary()
    aligned: list[tuple[Layout, int]] = []
    constants: list[tuple[torch.fx.Node, torch.Size]] = []
    for tensor, lay in zip(tensors, layouts, strict=True):
        shape = ctx.shape(tensor)
        assert shape is not None
        if lay is None:
            constants.append((tensor, shape))
        elif isinstance(lay, Layout):
            out_dim = lay.dim + len(out_shape) - len(shape)
            if lay.size == out_shape[out_dim]:
                aligned.append((lay, out_dim))
        else:
            return ctx.boundary()
    if not aligned:
        return None if len(layouts) == len(constants) else ctx.boundary()
    out_dims = {d for _, d in aligned}
    if len(out_dims) != 1:
        return ctx.boundary()
    (out_dim,) = out_dims
    first = aligned[0][0]
    for tensor, shape in constants:
        dim = out_dim - (len(out_shape) - len(shape))
        if dim >= 0 and shape[dim] > 1:
            per_channel = ctx.parameter(tensor, dim, first.size) if module is None else None
            if per_channel is None:
                ctx.pin(*[lay for lay, _ in aligned])
            else:
                ctx.tie(first, per_channel)
    for lay, _ in aligned[1:]:
        ctx.tie(first, lay)
    return Layout(first.space, out_dim, first.size)


# torchvision's StochasticDepth (and its function, an FX leaf): per-sample scaling; known
# once torchvision is imported, without importing it here
DEFAULT_RULES.lazy("module", "torchvision.ops.stochastic_depth", "StochasticDepth", elementwise)
DEFAULT_RULES.lazy("function", "torchvision.ops.stochastic_depth", "stochastic_depth", elementwise)
