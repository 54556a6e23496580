"""Latency: measured on a runtime (eager PyTorch, onnxruntime) and predicted per layer.

``Budget(latency=...)`` is planned with these: :class:`LatencyTable` times each conv/linear
geometry once on the backend (``CompileConfig.latency_backend``) and keeps it on disk,
:class:`LatencyEstimate` predicts a plan's latency from it, :class:`LatencySearch` picks
how much of the planner's removal order goes (estimated, then measured whole and
corrected), and :func:`measure_model` measures the whole model before and after.

Example:
    >>> import torch
    >>> from reconvene_fx.latency import measure_latency
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    >>> measure_latency(net, (torch.randn(1, 3, 32, 32),), repeats=3) > 0
    True
"""

from __future__ import annotations

from ._onnxruntime import measure_onnxruntime, onnxruntime_session
from ._torch import measure_latency
from .estimate import LatencyEstimate
from .search import LatencyPlan, LatencySearch
from .spec import LayerSpec, layer_spec
from .table import BACKENDS, LatencyTable, default_cache_dir, measure_model

__all__ = [
    "BACKENDS",
    "LatencyEstimate",
    "LatencyPlan",
    "LatencySearch",
    "LatencyTable",
    "LayerSpec",
    "default_cache_dir",
    "layer_spec",
    "measure_latency",
    "measure_model",
    "measure_onnxruntime",
    "onnxruntime_session",
]
