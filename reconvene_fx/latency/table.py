"""The per-layer latency table: each conv/linear geometry timed once, kept on disk."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write
from ..errors import ArgumentError
from ..log import logger
from .spec import LayerSpec

__all__ = ["BACKENDS", "LatencyTable", "default_cache_dir", "measure_model"]

BACKENDS = ("torch", "onnxruntime")
_FORMAT = 1
_PROGRESS_EVERY = 100  # a progress line per this many layers timed


def default_cache_dir() -> Path:
    """``$RECONVENE_FX_CACHE_DIR``, else ``$XDG_CACHE_HOME/reconvene_fx``, else
    ``~/.cache/reconvene_fx``."""
    if os.environ.get("RECONVENE_FX_CACHE_DIR"):
        return Path(os.environ["RECONVENE_FX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reconvene_fx"


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        known = ", ".join(BACKENDS)
        raise ArgumentError(f"unknown latency_backend {backend!r}; choose one of {known}")


def measure_model(backend: str, module: torch.nn.Module, example_inputs: tuple[Any, ...]) -> float:
    """Median seconds of one forward pass of ``module`` on ``backend``: ``"torch"`` (eager,
    :func:`~reconvene_fx.latency.measure_latency`) or ``"onnxruntime"`` (the exported
    module, :func:`~reconvene_fx.latency.measure_onnxruntime`).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> measure_model("onnxruntime", net, (torch.randn(1, 3, 16, 16),)) > 0
        True
    """
    check_backend(backend)
    if backend == "onnxruntime":
        from ._onnxruntime import measure_onnxruntime

        return measure_onnxruntime(module, example_inputs)
    from ._torch import measure_latency

    return measure_latency(module, example_inputs)


class LatencyTable:
    """Seconds of one conv/linear call per :class:`~reconvene_fx.latency.spec.LayerSpec`
    on one backend, each timed once (a one-layer model with random weights) and kept in a
    JSON file, so planning a latency budget times layers, not whole models, and a second
    compile on the same machine times nothing.

    The file is named after the backend and a fingerprint of the machine and runtime (CPU,
    core count, threads, runtime version), so tables of other machines are never mixed in;
    it lives in ``cache_dir`` (``True``, the default: :func:`default_cache_dir`; ``False``
    or ``None`` keep the table in memory only). :meth:`save` merges with what other
    processes saved meanwhile and writes atomically. A corrupt file is ignored with a warning.

    Args:
        backend: ``"torch"`` (eager, this process's thread count) or ``"onnxruntime"``
            (CPU provider, its default threads).
        cache_dir: the folder of the table files, True for the default one, or
            False/None.
        repeats: timed runs per layer (their median is kept).
        warmup: untimed runs per layer first.

    Example:
        >>> import tempfile
        >>> from reconvene_fx.latency.spec import layer_spec
        >>> spec = layer_spec(torch.nn.Conv2d(8, 16, 3), (1, 8, 16, 16))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     table = LatencyTable("onnxruntime", d, repeats=2)
        ...     first = table.seconds(spec)
        ...     table.save()
        ...     again = LatencyTable("onnxruntime", d)
        ...     print(again.seconds(spec) == first, again.timed)
        True 0
    """

    def __init__(
        self,
        backend: str = "torch",
        cache_dir: str | os.PathLike | bool | None = True,
        *,
        repeats: int = 5,
        warmup: int = 2,
    ) -> None:
        check_backend(backend)
        if repeats < 1:
            raise ArgumentError(f"repeats must be >= 1, got {repeats}")
        self.backend, self.repeats, self.warmup = backend, repeats, warmup
        self.fingerprint = _fingerprint(backend)
        folder = default_cache_dir() if cache_dir is True else cache_dir
        if folder is None or folder is False:
            self.path: Path | None = None
        else:
            digest = hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode())
            self.path = Path(folder) / f"latency-{backend}-{digest.hexdigest()[:12]}.json"
        self._entries: dict[str, float] = self._read()
        self._new: dict[str, float] = {}
        self.timed = 0  # layers timed by this object (not found in the file)
        self._time: Callable[[LayerSpec], float] = self._timer()

    def __len__(self) -> int:
        return len(self._entries)

    def seconds(self, spec: LayerSpec) -> float:
        """Seconds of one call of ``spec``: from the table, else timed now and added."""
        key = spec.key()
        if key not in self._entries:
            value = float(self._time(spec))
            self._entries[key] = self._new[key] = value
            self.timed += 1
            if self.timed % _PROGRESS_EVERY == 0:
                logger.info("latency table: %d layers timed on %s ...", self.timed, self.backend)
        return self._entries[key]

    def save(self) -> None:
        """Write the entries timed since loading to the file (merged, atomic); a no-op
        without ``cache_dir`` or new entries. A folder that cannot be written only warns:
        the table is a cache."""
        if self.path is None or not self._new:
            return
        try:
            merged = {**self._read(), **self._new}
            payload = {"format": _FORMAT, "fingerprint": self.fingerprint, "entries": merged}
            with atomic_write(self.path) as tmp:
                tmp.write_text(json.dumps(payload, indent=0, sort_keys=True))
        except OSError as exc:
            warnings.warn(f"latency table not saved to {self.path}: {exc}", stacklevel=2)
            return
        self._new = {}
        logger.info("latency table: %d layers in %s", len(merged), self.path)

    def _read(self) -> dict[str, float]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            payload = json.loads(self.path.read_text())
            if payload.get("format") != _FORMAT or payload.get("fingerprint") != self.fingerprint:
                reason: object = "written for another format or machine"
            else:
                return {str(k): float(v) for k, v in payload["entries"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            reason = exc
        warnings.warn(f"ignoring the latency table {self.path}: {reason}", stacklevel=3)
        return {}

    def _timer(self) -> Callable[[LayerSpec], float]:
        if self.backend == "onnxruntime":
            from ._onnxruntime import onnxruntime_layer_seconds as layer_seconds
        else:
            from ._torch import torch_layer_seconds as layer_seconds

        def timed(spec: LayerSpec) -> float:
            return layer_seconds(spec, repeats=self.repeats, warmup=self.warmup)

        return timed


def _fingerprint(backend: str) -> dict[str, Any]:
    """What makes a table valid on this machine only."""
    if backend == "onnxruntime":
        import onnxruntime

        version, threads = onnxruntime.__version__, "default"
    else:
        version, threads = torch.__version__, torch.get_num_threads()
    return {
        "backend": backend,
        "version": version,
        "threads": threads,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
