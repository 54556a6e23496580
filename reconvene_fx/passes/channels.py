"""ChannelGroupPass: which channel dimensions of which tensors must be pruned together."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from typing import Any

import torch
import torch.fx
from torch.fx.node import _get_qualified_name
from torch.fx.passes.infra.pass_base import PassResult

from .._modules import submodule
from ..coupling import Atoms, ChannelGraph
from ..errors import CompilerError
from ..meta import (
    APPROXIMATE,
    AUTO_LEAVES,
    CHANNELS,
    SIZE_PEERS,
    SOURCE,
    TENSOR_META,
    ChannelInfo,
    PinCause,
)
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
    module called twice couples the channels of both calls. Every pin keeps its cause (a
    :class:`~reconvene_fx.meta.PinCause`: the node, why, and the model's source line when
    the trace recorded stack traces); ``ChannelInfo.pinned_by(c)`` gives it.

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
        >>> out = [n for n in gm.graph.nodes if n.op == "output"][0]
        >>> print(out.args[0].meta["reconvene.channels"].pinned_by(0))
        node 'output' (the model's output): they reach the model's output
    """

    def __init__(self, rules: RuleRegistry | None = None) -> None:
        super().__init__()
        self.rules = rules if rules is not None else DEFAULT_RULES

    reads = (TENSOR_META,)
    uses = (AUTO_LEAVES,)
    writes = (CHANNELS, APPROXIMATE, SIZE_PEERS)

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
        pin_cause, causes = _causes(atoms, graph_module, layouts, graph)
        spaces: dict[int, tuple[torch.Tensor, ...]] = {}
        for node, layout in layouts.items():
            info = _info(layout, atoms, pin_cause, causes, spaces)
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
        module = submodule(gm, str(node.target)) if node.op == "call_module" else None
        ctx = RuleContext(node, module, graph, layouts)
        if node.op == "output":
            ctx.pin(*[layouts.get(n) for n in node.all_input_nodes], reason=OUTPUT_REASON)
            return None
        if node.op == "placeholder":
            return ctx.pinned_output("they are channels of a model input")
        if node.op == "get_attr" or TENSOR_META not in node.meta:
            return None  # constants, and plain values such as sizes
        rule = self.rules.lookup(node, gm)
        if rule is None:
            ctx.pin_reason = _no_rule_reason(gm, node, module)
            if any(isinstance(layouts.get(n), (Layout, Scrambled, tuple, dict))
                   for n in node.all_input_nodes):  # fmt: skip
                source = _source_line(node)
                where = f" at {source}" if source else ""
                warnings.warn(
                    f"no channel rule for node {node.name!r} ({_describe_target(node, module)})"
                    f"{where}; its channels are never pruned through. Register a rule in "
                    "reconvene_fx.rules to prune through it.",
                    UnknownOpWarning,
                    stacklevel=2,
                )
            return ctx.boundary()
        ctx.pin_reason = _rule_reason(rule)
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
            ctx.pin(a, b, reason=f"module {target} is called more than once, and its "
                                 "calls' channels do not line up")  # fmt: skip
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


def _info(
    layout: Any,
    atoms: Atoms,
    pin_cause: torch.Tensor,
    causes: tuple[PinCause, ...],
    spaces: dict[int, tuple[torch.Tensor, ...]],
) -> Any:
    """The ChannelInfo of a node's layout; ``spaces`` keeps what each channel space's
    nodes share (its atoms, their pins and causes, its group), read once per space."""
    if isinstance(layout, Layout):
        shared = spaces.get(layout.space)
        if shared is None:
            atom = atoms.atom_of[atoms.space_ids(layout.space)]
            group = atoms.group_of_space[layout.space]
            shared = spaces[layout.space] = (atom, atoms.pinned[atom], pin_cause[atom], group)
        atom, pinned, cause, group = shared
        return ChannelInfo(
            space=layout.space,
            dim=layout.dim,
            size=layout.size,
            atoms=atom,
            pinned=pinned,
            group=int(group),
            pin_cause=cause,
            causes=causes,
        )
    if isinstance(layout, tuple):
        infos = tuple(_info(lay, atoms, pin_cause, causes, spaces) for lay in layout)
        return infos if any(i is not None for i in infos) else None
    return None


# -- why channels are pinned ----------------------------------------------------------------

OUTPUT_REASON = "they reach the model's output"

# What a built-in rule cannot follow when it pins channels without giving a reason of its
# own (keyed by the rule's module under reconvene_fx.rules, and its name).
_RULE_REASONS = {
    "layers.conv": "the conv cannot narrow its input as it arrives (channels not on dim 1, "
    "or not in_channels of them)",
    "layers.linear": "the linear cannot narrow its input as it arrives (features not on the "
    "last dim, or not in_features of them)",
    "layers.conv_transpose": "a grouped transposed conv, or an input whose channels are not "
    "on dim 1",
    "timm.standardized_conv": "the conv cannot narrow its input as it arrives",
    "elementwise.elementwise": "its operands' channels do not line up (a constant, or an "
    "operand, varies along them without following them)",
    "movement.data_movement": "it moves the channels where pruning cannot follow: mixes them "
    "with another dim, picks some by position, or uses a size that is fixed in the graph or "
    "read off another tensor's shape",
    "movement.channel_shuffle": "its shuffle groups do not divide the channels",
    "concat.cat": "it joins tensors whose channels do not line up",
    "concat.stack": "it stacks tensors whose channels do not line up",
    "concat.unbind": "it unbinds the channel dim",
    "concat.split": "it cuts the channels at sizes that are neither literals nor computed "
    "from its own channel count",
    "concat.getitem": "it picks an element whose index is not a literal",
    "norms.batch_norm": "its statistics do not match the channels",
    "norms.group_norm": "its groups do not divide the channels",
    "norms.layer_norm": "it normalises the channels together with other dims",
    "pooling.per_channel_spatial": "it pools across the channels",
    "pooling.reduction": "it reduces over the channel dim",
    "pooling.softmax": "it normalises over the channels",
    "constants.constant": "it builds a tensor from tensors that carry channels",
}


