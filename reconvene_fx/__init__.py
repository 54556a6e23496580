"""reconvene_fx: structured pruning at initialization as a torch.fx compiler pass.

Example:
    >>> import torch, reconvene_fx as rfx
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(32, 10, 1))
    >>> x = torch.randn(1, 3, 16, 16)
    >>> gm = rfx.compile(net, budget=0.5, example_inputs=(x,), reinit=False)
    >>> rep = rfx.report(gm)
    >>> rep.params_after <= 0.5 * rep.params_before
    True
    >>> rfx.verify(net, gm, (x,)).exact
    True

``export_onnx`` is imported on first use (``rfx.export_onnx`` or ``from reconvene_fx import
export_onnx``), so that ``import reconvene_fx`` does not import onnx, onnx-graphsurgeon,
onnxruntime or torchvision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import layers, passes, rules, scoring, strategies
from ._lazy import lazy_exports
from .analysis import SensitivityTable, analyze
from .budget import Budget
from .compiler import compile
from .composite import bake_masks
from .config import CompileConfig
from .errors import (
    BudgetError,
    InputError,
    ModelError,
    PassOrderError,
    RandomTargetsWarning,
    ReconveneError,
    ScoringError,
    ShrinkError,
    TraceError,
    VerifyError,
)
from .report import LayerPlan, PruningReport, report
from .tracing import AutoLeafWarning, trace
from .verify import VerifyResult, verify

if TYPE_CHECKING:
    from .emit.onnx import export_onnx

__version__ = "0.2.0"

__all__ = [
    "AutoLeafWarning",
    "Budget",
    "BudgetError",
    "CompileConfig",
    "InputError",
    "LayerPlan",
    "ModelError",
    "PassOrderError",
    "PruningReport",
    "RandomTargetsWarning",
    "ReconveneError",
    "ScoringError",
    "ShrinkError",
    "TraceError",
    "VerifyError",
    "SensitivityTable",
    "VerifyResult",
    "__version__",
    "analyze",
    "bake_masks",
    "compile",
    "export_onnx",
    "layers",
    "passes",
    "report",
    "rules",
    "scoring",
    "strategies",
    "trace",
    "verify",
]

# imported when first read, so that importing the package does not import onnx
__getattr__, __dir__ = lazy_exports(globals(), {"export_onnx": "reconvene_fx.emit.onnx"})
