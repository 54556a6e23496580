"""The options of :func:`reconvene_fx.compile`, as one keyword-only dataclass."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .errors import ArgumentError, ArgumentTypeError
from .layers import LayerRegistry
from .rules import RuleRegistry
from .strategies import get_strategy
from .strategies.reconvene import ALLOCATIONS

__all__ = ["PRICES", "CompileConfig", "LatencyFn", "auto_round_to", "config_from"]

# what a channel costs when the reconvene strategy sets widths (CompileConfig.price)
PRICES = ("macs", "latency")

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
            model-wide by their score relative to their group's mean; ``"none"`` narrows
            nothing (with ``composite=True``: the unstructured PaI model, masks only).
        composite: keep the unstructured PaI mask on the layers that were not narrowed, as
            a weight parametrization that survives training; the params budget then bounds
            the nonzero parameters (the paper's composite mode). Needs a strategy that
            leaves layers whole: ``"reconvene"`` or ``"none"``.
        min_width: no coupled group, nor any input of a concatenation, keeps fewer than
            ``ceil(min_width * n)`` of its ``n`` channels (the strongest ones), so no layer
            becomes a bottleneck of a few channels; 0 disables the floor.
        allocation: how ``strategy="reconvene"`` turns PaI densities into widths:
            ``"density"`` (each narrowed layer's dense size matches what its mask kept) or
            ``"sqrt"`` (those widths tempered halfway towards uniform).
        price: what a channel costs when ``strategy="reconvene"`` sets widths:
            ``"macs"`` (default: the widths follow the PaI densities as they are) or
            ``"latency"`` (each coupled group's channels priced by the seconds per MAC they
            cost on ``latency_backend``, read from its per-layer table: the groups whose
            MACs are slow there narrow more; any budget; see
            :mod:`reconvene_fx.latency.price`). At equal measured latency ``"latency"``
            was not the more accurate on the accuracy study's models
            (``benchmarks/README.md``), so it is not the default.
        data: labelled data for the scorers that need it (SNIP, GraSP): one batch
            ``(inputs, targets)``, or an iterable of such batches (their scores are
            summed). ``inputs`` is a tensor or a tuple of the model's inputs. Without it
            these scorers run on ``example_inputs`` against ``targets``.
        max_batches: at most this many batches of ``data`` are scored (default 8; ``None``
            reads them all). How many were read is logged and kept in the report
            (``scoring_batches``); with ``progress`` a bar counts them on stderr.
        seed: seeds scoring and re-initialization; equal seeds give equal models.
        round_to: kept width of every coupled group is a multiple of this (or the full
            width), e.g. 8 for tensor cores; in a grouped conv, whose channels go one
            position across all its groups at a time, that too counts channels. ``None``
            (the default) chooses per group from its width (:func:`auto_round_to`):
            multiples of 8 from 32 channels up, of 4 from 16, of 2 from 8, any width
            below; runtimes turn much more of the MACs saved into speed at such widths
            (``benchmarks/results/latency_round_to.md``). These default widths never make
            a budget unreachable: when even every removable channel gone does not meet
            it, the groups that rounding alone keeps whole (13 groups of 8 channels at a
            step of 8) go by single atoms instead, then, if need be, every group (logged
            at INFO). ``1`` keeps any width; a ``round_to`` given is always kept.
        ignore: qualified module names whose channels are never pruned.
        reinit: re-initialize narrowed layers (RLR): weights and biases redrawn from
            the layer's own initial values at their own spread (not rescaled to the new
            fan-in: measured more accurate, see :mod:`reconvene_fx.layers.init`)
            (:func:`~reconvene_fx.passes.matched_init`); composite layers that keep a
            mask keep the weights it chose; per-channel tensors (norm weights and
            biases, a standardized conv's gain) keep their sliced initial values, so
            zero-initialized norms stay zero; norm statistics start afresh. ``False``
            keeps the sliced original weights, which ``verify`` checks.
        targets: class indices for SNIP/GraSP, shaped like the output without its class
            dim; drawn uniformly with ``seed`` when None (with a
            :class:`~reconvene_fx.errors.RandomTargetsWarning`; prefer ``data``).
        leaf_modules: module types or names that tracing keeps opaque.
        auto_leaf: a submodule torch.fx cannot trace becomes a leaf (one warning naming
            it) instead of a ``TraceError`` (see :func:`reconvene_fx.trace`).
        concrete_args: fixed arguments for tracing control flow.
        rules: a :class:`~reconvene_fx.rules.RuleRegistry` replacing the built-in rules
            (how channels flow through each op; start from
            :func:`~reconvene_fx.rules.get_default_registry`).
        layers: a :class:`~reconvene_fx.layers.LayerRegistry` replacing the built-in layer
            handlers (what each conv/linear/norm holds, how it is scored, counted, sliced
            and re-initialized; start from
            :func:`~reconvene_fx.layers.get_default_layer_registry`). ``None`` (default):
            the built-in :data:`~reconvene_fx.layers.DEFAULT_LAYERS`. A module type of your
            own needs a handler here and a channel rule in ``rules``.
        init_fn: optional ``init_fn(module, generator)`` re-initializing a narrowed layer
            instead (e.g. :func:`~reconvene_fx.passes.torchvision_init`, Kaiming normal).
        latency_fn: ``latency_fn(module, example_inputs) -> cost`` for latency budgets,
            measured on whole candidates (a binary search); default: the backend below.
        latency_backend: where latency budgets are measured: ``"torch"`` (eager PyTorch on
            this machine, default) or ``"onnxruntime"`` (the exported model on its CPU
            provider). Plans are searched with a per-layer latency table and the chosen
            one is measured whole (see :class:`~reconvene_fx.latency.LatencyTable`).
        latency_cache: where that table is kept: ``True`` (default) the folder of
            :func:`~reconvene_fx.latency.default_cache_dir`, a folder path, or ``False``
            for memory only.
        progress: progress on stderr. ``None`` (default): a progress bar for each step
            that runs longer than a few seconds (SynFlow's iterations, scored batches,
            latency candidates); ``True``: those bars from the start and each pass's time;
            ``False``: nothing.
    """

    method: str = "magnitude"
    method_options: Mapping[str, Any] = field(default_factory=dict)
    strategy: str = "reconvene"
    composite: bool = False
    min_width: float = 0.1
    allocation: str = "density"
    price: str = "macs"
    data: Any = None
    max_batches: int | None = 8
    seed: int = 0
    round_to: int | None = None
    ignore: Sequence[str] = ()
    reinit: bool = True
    targets: torch.Tensor | None = None
    leaf_modules: Sequence[Any] = ()
    auto_leaf: bool = True
    concrete_args: dict[str, Any] | None = None
    rules: RuleRegistry | None = None
    layers: LayerRegistry | None = None
    init_fn: Callable[[torch.nn.Module, torch.Generator], None] | None = None
    latency_fn: LatencyFn | None = None
    latency_backend: str = "torch"
    latency_cache: bool | str | os.PathLike = True
    progress: bool | None = None

    def __post_init__(self) -> None:
        get_strategy(self.strategy)  # unknown: ValueError naming the known ones
        if self.strategy == "none" and not self.composite:
            raise ArgumentError(
                "strategy='none' narrows nothing; add composite=True for the unstructured "
                "PaI model (masks only)"
            )
        if self.composite and self.strategy in ("uniform", "global"):
            raise ArgumentError(
                f"composite=True keeps masks on the layers a plan leaves whole, and "
                f"strategy={self.strategy!r} narrows every layer; use strategy='reconvene' "
                "or 'none' with composite=True"
            )
        if self.data is not None and self.targets is not None:
            raise ArgumentError("give data=(inputs, targets) or targets=, not both")
        if self.max_batches is not None and (
            isinstance(self.max_batches, bool) or not isinstance(self.max_batches, int)
        ):
            raise ArgumentTypeError(
                f"max_batches must be a positive int or None, got {self.max_batches!r}"
            )
        if self.max_batches is not None and self.max_batches < 1:
            raise ArgumentError(
                f"max_batches must be >= 1 (or None to read all of data), got {self.max_batches}"
            )
        if isinstance(self.min_width, bool) or not isinstance(self.min_width, (int, float)):
            raise ArgumentTypeError(f"min_width must be a number in [0, 1], got {self.min_width!r}")
        if not 0.0 <= self.min_width <= 1.0:
            raise ArgumentError(f"min_width must lie in [0, 1], got {self.min_width}")
        if self.allocation not in ALLOCATIONS:
            raise ArgumentError(
                f"unknown allocation {self.allocation!r}; choose one of {', '.join(ALLOCATIONS)}"
            )
        if self.price not in PRICES:
            raise ArgumentError(f"unknown price {self.price!r}; choose one of {', '.join(PRICES)}")
        if self.round_to is None:
            pass
        elif isinstance(self.round_to, bool) or not isinstance(self.round_to, int):
            raise ArgumentTypeError(
                f"round_to must be a positive int or None, got {self.round_to!r}"
            )
        elif self.round_to < 1:
            raise ArgumentError(f"round_to must be >= 1, got {self.round_to}")
        if isinstance(self.ignore, str):
            raise ArgumentTypeError("ignore must be a list of module names, not a single string")
        if not isinstance(self.method_options, Mapping):
            raise ArgumentTypeError(f"method_options must be a dict, got {self.method_options!r}")
        if self.latency_fn is not None and not callable(self.latency_fn):
            raise ArgumentTypeError(
                "latency_fn must be callable: latency_fn(module, example_inputs)"
            )
        if self.latency_backend not in ("torch", "onnxruntime"):
            raise ArgumentError(
                f"unknown latency_backend {self.latency_backend!r}; choose torch or onnxruntime"
            )
        if self.progress not in (None, True, False):
            raise ArgumentTypeError(f"progress must be True, False or None, got {self.progress!r}")
        if not isinstance(self.latency_cache, (bool, str, os.PathLike)):
            raise ArgumentTypeError(
                f"latency_cache must be True, False or a folder, got {self.latency_cache!r}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ArgumentTypeError(f"seed must be an int, got {self.seed!r}")
        for option, kind, default in (
            ("rules", RuleRegistry, "reconvene_fx.rules.get_default_registry()"),
            ("layers", LayerRegistry, "reconvene_fx.layers.get_default_layer_registry()"),
        ):
            value = getattr(self, option)
            if value is not None and not isinstance(value, kind):
                raise ArgumentTypeError(
                    f"{option} must be a {kind.__name__} (e.g. {default}, extended), "
                    f"got {type(value).__name__}"
                )


def auto_round_to(width: int) -> int:
    """The step the kept width of a channel space of ``width`` channels is rounded to when
    ``round_to`` is left at None: 8 from 32 channels up (vector units and tensor cores
    work in 8s), 4 from 16, 2 from 8, 1 below (a step there would cost too large a share of
    the width).

    Example:
        >>> [auto_round_to(w) for w in (4, 8, 16, 32, 512)]
        [1, 2, 4, 8, 8]
    """
    return 8 if width >= 32 else 4 if width >= 16 else 2 if width >= 8 else 1


def config_from(**options: Any) -> CompileConfig:
    """A :class:`CompileConfig` of ``options``; an option it does not have is an
    :class:`~reconvene_fx.errors.ArgumentTypeError` naming the closest one.

    Example:
        >>> config_from(method="snip").method
        'snip'
        >>> try:
        ...     config_from(methd="snip")
        ... except ArgumentTypeError as exc:
        ...     print(exc)
        unknown option 'methd' (did you mean 'method'?); see CompileConfig for the options
    """
    known = [f.name for f in fields(CompileConfig)]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ArgumentTypeError(
                f"unknown option {name!r}{hint}; see CompileConfig for the options"
            )
    return CompileConfig(**options)
