"""Replaying a model's module calls in its graph's run (the fidelity check's shortcut).

When the graph and the model are run on the same inputs (:mod:`reconvene_fx._fidelity`),
most of the graph's cost is in its large convolutions and linears, which compute exactly
what the model's run of the same modules computed whenever they get the same input.
:class:`Recording` keeps copies of each such call's input and output in the model's run;
:func:`replaying` stands :class:`_Replayed` in for those modules while the graph runs: a
call whose input equals the model's (shape, dtype, strides, every value) gets the model's
output, any other call runs the module. Only modules whose output is a function of their
one input and their own tensors are replayed (plain convs and linears, without hooks, of
the same settings and tensors in both runs), so the graph's run gives what it would give
on its own: only its own path is run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.fx

from .layers.base import submodule

__all__ = ["Recording", "replayable", "replaying"]


# a call is replayed when its module does at least this many multiply-accumulates (less
# costs no more to compute than to compare)
_REPLAY_MIN_MACS = 1 << 20
# modules whose output is a function of their one input and their own tensors alone: no
# random numbers, no state (exact types: a subclass may compute otherwise)
_REPLAYED = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
_Call = tuple[torch.Tensor, torch.Tensor]  # a call's input and output, copied


def replayable(gm: torch.fx.GraphModule) -> dict[str, torch.nn.Module]:
    """``{target: module}`` of the graph's calls that may be replayed: modules of the
    kinds in ``_REPLAYED`` without hooks, every call with one argument and no keywords
    (none at all while a global module hook is set)."""
    module_py = torch.nn.modules.module
    if any(
        getattr(module_py, name, None)
        for name in ("_global_forward_hooks", "_global_forward_pre_hooks",
                     "_global_forward_hooks_always_called")
    ):  # fmt: skip
        return {}
    found: dict[str, torch.nn.Module] = {}
    refused: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        module = submodule(gm, target)
        hooked = module._forward_hooks or module._forward_pre_hooks
        if type(module) not in _REPLAYED or hooked or len(node.args) != 1 or node.kwargs:
            refused.add(target)
        else:
            found[target] = module
    return {t: m for t, m in found.items() if t not in refused}


@dataclasses.dataclass
class Recording:
    """The model's calls of the graph's replayable modules (``targets``): per target,
    the module of the model's run (``twins``) and each call's input and output."""

    targets: dict[str, torch.nn.Module]
    twins: dict[str, torch.nn.Module] = dataclasses.field(default_factory=dict)
    calls: dict[str, list[_Call | None]] = dataclasses.field(default_factory=dict)

    def attach(self, model: torch.nn.Module) -> None:
        """Record the calls of ``targets`` in ``model`` (a copy of the model, discarded
        after its run, hooks and all)."""
        for target in self.targets:
            try:
                twin = submodule(model, target)
            except AttributeError:
                continue
            self.twins[target] = twin
            twin.register_forward_hook(_record(self.calls.setdefault(target, [])),
                                       with_kwargs=True)  # fmt: skip


def _record(calls: list[_Call | None]) -> Callable[..., None]:
    """A forward hook that keeps copies of each call's input and output (None for a call
    that is not one tensor in, one out, or too small to be worth replaying)."""

    def hook(module: torch.nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        x = args[0] if len(args) == 1 and not kwargs else None
        weight = getattr(module, "weight", None)
        if not (
            isinstance(x, torch.Tensor)
            and isinstance(out, torch.Tensor)
            and isinstance(weight, torch.Tensor)
            and out.numel() * (weight.numel() // max(weight.shape[0], 1)) >= _REPLAY_MIN_MACS
        ):
            calls.append(None)
            return
        calls.append((x.clone(), out.clone()))

    return hook


class _Replayed:
    """Stands in for a module of the graph while the graph runs: a call whose input equals
    the model's call's (same shape, dtype, strides, values) gets that call's output,
    computed from it by the same module; any other call runs the module."""

    def __init__(
        self, module: torch.nn.Module, twin: torch.nn.Module, calls: list[_Call | None]
    ) -> None:
        self.module, self.calls, self.index = module, calls, 0
        self.same = _same_module(module, twin)  # the same computation in both runs

    def __call__(self, x: Any) -> Any:
        index, self.index = self.index, self.index + 1
        call = self.calls[index] if self.same and index < len(self.calls) else None
        if call is not None and _same_tensor(x, call[0]):
            return call[1]
        return self.module(x)


@contextlib.contextmanager
def replaying(gm: torch.fx.GraphModule, recording: Recording) -> Iterator[None]:
    """Stand-ins (:class:`_Replayed`) for ``gm``'s recorded modules while the graph runs
    (its ``forward`` looks its modules up by name at each call); its modules after."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    try:
        for target, module in recording.targets.items():
            calls = recording.calls.get(target)
            if not any(calls or ()):
                continue
            parent, _, name = target.rpartition(".")
            holder = submodule(gm, parent)
            stand_in = _Replayed(module, recording.twins[target], calls)  # type: ignore[arg-type]
            holder._modules[name] = stand_in  # type: ignore[assignment]
            swapped.append((holder, name, module))
        yield
    finally:
        for holder, name, module in swapped:
            holder._modules[name] = module


def _same_module(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether ``a`` and ``b`` compute the same: of one type, holding the same tensor
    objects and equal plain settings (strides, paddings, groups, ...)."""
    if type(a) is not type(b):
        return False
    mine, theirs = vars(a), vars(b)
    for key, value in mine.items():
        other = theirs.get(key, _MISSING)
        if key in ("_parameters", "_buffers"):
            if not isinstance(other, dict) or value.keys() != other.keys():
                return False
            if any(value[k] is not other[k] for k in value):
                return False
        elif isinstance(value, (bool, int, float, str, tuple, type(None))) and value != other:
            return False
    return True


_MISSING = object()


def _same_tensor(a: Any, b: torch.Tensor) -> bool:
    """Same shape, dtype, device, strides and values (NaN never equals itself)."""
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and a.device == b.device
        and a.stride() == b.stride()
        and torch.equal(a, b)
    )
