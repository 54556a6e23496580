"""What a rule sees of the node it describes, and the operations it may perform."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx

from ..coupling import ChannelGraph
from ..meta import APPROXIMATE, TENSOR_META, VALUE
from .layout import Layout, Scrambled

__all__ = ["NoValue", "RuleContext"]


class NoValue(Exception):
    """An argument's concrete value was not recorded by ShapePass."""


class RuleContext:
    """Passed to every rule. Rules read layouts and shapes, and tie or pin channel ids.

    Attributes:
        node: the node being described.
        module: the called module for ``call_module`` nodes, else ``None``.
        graph: the :class:`~reconvene_fx.coupling.ChannelGraph` being built.
    """

    def __init__(
        self,
        node: torch.fx.Node,
        module: torch.nn.Module | None,
        graph: ChannelGraph,
        layouts: dict[torch.fx.Node, Any],
    ) -> None:
        self.node = node
        self.module = module
        self.graph = graph
        self._layouts = layouts

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
    def new(self, size: int, dim: int, *, pinned: bool = False) -> Layout:
        """A fresh channel space for the node's output."""
        layout = Layout(self.graph.new_space(size), dim, size)
        if pinned:
            self.pin(layout)
        return layout

    def tie(self, a: Layout, b: Layout) -> None:
        """Channel ``i`` of ``a`` and channel ``i`` of ``b`` are pruned together."""
        if a.space != b.space:
            self.graph.tie(self.ids(a), self.ids(b))

    def tie_ids(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.graph.tie(a, b)

    def pin(self, *layouts: Any) -> None:
        """Forbid pruning every channel reachable in ``layouts`` (nested tuples allowed)."""
        for layout in layouts:
            if isinstance(layout, Layout):
                self.graph.pin(self.ids(layout))
            elif isinstance(layout, Scrambled):
                self.graph.pin(layout.small)
            elif isinstance(layout, (tuple, list)):
                self.pin(*layout)
            elif isinstance(layout, dict):
                self.pin(*layout.values())

    def boundary(self) -> Any:
        """Treat the node as an opaque op: pin its inputs and give it pinned outputs."""
        self.pin(*[self.layout(n) for n in self.node.all_input_nodes])
        return self.pinned_output()

    def pinned_output(self) -> Any:
        tm = self.node.meta.get(TENSOR_META)

        def make(meta: Any) -> Any:
            if isinstance(meta, torch.fx.passes.shape_prop.TensorMetadata):
                shape = meta.shape
                if len(shape) == 0:
                    return None
                dim = 1 if len(shape) >= 2 else 0
                return self.new(shape[dim], dim, pinned=True)
            if isinstance(meta, (tuple, list)):
                return tuple(make(m) for m in meta)
            if isinstance(meta, dict):
                return {k: make(m) for k, m in meta.items()}
            return None

        return make(tm)

    def approximate(self, reason: str) -> None:
        """Mark the node: pruning through it changes values, not only removes them."""
        self.node.meta[APPROXIMATE] = reason
