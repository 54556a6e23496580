"""Values of a graph being traced, for the example inputs, computed when tracing asks.

torch.fx's proxies carry no values, so ``if x.shape[-1] < 7:``, ``len(parts)`` or
``for p in x.unbind(1):`` stop tracing. :class:`ShadowValues` runs the nodes recorded so
far on the meta device (shapes without arithmetic; the model's tensors are swapped for
meta ones during a module call) and gives the value of the node tracing needs. Nothing is
computed for a model that never asks, and each node runs at most once.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx
from torch.nn.utils.stateless import _reparametrize_module

from ._copy import attributes_restored

__all__ = ["UNKNOWN", "ShadowValues"]

UNKNOWN: Any = object()  # a value that could not be computed (data-dependent, unsupported)


def _meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


class ShadowValues:
    """The meta-device values of the nodes of ``graph`` (of ``root``) for ``inputs``.

    Example:
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x.shape[-1] > 4
        >>> tracer = torch.fx.Tracer()
        >>> graph = tracer.trace(Net())
        >>> shadow = ShadowValues(tracer.root, graph, {"x": torch.randn(1, 3, 8, 8)})
        >>> shadow.value(list(graph.nodes)[-2])
        True
    """

    def __init__(
        self,
        root: torch.nn.Module,
        graph: torch.fx.Graph,
        inputs: Mapping[str, Any],
        quiet: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.root = root
        self.graph = graph
        self.quiet = quiet  # while tracing: module calls must run, not be recorded
        self.inputs = {name: _meta(v) for name, v in inputs.items()}
        self._values: dict[torch.fx.Node, Any] = {}

    def value(self, target: torch.fx.Node) -> Any:
        """The value of ``target`` (a Python value or a meta tensor), or :data:`UNKNOWN`."""
        if target in self._values:
            return self._values[target]
        with self.quiet():
            for node in self.graph.nodes:
                if node not in self._values:
                    self._values[node] = self._run(node)
                if node is target:
                    break
        return self._values.get(target, UNKNOWN)

    def _run(self, node: torch.fx.Node) -> Any:
        unknown = False

        def look(n: torch.fx.Node) -> Any:
            nonlocal unknown
            found = self._values.get(n, UNKNOWN)
            unknown |= found is UNKNOWN
            return found

        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), look)
        if unknown:
            return UNKNOWN
        try:
            if node.op == "placeholder":
                name = str(node.target).lstrip("*")
                if name in self.inputs:
                    return self.inputs[name]
                return args[0] if args else UNKNOWN  # a default value
            if node.op == "get_attr":
                return _meta(operator.attrgetter(str(node.target))(self.root))
            if node.op == "call_function":
                return node.target(*args, **kwargs)  # type: ignore[operator]
            if node.op == "call_method":
                return getattr(args[0], str(node.target))(*args[1:], **kwargs)
            if node.op == "call_module":
                return self._call_module(str(node.target), args, kwargs)
        except Exception:
            return UNKNOWN
        return UNKNOWN

    def _call_module(self, target: str, args: Any, kwargs: Any) -> Any:
        module = self.root.get_submodule(target)
        state = {
            name: torch.empty_like(t, device="meta")
            for name, t in (*module.named_parameters(), *module.named_buffers())
        }
        with torch.no_grad(), attributes_restored(module), _reparametrize_module(module, state):
            return module(*args, **kwargs)
