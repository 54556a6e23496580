"""Keys under which the passes write ``node.meta`` and ``gm.meta``, and their value types.

Every key is defined here once. Values are frozen dataclasses; tensors inside them are
never modified after they are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, cast

import torch
import torch.fx

from ._table import format_rows
from .errors import CompilerError, PassOrderError

__all__ = [
    "APPROXIMATE",
    "AUTO_LEAVES",
    "CHANNELS",
    "KEEP",
    "LIFTED",
    "REPORT",
    "SENSITIVITY",
    "SENSITIVITY_TABLE",
    "SIZE_PEERS",
    "TENSOR_META",
    "TRACE_DECISIONS",
    "VALUE",
    "ChannelInfo",
    "ChannelKeep",
    "ConcreteValue",
    "LayerSensitivity",
    "OWNED",
    "PLAN",
    "PinCause",
    "PlanSummary",
    "SHRINK",
    "SOURCE",
    "BORROWED",
    "BorrowedTensors",
    "LayerChange",
    "MetaKey",
    "SensitivityTable",
    "ShrinkRecord",
]

T = TypeVar("T")


class MetaKey(str, Generic[T]):
    """A ``node.meta`` or ``gm.meta`` key that knows the type of its value and where it lives.

    It *is* the key string (``node.meta[CHANNELS]`` and ``node.meta["reconvene.channels"]``
    are the same entry), so plain dict access keeps working; :meth:`get` adds the check
    that the entry is there and has the declared type. Passes declare the keys they read
    and write (:class:`~reconvene_fx.passes.ReconvenePass`), and a pipeline is checked
    against those declarations before it runs.

    Attributes:
        where: ``"graph"`` (``gm.meta``) or ``"node"`` (``node.meta`` of some nodes).
        value_type: what a value is (an instance check; ``object`` accepts anything).
        doc: one line on what the value says.

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.Identity())
        >>> PLAN.written_in(gm), str(PLAN), PLAN.where
        (False, 'reconvene.plan', 'graph')
        >>> gm.meta[PLAN] = PlanSummary("uniform", False, 0, 0)
        >>> PLAN.get(gm).strategy, PLAN.written_in(gm), gm.meta["reconvene.plan"] is PLAN.get(gm)
        ('uniform', True, True)
    """

    where: Literal["graph", "node"]
    value_type: type | tuple[type, ...]
    doc: str

    def __new__(
        cls,
        name: str,
        value_type: type | tuple[type, ...],
        where: Literal["graph", "node"],
        doc: str = "",
    ) -> MetaKey[T]:
        key = super().__new__(cls, name)
        key.where, key.value_type, key.doc = where, value_type, doc
        return key

    # a copied or pickled meta dict holds the plain string (equal, same hash)
    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        return (str, (str(self),))

    def __copy__(self) -> MetaKey[T]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> MetaKey[T]:
        return self

    @property
    def type_name(self) -> str:
        """The value type's name (``"ChannelInfo"``; several joined with ``" | "``)."""
        types = self.value_type if isinstance(self.value_type, tuple) else (self.value_type,)
        return " | ".join(t.__name__ for t in types)

    @property
    def place(self) -> str:
        """Where it is written, as code: ``gm.meta["reconvene.plan"]``."""
        return f'{"gm" if self.where == "graph" else "node"}.meta["{self}"]'

    def get(self, holder: torch.fx.GraphModule | torch.fx.Node) -> T:
        """The value on ``holder`` (a graph module for graph keys, a node for node keys).

        Raises:
            PassOrderError: when ``holder`` has no such entry (the pass that writes it has
                not run).
            CompilerError: when the entry is not a ``value_type``.
        """
        if self not in holder.meta:
            where = "gm.meta" if self.where == "graph" else f"node {holder}'s meta"
            raise PassOrderError(
                f"{where} has no {str(self)!r}: the pass that writes it has not run"
            )
        value = holder.meta[self]
        if not isinstance(value, self.value_type):
            raise CompilerError(
                f"{self.place} holds a {type(value).__name__}, not a {self.type_name}"
            )
        return cast(T, value)

    def find(self, holder: torch.fx.GraphModule | torch.fx.Node) -> T | None:
        """The value on ``holder`` when there is one of the declared type, else None (for
        keys a pass reads only when present)."""
        value = getattr(holder, "meta", {}).get(self)
        return cast(T, value) if isinstance(value, self.value_type) else None

    def written_in(self, gm: torch.fx.GraphModule) -> bool:
        """Whether ``gm`` holds this key: in ``gm.meta``, or in the meta of some node."""
        if self.where == "graph":
            return self in getattr(gm, "meta", {})
        return any(self in node.meta for node in gm.graph.nodes)


