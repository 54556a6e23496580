"""Latency of candidates relative to the original model, timed side by side."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .._mode import eval_mode
from ..errors import ArgumentError
from .table import check_backend

__all__ = ["LatencyRuler", "prepare_run", "time_alternating", "time_rounds"]

Run = Callable[[], object]

# A round of a sub-millisecond model repeats it at most this often.
MAX_CALLS_PER_ROUND = 1000


def prepare_run(backend: str, module: torch.nn.Module, example_inputs: tuple[Any, ...]) -> Run:
    """A function running one forward pass of ``module`` on ``backend``, set up once:
    eager (eval mode, inference mode) or an onnxruntime session of the exported module.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> run = prepare_run("onnxruntime", net, (torch.randn(1, 3, 16, 16),))
        >>> run()[0].shape
        (1, 8, 14, 14)
    """
    check_backend(backend)
    example_inputs = tuple(example_inputs)
    if backend == "torch":
        sync = any(isinstance(x, torch.Tensor) and x.is_cuda for x in example_inputs)

        def run() -> object:
            with eval_mode(module), torch.inference_mode():
                out = module(*example_inputs)
            if sync:
                torch.cuda.synchronize()
            return out

        return run
    from ._onnxruntime import onnxruntime_run

    return onnxruntime_run(module, example_inputs)


def time_alternating(
    runs: Sequence[Run], *, rounds: int = 7, warmup: int = 3, min_round_s: float = 0.0
) -> list[float]:
    """Median seconds per call of each run, timed in alternating rounds (a, b, a, b, ...)
    after ``warmup`` untimed rounds, so a change in the machine's load hits all of them
    alike. A round repeats each call back to back until it lasts about ``min_round_s``
    (calls per round fixed once, from the last warmup call), as a model serving requests
    runs with its weights warm in the caches.

    Example:
        >>> fast, slow = (lambda: time.sleep(0.001)), (lambda: time.sleep(0.004))
        >>> a, b = time_alternating([fast, slow], rounds=3, warmup=1, min_round_s=0.01)
        >>> a < b
        True
    """
    timed = time_rounds(runs, rounds=rounds, warmup=warmup, min_round_s=min_round_s)
    return [statistics.median(seen) for seen in timed]


def time_rounds(
    runs: Sequence[Run], *, rounds: int = 7, warmup: int = 3, min_round_s: float = 0.0
) -> list[list[float]]:
    """Seconds per call of each run in each of ``rounds`` alternating rounds (see
    :func:`time_alternating`): one list per run."""
    if rounds < 1:
        raise ArgumentError(f"rounds must be >= 1, got {rounds}")
    calls = [1] * len(runs)
    for _ in range(warmup):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            calls[i] = _calls_per_round(time.perf_counter() - start, min_round_s)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(rounds):
        for run, seen, n in zip(runs, times, calls, strict=True):
            start = time.perf_counter()
            for _ in range(n):
                run()
            seen.append((time.perf_counter() - start) / n)
    return times


def _calls_per_round(seconds: float, min_round_s: float) -> int:
    if min_round_s <= 0 or seconds >= min_round_s:
        return 1
    return min(math.ceil(min_round_s / max(seconds, 1e-6)), MAX_CALLS_PER_ROUND)


class LatencyRuler:
    """Latency of candidate modules as a fraction of the original's.

    With a backend, each candidate is timed in alternating rounds with the original (set
    up once; a round repeats a call back to back for about ``min_round_s``), and its
    ratio is the median over rounds of the two times' ratio: on a loaded machine both
    slow down together. ``before`` is the median of all the
    original's timings. With a user ``latency_fn`` the ratio is
    ``latency_fn(candidate) / latency_fn(original)``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.Conv2d(64, 64, 3))
        >>> x = (torch.randn(1, 3, 64, 64),)
        >>> ruler = LatencyRuler(net, x, backend="torch")
        >>> small = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 64, 3))
        >>> ruler.ratio(small) < 1.0 and ruler.before > 0
        True
    """

    def __init__(
        self,
        module: torch.nn.Module,
        example_inputs: tuple[Any, ...],
        *,
        backend: str = "torch",
        latency_fn: Callable[[torch.nn.Module, tuple[Any, ...]], float] | None = None,
        rounds: int = 7,
        min_round_s: float = 0.05,
    ) -> None:
        self.example_inputs, self.latency_fn, self.rounds = example_inputs, latency_fn, rounds
        self.min_round_s = min_round_s
        self.backend = backend
        self._before: list[float] = []
        if latency_fn is not None:
            self._original: Run | None = None
            self._before.append(float(latency_fn(module, example_inputs)))
        else:
            self._original = prepare_run(backend, module, example_inputs)
            self._before += time_alternating([self._original], rounds=rounds,
                                             min_round_s=min_round_s)  # fmt: skip
        if not self.before > 0:
            raise ArgumentError(
                f"the latency of the unpruned model measured {self.before}; need > 0"
            )

    @property
    def before(self) -> float:
        """The original's latency (seconds, or the unit of ``latency_fn``)."""
        return statistics.median(self._before)

    def measure(self, candidate: torch.nn.Module) -> tuple[float, float]:
        """The candidate's latency over the original's, and its latency (``latency_fn``'s
        value, or that ratio times :attr:`before`)."""
        if self._original is None:
            assert self.latency_fn is not None
            cost = float(self.latency_fn(candidate, self.example_inputs))
            return cost / self._before[0], cost
        run = prepare_run(self.backend, candidate, self.example_inputs)
        rounds = time_rounds([self._original, run], rounds=self.rounds,
                             min_round_s=self.min_round_s)  # fmt: skip
        self._before += rounds[0]
        ratio = statistics.median(c / o for o, c in zip(*rounds, strict=True))
        return ratio, ratio * self.before

    def ratio(self, candidate: torch.nn.Module) -> float:
        """The candidate's latency over the original's."""
        return self.measure(candidate)[0]
