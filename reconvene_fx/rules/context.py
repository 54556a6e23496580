"""What a rule sees of the node it describes, and the operations it may perform."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from ..coupling import ChannelGraph
from ..meta import APPROXIMATE, TENSOR_META, VALUE
from .layout import Layout, Scrambled

__all__ = ["NoValue", "RuleContext"]

# ops that move a per-channel parameter into place without changing its values
_PER_CHANNEL_VIEWS = frozenset({
    "reshape", "view", "unsqueeze", "squeeze", "flatten", "to", "type", "float", "half",
    "bfloat16", "contiguous", "expand_as", "view_as", "reshape_as",
})  # fmt: skip


class NoValue(Exception):
    """An argument's concrete value was not recorded by ShapePass."""


class RuleContext:
    """Passed to every rule. Rules read layouts and shapes, and tie or pin channel ids.

    Attributes:
        node: the node being described.
        module: the called module for ``call_module`` nodes, else ``None``.
        graph: the :class:`~reconvene_fx.coupling.ChannelGraph` being built.
        pin_reason: why the node pins channels, where a rule's ``pin`` gives no reason
            (a BudgetError names the node and this reason).
    """

    def __init__(
        self,
        node: torch.fx.Node,
        module: torch.nn.Module | None,
        graph: ChannelGraph,
        layouts: dict[torch.fx.Node, Any],
        *,
        pin_reason: str = "its channel rule cannot follow them",
    ) -> None:
        self.node = node
        self.module = module
        self.graph = graph
        self._layouts = layouts
        self.pin_reason = pin_reason

    # -- reading -------------------------------------------------------------------------
    def layout(self, arg: Any) -> Any:
        """The layout of an argument: Layout, Scrambled, a tuple of them, or None."""
        if isinstance(arg, torch.fx.Node):
            return self._layouts.get(arg)
        return None

    @staticmethod
    def is_tensor(arg: Any) -> bool:
        return isinstance(arg, torch.fx.Node) and isinstance(
            arg.meta.get(TENSOR_META), torch.fx.passes.shape_prop.TensorMetadata
        )

    @staticmethod
    def shape(arg: Any) -> torch.Size | None:
        """The shape of a tensor-valued node argument, else None."""
        if isinstance(arg, torch.fx.Node):
            tm = arg.meta.get(TENSOR_META)
            if isinstance(tm, torch.fx.passes.shape_prop.TensorMetadata):
                return tm.shape
        return None

    @property
    def out_shape(self) -> torch.Size | None:
        return self.shape(self.node)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        """The node's argument by position or keyword."""
        if len(self.node.args) > index:
            return self.node.args[index]
        return self.node.kwargs.get(name, default)

    def value(self, arg: Any) -> Any:
        """Replace nodes inside ``arg`` by their concrete values from ShapePass.

        Raises:
            NoValue: a node in ``arg`` has no recorded value.
        """

        def concrete(n: torch.fx.Node) -> Any:
            if VALUE in n.meta:
                return n.meta[VALUE].value
            raise NoValue(n.name)

        return torch.fx.node.map_aggregate(
            arg, lambda a: concrete(a) if isinstance(a, torch.fx.Node) else a
        )

    def tensor_args(self) -> list[torch.fx.Node]:
        """All tensor-valued nodes among the args and kwargs, in order."""
        found: list[torch.fx.Node] = []
        torch.fx.node.map_arg(
            (self.node.args, self.node.kwargs),
            lambda n: found.append(n) if self.is_tensor(n) else None,
        )
        return found

    def parameter(self, arg: Any, dim: int, size: int) -> Layout | None:
        """A layout for a constant operand that is one value per channel read from a
        parameter or buffer (``x * self.gamma.reshape(1, -1, 1, 1)``), so that its entries
        follow the channels instead of pinning them; None for any other constant.

        ``dim`` is the operand's dim that lines up with ``size`` channels. The operand may
        come from a ``get_attr`` through reshapes (one non-1 dim throughout); every node on
        the way is read by the next one only. The layouts are given to those nodes (the
        ``get_attr`` included), so ShrinkPass slices the tensor and literal view sizes are
        rewritten.
        """
        chain: list[torch.fx.Node] = []
        node = arg
        while isinstance(node, torch.fx.Node) and node.op != "get_attr":
            name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
            if name not in _PER_CHANNEL_VIEWS or len(node.users) != 1 or not node.args:
                return None
            chain.append(node)
            node = node.args[0]
        if not isinstance(node, torch.fx.Node) or len(node.users) != 1:
            return None
        chain.append(node)
        graph = node.graph
        target = str(node.target)
        if sum(1 for n in graph.nodes if n.op == "get_attr" and str(n.target) == target) != 1:
            return None  # the tensor is read elsewhere too
        dims = []
        for n in chain:
            shape = self.shape(n)
            along = [d for d, s in enumerate(shape or ()) if s != 1]
            if shape is None or along != [d for d, s in enumerate(shape) if s == size] or \
                    len(along) != 1:  # fmt: skip
                return None
            dims.append(along[0])
        arg_shape = self.shape(arg)
        if arg_shape is None or dims[0] != dim % len(arg_shape):
            return None
        space = self.graph.new_space(size)
        for n, d in zip(chain, dims, strict=True):
            self._layouts[n] = Layout(space, d, size)
        return self._layouts[arg]

    # -- channel ids ---------------------------------------------------------------------
    def ids(self, layout: Layout) -> torch.Tensor:
        """Global ids of the channels of ``layout``, in channel order."""
        return self.graph.ids(layout.space)

    def id_tensor(self, layout: Layout | Scrambled, shape: torch.Size) -> torch.Tensor:
        """A tensor of ``shape`` holding each element's global channel id."""
        if isinstance(layout, Scrambled):
            return layout.ids.contiguous()
        view = [1] * len(shape)
        view[layout.dim] = layout.size
        return self.ids(layout).view(view).expand(shape).contiguous()

    # -- writing -------------------------------------------------------------------------
    def new(
        self, size: int, dim: int, *, pinned: bool = False, reason: str | None = None
    ) -> Layout:
        """A fresh channel space for the node's output (pinned for ``reason``, if asked)."""
        layout = Layout(self.graph.new_space(size), dim, size)
        if pinned:
            self.pin(layout, reason=reason)
        return layout

    def tie(self, a: Layout, b: Layout) -> None:
        """Channel ``i`` of ``a`` and channel ``i`` of ``b`` are pruned together."""
        if a.space != b.space:
            self.graph.tie(self.ids(a), self.ids(b))

    def tie_ids(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.graph.tie(a, b)

    def pin(self, *layouts: Any, reason: str | None = None) -> None:
        """Forbid pruning every channel reachable in ``layouts`` (nested tuples allowed).

        ``reason`` (default :attr:`pin_reason`) is recorded with this node as the cause. A
        Scrambled layout is charged to the node that spread its channels over several
        dims (a reshape), which is where the model would have to change.
        """
        for layout in layouts:
            if isinstance(layout, Layout):
                self.graph.pin(self.ids(layout), reason or self.pin_reason, self.node)
            elif isinstance(layout, Scrambled):
                made = next((n for n, lay in self._layouts.items() if lay is layout), self.node)
                why = f"it mixes the channels with another dim ({self.node.name!r} reads them)"
                self.graph.pin(layout.small, reason or why, made)
            elif isinstance(layout, (tuple, list)):
                self.pin(*layout, reason=reason)
            elif isinstance(layout, dict):
                self.pin(*layout.values(), reason=reason)

    def boundary(self, reason: str | None = None) -> Any:
        """Treat the node as an opaque op: pin its inputs and give it pinned outputs."""
        self.pin(*[self.layout(n) for n in self.node.all_input_nodes], reason=reason)
        return self.pinned_output(reason)

    def pinned_output(self, reason: str | None = None) -> Any:
        tm = self.node.meta.get(TENSOR_META)

        def make(meta: Any) -> Any:
            if isinstance(meta, torch.fx.passes.shape_prop.TensorMetadata):
                shape = meta.shape
                if len(shape) == 0:
                    return None
                dim = 1 if len(shape) >= 2 else 0
                return self.new(shape[dim], dim, pinned=True, reason=reason)
            if isinstance(meta, (tuple, list)):
                return tuple(make(m) for m in meta)
            if isinstance(meta, dict):
                return {k: make(m) for k, m in meta.items()}
            return None

        return make(tm)

    def approximate(self, reason: str) -> None:
        """Mark the node: pruning through it changes values, not only removes them."""
        self.node.meta[APPROXIMATE] = reason
