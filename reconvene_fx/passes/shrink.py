"""ShrinkPass: rewrite layers to the kept channels (the only pass that changes the model)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.infra.pass_base import PassResult
from torch.fx.passes.shape_prop import TensorMetadata

from .._copy import own_modules
from ..costs import count_params
from ..errors import CompilerError, ShrinkError
from ..layers import Layer, layer_calls, module_layer, new_param, take
from ..layers.init import InitScale, matched_init
from ..meta import (
    APPROXIMATE,
    CHANNELS,
    KEEP,
    PLAN,
    SHRINK,
    TENSOR_META,
    ChannelInfo,
    ChannelKeep,
    LayerChange,
    PlanSummary,
    ShrinkRecord,
)
from ._base import ReconvenePass, require_meta
from ._literals import rewrite_literals

__all__ = ["InitScale", "ShrinkPass", "default_init", "matched_init", "torchvision_init"]

InitFn = Callable[[nn.Module, torch.Generator], None]


def torchvision_init(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialize a narrowed layer at its new shape, as torchvision initializes CNNs
    (pass it as ``init_fn`` to use it instead of :func:`matched_init`).

    Convs: Kaiming normal (fan-out, ReLU), zero bias. Linear: PyTorch's default
    (Kaiming uniform, a=sqrt(5)) at the new fan-in. Norms: weight 1, bias 0, fresh stats.
    Each layer type's handler (:mod:`reconvene_fx.layers`) says how.

    Example:
        >>> conv = torch.nn.Conv2d(3, 8, 3)
        >>> torchvision_init(conv, torch.Generator().manual_seed(0))
        >>> float(conv.bias.detach().abs().sum())
        0.0
    """
    layer = module_layer("", module)
    if layer is not None:
        layer.handler.fresh_init(layer, generator)
    elif hasattr(module, "reset_parameters"):
        module.reset_parameters()


default_init = torchvision_init  # the name of the default before 0.3 (kept for callers)


