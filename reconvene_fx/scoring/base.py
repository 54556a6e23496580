"""The scorer interface and registry: a scorer gives every prunable weight a score."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import torch
import torch.fx

__all__ = ["SCORERS", "Scorer", "get_scorer", "prunable_weights", "register_scorer"]


class Scorer(Protocol):
    """``score(gm, example_inputs, targets, *, seed) -> {param_name: scores}`` (any mapping).

    Scores have the shape of the weight; higher means more important. Only the weights
    of Conv and Linear modules (see :func:`prunable_weights`) are scored.
    """

    def __call__(
        self,
        gm: torch.fx.GraphModule,
        example_inputs: tuple[Any, ...],
        targets: torch.Tensor | None,
        *,
        seed: int,
    ) -> Mapping[str, torch.Tensor]: ...


SCORERS: dict[str, Scorer] = {}

_PRUNABLE = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Register a scorer under ``name`` so ``compile(method=name)`` finds it."""

    def register(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        return fn

    return register


def get_scorer(name: str) -> Scorer:
    """The scorer registered as ``name``.

    Raises:
        ValueError: naming the known methods.
    """
    if name not in SCORERS:
        known = ", ".join(sorted(SCORERS))
        raise ValueError(f"unknown scoring method {name!r}; known methods: {known}")
    return SCORERS[name]


def prunable_weights(gm: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """``(qualified_name, weight)`` of every Conv and Linear module, each once.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        >>> [name for name, _ in prunable_weights(net)]
        ['0.weight']
    """
    seen: set[int] = set()
    for name, module in gm.named_modules():
        if isinstance(module, _PRUNABLE) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            yield (f"{name}.weight" if name else "weight"), module.weight
