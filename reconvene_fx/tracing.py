"""Symbolic tracing with torch.fx, with errors that say what to do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx

from ._copy import structural_copy, tensors_of
from .errors import TraceError
from .meta import BORROWED, BorrowedTensors

__all__ = ["trace"]

LeafSpec = str | type[torch.nn.Module]


class _Tracer(torch.fx.Tracer):
    """A tracer that treats extra modules as leaves and remembers where tracing is."""

    def __init__(self, leaf_modules: Iterable[LeafSpec] = ()) -> None:
        # the default lets pickle rebuild a GraphModule: it re-traces with this class
        super().__init__()
        specs = list(leaf_modules)
        self._leaf_names = {s for s in specs if isinstance(s, str)}
        self._leaf_types = tuple(s for s in specs if isinstance(s, type))
        self.failed_in: str | None = None

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_names or isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self, m: torch.nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict
    ) -> Any:
        name = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = f"{name} ({type(m).__name__})"
            raise


def trace(
    model: torch.nn.Module,
    *,
    leaf_modules: Iterable[LeafSpec] = (),
    concrete_args: dict[str, Any] | None = None,
) -> torch.fx.GraphModule:
    """Trace ``model`` into a ``torch.fx.GraphModule``.

    Tracing runs on a structural copy of ``model`` (modules, flags and attributes such as
    caches are copied; parameters and buffers are shared, not copied), so a forward that
    writes to ``self`` during tracing leaves ``model`` alone. The shared tensors are listed
    in ``gm.meta["reconvene.borrowed"]``: the passes never write into them, and
    :class:`~reconvene_fx.passes.DetachPass` copies those still in use at the end.

    Args:
        model: the module to trace; it is not modified.
        leaf_modules: module types or qualified names to keep as opaque calls (their
            channels are never pruned through unless a rule knows the type).
        concrete_args: forwarded to ``torch.fx.Tracer.trace`` to fix arguments that drive
            control flow.

    Raises:
        TraceError: naming the module (or the model's own ``forward``) that broke tracing.

    Example:
        >>> gm = trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()))
        >>> [n.op for n in gm.graph.nodes]
        ['placeholder', 'call_module', 'call_module', 'output']
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    borrowed = BorrowedTensors(tensors_of(model))
    work = structural_copy(model)
    if isinstance(work, torch.fx.GraphModule) and not concrete_args and not leaf_modules:
        work.meta[BORROWED] = borrowed
        return work
    tracer = _Tracer(leaf_modules)
    try:
        graph = tracer.trace(work, concrete_args=concrete_args)
    except Exception as exc:
        where = tracer.failed_in or f"{type(model).__name__}.forward"
        raise TraceError(
            f"torch.fx could not trace the model: in {where}: {type(exc).__name__}: {exc}\n"
            "What to do: mark that module as a leaf (leaf_modules=[...]) so it is called as "
            "a black box, or fix the arguments that drive its control flow with "
            "concrete_args={...}."
        ) from exc
    gm = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta[BORROWED] = borrowed
    return gm
