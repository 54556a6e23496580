"""The graph ONNX export sees: a traced graph without its run-time checks.

torch.fx's assertions on fixed ``concrete_args`` and reconvene_fx's branch guards
(:mod:`reconvene_fx.guards`) are checked on the example inputs in PyTorch before export;
the TorchScript exporter cannot translate them, so the exported graph leaves them out.
"""

from __future__ import annotations

import copy

import torch
import torch.fx

__all__ = ["without_guards"]

# Run-time checks a traced graph may hold (torch.fx's for concrete_args, reconvene_fx's
# branch guards), as (module, name) of their function: checked on example_inputs in
# PyTorch, left out of the exported graph (the TorchScript exporter cannot translate them).
_GUARDS = {("torch", "_assert"), ("torch.fx._symbolic_trace", "_assert_is_none"),
           ("reconvene_fx.guards", "check_decision")}  # fmt: skip


def without_guards(gm: torch.nn.Module, n_inputs: int) -> torch.nn.Module:
    """A GraphModule like ``gm`` without its run-time checks (:data:`_GUARDS`), the pure
    nodes only they used, and then-unused placeholders with a default that the first
    ``n_inputs`` positional inputs do not fill. It shares ``gm``'s submodules and
    tensors; ``gm`` itself is returned when it holds no check.

    Example:
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x, flag=False):
        ...         return x if flag else x * 2
        >>> gm = torch.fx.symbolic_trace(Net(), concrete_args={"flag": False})
        >>> [n.op for n in gm.graph.nodes].count("placeholder")  # x and flag
        2
        >>> torch._assert in [n.target for n in gm.graph.nodes]  # of flag == False
        True
        >>> [n.op for n in without_guards(gm, 1).graph.nodes]  # x * 2
        ['placeholder', 'call_function', 'output']
        >>> torch._assert in [n.target for n in gm.graph.nodes]  # gm itself is unchanged
        True
    """
    if not isinstance(gm, torch.fx.GraphModule) or not any(map(_is_guard, gm.graph.nodes)):
        return gm
    graph = copy.deepcopy(gm.graph)
    for node in [n for n in graph.nodes if _is_guard(n)]:
        _erase_with_pure_inputs(graph, node)
    if getattr(graph._codegen, "pytree_info", None) is None:  # a plain forward(self, x, ...)
        for node in [n for n in graph.nodes if n.op == "placeholder"][n_inputs:]:
            if not node.users and node.args:  # unused, and its default fills it
                graph.erase_node(node)
    return torch.fx.GraphModule(gm, graph, class_name=type(gm).__name__)


def _is_guard(node: torch.fx.Node) -> bool:
    target = node.target
    key = (getattr(target, "__module__", None), getattr(target, "__name__", None))
    return node.op == "call_function" and key in _GUARDS


def _erase_with_pure_inputs(graph: torch.fx.Graph, node: torch.fx.Node) -> None:
    """Erase ``node``, then each node it read that is left unused and has no side effect
    (the comparison feeding an assertion, the ``size`` call feeding that), recursively."""
    erased: set[torch.fx.Node] = set()
    todo = [node]
    while todo:
        current = todo.pop()
        if current in erased or current.users:
            continue
        if current is not node and (
            current.op not in ("call_function", "call_method", "get_attr") or current.is_impure()
        ):
            continue
        todo.extend(current.all_input_nodes)
        graph.erase_node(current)
        erased.add(current)
