"""What a layer holds: the :class:`Layer` view and the handler registry.

Channel-flow rules (``reconvene_fx.rules``) say how channels *flow* through an op; layer
handlers say what a *layer* holds: its channel counts, parameters, multiply-accumulates,
how to slice it to kept channels, how to zero removed inputs (for ``verify``) and how to
re-initialize it. Every pass that needs to know a layer type asks its handler, so a new
layer type is one handler (plus a channel rule), registered once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.shape_prop import TensorMetadata

from .._modules import submodule
from .._registry import TypeRegistry
from ..meta import CHANNELS, TENSOR_META, ChannelInfo
from .init import InitScale, matched_init

__all__ = [
    "DEFAULT_LAYERS",
    "Layer",
    "LayerHandler",
    "LayerRegistry",
    "consumed_input",
    "get_default_layer_registry",
    "layer_calls",
    "module_layer",
    "new_param",
    "submodule",
    "take",
]


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer as the passes see it: where its tensors live and its channel geometry.

    Attributes:
        name: qualified name of the module (the key of reports, ``ignore=`` and scores).
        module: the module that holds the layer's tensors.
        handler: the :class:`LayerHandler` that knows this kind of layer.
        node: the call this view was read from (None when read off a module alone).
        weighted: a conv/linear-like layer whose weight mixes input channels into output
            channels (scored, narrowed on both sides); False for per-channel layers (norms).
        in_channels, out_channels: channel counts (features for a Linear); a per-channel
            layer has ``in_channels == out_channels``.
        groups: channel groups of a grouped conv (1 otherwise).
        unit: weight elements per (output channel, input channel of its group): the kernel
            size; for a per-channel layer, its parameters per channel.
        bias: a bias per output channel.
        in_dim, out_dim: dimension of the input/output tensor that holds the channels
            (``-1``: the last one).
    """

    name: str
    module: nn.Module
    handler: LayerHandler
    node: torch.fx.Node | None
    weighted: bool
    in_channels: int
    out_channels: int
    groups: int = 1
    unit: int = 1
    bias: bool = False
    in_dim: int = 1
    out_dim: int = 1

    @property
    def params(self) -> int:
        """Parameters the layer holds directly (weight, bias, affine), as counted by costs."""
        if not self.weighted:
            return self.out_channels * self.unit
        per_in = self.in_channels // self.groups
        return self.out_channels * (per_in * self.unit + int(self.bias))

    def weight(self) -> torch.Tensor | None:
        """The prunable weight (scored by the PaI methods), None for per-channel layers."""
        return self.handler.weight(self)

    def accepts_input(self, size: int, dim: int, ndim: int) -> bool:
        """Whether an input tensor of ``ndim`` dims, whose channels (``size`` of them) lie
        on ``dim``, feeds this layer's input channels."""
        want = self.in_dim if self.in_dim >= 0 else ndim + self.in_dim
        return dim == want and size == self.in_channels


