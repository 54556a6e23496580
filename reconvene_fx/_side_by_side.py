"""The graphs of several submodules side by side in one ``GraphModule``, and back.

:func:`combine` puts the traced graphs of the parts of a model (see
:mod:`reconvene_fx._submodules`) into one ``GraphModule`` whose modules sit at the parts'
qualified names: each part's inputs are placeholders of their own and its outputs one
element of the output, so the passes of :func:`~reconvene_fx.compile` plan all of them at
once and never prune through their inputs or outputs. :func:`split` makes each part's
nodes (its connected component) a ``GraphModule`` again, with the part's forward
signature.
"""

from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torch.fx.node import map_arg

from .errors import CompilerError
from .meta import AUTO_LEAVES, BORROWED, LIFTED, OWNED, TRACE_DECISIONS, BorrowedTensors

__all__ = ["Part", "combine", "split"]


@dataclass
class Part:
    """A submodule that traces: ``name`` in the model, the ``original`` module, its traced
    ``gm``, one example value per placeholder of ``gm`` (``inputs``) and how many times
    the model's forward called it (``calls``)."""

    name: str
    original: nn.Module
    gm: torch.fx.GraphModule
    inputs: list[Any]
    calls: int


def combine(name: str, parts: list[Part]) -> tuple[torch.fx.GraphModule, tuple[Any, ...]]:
    """The parts' graphs side by side in one GraphModule whose modules sit at the parts'
    qualified names, and the example inputs of its placeholders.

    Example:
        >>> import reconvene_fx as rfx
        >>> conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU())
        >>> fc = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> x, y = torch.randn(1, 3, 4, 4), torch.randn(1, 2)
        >>> parts = [Part("stem", conv, rfx.trace(conv), [x], 1),
        ...          Part("head.fc", fc, rfx.trace(fc), [y], 1)]
        >>> gm, inputs = combine("Net", parts)
        >>> [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
        ['stem.0', 'stem.1', 'head.fc.0']
        >>> subs, _ = split(gm, parts)
        >>> torch.equal(subs["head.fc"](y), fc(y)), type(subs["stem"]).__name__
        (True, 'Sequential')
    """
    root = nn.Module()
    graph = torch.fx.Graph()
    outputs: list[Any] = []
    inputs: list[Any] = []
    borrowed: dict[int, torch.Tensor] = {}
    leaves: dict[str, str] = {}
    decisions: list[str] = []
    for part in parts:
        _install(root, part.name, part.gm)
        env: dict[torch.fx.Node, torch.fx.Node] = {}
        for node in part.gm.graph.nodes:
            if node.op == "output":
                outputs.append(map_arg(node.args[0], env.__getitem__))
                continue
            if node.op == "placeholder":
                new = graph.placeholder(_identifier(f"{part.name}_{node.target}"), node.type)
                new.meta = dict(node.meta)
            else:
                new = graph.node_copy(node, env.__getitem__)
                if node.op in ("call_module", "get_attr"):
                    new.target = f"{part.name}.{node.target}"
            env[node] = new
        inputs.extend(part.inputs)
        meta = part.gm.meta
        if isinstance(meta.get(BORROWED), BorrowedTensors):
            borrowed.update((id(t), t) for t in meta[BORROWED].tensors)
        leaves.update((f"{part.name}.{k}", v) for k, v in meta.get(AUTO_LEAVES, {}).items())
        decisions += [f"{part.name}.{d}" for d in meta.get(TRACE_DECISIONS, ())]
    graph.output(tuple(outputs))
    gm = torch.fx.GraphModule(root, graph, name)
    gm.meta[BORROWED] = BorrowedTensors(tuple(borrowed.values()))
    gm.meta[OWNED] = True
    if leaves:
        gm.meta[AUTO_LEAVES] = leaves
    if decisions:
        gm.meta[TRACE_DECISIONS] = decisions
    return gm, tuple(inputs)


def split(
    combined: torch.fx.GraphModule, parts: list[Part]
) -> tuple[dict[str, torch.fx.GraphModule], dict[str, set[str]]]:
    """Each part's connected component of ``combined`` as its own GraphModule (its
    placeholders as the part's forward takes them), and the node names of each part."""
    nodes = list(combined.graph.nodes)
    output = nodes[-1]
    label = _components(nodes, parts)
    subs: dict[str, torch.fx.GraphModule] = {}
    names: dict[str, set[str]] = {}
    for i, part in enumerate(parts):
        graph = torch.fx.Graph()
        env: dict[torch.fx.Node, torch.fx.Node] = {}
        originals = iter(part.gm.graph.find_nodes(op="placeholder"))
        for node in nodes:
            if label.get(node) != i or node is output:
                continue
            if node.op == "placeholder":
                orig = next(originals)
                default = orig.args[0] if orig.args else inspect.Signature.empty
                new = graph.placeholder(str(orig.target), orig.type, default_value=default)
                new.meta = dict(node.meta)
            else:
                new = graph.node_copy(node, env.__getitem__)
                if node.op in ("call_module", "get_attr"):
                    new.target = _relative(part.name, node)
            env[node] = new
        graph.output(map_arg(output.args[0][i], env.__getitem__))
        try:
            holder = combined.get_submodule(part.name)
        except AttributeError:
            holder = nn.Module()
        sub = torch.fx.GraphModule(holder, graph, type(part.original).__name__)
        lifted = combined.meta.get(LIFTED, {})
        prefix = f"{part.name}."
        own = {k[len(prefix) :]: v for k, v in lifted.items() if k.startswith(prefix)}
        if own:
            sub.meta[LIFTED] = own
        subs[part.name] = sub
        names[part.name] = {n.name for n in env}
    return subs, names


def _components(nodes: list[torch.fx.Node], parts: list[Part]) -> dict[torch.fx.Node, int]:
    """Which part each node belongs to: its connected component (edges either way, the
    output node left out) holds that part's placeholders or outputs. Nodes in no
    component (a dead constant) go with the node before them."""
    output = nodes[-1]
    placeholders = [n for n in nodes if n.op == "placeholder"]
    label: dict[torch.fx.Node, int] = {}
    queue: deque[torch.fx.Node] = deque()
    start = 0
    for i, part in enumerate(parts):
        seeds = placeholders[start : start + len(part.inputs)]
        start += len(part.inputs)
        map_arg(output.args[0][i], seeds.append)
        for node in seeds:
            label[node] = i
            queue.append(node)
    seen = set(queue)
    while queue:
        node = queue.popleft()
        for other in (*node.all_input_nodes, *node.users):
            if other is output:
                continue
            theirs = label.setdefault(other, label[node])
            if theirs != label[node]:
                raise CompilerError(
                    f"submodules {parts[label[node]].name!r} and {parts[theirs].name!r} "
                    f"share node {other.format_node()} after compiling: they cannot be split"
                )
            if other not in seen:
                seen.add(other)
                queue.append(other)
    last = 0
    for node in nodes:
        last = label.setdefault(node, last)
    return label


def _relative(name: str, node: torch.fx.Node) -> str:
    prefix = f"{name}."
    target = str(node.target)
    if not target.startswith(prefix):
        raise CompilerError(
            f"node {node.format_node()} of submodule {name!r} reads {target!r}, outside it"
        )
    return target[len(prefix) :]


def _install(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the qualified ``name`` under ``root``, making plain parents."""
    *parents, last = name.split(".")
    owner = root
    for item in parents:
        if item not in owner._modules:
            owner.add_module(item, nn.Module())
        owner = owner._modules[item]  # type: ignore[assignment]
    owner.add_module(last, module)


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)
