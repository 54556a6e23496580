"""Exceptions raised by reconvene_fx (every error is a :class:`ReconveneError`) and its
warnings about results that may not be what the caller meant."""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "BudgetError",
    "CompilerError",
    "ExportError",
    "InputError",
    "LayerCollapseWarning",
    "ModelError",
    "PassOrderError",
    "RandomTargetsWarning",
    "ReconveneError",
    "ScoringError",
    "ShrinkError",
    "TraceError",
    "TraceMismatchError",
    "VerifyError",
]


class ReconveneError(Exception):
    """Base class of every error this library raises on purpose."""


class ArgumentError(ReconveneError, ValueError):
    """An argument of a public function has a value it cannot take: out of range
    (``budget=1.5``), an unknown name (``method="snp"``, ``ignore=["nope"]``) or options
    that contradict each other. The message names the argument and what it accepts.

    Example:
        >>> from reconvene_fx.budget import Budget
        >>> try:
        ...     Budget(params=1.5)
        ... except ArgumentError as exc:
        ...     print(exc)
        Budget.params must be in (0, 1], got 1.5
    """


class ArgumentTypeError(ArgumentError, TypeError):
    """An argument of a public function has the wrong type (``budget="abc"``,
    ``data=x``); it is also a :class:`TypeError`, and an :class:`ArgumentError`."""


class CompilerError(ReconveneError, RuntimeError):
    """A pass failed on a node of the graph in a way no check before it foresaw: a
    pattern the compiler does not handle (or a bug). The message names the pass and the
    node; please report it with the model."""


class InputError(ReconveneError, ValueError):
    """``example_inputs`` do not fit the model: more or fewer than its ``forward`` takes,
    or inputs the model rejects (the message names the input shapes and the node)."""


class ModelError(ReconveneError, ValueError):
    """The model cannot be compiled as it is: its tensors are on the ``meta`` device
    (nothing to score), or it has no conv or linear layer (nothing to prune). The message
    says what to do."""


class ScoringError(ReconveneError, ValueError):
    """The PaI scorer cannot run on this model; the message names the cause and another
    method to use."""


class PassOrderError(ReconveneError, ValueError):
    """A pass ran before the pass whose results it needs; the message names both."""


class ShrinkError(ReconveneError):
    """Shrinking left a module inconsistent: one of its tensors still has the old size of
    channels that were narrowed. ``module`` and ``tensor`` name it."""

    def __init__(self, message: str, *, module: str, tensor: str) -> None:
        super().__init__(message)
        self.module = module
        self.tensor = tensor


class TraceError(ReconveneError):
    """The model could not be traced with ``torch.fx``.

    The message names the module or operation that broke tracing and suggests a remedy
    (mark the module as a leaf, or pass ``concrete_args``).
    """


class TraceMismatchError(TraceError):
    """The traced graph does not compute what the model computes on the example inputs
    (the forward took another path while torch.fx traced it); the message names the first
    module call or node that differs."""


class BudgetError(ReconveneError):
    """The budget cannot be met: the layers that may not be pruned already exceed it.

    ``smallest`` holds the smallest reachable fraction for the quantity that failed.
    ``pinned_by`` says what keeps the channels of the layers that hold the most parameters:
    one ``(layer, side, node, reason, source)`` tuple per cause, ``side`` ``"input"`` or
    ``"output"``, ``node`` the graph node that pins them (``""`` for a cause of the plan
    such as the ``min_width`` floor), ``source`` the model's source line of that node
    (``"net.py:12 (y = x.cumsum(1))"``) or None when the trace recorded none.

    Example:
        >>> why = ("fc", "output", "output", "they reach the model's output", None)
        >>> err = BudgetError("too small", quantity="params", smallest=0.8, pinned_by=[why])
        >>> err.pinned_by[0][2], err.smallest
        ('output', 0.8)
    """

    def __init__(
        self,
        message: str,
        *,
        quantity: str,
        smallest: float,
        pinned_by: list[tuple[str, str, str, str, str | None]] | None = None,
    ) -> None:
        super().__init__(message)
        self.quantity = quantity
        self.smallest = smallest
        self.pinned_by = list(pinned_by or [])


class VerifyError(ReconveneError):
    """The compact model is not equivalent to the original with pruned channels zeroed.

    ``max_error`` is the largest absolute difference seen; ``layer`` the first module
    (in execution order) whose output differs.
    """

    def __init__(self, message: str, *, max_error: float, layer: str | None) -> None:
        super().__init__(message)
        self.max_error = max_error
        self.layer = layer


class ExportError(ReconveneError):
    """The model could not be exported, or the exported file disagrees with PyTorch.

    ``output_index`` is the index (in flattened output order) of the first output whose
    values differ and ``max_error`` its largest absolute difference; both are ``None`` when
    the export itself failed.
    """

    def __init__(
        self, message: str, *, output_index: int | None = None, max_error: float | None = None
    ) -> None:
        super().__init__(message)
        self.output_index = output_index
        self.max_error = max_error


class RandomTargetsWarning(UserWarning):
    """A data-dependent scorer (SNIP, GraSP) ran against randomly drawn labels, because
    neither ``data=(inputs, targets)`` nor ``targets=`` was given: its scores then reflect
    noise labels, not the task."""


class LayerCollapseWarning(UserWarning):
    """After compiling, a conv or linear layer computes nothing from its input: every weight
    it keeps is zero (its composite mask holds all of them at zero) or it kept no input or
    output channel. Its output is then its bias alone (zero without one) whatever the
    input, and a mask keeps it so through training. One warning per compile names every
    such layer and why; the report marks them (``LayerPlan.dead``) and does not count
    their multiply-accumulates."""