class ShrinkPass(ReconvenePass):
    """Slices every conv, linear and norm layer to the kept channels of PlanPass.

    Requires PlanPass. Modules stay at their qualified names and keep their tensors'
    kinds (parameters stay parameters); each changed layer gets new tensors (none of the
    old ones is written to, so a graph module that shares modules with another model does
    not change that model's weights); ``groups`` is recomputed. With ``reinit=True``
    narrowed layers are re-initialized from a generator seeded with ``seed``: by
    ``init_fn`` when given, else by their layer handler's ``reinit`` at the model's own
    initialization: convs and linears by :func:`matched_init` (the original spread at the
    new fan-in), norms keep their sliced affine values (zero-initialized norms stay zero)
    with fresh statistics. A layer that keeps a composite mask (``PlanSummary.masks``)
    keeps its sliced weights: the mask chose them. The shapes in ``tensor_meta`` are
    updated to the kept channels; the sizes that cut narrowed channels (split sizes,
    channel ranges, literal or computed from the tensor's own channel count) are rewritten
    to the kept counts where they would not follow by themselves, and any other use of a
    narrowed channel count (``t / c ** 0.5``) keeps its original value (the only graph
    edits; the code is regenerated); a :class:`~reconvene_fx.meta.ShrinkRecord` is
    written to ``gm.meta[SHRINK]``.

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = rfx.compile(net, budget=0.5, example_inputs=(torch.randn(1, 3, 8, 8),))
        >>> gm.get_submodule("0").out_channels < 16
        True
    """

    def __init__(self, *, reinit: bool = True, seed: int = 0, init_fn: InitFn | None = None):
        super().__init__()
        self.reinit = reinit
        self.seed = seed
        self.init_fn = init_fn
        self._masked: set[str] = set()

    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        require_meta(graph_module, PLAN, "ShrinkPass", "PlanPass")

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        own_modules(graph_module)  # a user's symbolic_trace shares the model's modules
        plan = graph_module.meta.get(PLAN)  # absent on the planner's own candidates
        # composite: a layer that keeps its PaI mask keeps the weights the mask chose
        self._masked = set(plan.masks) if isinstance(plan, PlanSummary) else set()
        generator = torch.Generator().manual_seed(self.seed)
        params_before = count_params(graph_module)
        tensors_before = _direct_tensors(graph_module)
        changes: dict[str, dict[str, Any]] = {}
        shrunk: dict[str, Layer] = {}
        originals: list[Layer] = []
        macs_before = macs_after = 0
        for node, layer in layer_calls(graph_module):
            name = layer.name
            if name not in shrunk:
                originals.append(layer)
                shrunk[name] = self._shrink(node, layer, generator)
            new = shrunk[name]
            if not layer.weighted:
                continue
            before, after = _call_macs(node, layer, new)
            macs_before, macs_after = macs_before + before, macs_after + after
            if name in changes:
                changes[name]["macs_before"] += before
                changes[name]["macs_after"] += after
                continue
            changes[name] = {
                "in_channels": layer.in_channels,
                "out_channels": layer.out_channels,
                "in_idx": _kept(_input_keep(node, layer), layer.in_channels),
                "out_idx": _kept(_output_keep(node, layer), layer.out_channels),
                "params_before": layer.params,
                "params_after": new.params,
                "macs_before": before,
                "macs_after": after,
            }
        _check_nothing_left_over(graph_module, tensors_before)
        _shrink_attributes(graph_module)
        if rewrite_literals(graph_module):
            graph_module.recompile()
        _update_shapes(graph_module)
        modified = any(
            new is not layer for layer, new in zip(originals, shrunk.values(), strict=True)
        )
        graph_module.meta[SHRINK] = ShrinkRecord(
            layers={n: LayerChange(**c) for n, c in changes.items()},
            params_before=params_before,
            macs_before=macs_before,
            macs_after=macs_after,
            approximate=_approximations(graph_module),
            reinit=self.reinit,
        )
        return PassResult(graph_module, modified)

    def _shrink(self, node: torch.fx.Node, layer: Layer, generator: torch.Generator) -> Layer:
        """Slice one layer to its kept channels; the layer as it is afterwards."""
        in_keep = _input_keep(node, layer) if layer.weighted else None
        out_keep = _output_keep(node, layer)
        if in_keep is None and out_keep is None:
            return layer
        redraw = self.reinit and layer.name not in self._masked
        before = layer.handler.init_scale(layer) if redraw else None
        try:
            layer.handler.shrink(
                layer,
                in_keep.index if in_keep is not None else None,
                out_keep.index if out_keep is not None else None,
            )
        except Exception as exc:
            raise CompilerError(
                f"ShrinkPass failed on module {layer.name!r} ({type(layer.module).__name__}) "
                f"at node {node.format_node()}: {exc}"
            ) from exc
        new = layer.handler.describe(layer.name, layer.module, None)
        assert new is not None
        if not self.reinit or layer.name in self._masked:
            return new
        if self.init_fn is not None:
            self.init_fn(layer.module, generator)
        else:
            new.handler.reinit(new, generator, before)
        return new


def _shrink_attributes(gm: torch.fx.GraphModule) -> None:
    """Slice the per-channel parameters and buffers read by ``get_attr`` whose channels
    were narrowed (a layer scale ``gamma``): new tensors, parameters stay parameters."""
    for node in gm.graph.nodes:
        keep, info = node.meta.get(KEEP), node.meta.get(CHANNELS)
        if node.op != "get_attr" or not isinstance(keep, ChannelKeep) or not keep.narrowed:
            continue
        assert isinstance(info, ChannelInfo)
        holder_name, _, attr = str(node.target).rpartition(".")
        holder = gm.get_submodule(holder_name) if holder_name else gm
        old = getattr(holder, attr)
        new = take(old, info.dim, keep.index)
        if isinstance(old, nn.Parameter):
            setattr(holder, attr, new_param(new, old))
        elif attr in holder._buffers:
            holder._buffers[attr] = new
        else:
            setattr(holder, attr, new)


