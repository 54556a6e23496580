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

Public names are imported on first use (``rfx.compile``, ``from reconvene_fx import
export_onnx``), so ``import reconvene_fx`` imports neither torch nor onnx until one is read.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:
    from . import guards, layers, passes, rules, scoring, strategies
    from .analysis import SensitivityTable, analyze
    from .budget import Budget
    from .compiler import SubmoduleCompileWarning, compile
    from .composite import bake_masks
    from .config import CompileConfig
    from .emit.onnx import export_onnx
    from .emit.torch import load, save
    from .errors import (
        ArgumentError,
        ArgumentTypeError,
        BudgetError,
        CompilerError,
        ExportError,
        InputError,
        LayerCollapseWarning,
        ModelError,
        PassOrderError,
        RandomTargetsWarning,
        ReconveneError,
        ScoringError,
        ShrinkError,
        TraceError,
        TraceMismatchError,
        VerifyError,
    )
    from .plot import plot_report
    from .report import LayerPlan, PruningReport, report
    from .tracing import AutoLeafWarning, BranchDecisionWarning, trace
    from .verify import VerifyResult, verify

__version__ = "0.2.0"

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "AutoLeafWarning",
    "BranchDecisionWarning",
    "Budget",
    "BudgetError",
    "CompileConfig",
    "CompilerError",
    "ExportError",
    "InputError",
    "LayerCollapseWarning",
    "LayerPlan",
    "ModelError",
    "PassOrderError",
    "PruningReport",
    "RandomTargetsWarning",
    "ReconveneError",
    "ScoringError",
    "ShrinkError",
    "TraceError",
    "TraceMismatchError",
    "VerifyError",
    "SensitivityTable",
    "SubmoduleCompileWarning",
    "VerifyResult",
    "__version__",
    "analyze",
    "bake_masks",
    "compile",
    "export_onnx",
    "guards",
    "layers",
    "load",
    "passes",
    "plot_report",
    "report",
    "rules",
    "save",
    "scoring",
    "strategies",
    "trace",
    "verify",
]

# Every public name is imported when first read (PEP 562): ``import reconvene_fx`` and
# the CLI's --help cost no torch import; ``rfx.compile`` imports what compiling needs.
_SOURCES = {
    "ArgumentError": "reconvene_fx.errors",
    "ArgumentTypeError": "reconvene_fx.errors",
    "AutoLeafWarning": "reconvene_fx.tracing",
    "BranchDecisionWarning": "reconvene_fx.tracing",
    "Budget": "reconvene_fx.budget",
    "BudgetError": "reconvene_fx.errors",
    "CompileConfig": "reconvene_fx.config",
    "CompilerError": "reconvene_fx.errors",
    "ExportError": "reconvene_fx.errors",
    "InputError": "reconvene_fx.errors",
    "LayerCollapseWarning": "reconvene_fx.errors",
    "LayerPlan": "reconvene_fx.report",
    "ModelError": "reconvene_fx.errors",
    "PassOrderError": "reconvene_fx.errors",
    "PruningReport": "reconvene_fx.report",
    "RandomTargetsWarning": "reconvene_fx.errors",
    "ReconveneError": "reconvene_fx.errors",
    "ScoringError": "reconvene_fx.errors",
    "SensitivityTable": "reconvene_fx.analysis",
    "ShrinkError": "reconvene_fx.errors",
    "TraceError": "reconvene_fx.errors",
    "TraceMismatchError": "reconvene_fx.errors",
    "SubmoduleCompileWarning": "reconvene_fx.compiler",
    "VerifyError": "reconvene_fx.errors",
    "VerifyResult": "reconvene_fx.verify",
    "analyze": "reconvene_fx.analysis",
    "bake_masks": "reconvene_fx.composite",
    "compile": "reconvene_fx.compiler",
    "export_onnx": "reconvene_fx.emit.onnx",
    "load": "reconvene_fx.emit.torch",
    "plot_report": "reconvene_fx.plot",
    "report": "reconvene_fx.report",
    "save": "reconvene_fx.emit.torch",
    "trace": "reconvene_fx.tracing",
    "verify": "reconvene_fx.verify",
}
__getattr__, __dir__ = lazy_exports(
    globals(), _SOURCES, submodules=("guards", "layers", "passes", "rules", "scoring", "strategies")
)


class _Package(types.ModuleType):
    """``rfx.report`` and ``rfx.verify`` are functions, not the submodules of those names:
    importing a submodule binds it on its package, which must not hide the function."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("report", "verify") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