@dataclass(frozen=True)
class ConcreteValue:
    """A small non-tensor value a node produced on the example inputs (a size, an int)."""

    value: Any


@dataclass(frozen=True, eq=False)
class ChannelInfo:
    """How the channel dimension of one tensor value is coupled to the rest of the graph.

    Attributes:
        space: id of the channel space; nodes whose channels are the same (pass-through ops)
            share a space.
        dim: which dimension of the tensor holds the channels.
        size: number of channels.
        atoms: int64 ``[size]``; channels with the same atom id must be pruned together.
        pinned: bool ``[size]``; channels that may never be pruned (they reach an output, an
            op without a rule, a constant, ...).
        group: id of the coupled group (connected channel spaces) this space belongs to.
        pin_cause: int64 ``[size]``; per channel, the index into ``causes`` of the first
            pin that reached it (-1 where the channel is free); None when the pins were
            recorded without their causes.
        causes: the :class:`PinCause` of every pin of the graph (one tuple shared by all
            the channel infos of a graph).
    """

    space: int
    dim: int
    size: int
    atoms: torch.Tensor
    pinned: torch.Tensor
    group: int
    pin_cause: torch.Tensor | None = None
    causes: tuple[PinCause, ...] = ()

    def pinned_by(self, channel: int) -> PinCause | None:
        """Why ``channel`` may never be pruned (the first pin that reached it), or None.

        Example:
            >>> why = PinCause("cumsum", "function torch.cumsum", "no channel rule for it")
            >>> info = ChannelInfo(0, 1, 2, torch.arange(2), torch.tensor([True, False]),
            ...                    0, pin_cause=torch.tensor([0, -1]), causes=(why,))
            >>> info.pinned_by(0).node, info.pinned_by(1)
            ('cumsum', None)
        """
        if self.pin_cause is None:
            return None
        index = int(self.pin_cause[channel])
        return self.causes[index] if index >= 0 else None


@dataclass(frozen=True)
class PinCause:
    """Why channels may never be pruned: the node that pinned them and the reason.

    Attributes:
        node: name of the graph node that pinned them ("" for a cause of the plan that no
            node holds, such as the ``min_width`` floor).
        op: what that node is (``"function torch.cumsum"``, ``"module head of type
            Linear"``, ``"the graph output"``).
        reason: why it pins them (``"no channel rule for function torch.cumsum"``).
        source: the line of the model's code that made the node (``"net.py:12 (y =
            x.cumsum(1))"``), when the trace recorded stack traces; else None.
        after: for an op that gives its output new pinned channels (it cannot pass its
            input's channels through) while its input was pinned already: the cause
            that pinned the input first (the other place the model would have to change).

    Example:
        >>> print(PinCause("cumsum", "function torch.cumsum", "no channel rule for it",
        ...                "net.py:12 (y = x.cumsum(1))"))
        node 'cumsum' (function torch.cumsum) at net.py:12 (y = x.cumsum(1)): no channel rule for it
    """

    node: str
    op: str
    reason: str
    source: str | None = None
    after: PinCause | None = None

    @property
    def why(self) -> str:
        """The reason, with the cause that pinned the node's input first if there is one."""
        return f"{self.reason}; its input was pinned already: {self.after}" if self.after \
            else self.reason  # fmt: skip

    def __str__(self) -> str:
        where = f" at {self.source}" if self.source else ""
        if not self.node:
            return f"{self.why}{where}"
        return f"node {self.node!r} ({self.op}){where}: {self.why}"


@dataclass(frozen=True, eq=False)
class ChannelKeep:
    """Which channels of a tensor value the plan keeps: sorted indices into ``size``."""

    index: torch.Tensor
    size: int

    @property
    def narrowed(self) -> bool:
        return int(self.index.numel()) < self.size


