"""Latency in eager PyTorch on this machine: of a whole module, and of one layer."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from .._mode import eval_mode
from ..errors import ArgumentError
from .spec import LayerSpec, random_input

__all__ = ["measure_latency", "torch_layer_seconds"]


def measure_latency(
    module: torch.nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    repeats: int = 7,
    warmup: int = 2,
) -> float:
    """Median seconds of one forward pass of ``module`` on ``example_inputs``.

    Eval mode (flags restored), no autograd (``torch.inference_mode``), ``warmup`` untimed
    runs first, then ``repeats`` single runs timed with :class:`torch.utils.benchmark.Timer`,
    which synchronizes the GPU around each one when CUDA is in use, so a run is timed to
    its end rather than to its launch. The Timer runs the module twice untimed before each
    timed run, so the call costs about ``warmup + 3 * repeats`` forward passes. The Timer
    uses the current number of torch threads. The figure is for this machine and its
    current load and thread settings; latency budgets compare two such figures taken in the
    same process.

    Args:
        module: the module to time.
        example_inputs: its positional inputs, on the device to time it on.
        repeats: the number of timed runs whose median is returned; at least 1.
        warmup: the number of untimed runs first (caches, allocator, lazy init).

    Returns:
        The median of the timed runs, in seconds.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> measure_latency(net, (torch.randn(1, 3, 32, 32),), repeats=3) > 0
        True
    """
    if repeats < 1:
        raise ArgumentError(f"repeats must be >= 1, got {repeats}")
    from torch.utils.benchmark import Timer  # ~0.3 s to import: only when latency is measured

    timer = Timer(
        stmt="module(*example_inputs)",
        globals={"module": module, "example_inputs": example_inputs},
        num_threads=torch.get_num_threads(),  # the Timer's default is one thread
    )
    with eval_mode(module), torch.inference_mode():
        for _ in range(warmup):
            module(*example_inputs)
        times = [timer.timeit(1).median for _ in range(repeats)]
    return statistics.median(times)


def torch_layer_seconds(spec: LayerSpec, *, repeats: int = 5, warmup: int = 2) -> float:
    """Median seconds of one eager call of a fresh module of ``spec`` (see
    :func:`measure_latency`).

    Example:
        >>> from reconvene_fx.latency.spec import layer_spec
        >>> spec = layer_spec(torch.nn.Conv2d(8, 16, 3), (1, 8, 16, 16))
        >>> torch_layer_seconds(spec, repeats=2) > 0
        True
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = spec.module()
    return measure_latency(module, (random_input(spec),), repeats=repeats, warmup=warmup)
