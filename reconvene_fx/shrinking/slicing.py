"""Slicing every layer of a graph module to the channels its ``KEEP`` meta keeps."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from .._copy import own_modules
from ..costs import count_params
from ..errors import CompilerError, ShrinkError
from ..layers import Layer, LayerRegistry, consumed_input, layer_calls, new_param, take
from ..layers.base import submodule
from ..layers.reinit import InitFn, reinitialize
from ..meta import (
    APPROXIMATE,
    CHANNELS,
    KEEP,
    TENSOR_META,
    ChannelInfo,
    ChannelKeep,
    LayerChange,
    ShrinkRecord,
)
from .literals import rewrite_literals

__all__ = ["shrink_layers"]


def shrink_layers(
    gm: torch.fx.GraphModule,
    *,
    reinit: bool = False,
    seed: int = 0,
    init_fn: InitFn | None = None,
    masked: Collection[str] = (),
    layers: LayerRegistry | None = None,
) -> ShrinkRecord:
    """Slice every conv, linear and norm layer of ``gm`` to its kept channels, in place.

    Reads the kept channels from ``node.meta[KEEP]`` (written by PlanPass, or by the plan
    for each candidate it measures) and the channel dims from ``node.meta[CHANNELS]``.
    Modules stay at their qualified names and keep their tensors' kinds (parameters stay
    parameters); each changed layer gets new tensors, none of the old ones is written to
    (so a graph module that shares modules or tensors with another model leaves that model
    as it was); ``groups`` is recomputed. Per-channel tensors read by ``get_attr`` are
    sliced too, the sizes that cut narrowed channels are rewritten
    (:func:`~reconvene_fx.shrinking.literals.rewrite_literals`, the only graph edits; the
    code is regenerated) and the shapes in ``tensor_meta`` are set to the kept channels.

    Args:
        gm: the graph module, with ``KEEP`` and ``CHANNELS`` meta on its nodes.
        reinit: re-initialize the narrowed layers from a generator seeded with ``seed``:
            by ``init_fn`` when given, else by their layer handler's ``reinit`` at the
            model's own initialization (convs and linears by
            :func:`~reconvene_fx.layers.matched_init`; norms keep their sliced affine
            values with fresh statistics). False keeps the sliced original weights, so
            the result can be checked against the original (``rfx.verify``).
        seed: seed of the re-initialization.
        init_fn: ``init_fn(module, generator)`` re-initializes a narrowed module.
        masked: qualified names of the layers that keep a composite mask: they keep their
            sliced weights (the mask chose them) even with ``reinit``.
        layers: the layer registry whose handlers slice the layers (None: the built-in
            :data:`~reconvene_fx.layers.DEFAULT_LAYERS`).

    Returns:
        What changed: the kept indices, params and MACs of each conv/linear module.

    Raises:
        ShrinkError: a module whose channels were narrowed holds a tensor no layer handler
            slices (it names the module and the tensor).
        CompilerError: a layer handler failed (it names the module and the node).

    Example:
        >>> import torch, reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> x = torch.randn(1, 3, 8, 8)
        >>> planned = rfx.passes.compile_passes(0.5, (x,))[:5]  # Shape ... PlanPass
        >>> gm = rfx.passes.run_passes(rfx.trace(net), planned)
        >>> record = shrink_layers(gm)
        >>> record.sliced, net[0].out_channels  # the caller's model is left as it was
        (('0', '2'), 16)
        >>> width = gm.get_submodule("0").out_channels
        >>> width < 16, record.layers["2"].in_idx.numel() == width
        (True, True)
        >>> record.macs_after < record.macs_before
        True
    """
    own_modules(gm)  # a user's symbolic_trace shares the model's modules
    masked = set(masked)
    generator = torch.Generator().manual_seed(seed)
    params_before = count_params(gm)
    tensors_before = _direct_tensors(gm)
    changes: dict[str, dict[str, Any]] = {}
    shrunk: dict[str, Layer] = {}
    sliced: list[str] = []
    macs_before = macs_after = 0
    for node, layer in layer_calls(gm, layers):
        name = layer.name
        if name not in shrunk:
            redraw = reinit and name not in masked
            shrunk[name] = _shrink_layer(node, layer, generator, redraw, init_fn)
            if shrunk[name] is not layer:
                sliced.append(name)
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
    _check_nothing_left_over(gm, tensors_before)
    _shrink_attributes(gm)
    if rewrite_literals(gm):
        gm.recompile()
    _update_shapes(gm)
    return ShrinkRecord(
        layers={n: LayerChange(**c) for n, c in changes.items()},
        params_before=params_before,
        macs_before=macs_before,
        macs_after=macs_after,
        approximate=_approximations(gm),
        reinit=reinit,
        sliced=tuple(sliced),
    )


def _shrink_layer(
    node: torch.fx.Node,
    layer: Layer,
    generator: torch.Generator,
    redraw: bool,
    init_fn: InitFn | None,
) -> Layer:
    """Slice one layer to its kept channels (re-initialized if ``redraw``); the layer as
    it is afterwards (``layer`` itself when nothing of it was narrowed)."""
    in_keep = _input_keep(node, layer) if layer.weighted else None
    out_keep = _output_keep(node, layer)
    if in_keep is None and out_keep is None:
        return layer
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
    if redraw:
        reinitialize(new, generator, before, init_fn)
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
        holder = submodule(gm, holder_name)
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
            m = submodule(gm, str(node.target))
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
        module = submodule(gm, name)
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
    """The kept input channels of a conv/linear call, when its input was narrowed (the
    input the cost model counts: :func:`~reconvene_fx.layers.consumed_input`)."""
    if consumed_input(node, layer) is None:
        return None
    found = _keep_of(node.args[0])
    return found[0] if found is not None else None


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
