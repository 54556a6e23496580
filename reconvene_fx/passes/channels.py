"""ChannelGroupPass: which channel dimensions of which tensors must be pruned together."""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.fx
from torch.fx.node import _get_qualified_name
from torch.fx.passes.infra.pass_base import PassResult

from ..coupling import Atoms, ChannelGraph
from ..errors import CompilerError, PassOrderError
from ..meta import CHANNELS, TENSOR_META, ChannelInfo
from ..rules import DEFAULT_RULES, Layout, RuleContext, RuleRegistry, Scrambled
from ._base import ReconvenePass

__all__ = ["ChannelGroupPass", "UnknownOpWarning"]


class UnknownOpWarning(UserWarning):
    """An op without a channel rule was met; its channels are never pruned through."""


class ChannelGroupPass(ReconvenePass):
    """Runs the channel-flow rule of every node and resolves the coupled channels.

    Requires ShapePass. Writes ``node.meta[CHANNELS]`` (a :class:`ChannelInfo`, or a tuple
    of them for tuple-valued nodes) on every node whose output has a clean channel
    dimension. Ops without a rule become boundaries (pinned) with one
    :class:`UnknownOpWarning` each; channels that reach the graph output are pinned; a
    module called twice couples the channels of both calls.

    Example:
        >>> from reconvene_fx.passes import ShapePass
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(8, 4, 3))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> _ = ShapePass((torch.randn(1, 3, 16, 16),))(gm)
        >>> _ = ChannelGroupPass()(gm)
        >>> relu = [n for n in gm.graph.nodes if n.target == "1"][0]
        >>> info = relu.meta["reconvene.channels"]
        >>> info.size, bool(info.pinned.any())
        (8, False)
    """

    def __init__(self, rules: RuleRegistry | None = None) -> None:
        super().__init__()
        self.rules = rules if rules is not None else DEFAULT_RULES

    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        # an input left at its default (not a tensor) has no tensor_meta: look at them all
        inputs = [n for n in graph_module.graph.nodes if n.op == "placeholder"]
        if inputs and not any(TENSOR_META in n.meta for n in inputs):
            raise PassOrderError(
                f"ChannelGroupPass needs ShapePass to run first (input {inputs[0].name!r} "
                "has no 'tensor_meta'); run the passes in the order of "
                "reconvene_fx.passes.compile_passes(...)"
            )

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        graph = ChannelGraph()
        layouts: dict[torch.fx.Node, Any] = {}
        module_calls: dict[str, tuple[Any, Any]] = {}
        for node in graph_module.graph.nodes:
            try:
                layouts[node] = self._describe(graph_module, node, graph, layouts, module_calls)
            except Exception as exc:
                raise CompilerError(
                    f"ChannelGroupPass failed on node {node.format_node()}: {exc}"
                ) from exc
        atoms = graph.resolve()
        for node, layout in layouts.items():
            info = _info(layout, atoms)
            if info is not None:
                node.meta[CHANNELS] = info
            else:
                node.meta.pop(CHANNELS, None)
        return PassResult(graph_module, False)

    def _describe(
        self,
        gm: torch.fx.GraphModule,
        node: torch.fx.Node,
        graph: ChannelGraph,
        layouts: dict[torch.fx.Node, Any],
        module_calls: dict[str, tuple[Any, Any]],
    ) -> Any:
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        ctx = RuleContext(node, module, graph, layouts)
        if node.op == "output":
            ctx.pin(*[layouts.get(n) for n in node.all_input_nodes])
            return None
        if node.op == "placeholder":
            return ctx.pinned_output()
        if node.op == "get_attr" or TENSOR_META not in node.meta:
            return None  # constants, and plain values such as sizes
        rule = self.rules.lookup(node, gm)
        if rule is None:
            if any(isinstance(layouts.get(n), (Layout, Scrambled, tuple, dict))
                   for n in node.all_input_nodes):  # fmt: skip
                warnings.warn(
                    f"no channel rule for node {node.name!r} ({_describe_target(node, module)});"
                    " its channels are never pruned through. Register a rule in "
                    "reconvene_fx.rules to prune through it.",
                    UnknownOpWarning,
                    stacklevel=2,
                )
            return ctx.boundary()
        layout = rule(ctx)
        if module is not None and any(True for _ in module.parameters(recurse=False)):
            layout = _couple_shared_calls(ctx, str(node.target), layout, module_calls)
        return layout


def _couple_shared_calls(
    ctx: RuleContext, target: str, out: Any, calls: dict[str, tuple[Any, Any]]
) -> Any:
    """A module called more than once has one set of channels: couple all its calls."""
    inp = ctx.layout(ctx.node.args[0]) if ctx.node.args else None
    if target not in calls:
        calls[target] = (inp, out)
        return out
    first_in, first_out = calls[target]
    for a, b in ((first_in, inp), (first_out, out)):
        if isinstance(a, Layout) and isinstance(b, Layout) and a.size == b.size:
            ctx.tie(a, b)
        else:
            ctx.pin(a, b)
    return out


def _describe_target(node: torch.fx.Node, module: torch.nn.Module | None) -> str:
    if module is not None:
        return f"module {node.target} of type {type(module).__name__}"
    if node.op == "call_method":
        return f"method .{node.target}()"
    try:
        return f"function {_get_qualified_name(node.target)}"  # type: ignore[arg-type]
    except Exception:
        return f"function {node.target}"


def _info(layout: Any, atoms: Atoms) -> Any:
    if isinstance(layout, Layout):
        ids = atoms.space_ids(layout.space)
        atom = atoms.atom_of[ids]
        return ChannelInfo(
            space=layout.space,
            dim=layout.dim,
            size=layout.size,
            atoms=atom,
            pinned=atoms.pinned[atom],
            group=int(atoms.group_of_space[layout.space]),
        )
    if isinstance(layout, tuple):
        infos = tuple(_info(lay, atoms) for lay in layout)
        return infos if any(i is not None for i in infos) else None
    return None
