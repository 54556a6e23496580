"""LiftLayersPass: functional layers on parameters (``F.conv2d(x, self.weight, ...)``) become
module calls, so every later pass sees one kind of layer.

Model libraries often call ``F.conv2d``, ``F.linear``, ``F.batch_norm``, ``F.layer_norm`` or
``F.group_norm`` on their own parameters (timm's ``BatchNormAct2d`` is an ``nn.BatchNorm2d``
that torch.fx traces through to ``F.batch_norm``). In the graph that is a ``call_function``
on ``get_attr`` tensors, which no layer handler or channel rule knows, so every channel
around it would be pinned. This pass rewrites such a call into a call of an equivalent
``torch.nn`` module (``nn.Conv2d``, ``nn.BatchNorm2d``, ...) holding the very same tensors
(parameters stay the same objects, nothing is copied), installed at the name of the module
that held them. Channel rules, layer handlers, scoring, shrinking and ``verify`` then treat
it as any other layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.infra.pass_base import PassResult
from torch.fx.passes.shape_prop import TensorMetadata

from .._copy import own_modules
from ..errors import CompilerError
from ..meta import LIFTED, TENSOR_META
from ._base import ReconvenePass

__all__ = ["LiftLayersPass", "LiftedLayer"]


@dataclass(frozen=True)
class LiftedLayer:
    """How a functional layer became a module: its type, constructor arguments, and the
    attribute of each tensor it holds (the same names the model's module used)."""

    kind: type[nn.Module]
    kwargs: Mapping[str, Any]
    tensors: tuple[str, ...] = field(default=())

    def build(self, holder: nn.Module) -> nn.Module:
        """A module of ``kind`` holding ``holder``'s tensors (the same objects, not copies).

        ``verify`` uses it to view the model's own module (say timm's ``Conv2dSame``) as
        the layer that was compiled.
        """
        module = self.kind(**self.kwargs, device="meta")
        for name in self.tensors:
            _put(module, name, getattr(holder, name))
        _replace_meta_tensors(module, holder)
        return module


# per function: positional parameter names (the tensors among them are held by the module)
_SIGNATURES: dict[Callable[..., Any], tuple[str, ...]] = {
    F.conv1d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.conv3d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    torch.conv1d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    torch.conv2d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    torch.conv3d: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    F.linear: ("input", "weight", "bias"),
    F.batch_norm: (
        "input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps",
    ),
    F.layer_norm: ("input", "normalized_shape", "weight", "bias", "eps"),
    F.group_norm: ("input", "num_groups", "weight", "bias", "eps"),
}  # fmt: skip
_TENSOR_ARGS = ("weight", "bias", "running_mean", "running_var")
_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORMS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


class LiftLayersPass(ReconvenePass):
    """Rewrites functional conv/linear/norm calls on a module's own tensors into calls of
    the equivalent ``torch.nn`` module, installed at that module's name.

    Requires ShapePass (the input's rank picks ``BatchNorm1d/2d/3d``); keeps every node's
    meta. A call is lifted when its tensors are ``get_attr`` tensors of one module, held
    under the names the ``torch.nn`` module uses (``weight``, ``bias``, ``running_mean``,
    ``running_var``), read by no other node, and its other arguments are literals; any
    other call is left as it is. The module's other children and tensors move to the new
    module. A lifted BatchNorm follows ``train()``/``eval()`` like any module (the traced
    call had the mode of tracing baked in); its momentum is the traced one (0.1 when the
    call carries none). ``gm.meta["reconvene.lifted"]`` maps each lifted name to its
    :class:`LiftedLayer`.

    Example:
        >>> import torch.nn.functional as F
        >>> class Functional(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.proj = torch.nn.Module()
        ...         self.proj.weight = torch.nn.Parameter(torch.randn(8, 3, 3, 3))
        ...     def forward(self, x):
        ...         return F.conv2d(x, self.proj.weight, padding=1)
        >>> from reconvene_fx.passes import ShapePass
        >>> gm = torch.fx.symbolic_trace(Functional())
        >>> _ = ShapePass((torch.randn(1, 3, 8, 8),))(gm)
        >>> gm = LiftLayersPass()(gm).graph_module
        >>> type(gm.proj).__name__, gm.proj.padding
        ('Conv2d', (1, 1))
    """

    reads = (TENSOR_META,)
    writes = (LIFTED,)
    edits_graph = True

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        calls: dict[str, list[tuple[torch.fx.Node, LiftedLayer, dict[str, torch.fx.Node]]]] = {}
        for node in graph_module.graph.nodes:
            found = _liftable(node, graph_module)
            if found is None:
                continue
            holder, lifted, tensors = found
            calls.setdefault(holder, []).append((node, lifted, tensors))
        module_targets = {str(n.target) for n in graph_module.graph.nodes if n.op == "call_module"}
        lifted_all: dict[str, LiftedLayer] = dict(graph_module.meta.get(LIFTED, {}))
        for holder, found in calls.items():
            first = found[0][1]
            readers = {n for _, _, ts in found for n in ts.values()}
            if (
                holder in module_targets
                or any(lay != first for _, lay, _ in found)
                or not _read_only_by(readers, {node for node, _, _ in found})
            ):
                continue
            own_modules(graph_module)  # a user's symbolic_trace shares the model's modules
            _install(graph_module, holder, first)
            for node, _, tensors in found:
                node.op, node.target = "call_module", holder
                node.args, node.kwargs = (node.args[0] if node.args else node.kwargs["input"],), {}
                for attr in tensors.values():
                    if not attr.users:
                        graph_module.graph.erase_node(attr)
            lifted_all[holder] = first
        grew = len(lifted_all) > len(graph_module.meta.get(LIFTED, {}))
        graph_module.meta[LIFTED] = lifted_all
        if grew:
            graph_module.graph.lint()
        return PassResult(graph_module, grew)


def _liftable(
    node: torch.fx.Node, gm: torch.fx.GraphModule
) -> tuple[str, LiftedLayer, dict[str, torch.fx.Node]] | None:
    """``(holder, lifted layer, {role: get_attr node})`` when ``node`` can be lifted."""
    if node.op != "call_function":
        return None
    try:
        names = _SIGNATURES.get(node.target)  # type: ignore[arg-type]
    except TypeError:
        return None
    if names is None or len(node.args) > len(names):
        return None
    bound = dict(zip(names, node.args, strict=False)) | dict(node.kwargs)
    if set(bound) - set(names) or "input" not in bound:
        return None
    tensors: dict[str, torch.fx.Node] = {}
    for role, value in bound.items():
        if role == "input":
            continue
        if role in _TENSOR_ARGS and isinstance(value, torch.fx.Node):
            if value.op != "get_attr":
                return None
            tensors[role] = value
        elif isinstance(value, torch.fx.Node) or (role in _TENSOR_ARGS and value is not None):
            return None  # a computed argument (or a constant tensor)
    holders = {str(t.target).rpartition(".")[0] for t in tensors.values()}
    if len(holders) != 1:
        return None
    (holder,) = holders
    if not holder or any(str(t.target).rpartition(".")[2] != r for r, t in tensors.items()):
        return None
    meta = bound["input"].meta.get(TENSOR_META) if isinstance(bound["input"], torch.fx.Node) \
        else None  # fmt: skip
    if not isinstance(meta, TensorMetadata):
        return None
    made = _describe(node.target, bound, tensors, gm, holder, len(meta.shape))
    if made is None:
        return None
    return holder, made, tensors


def _describe(
    fn: Any,
    bound: dict[str, Any],
    tensors: dict[str, torch.fx.Node],
    gm: torch.fx.GraphModule,
    holder: str,
    ndim: int,
) -> LiftedLayer | None:
    """The module equivalent to the call ``fn(**bound)``, or None."""
    holder_module = gm.get_submodule(holder)
    if "weight" not in tensors and fn not in (F.batch_norm,):
        return None
    weight = getattr(holder_module, "weight", None) if "weight" in tensors else None
    held = tuple(sorted(tensors))
    if fn in (F.conv1d, F.conv2d, F.conv3d, torch.conv1d, torch.conv2d, torch.conv3d):
        assert weight is not None
        dims = weight.dim() - 2
        groups = bound.get("groups", 1)
        kwargs = {
            "in_channels": weight.shape[1] * groups,
            "out_channels": weight.shape[0],
            "kernel_size": tuple(weight.shape[2:]),
            "stride": bound.get("stride", 1),
            "padding": bound.get("padding", 0),
            "dilation": bound.get("dilation", 1),
            "groups": groups,
            "bias": "bias" in tensors,
        }
        return LiftedLayer(_CONVS[dims], kwargs, held) if dims in _CONVS else None
    if fn is F.linear:
        assert weight is not None and weight.dim() == 2
        kwargs = {
            "in_features": weight.shape[1],
            "out_features": weight.shape[0],
            "bias": "bias" in tensors,
        }
        return LiftedLayer(nn.Linear, kwargs, held)
    if fn is F.batch_norm:
        training = bound.get("training", False)
        tracked = "running_mean" in tensors and "running_var" in tensors
        if not isinstance(training, bool) or (tracked and training != gm.training):
            return None
        if not tracked and ("running_mean" in tensors or not training):
            return None
        stats = getattr(holder_module, "running_mean", None) if tracked else weight
        paired = ("weight" in tensors) == ("bias" in tensors)
        if stats is None or not paired or ndim not in _BATCH_NORMS:
            return None
        momentum = bound.get("momentum", 0.1)
        kwargs = {
            "num_features": stats.shape[0],
            "eps": bound.get("eps", 1e-5),
            "momentum": momentum if isinstance(momentum, float) and momentum > 0 else 0.1,
            "affine": "weight" in tensors,
            "track_running_stats": tracked,
        }
        return LiftedLayer(_BATCH_NORMS[ndim], kwargs, held)
    if fn is F.layer_norm:
        shape = bound.get("normalized_shape")
        shape = (shape,) if isinstance(shape, int) else shape
        if not isinstance(shape, (tuple, list)):
            return None
        kwargs = {
            "normalized_shape": tuple(shape),
            "eps": bound.get("eps", 1e-5),
            "elementwise_affine": True,
            "bias": "bias" in tensors,
        }
        return LiftedLayer(nn.LayerNorm, kwargs, held)
    if fn is F.group_norm:
        groups = bound.get("num_groups")
        if not isinstance(groups, int) or "bias" not in tensors:
            return None
        assert weight is not None
        kwargs = {"num_groups": groups, "num_channels": weight.shape[0],
                  "eps": bound.get("eps", 1e-5), "affine": True}  # fmt: skip
        return LiftedLayer(nn.GroupNorm, kwargs, held)
    return None


def _read_only_by(attrs: set[torch.fx.Node], calls: set[torch.fx.Node]) -> bool:
    """Every ``get_attr`` in ``attrs`` feeds the ``calls`` only, and no other ``get_attr``
    node reads the same tensor."""
    if any(set(a.users) - calls for a in attrs):
        return False
    targets = {str(a.target) for a in attrs}
    graph = next(iter(attrs)).graph
    return all(n in attrs for n in graph.nodes if n.op == "get_attr" and str(n.target) in targets)


def _install(gm: torch.fx.GraphModule, holder: str, lifted: LiftedLayer) -> None:
    """Replace the module at ``holder`` by the lifted one, moving everything it held."""
    old = gm.get_submodule(holder)
    new = lifted.build(old)
    for name, child in old.named_children():
        new.add_module(name, child)
    for name, p in old.named_parameters(recurse=False):
        if name not in lifted.tensors:
            _put(new, name, p)
    for name, b in old.named_buffers(recurse=False):
        if name not in lifted.tensors:
            _put(new, name, b)
    new.train(gm.training)
    parent, _, last = holder.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, last, new)


def _put(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if isinstance(value, nn.Parameter) or (value is None and name in module._parameters):
        module._parameters[name] = value
        module._buffers.pop(name, None)
    else:
        module._buffers[name] = value
        module._parameters.pop(name, None)


def _replace_meta_tensors(module: nn.Module, holder: nn.Module) -> None:
    """Tensors the constructor made on the meta device and the holder did not supply
    (``num_batches_tracked``): real ones, on the holder's device."""
    device = next((t.device for t in (*holder.parameters(False), *holder.buffers(False))),
                  torch.device("cpu"))  # fmt: skip
    for name, b in list(module._buffers.items()):
        if b is not None and b.is_meta:
            module._buffers[name] = torch.zeros(b.shape, dtype=b.dtype, device=device)
    for name, p in list(module._parameters.items()):
        if p is not None and p.is_meta:
            raise CompilerError(f"lifted module left parameter {name!r} unset")
