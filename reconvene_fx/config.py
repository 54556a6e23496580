"""The options of :func:`reconvene_fx.compile`, as one keyword-only dataclass."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .strategies import get_strategy

__all__ = ["CompileConfig", "LatencyFn"]

LatencyFn = Callable[[torch.nn.Module, tuple[Any, ...]], float]


@dataclass(frozen=True, kw_only=True)
class CompileConfig:
    """How to compile.

    Attributes:
        method: PaI scoring method: ``"magnitude"`` (default), ``"random"``, ``"snip"``,
            ``"grasp"``, ``"synflow"``, or a registered name.
        method_options: extra keyword arguments for the scorer, e.g. ``{"iterations": 20}``
            for SynFlow or ``{"temperature": 100.0}`` for GraSP.
        strategy: how channel widths are allocated, a name registered in
            :mod:`reconvene_fx.strategies`. ``"reconvene"`` (default): the layers the PaI
            mask prunes harder than the global density are narrowed first, each coupled
            group in proportion to its layers' densities (see PlanPass); ``"uniform"``
            removes the same fraction of every coupled group; ``"global"`` ranks channels
            model-wide by their score relative to their group's mean.
        composite: keep the unstructured PaI mask on the layers that were not narrowed, as
            a weight parametrization that survives training; the params budget then bounds
            the nonzero parameters (the paper's composite mode).
        seed: seeds scoring and re-initialization; equal seeds give equal models.
        round_to: kept width of every coupled group is a multiple of this (or the full
            width), e.g. 8 for tensor cores.
        ignore: qualified module names whose channels are never pruned.
        reinit: re-initialize narrowed layers (Kaiming normal as torchvision does; norms
            reset). ``False`` keeps the sliced original weights, which ``verify`` checks.
        targets: class indices for SNIP/GraSP, shaped like the output without its class
            dim; drawn uniformly with ``seed`` when None.
        leaf_modules: module types or names that tracing keeps opaque.
        auto_leaf: a submodule torch.fx cannot trace becomes a leaf (one warning naming
            it) instead of a ``TraceError`` (see :func:`reconvene_fx.trace`).
        concrete_args: fixed arguments for tracing control flow.
        rules: a :class:`~reconvene_fx.rules.RuleRegistry` replacing the built-in rules.
        init_fn: optional ``init_fn(module, generator)`` re-initializing a narrowed layer.
        latency_fn: ``latency_fn(module, example_inputs) -> cost`` for latency budgets;
            default: the median wall time of forward passes on this machine.
        progress: log each pass's time to stderr and show SynFlow's progress bar.
    """

    method: str = "magnitude"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    strategy: str = "reconvene"
    composite: bool = False
    seed: int = 0
    round_to: int = 1
    ignore: Sequence[str] = ()
    reinit: bool = True
    targets: torch.Tensor | None = None
    leaf_modules: Sequence[Any] = ()
    auto_leaf: bool = True
    concrete_args: dict[str, Any] | None = None
    rules: Any = None
    init_fn: Callable[[torch.nn.Module, torch.Generator], None] | None = None
    latency_fn: LatencyFn | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        get_strategy(self.strategy)  # unknown: ValueError naming the known ones
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int):
            raise TypeError(f"round_to must be a positive int, got {self.round_to!r}")
        if self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, got {self.round_to}")
        if isinstance(self.ignore, str):
            raise TypeError("ignore must be a list of module names, not a single string")
        if not isinstance(self.method_options, Mapping):
            raise TypeError(f"method_options must be a dict, got {self.method_options!r}")
        if self.latency_fn is not None and not callable(self.latency_fn):
            raise TypeError("latency_fn must be callable: latency_fn(module, example_inputs)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
