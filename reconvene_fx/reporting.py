"""The pruning report: what was kept, per layer and in total."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.fx

from ._deprecation import RenamedAttribute
from ._table import format_rows
from .errors import ReconveneError
from .meta import REPORT

__all__ = [
    "REPORT_ATTRIBUTE",
    "LayerPlan",
    "PruningReport",
    "SubmodulePlan",
    "attach_report",
    "report",
]

# Where a model that is not a GraphModule (its own forward could not be traced; its
# submodules were compiled in place) keeps its report.
REPORT_ATTRIBUTE = "_reconvene_report"


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """What the plan did to one conv or linear module.

    Attributes:
        in_idx: sorted int64 indices of the kept input channels (input features for a
            Linear) of the original module.
        out_idx: sorted int64 indices of the kept output channels.
        in_channels: the original module's input channels (features).
        out_channels: the original module's output channels (features).
        density: fraction of the module's weights inside the global unstructured PaI
            mask at the budget (SensitivityPass).
        sensitivity: ``density`` relative to the global density (Reconvene's PSE).
        narrowed: whether any input or output channel was removed.
        params_before, params_after: parameters of the module (weight and bias).
        macs_before, macs_after: multiply-accumulates per sample of the example inputs;
            ``macs_after`` is 0 for a ``dead`` layer. (``flops_before``/``flops_after``
            are their deprecated spellings, removed in the next release.)
        selected: the PSE selected the layer (``sensitivity < 1``).
        masked: the layer keeps its unstructured mask (``composite=True``).
        nonzero_after: ``params_after`` less the weights its mask holds at zero.
        dead: the layer computes nothing from its input: all its kept weights are zero
            (fully masked) or it kept no input or output channel, so its output is its
            bias alone. It stays in the model, named by a
            :class:`~reconvene_fx.errors.LayerCollapseWarning`; its MACs count as no work.
    """

    in_idx: torch.Tensor
    out_idx: torch.Tensor
    in_channels: int
    out_channels: int
    density: float
    sensitivity: float
    narrowed: bool
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    selected: bool = False
    masked: bool = False
    nonzero_after: int = -1
    dead: bool = False

    flops_before = RenamedAttribute("macs_before")
    flops_after = RenamedAttribute("macs_after")

    def __post_init__(self) -> None:
        if self.nonzero_after < 0:
            object.__setattr__(self, "nonzero_after", self.params_after)

    @property
    def kept(self) -> float:
        """Fraction of the module's parameters physically kept."""
        return self.params_after / max(self.params_before, 1)

    @property
    def kept_density(self) -> float:
        """Fraction of the module's parameters kept nonzero (``nonzero_after`` over
        ``params_before``): what to compare with ``density``, the PaI mask's share."""
        return self.nonzero_after / max(self.params_before, 1)


@dataclass(frozen=True)
class SubmodulePlan:
    """One submodule of a model whose own ``forward`` torch.fx could not trace: compiled
    in place (its input and output channels kept) or left as it was.

    Attributes:
        compiled: whether it was compiled (it is a ``GraphModule`` in the result).
        kind: the class name of the original submodule.
        params_before, params_after: its parameters in the original model and in the
            result (equal for one left as it was).
        note: why it was left (``"no parameters"``, ``"not called on the example
            inputs"``, the trace error), or how it was compiled (``"called 5 times;
            compiled for its first call's inputs"``).
    """

    compiled: bool
    kind: str
    params_before: int
    params_after: int
    note: str = ""


@dataclass(frozen=True, eq=False)
class PruningReport:
    """Totals and per-layer plans of one compilation (see :func:`report`).

    ``params_*`` count every parameter of the model (shared ones once); ``macs_*`` count
    multiply-accumulates of conv and linear layers per sample: on the example inputs,
    divided by their batch size ``batch_size``; ``macs_after`` leaves out the ``dead``
    layers (``LayerPlan.dead``: all kept weights zero, their output is their bias alone),
    which do no useful work. ``layers`` is keyed
    by the qualified module name in the original model. ``approximate`` names the nodes
    where pruning changes values (LayerNorm/GroupNorm statistics) instead of only removing
    them; ``verify`` can then check shapes only. ``budget``, ``method``, ``strategy``,
    ``reinit`` and ``composite`` are what compile was asked for. ``nonzero_after`` is
    ``params_after`` less the weights composite masks hold at zero (equal without masks);
    with ``composite=True`` the params budget bounds it. ``global_density`` is the fraction
    of conv/linear weights inside the PaI mask. ``scoring_batches`` is how many batches of
    ``data=`` the scorer read (None without ``data``; see ``max_batches`` of
    :class:`~reconvene_fx.config.CompileConfig`). ``latency_before``/``latency_after`` are the
    planner's measurements (only for latency budgets). ``leaves`` names the submodules
    tracing made leaves (and why); ``decisions`` lists what tracing answered for the
    example inputs (a branch on a shape, a length): the compiled graph is that path.

    ``submodules`` is empty unless the model's own ``forward`` could not be traced and its
    largest traceable submodules were compiled in place: then it holds a
    :class:`SubmodulePlan` for each of them and for each part left as it was, keyed by
    qualified name (a module whose forward could not be traced either is listed with its
    own parameters only, if it has any; ``""`` is the model). Their ``params_before`` add
    up to the model's. ``params_*`` are then the whole model's, ``macs_*`` and ``layers``
    those of the compiled submodules (named as in the model).

    ``flops_before``, ``flops_after`` and ``flops_ratio`` are deprecated spellings of the
    ``macs_*`` names (a ``DeprecationWarning``; removed in the next release).
    """

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    layers: dict[str, LayerPlan] = field(default_factory=dict)
    approximate: dict[str, str] = field(default_factory=dict)
    budget: Any = None
    method: str = ""
    strategy: str = ""
    reinit: bool = False
    composite: bool = False
    nonzero_after: int = -1
    global_density: float = 1.0
    latency_before: float | None = None
    latency_after: float | None = None
    leaves: dict[str, str] = field(default_factory=dict)
    decisions: tuple[str, ...] = ()
    batch_size: int = 1
    scoring_batches: int | None = None
    submodules: dict[str, SubmodulePlan] = field(default_factory=dict)

    flops_before = RenamedAttribute("macs_before")
    flops_after = RenamedAttribute("macs_after")
    flops_ratio = RenamedAttribute("macs_ratio")

    def __post_init__(self) -> None:
        if self.nonzero_after < 0:
            object.__setattr__(self, "nonzero_after", self.params_after)

    @property
    def params_ratio(self) -> float:
        return self.params_after / max(self.params_before, 1)

    @property
    def nonzero_ratio(self) -> float:
        return self.nonzero_after / max(self.params_before, 1)

    @property
    def latency_ratio(self) -> float | None:
        if self.latency_before is None or self.latency_after is None:
            return None
        return self.latency_after / self.latency_before

    @property
    def selected(self) -> list[str]:
        """Layers the Pruning Sensitivity Evaluator selected (density below global)."""
        return [name for name, lp in self.layers.items() if lp.selected]

    @property
    def dead(self) -> list[str]:
        """Layers that compute nothing from their input (``LayerPlan.dead``)."""
        return [name for name, lp in self.layers.items() if lp.dead]

    @property
    def compiled(self) -> list[str]:
        """Submodules compiled in place (empty when the whole model was traced)."""
        return [name for name, sp in self.submodules.items() if sp.compiled]

    @property
    def left(self) -> list[str]:
        """Parts left as they were when submodules were compiled in place."""
        return [name for name, sp in self.submodules.items() if not sp.compiled]

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / max(self.macs_before, 1)

    def summary(self) -> str:
        """One line with the totals.

        Example:
            >>> PruningReport(100, 40, 1000, 300).summary()
            'params 100 -> 40 (40.0%), MACs 1,000 -> 300 (30.0%)'
        """
        text = (
            f"params {self.params_before:,} -> {self.params_after:,} "
            f"({100 * self.params_ratio:.1f}%), MACs {self.macs_before:,} -> "
            f"{self.macs_after:,} ({100 * self.macs_ratio:.1f}%)"
        )
        if self.nonzero_after != self.params_after:
            text += f", nonzero {self.nonzero_after:,} ({100 * self.nonzero_ratio:.1f}%)"
        if self.latency_ratio is not None:
            text += f", latency {100 * self.latency_ratio:.1f}%"
        if self.submodules:
            text += f", {len(self.compiled)} submodules compiled in place"
        return text

    def format_table(self, *, only_narrowed: bool = False) -> str:
        """A per-layer table: widths before/after, params, MACs per sample, the PaI density,
        the density kept (nonzero parameters over the original ones), sensitivity, ``PSE``
        (selected), ``mask`` (composite), ``dead`` (computes only its bias: see
        :attr:`LayerPlan.dead`), then the totals."""
        header = (
            "layer", "in", "out", "params", "MACs", "density", "kept", "sens", "PSE", "mask",
            "dead",
        )  # fmt: skip
        rows = [header]
        for name, lp in self.layers.items():
            if only_narrowed and not lp.narrowed:
                continue
            rows.append(
                (
                    name,
                    f"{lp.in_channels}->{lp.in_idx.numel()}",
                    f"{lp.out_channels}->{lp.out_idx.numel()}",
                    f"{lp.params_before:,}->{lp.params_after:,}",
                    f"{lp.macs_before:,}->{lp.macs_after:,}",
                    f"{lp.density:.3f}",
                    f"{lp.kept_density:.3f}",
                    f"{lp.sensitivity:.2f}",
                    "yes" if lp.selected else "",
                    "yes" if lp.masked else "",
                    "yes" if lp.dead else "",
                )
            )
        lines = format_rows(rows)
        lines.append(self.summary())
        if (n := self.scoring_batches) is not None:
            lines.append(f"scored by {self.method} on {n} batch{'' if n == 1 else 'es'} of data")
        lines += [f"dead (output is its bias alone, MACs not counted): {n}" for n in self.dead]
        lines += [f"leaf (not pruned through): {n}: {why}" for n, why in self.leaves.items()]
        lines += [f"traced for the example inputs: {d}" for d in self.decisions]
        lines += [_submodule_line(name, sp) for name, sp in self.submodules.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists instead of tensors), e.g. for JSON."""
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "nonzero_after": self.nonzero_after,
            "latency_before": self.latency_before,
            "latency_after": self.latency_after,
            "budget": _budget_dict(self.budget),
            "global_density": self.global_density,
            "method": self.method,
            "strategy": self.strategy,
            "composite": self.composite,
            "reinit": self.reinit,
            "approximate": dict(self.approximate),
            "leaves": dict(self.leaves),
            "decisions": list(self.decisions),
            "batch_size": self.batch_size,
            "scoring_batches": self.scoring_batches,
            "submodules": {name: asdict(sp) for name, sp in self.submodules.items()},
            "layers": {
                name: {
                    "in_channels": lp.in_channels,
                    "out_channels": lp.out_channels,
                    "in_kept": int(lp.in_idx.numel()),
                    "out_kept": int(lp.out_idx.numel()),
                    "density": lp.density,
                    "kept_density": lp.kept_density,
                    "sensitivity": lp.sensitivity,
                    "narrowed": lp.narrowed,
                    "selected": lp.selected,
                    "masked": lp.masked,
                    "nonzero_after": lp.nonzero_after,
                    "dead": lp.dead,
                    "params_before": lp.params_before,
                    "params_after": lp.params_after,
                    "macs_before": lp.macs_before,
                    "macs_after": lp.macs_after,
                }
                for name, lp in self.layers.items()
            },
        }


def _submodule_line(name: str, sp: SubmodulePlan) -> str:
    """``compiled in place: backbone (BackboneWithFPN): params 4,439,344 -> 2,101,212``."""
    what = "compiled in place" if sp.compiled else "left as it was"
    params = (
        f"params {sp.params_before:,} -> {sp.params_after:,}" if sp.compiled
        else f"params {sp.params_before:,}"
    )  # fmt: skip
    note = f"; {sp.note}" if sp.note else ""
    return f"{what}: {name or '(model)'} ({sp.kind}): {params}{note}"


def _budget_dict(budget: Any) -> dict[str, float | None] | None:
    """A Budget (or a float: the params fraction) as ``{"params": ..., ...}``."""
    if budget is None:
        return None
    if isinstance(budget, (int, float)):
        return {"params": float(budget), "macs": None, "latency": None}
    return dict(budget.limits())


def report(gm: torch.nn.Module) -> PruningReport:
    """The :class:`PruningReport` of a model returned by :func:`reconvene_fx.compile`.

    That is a ``GraphModule`` (the report is at ``gm.meta["reconvene.report"]``) or, when
    the model's own ``forward`` could not be traced, a copy of the model with submodules
    compiled in place (the report lists them in ``submodules``; each compiled submodule
    carries its own report too).

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = rfx.compile(net, budget=0.6, example_inputs=(torch.randn(1, 3, 8, 8),))
        >>> rep = rfx.report(gm)
        >>> rep.params_after <= 0.6 * rep.params_before
        True
    """
    meta = getattr(gm, "meta", None)
    rep = meta.get(REPORT) if isinstance(meta, dict) else None
    if rep is None:
        rep = getattr(gm, REPORT_ATTRIBUTE, None)
    if not isinstance(rep, PruningReport):
        raise ReconveneError(
            "this module carries no pruning report; pass a model returned by reconvene_fx.compile"
        )
    return rep


def attach_report(model: torch.nn.Module, rep: PruningReport) -> None:
    """Give ``model`` (not a ``GraphModule``) the report :func:`report` returns for it.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> attach_report(net, PruningReport(6, 6, 4, 4))
        >>> report(net).params_after
        6
    """
    object.__setattr__(model, REPORT_ATTRIBUTE, rep)
