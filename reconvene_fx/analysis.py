"""``analyze``: the per-layer PaI sensitivity table, without changing the model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from ._table import format_rows
from .budget import Budget, as_budget
from .meta import SENSITIVITY_TABLE, LayerSensitivity
from .scoring import get_scorer

__all__ = ["SensitivityTable", "analyze"]


@dataclass(frozen=True, eq=False)
class SensitivityTable:
    """What a PaI method's global unstructured mask does to each conv/linear layer.

    ``layers[name]`` is a :class:`~reconvene_fx.meta.LayerSensitivity` (``density``,
    ``sensitivity``, ``selected``, ``kept``, ``total``, ``mask``), keyed by qualified module
    name in execution order. ``global_density`` is the fraction of all prunable weights the
    mask keeps. ``str(table)`` prints it; :meth:`to_list` gives plain dicts.
    """

    layers: dict[str, LayerSensitivity] = field(default_factory=dict)
    global_density: float = 1.0
    budget: Budget | None = None
    method: str = ""

    @property
    def selected(self) -> list[str]:
        """Names of the layers the Pruning Sensitivity Evaluator selects (density below the
        global density)."""
        return [name for name, layer in self.layers.items() if layer.selected]

    def to_list(self) -> list[dict[str, Any]]:
        """One plain dict per layer (no tensors), e.g. for JSON or a DataFrame.

        Example:
            >>> table = SensitivityTable({}, 0.5)
            >>> table.to_list()
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
        lines.append(
            f"method {self.method}, global density {self.global_density:.4f}; "
            f"{n_sel} of {len(self.layers)} layers below it (selected)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_table()


def analyze(
    model: torch.nn.Module,
    budget: float | Budget,
    example_inputs: tuple[Any, ...] | torch.Tensor,
    *,
    method: str = "magnitude",
    targets: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
    method_options: Mapping[str, Any] | None = None,
    keep_scores: bool = False,
    leaf_modules: Sequence[Any] = (),
    concrete_args: dict[str, Any] | None = None,
) -> SensitivityTable:
    """Score ``model`` with a PaI method and rate every conv/linear layer; nothing is pruned.

    Runs only tracing and :class:`~reconvene_fx.passes.SensitivityPass`. The caller's model
    is not modified (scorers use detached copies of the weights; training flags are
    restored).

    Args:
        model: an ``nn.Module`` that ``torch.fx`` can trace.
        budget: fraction of parameters kept, or a :class:`Budget`; the mask keeps this
            fraction of the prunable (conv and linear) weights.
        example_inputs: a tuple of inputs (or one tensor).
        method: ``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow`` or a registered
            name.
        targets: class indices for SNIP/GraSP; drawn with ``seed`` when None.
        seed: seeds drawn targets and the random scorer.
        progress: progress bar on stderr for SynFlow.
        method_options: extra keyword arguments for the scorer, e.g. ``{"iterations": 20}``.
        keep_scores: also keep every weight's score (``.layers[name].scores``).
        leaf_modules, concrete_args: passed to tracing (see :func:`reconvene_fx.trace`).

    Example:
        >>> import reconvene_fx as rfx
        >>> _ = torch.manual_seed(0)
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(32, 10, 1))
        >>> table = rfx.analyze(net, 0.3, (torch.randn(2, 3, 16, 16),), method="snip")
        >>> sorted(table.layers) == ["0", "2"], abs(table.global_density - 0.3) < 0.01
        (True, True)
        >>> table.layers["0"].selected == (table.layers["0"].density < table.global_density)
        True
    """
    from .compiler import check_inputs
    from .passes import SensitivityPass
    from .tracing import trace

    budget = as_budget(budget)
    get_scorer(method)
    example_inputs = check_inputs(model, example_inputs)
    gm = trace(model, leaf_modules=leaf_modules, concrete_args=concrete_args)
    SensitivityPass(
        budget,
        example_inputs=example_inputs,
        method=method,
        targets=targets,
        seed=seed,
        progress=progress,
        options=method_options,
        keep_scores=keep_scores,
    )(gm)
    table = gm.meta[SENSITIVITY_TABLE]
    assert isinstance(table, SensitivityTable)
    return table