class LayerHandler:
    """How one kind of layer is described, counted, sliced, zeroed and re-initialized.

    Subclasses implement :meth:`describe` and what applies to them; every method gets the
    :class:`Layer` that :meth:`describe` returned. Slicing never writes into the tensors it
    is given: it replaces every tensor of the layer by a new one (the caller's model may
    share them).
    """

    weighted = True

    def describe(self, name: str, module: nn.Module, node: torch.fx.Node | None) -> Layer | None:
        """The layer view of ``module`` (called at ``node`` when known), or None when this
        call is not a layer whose tensors follow channels (e.g. a LayerNorm over several
        dims)."""
        raise NotImplementedError

    def view(
        self, name: str, module: nn.Module, node: torch.fx.Node | None, **geometry: Any
    ) -> Layer:
        """The :class:`Layer` of this handler for ``module`` with the given channel
        geometry (``in_channels``, ``out_channels``, ``groups``, ``unit``, ...)."""
        return Layer(name=name, module=module, handler=self, node=node,
                     weighted=self.weighted, **geometry)  # fmt: skip

    def weight(self, layer: Layer) -> torch.Tensor | None:
        return layer.module.weight if self.weighted else None

    def macs(self, layer: Layer, out_shape: torch.Size) -> int:
        """Multiply-accumulates of one call producing an output of ``out_shape``."""
        return 0

    def channel_mass(self, layer: Layer, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed scores per output and per input channel (float64)."""
        raise NotImplementedError

    def shrink(
        self, layer: Layer, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None
    ) -> None:
        """Keep input channels ``in_idx`` and output channels ``out_idx`` (None: all)."""
        raise NotImplementedError

    def slice_weight(
        self,
        layer: Layer,
        weight: torch.Tensor,
        in_idx: torch.Tensor | None,
        out_idx: torch.Tensor | None,
    ) -> torch.Tensor:
        """A new tensor shaped like the layer's weight is, sliced to the kept channels, from
        ``weight`` shaped like it was (a composite mask follows its layer this way).

        Raises:
            NotImplementedError: for a layer kind whose weight is not sliced this way.
        """
        raise NotImplementedError(f"{type(self).__name__} does not slice weights")

    def input_of_weights(self, layer: Layer) -> torch.Tensor:
        """The input channel each weight element reads, shaped like the weight (int64).

        Raises:
            NotImplementedError: for a layer kind that does not say.
        """
        raise NotImplementedError(f"{type(self).__name__} does not map weights to inputs")

    def zero_inputs(self, layer: Layer, removed: torch.Tensor) -> None:
        """Zero, in place, what the input channels flagged in ``removed`` contribute."""

    def init_scale(self, layer: Layer) -> InitScale | None:
        """What the model's own initialization gave the layer, measured before it is
        sliced and handed back to :meth:`reinit` (None for per-channel layers)."""
        return InitScale.of(layer.module) if layer.weighted else None

    def reinit(self, layer: Layer, generator: torch.Generator, before: InitScale | None) -> None:
        """Re-initialize the narrowed layer (RLR) from the model's own initial values:
        weights by :func:`~reconvene_fx.layers.init.matched_init` from ``before``; per-channel
        tensors keep their sliced initial values (a zero-initialized norm stays zero)."""
        if before is not None:
            matched_init(layer.module, generator, before)

    def fresh_init(self, layer: Layer, generator: torch.Generator) -> None:
        """A fresh initialization at the layer's current shape by a fixed scheme,
        whatever the model's own was (:func:`~reconvene_fx.layers.reinit.torchvision_init`)."""


class LayerRegistry(TypeRegistry[LayerHandler]):
    """Layer handlers keyed by module type or function (see :meth:`describe`).

    The shape of every type-keyed registry (:class:`~reconvene_fx._registry.TypeRegistry`,
    as for the channel rules, :class:`~reconvene_fx.rules.RuleRegistry`): the decorators
    :meth:`module` and :meth:`function` (here class decorators: one instance of the handler
    is registered), ``lazy(kind, module, name, handler)``, ``lookup(node, gm)``,
    ``for_module(module)``, ``copy()``. A module subclass inherits its base class's handler
    only when it does not override ``forward`` (as the channel rules do): a different
    forward may use its tensors differently. ``compile(..., layers=registry)`` compiles
    with a registry of your own (start from :func:`get_default_layer_registry`).

    Example:
        >>> registry = get_default_layer_registry()
        >>> registry.for_module(torch.nn.Conv2d(3, 8, 3)) is not None
        True
        >>> registry.for_module(torch.nn.ReLU()) is None
        True
    """

    def _entry(self, registered: Any) -> LayerHandler:
        """A handler class is instantiated once; a handler instance is kept as it is."""
        return registered() if isinstance(registered, type) else registered

    def describe(self, node: torch.fx.Node, gm: torch.nn.Module) -> Layer | None:
        """The layer called at ``node``, or None.

        A handler of a function (``F.conv2d`` on ``get_attr`` parameters) or a tensor
        method gets, as its module, the one holding the call's first ``get_attr`` tensor
        (the weight), under that module's name.
        """
        if node.op == "call_module":  # the module looked up once, for the handler and it
            module = submodule(gm, str(node.target))
            found = self.for_module(module)
            return None if found is None else found.describe(str(node.target), module, node)
        handler = self.lookup(node, gm)
        if handler is None:
            return None
        weight = next((a for a in node.all_input_nodes if a.op == "get_attr"), None)
        if weight is None:
            return None
        holder = str(weight.target).rpartition(".")[0]
        return handler.describe(holder, submodule(gm, holder), node)


DEFAULT_LAYERS = LayerRegistry()


def get_default_layer_registry() -> LayerRegistry:
    """A copy of the built-in layer handlers, safe to extend."""
    return DEFAULT_LAYERS.copy()


def layer_calls(
    gm: torch.fx.GraphModule, registry: LayerRegistry | None = None
) -> Iterator[tuple[torch.fx.Node, Layer]]:
    """Every call of a layer ``registry`` knows (default :data:`DEFAULT_LAYERS`), in graph
    order (a shared module once per call).

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(
        ...     torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()))
        >>> [(n.target, lay.weighted) for n, lay in layer_calls(gm)]
        [('0', True), ('1', False)]
    """
    registry = registry if registry is not None else DEFAULT_LAYERS
    for node in gm.graph.nodes:
        layer = registry.describe(node, gm)
        if layer is not None:
            yield node, layer


def consumed_input(node: torch.fx.Node, layer: Layer) -> ChannelInfo | None:
    """The channel info (``node.meta[CHANNELS]``) of the tensor whose channels feed the
    input channels of ``layer``, called at ``node``; None when its input channels are not
    a channel space of the graph (the first argument is no node or carries no channel
    info, or its channels are not the ones the layer reads, e.g. a Linear on a tensor
    whose channels lie on another dim). The cost model and ShrinkPass both ask this, so
    what is counted as narrowed is what is sliced.

    Example:
        >>> from reconvene_fx.passes import ChannelGroupPass, ShapePass
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(  # a Linear over the width
        ...     torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Linear(6, 4)))
        >>> _ = ShapePass((torch.randn(1, 3, 8, 8),))(gm)
        >>> _ = ChannelGroupPass()(gm)
        >>> [(n.target, getattr(consumed_input(n, lay), "size", None))
        ...  for n, lay in layer_calls(gm)]
        [('0', 3), ('2', None)]
    """
    source = node.args[0] if node.args else None
    if not isinstance(source, torch.fx.Node):
        return None
    info = source.meta.get(CHANNELS)
    if not isinstance(info, ChannelInfo):
        return None
    meta = source.meta.get(TENSOR_META)
    ndim = len(meta.shape) if isinstance(meta, TensorMetadata) else -1
    return info if layer.accepts_input(info.size, info.dim, ndim) else None


def module_layer(
    name: str, module: nn.Module, registry: LayerRegistry | None = None
) -> Layer | None:
    """The layer view of a module outside any graph (scoring, ``verify``) by the handler
    ``registry`` has for it (default :data:`DEFAULT_LAYERS`), or None."""
    handler = (registry if registry is not None else DEFAULT_LAYERS).for_module(module)
    return handler.describe(name, module, None) if handler else None


def take(t: torch.Tensor, dim: int, index: torch.Tensor | None) -> torch.Tensor:
    """A new tensor with the entries ``index`` of ``t`` along ``dim`` (all when None):
    never a view of ``t``, which the caller's model may own."""
    if index is None:
        return t.detach().clone()
    return t.detach().index_select(dim, index)


def new_param(value: torch.Tensor, like: torch.Tensor) -> nn.Parameter:
    """A parameter around the new tensor ``value``, as trainable as ``like``."""
    return nn.Parameter(value.contiguous(), requires_grad=like.requires_grad)