def _direct_tensors(gm: torch.fx.GraphModule) -> dict[str, dict[str, torch.Tensor]]:
    """``{module: {name: tensor}}``: the parameters and buffers each called module holds."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target not in found:
            m = gm.get_submodule(str(node.target))
            found[str(node.target)] = {
                k: t for k, t in (*m._parameters.items(), *m._buffers.items()) if t is not None
            }
    return found


def _check_nothing_left_over(
    gm: torch.fx.GraphModule, before: dict[str, dict[str, torch.Tensor]]
) -> None:
    """Every tensor of a module whose channels were narrowed was either sliced or does not
    follow those channels: a tensor still holding the old channel count in some dimension
    (a per-channel ``gain`` that no layer handler knows of) would break the model at run
    time, so it is named here instead.

    Raises:
        ShrinkError: naming the module, the tensor and the channel counts.
    """
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        narrowed = {
            found[0].size: int(found[0].index.numel())
            for found in (_keep_of(node), _keep_of(node.args[0] if node.args else None))
            if found is not None
        }
        if not narrowed:
            continue
        name = str(node.target)
        module = gm.get_submodule(name)
        for key, old in before.get(name, {}).items():
            now = module._parameters.get(key, module._buffers.get(key))
            stale = [d for d in old.shape if d in narrowed]
            if now is old and stale:
                raise ShrinkError(
                    f"ShrinkPass narrowed the channels of module {name!r} "
                    f"({type(module).__name__}) from {stale[0]} to {narrowed[stale[0]]} but "
                    f"left its tensor {key!r} of shape {tuple(old.shape)} at the old size; "
                    f"register a layer handler for {type(module).__name__} in "
                    "reconvene_fx.layers that slices it, or list the module in ignore=",
                    module=name,
                    tensor=key,
                )


def _keep_of(node: Any) -> tuple[ChannelKeep, ChannelInfo] | None:
    if not isinstance(node, torch.fx.Node):
        return None
    keep, info = node.meta.get(KEEP), node.meta.get(CHANNELS)
    if isinstance(keep, ChannelKeep) and isinstance(info, ChannelInfo) and keep.narrowed:
        return keep, info
    return None


def _input_keep(node: torch.fx.Node, layer: Layer) -> ChannelKeep | None:
    """The kept input channels of a conv/linear call, when its input was narrowed."""
    found = _keep_of(node.args[0] if node.args else None)
    if found is None:
        return None
    keep, info = found
    meta = node.args[0].meta.get(TENSOR_META)  # type: ignore[union-attr]
    ndim = len(meta.shape) if isinstance(meta, TensorMetadata) else -1
    return keep if layer.accepts_input(info.size, info.dim, ndim) else None


def _output_keep(node: torch.fx.Node, layer: Layer) -> ChannelKeep | None:
    found = _keep_of(node)
    if found is None or found[0].size != layer.out_channels:
        return None
    return found[0]


def _kept(keep: ChannelKeep | None, size: int) -> torch.Tensor:
    return keep.index.clone() if keep is not None else torch.arange(size)


def _call_macs(node: torch.fx.Node, old: Layer, new: Layer) -> tuple[int, int]:
    """Multiply-accumulates of one call before and after shrinking (from the recorded
    output shape: only the channel count on the output's channel dim changes)."""
    meta = node.meta.get(TENSOR_META)
    if not isinstance(meta, TensorMetadata):
        return 0, 0
    shape = list(meta.shape)
    before = old.handler.macs(old, meta.shape)
    if shape:
        shape[old.out_dim] = new.out_channels
    return before, new.handler.macs(new, torch.Size(shape))


def _update_shapes(gm: torch.fx.GraphModule) -> None:
    """Write the kept channel counts into ``tensor_meta`` (no second shape propagation)."""

    def narrow(meta: Any, keep: Any, info: Any) -> Any:
        if isinstance(meta, (tuple, list)) and isinstance(keep, tuple):
            infos = info if isinstance(info, tuple) else (None,) * len(keep)
            parts = [narrow(m, k, i) for m, k, i in zip(meta, keep, infos, strict=False)]
            return type(meta)(parts + list(meta[len(parts) :]))
        if not (isinstance(meta, TensorMetadata) and isinstance(keep, ChannelKeep)
                and isinstance(info, ChannelInfo) and keep.narrowed):  # fmt: skip
            return meta
        shape = list(meta.shape)
        shape[info.dim] = int(keep.index.numel())
        stride = torch.empty(shape, device="meta").stride()
        return meta._replace(shape=torch.Size(shape), stride=stride)

    for node in gm.graph.nodes:
        if KEEP in node.meta and TENSOR_META in node.meta:
            node.meta[TENSOR_META] = narrow(
                node.meta[TENSOR_META], node.meta[KEEP], node.meta.get(CHANNELS)
            )


def _approximations(gm: torch.fx.GraphModule) -> dict[str, str]:
    found = {}
    for node in gm.graph.nodes:
        keep = node.meta.get(KEEP)
        if APPROXIMATE in node.meta and isinstance(keep, ChannelKeep) and keep.narrowed:
            found[node.name] = node.meta[APPROXIMATE]
    return found