@dataclass(frozen=True, eq=False)
class LayerSensitivity:
    """What the PaI scores say about one conv or linear module (written by SensitivityPass).

    Attributes:
        name: the module's qualified name.
        density: fraction of the module's weights inside the global top-k unstructured mask.
        sensitivity: ``density`` relative to the global density (PSE); below 1 means the
            PaI method pruned this layer harder than the model as a whole.
        selected: ``sensitivity < 1``: the Pruning Sensitivity Evaluator picks this layer to
            be narrowed structurally.
        kept: weights inside the mask.
        total: weights of the module.
        mask: bool, the weight's shape: the unstructured mask of this module; None when
            SensitivityPass was asked not to keep it (``compile`` keeps it for composite
            plans only; :func:`reconvene_fx.analyze` always keeps it).
        out_mass: float64 ``[out_channels]``: summed scores per output channel.
        in_mass: float64 ``[in_channels]`` (input features of a Linear): summed scores per
            input channel, over all groups of a grouped conv.
        scores: the weight's PaI scores (its shape) when SensitivityPass was asked to keep
            them (composite plans re-threshold them), else None.
    """

    name: str
    density: float
    sensitivity: float
    selected: bool
    kept: int
    total: int
    mask: torch.Tensor | None
    out_mass: torch.Tensor
    in_mass: torch.Tensor
    scores: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class PlanSummary:
    """What PlanPass decided, model-wide (``gm.meta[PLAN]``).

    Attributes:
        strategy: the width-allocation strategy used.
        composite: whether the params budget counted masked weights of untouched layers
            as removed.
        removed_atoms: coupled channel sets removed.
        removable_atoms: coupled channel sets that could have been removed.
        latency_before, latency_after: the latency cost of the model before and of the
            chosen plan (seconds, or the unit of a user ``latency_fn``); None unless the
            budget limits latency.
        masks: composite plans: ``{module_name: bool mask}`` for the conv/linear modules
            that keep all their output channels, shaped like their sliced weights (empty
            otherwise).
        mask_mode: how those masks fill the params budget: ``"as_is"`` (the PaI masks),
            ``"thin"`` (each thinned by one common factor) or ``"rethreshold"`` (one new
            global threshold); see :mod:`reconvene_fx.passes._composite`.
        price: what a channel cost the plan: ``"macs"``, or ``"latency"`` (its group's
            seconds per MAC on the latency backend; see :mod:`reconvene_fx.latency.price`).
    """

    strategy: str
    composite: bool
    removed_atoms: int
    removable_atoms: int
    latency_before: float | None = None
    latency_after: float | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    mask_mode: str = "as_is"
    price: str = "macs"


@dataclass(frozen=True, eq=False)
class LayerChange:
    """What ShrinkPass did to one conv/linear module (``ShrinkRecord.layers[name]``).

    Attributes:
        in_channels, out_channels: the module's channel counts before (features for a
            Linear).
        in_idx, out_idx: sorted int64 indices of the kept input/output channels.
        params_before, params_after: the module's own parameters.
        macs_before, macs_after: multiply-accumulates of all its calls on the example
            inputs.
    """

    in_channels: int
    out_channels: int
    in_idx: torch.Tensor
    out_idx: torch.Tensor
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass(frozen=True, eq=False)
class ShrinkRecord:
    """What ShrinkPass changed, model-wide (``gm.meta[SHRINK]``; what
    :func:`~reconvene_fx.shrinking.shrink_layers` returns).

    Attributes:
        layers: every conv/linear module, by qualified name, in graph order.
        params_before: parameters of the graph module before shrinking.
        macs_before, macs_after: conv/linear multiply-accumulates before and after.
        approximate: ``{node name: reason}`` where narrowing changes values (LayerNorm or
            GroupNorm statistics) instead of only removing them.
        reinit: whether narrowed layers were re-initialized.
        sliced: the conv/linear/norm modules that were sliced, by qualified name, in
            graph order (empty when the plan narrowed none).
    """

    layers: dict[str, LayerChange]
    params_before: int
    macs_before: int
    macs_after: int
    approximate: dict[str, str] = field(default_factory=dict)
    reinit: bool = False
    sliced: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class BorrowedTensors:
    """The parameters and buffers a traced graph module shares with the caller's model
    (``gm.meta[BORROWED]``, written by :func:`reconvene_fx.trace`). Passes never write into
    them; the last pass of :func:`reconvene_fx.compile` copies those still in use."""

    tensors: tuple[torch.Tensor, ...]

    def ids(self) -> set[int]:
        return {id(t) for t in self.tensors}