def _rule_reason(rule: Any) -> str:
    module = getattr(rule, "__module__", "") or ""
    name = getattr(rule, "__name__", type(rule).__name__)
    key = f"{module.removeprefix('reconvene_fx.rules.')}.{name}"
    return _RULE_REASONS.get(key, f"its channel rule {name!r} cannot follow them")


def _no_rule_reason(gm: torch.fx.GraphModule, node: torch.fx.Node, module: Any) -> str:
    if module is None:
        return f"no channel rule for {_describe_target(node, None)}"
    leaf = f"no channel rule for leaf module {node.target} ({type(module).__name__})"
    auto = gm.meta.get(AUTO_LEAVES, {}).get(str(node.target))
    return f"{leaf}, made a leaf because it could not be traced: {auto}" if auto else leaf


def _causes(
    atoms: Atoms, gm: torch.fx.GraphModule, layouts: dict[torch.fx.Node, Any], graph: ChannelGraph
) -> tuple[torch.Tensor, tuple[PinCause, ...]]:
    """The coupling graph's ``(reason, node)`` pins as PinCause values (no fx nodes in
    meta: it is copied with the graph), and the cause of each atom. A node whose output
    channels it pinned itself, while an input of it was pinned first elsewhere, gets a
    cause of its own for its output naming that other cause (``PinCause.after``)."""
    made: list[PinCause] = []
    by_node: dict[torch.fx.Node, list[int]] = {}
    for reason, node in atoms.causes:
        if not isinstance(node, torch.fx.Node):
            made.append(PinCause("" if node is None else str(node), "", reason))
            continue
        by_node.setdefault(node, []).append(len(made))
        made.append(PinCause(node.name, _describe_node(node, gm), reason, _source_line(node)))
    pin_cause = atoms.pin_cause
    if pin_cause is None:
        return torch.full_like(atoms.pinned, -1, dtype=torch.long), tuple(made)
    pin_cause = pin_cause.clone()

    def cause_of(layout: Any) -> torch.Tensor:
        if not isinstance(layout, Layout):
            return torch.zeros(0, dtype=torch.long)
        return pin_cause[atoms.atom_of[graph.ids(layout.space)]]

    for node, own in by_node.items():
        out = layouts.get(node)
        if not isinstance(out, Layout):
            continue
        out_atoms = atoms.atom_of[graph.ids(out.space)]
        mine = torch.isin(pin_cause[out_atoms], torch.tensor(own))
        if not bool(mine.any()):
            continue
        seen = [cause_of(layouts.get(n)).unique() for n in node.all_input_nodes]
        upstream = [c for c in torch.cat([torch.zeros(0, dtype=torch.long), *seen]).tolist()
                    if c >= 0 and c not in own]  # fmt: skip
        if not upstream:
            continue
        first = made[min(upstream)]
        cause = made[int(pin_cause[out_atoms][mine][0])]
        pin_cause[out_atoms[mine]] = len(made)
        made.append(dataclasses.replace(cause, after=first.after or first))
    return pin_cause, tuple(made)


def _describe_node(node: torch.fx.Node, gm: torch.nn.Module | None) -> str:
    """What ``node`` is, in words: ``function torch.cumsum``, ``the model's output``."""
    if node.op == "output":
        return "the model's output"
    if node.op == "placeholder":
        return f"model input {node.target!s}"
    if node.op == "get_attr":
        return f"tensor {node.target!s}"
    module = None
    if node.op == "call_module" and gm is not None:
        module = gm.get_submodule(str(node.target))
    return _describe_target(node, module)


_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in \S+\n(?P<code>[^\n]*)',
                    re.MULTILINE)  # fmt: skip
_LIBRARY_DIRS = (  # with the separator: torchvision is not torch
    os.path.dirname(torch.__file__) + os.sep,
    os.path.dirname(os.path.dirname(__file__)) + os.sep,
)


def _source_line(node: torch.fx.Node) -> str | None:
    r"""``file.py:12 (code)`` of the model's code that made ``node``: the innermost frame of
    its recorded stack trace outside torch and this library; None without a trace.

    Example:
        >>> g = torch.fx.Graph()
        >>> x = g.placeholder("x")
        >>> x.stack_trace = 'File "/src/net.py", line 12, in forward\n    y = x.cumsum(1)'
        >>> _source_line(x)
        'net.py:12 (y = x.cumsum(1))'
    """
    source = node.meta.get(SOURCE)
    if source is not None:  # recorded by reconvene_fx.trace
        return None if source.startswith("<") else source
    trace = node.stack_trace
    if not trace:
        return None
    frames = list(_FRAME.finditer(trace))
    user = [f for f in frames if not f["path"].startswith(_LIBRARY_DIRS)] or frames
    if not user:
        return None
    frame = user[-1]
    code = frame["code"].strip()
    where = f"{os.path.basename(frame['path'])}:{frame['line']}"
    return f"{where} ({code})" if code else where
