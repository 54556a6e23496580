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

from typing import TYPE_CHECKING

from ._lazy import declared_exports

__version__ = "0.3.0"

# The public names, each written once, here: type checkers read these imports (``X as X``
# marks a re-export), and at run time declared_exports reads this block from the source,
# makes it ``__all__`` and ``dir()``, and imports each name when it is first read (PEP 562).
if TYPE_CHECKING:
    from . import guards as guards
    from . import latency as latency
    from . import layers as layers
    from . import passes as passes
    from . import rules as rules
    from . import scoring as scoring
    from . import strategies as strategies
    from .analysis import SensitivityTable as SensitivityTable
    from .analysis import analyze as analyze
    from .budget import Budget as Budget
    from .compiler import SubmoduleCompileWarning as SubmoduleCompileWarning
    from .compiler import compile as compile
    from .composite import bake_masks as bake_masks
    from .config import CompileConfig as CompileConfig
    from .emit.onnx import export_onnx as export_onnx
    from .emit.torch import load as load
    from .emit.torch import save as save
    from .errors import ArgumentError as ArgumentError
    from .errors import ArgumentTypeError as ArgumentTypeError
    from .errors import BudgetError as BudgetError
    from .errors import CompilerError as CompilerError
    from .errors import ExportError as ExportError
    from .errors import InputError as InputError
    from .errors import LayerCollapseWarning as LayerCollapseWarning
    from .errors import ModelError as ModelError
    from .errors import PassOrderError as PassOrderError
    from .errors import RandomTargetsWarning as RandomTargetsWarning
    from .errors import ReconveneError as ReconveneError
    from .errors import ScoringError as ScoringError
    from .errors import ShrinkError as ShrinkError
    from .errors import TraceError as TraceError
    from .errors import TraceMismatchError as TraceMismatchError
    from .errors import VerifyError as VerifyError
    from .passes import UnknownOpWarning as UnknownOpWarning
    from .plot import plot_report as plot_report
    from .reporting import LayerPlan as LayerPlan
    from .reporting import PruningReport as PruningReport
    from .reporting import SubmodulePlan as SubmodulePlan
    from .reporting import report as report
    from .tracing import AutoLeafWarning as AutoLeafWarning
    from .tracing import BranchDecisionWarning as BranchDecisionWarning
    from .tracing import trace as trace
    from .verification import VerifyResult as VerifyResult
    from .verification import verify as verify

__getattr__, __dir__ = declared_exports(globals())