@dataclass(frozen=True, eq=False)
class SensitivityTable:
    """What a PaI method's global unstructured mask does to each conv/linear layer.

    ``layers[name]`` is a :class:`LayerSensitivity` (``density``, ``sensitivity``,
    ``selected``, ``kept``, ``total``, ``mask``), keyed by qualified module name in
    execution order. ``global_density`` is the fraction of all prunable weights the mask
    keeps. ``batches_read`` is how many batches of ``data=`` were scored (None when the
    scorer ran without ``data``). ``str(table)`` prints it; :meth:`to_list` gives plain
    dicts.
    """

    layers: dict[str, LayerSensitivity] = field(default_factory=dict)
    global_density: float = 1.0
    budget: Any = None
    method: str = ""
    batches_read: int | None = None

    @property
    def selected(self) -> list[str]:
        """Names of the layers the Pruning Sensitivity Evaluator selects (density below the
        global density)."""
        return [name for name, layer in self.layers.items() if layer.selected]

    def to_list(self) -> list[dict[str, Any]]:
        """One plain dict per layer (no tensors), e.g. for JSON or a DataFrame.

        Example:
            >>> SensitivityTable({}, 0.5).to_list()
            []
        """
        return [
            {
                "layer": name,
                "density": lay.density,
                "sensitivity": lay.sensitivity,
                "selected": lay.selected,
                "kept": lay.kept,
                "total": lay.total,
            }
            for name, lay in self.layers.items()
        ]

    def format_table(self) -> str:
        """Aligned columns: layer, weights kept/total, density, sensitivity, selected."""
        header = ("layer", "kept/total", "density", "sensitivity", "selected")
        rows = [header] + [
            (name, f"{lay.kept:,}/{lay.total:,}", f"{lay.density:.4f}",
             f"{lay.sensitivity:.3f}", "yes" if lay.selected else "")
            for name, lay in self.layers.items()
        ]  # fmt: skip
        lines = format_rows(rows)
        n_sel = len(self.selected)
        n = self.batches_read
        scored = "" if n is None else f" on {n} batch{'' if n == 1 else 'es'} of data"
        lines.append(
            f"method {self.method}{scored}, global density {self.global_density:.4f}; "
            f"{n_sel} of {len(self.layers)} layers below it (selected)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


TENSOR_META: MetaKey[Any] = MetaKey(
    "tensor_meta", object, "node", "shape and dtype (torch.fx ShapeProp's own key)"
)
VALUE: MetaKey[ConcreteValue] = MetaKey(
    "reconvene.value", ConcreteValue, "node", "a non-tensor result (int, torch.Size, ...)"
)
CHANNELS: MetaKey[Any] = MetaKey(
    "reconvene.channels",
    (ChannelInfo, tuple),
    "node",
    "ChannelInfo, or a tuple of them for tuple values",
)
APPROXIMATE: MetaKey[str] = MetaKey(
    "reconvene.approximate", str, "node", "why pruning through this node is not exact"
)
KEEP: MetaKey[Any] = MetaKey(
    "reconvene.keep",
    (ChannelKeep, tuple),
    "node",
    "ChannelKeep, or a tuple of them for tuple values",
)
REPORT: MetaKey[Any] = MetaKey("reconvene.report", object, "graph", "the PruningReport")
SENSITIVITY: MetaKey[LayerSensitivity] = MetaKey(
    "reconvene.sensitivity", LayerSensitivity, "node", "LayerSensitivity of a conv/linear module"
)
SENSITIVITY_TABLE: MetaKey[SensitivityTable] = MetaKey(
    "reconvene.sensitivity_table", SensitivityTable, "graph", "SensitivityTable of every layer"
)
PLAN: MetaKey[PlanSummary] = MetaKey(
    "reconvene.plan", PlanSummary, "graph", "PlanSummary: what PlanPass decided"
)
SHRINK: MetaKey[ShrinkRecord] = MetaKey(
    "reconvene.shrink", ShrinkRecord, "graph", "ShrinkRecord: what ShrinkPass changed"
)
BORROWED: MetaKey[BorrowedTensors] = MetaKey(
    "reconvene.borrowed", BorrowedTensors, "graph", "BorrowedTensors: tensors shared with the model"
)
AUTO_LEAVES: MetaKey[dict[str, str]] = MetaKey(
    "reconvene.auto_leaves", dict, "graph", "{module: why} made leaves by trace"
)
TRACE_DECISIONS: MetaKey[list[str]] = MetaKey(
    "reconvene.trace_decisions", list, "graph", "guards answered for the example inputs"
)
SOURCE: MetaKey[str] = MetaKey(
    "reconvene.source", str, "node", '"file.py:12 (code)" of the model code that made it'
)
OWNED: MetaKey[bool] = MetaKey(
    "reconvene.owned", bool, "graph", "True when the submodules are not shared with a model"
)
LIFTED: MetaKey[dict[str, Any]] = MetaKey(
    "reconvene.lifted", dict, "graph", "{module: LiftedLayer}: functional layers made modules"
)
SIZE_PEERS: MetaKey[tuple[Any, ...]] = MetaKey(
    "reconvene.size_peers",
    tuple,
    "node",
    "of a reshape: tensors whose channel counts its sizes read as its own",
)
