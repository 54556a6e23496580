"""Latency of a module on this machine: what ``Budget(latency=...)`` is measured with."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ._mode import eval_mode

__all__ = ["measure_latency"]


def measure_latency(
    module: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    repeats: int = 7,
    warmup: int = 2,
) -> float:
    """Median seconds of one forward pass of ``module`` on ``example_inputs``.

    Eval mode (flags restored), no autograd, ``warmup`` untimed runs first. The figure is
    for this machine and its current load and thread settings; latency budgets compare
    two such figures taken in the same process.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> measure_latency(net, (torch.randn(1, 3, 32, 32),), repeats=3) > 0
        True
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    with eval_mode(module), torch.inference_mode():
        for _ in range(warmup):
            module(*example_inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            module(*example_inputs)
            times.append(time.perf_counter() - start)
    return statistics.median(times)
