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
"""

from . import passes, rules, scoring
from .analysis import SensitivityTable, analyze
from .budget import Budget
from .compiler import compile
from .composite import bake_masks
from .config import CompileConfig
from .emit import export_onnx
from .errors import BudgetError, ReconveneError, TraceError, VerifyError
from .report import LayerPlan, PruningReport, report
from .tracing import trace
from .verify import VerifyResult, verify

__version__ = "0.2.0"

__all__ = [
    "Budget",
    "BudgetError",
    "CompileConfig",
    "LayerPlan",
    "PruningReport",
    "ReconveneError",
    "TraceError",
    "VerifyError",
    "SensitivityTable",
    "VerifyResult",
    "__version__",
    "analyze",
    "bake_masks",
    "compile",
    "export_onnx",
    "passes",
    "report",
    "rules",
    "scoring",
    "trace",
    "verify",
]
