"""The passes of :func:`reconvene_fx.compile`, in order; the checks and the table that follow
from what each declares it reads and writes; a runner that keeps error types."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch.fx
from torch.fx.passes.infra.pass_base import PassBase

from ..budget import Budget, as_budget
from ..config import CompileConfig
from ..errors import PassOrderError, ReconveneError
from ..meta import MetaKey
from ._base import ReconvenePass, writer_name
from .channels import ChannelGroupPass
from .detach import DetachPass
from .lift import LiftLayersPass
from .masks import MaskPass
from .plan import PlanPass
from .report import ReportPass
from .sensitivity import SensitivityPass
from .shape import ShapePass
from .shrink import ShrinkPass

__all__ = ["check_order", "compile_passes", "pass_table", "passes_for", "run_passes"]


def compile_passes(
    budget: float | Budget,
    example_inputs: tuple[Any, ...],
    config: CompileConfig | None = None,
) -> list[PassBase]:
    """The passes :func:`reconvene_fx.compile` runs, in order, for your own ``PassManager``.

    ShapePass (on meta tensors) -> LiftLayersPass -> ChannelGroupPass -> SensitivityPass
    (keeping the per-layer masks only for composite plans) -> PlanPass ->
    ShrinkPass -> MaskPass -> ReportPass -> DetachPass. Run on ``reconvene_fx.trace(model)``
    they give the model and report ``compile`` gives. ``config.rules`` and ``config.layers``
    (the rule and layer-handler registries) reach every pass that looks either up.

    Example:
        >>> import torch, reconvene_fx as rfx
        >>> from torch.fx.passes.infra.pass_manager import PassManager
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> x = torch.randn(1, 3, 8, 8)
        >>> gm = PassManager(compile_passes(0.5, (x,)))(rfx.trace(net)).graph_module
        >>> rfx.report(gm).params_after <= 0.5 * rfx.report(gm).params_before
        True
    """
    budget = as_budget(budget)
    config = config or CompileConfig()
    example_inputs = tuple(example_inputs)
    return [
        ShapePass(example_inputs, fake=True),
        LiftLayersPass(),
        ChannelGroupPass(config.rules),
        # the masks (a bool per weight) only for composite plans, which read them
        SensitivityPass(budget, example_inputs=example_inputs, config=config, keep_masks=False),
        PlanPass(budget, example_inputs=example_inputs, config=config),
        ShrinkPass(
            reinit=config.reinit, seed=config.seed, init_fn=config.init_fn, layers=config.layers
        ),
        MaskPass(),
        ReportPass(layers=config.layers),
        DetachPass(),
    ]


def run_passes(gm: torch.fx.GraphModule, passes: Sequence[PassBase]) -> torch.fx.GraphModule:
    """Run ``passes`` in order, as torch.fx's ``PassManager`` does; return the graph module.

    Two differences, both for the caller's sake: the code is regenerated only after a pass
    that changed something and may have edited the graph (``PassManager`` recompiles after
    every pass, ~40 ms each on densenet201; our passes declare ``edits_graph = False``);
    the order is checked once, up front (:func:`check_order`); and a failure keeps its
    type: our own errors (and bad-argument errors) are re-raised
    as they are, anything else as a :class:`~reconvene_fx.errors.ReconveneError` naming
    the pass. ``PassManager(passes)`` gives the same model.

    Example:
        >>> import torch, reconvene_fx as rfx
        >>> from reconvene_fx.passes import ChannelGroupPass
        >>> run_passes(rfx.trace(torch.nn.Conv2d(3, 4, 3)), [ChannelGroupPass()])
        Traceback (most recent call last):
        ...
        reconvene_fx.errors.PassOrderError: ChannelGroupPass needs ShapePass to run first ...
    """
    check_order(passes, gm)
    for p in passes:
        try:
            result = p(gm)
        except (ReconveneError, ValueError, TypeError, NotImplementedError):
            raise
        except Exception as exc:
            raise ReconveneError(f"{type(p).__name__} failed: {exc}") from exc
        if result is not None:
            gm = result.graph_module
            if result.modified and getattr(p, "edits_graph", True):
                gm.recompile()
    return gm


def _declared(p: object, what: str) -> tuple[MetaKey[Any], ...]:
    """A pass's declared keys (none for a pass that is not a :class:`ReconvenePass`)."""
    return tuple(getattr(p, what, ())) if isinstance(p, ReconvenePass) else ()


def check_order(passes: Sequence[PassBase], gm: torch.fx.GraphModule | None = None) -> None:
    """Raise :class:`~reconvene_fx.errors.PassOrderError` if a pass would run before what it
    reads is written: by an earlier pass of ``passes``, or already in ``gm``.

    Only the declarations are read (``reads``, ``uses`` and ``writes`` of each
    :class:`~reconvene_fx.passes.ReconvenePass`; other passes declare nothing), so it costs
    nothing and fails before any work. A key a pass ``uses`` when present must not be
    written by a later pass. :func:`run_passes` calls it.

    Example:
        >>> from reconvene_fx.passes import PlanPass, ShapePass, ChannelGroupPass
        >>> x = torch.randn(1, 3, 8, 8)
        >>> check_order([ShapePass((x,)), ChannelGroupPass(), PlanPass(0.5, example_inputs=(x,))])
        Traceback (most recent call last):
        ...
        reconvene_fx.errors.PassOrderError: PlanPass needs SensitivityPass to run first ...
    """
    declared = {
        str(key): key
        for p in passes
        for key in _declared(p, "reads") + _declared(p, "uses") + _declared(p, "writes")
    }
    have = {name for name, key in declared.items() if gm is not None and key.written_in(gm)}
    for i, p in enumerate(passes):
        name = type(p).__name__
        for key in _declared(p, "reads"):
            if str(key) not in have:
                raise PassOrderError(
                    f"{name} needs {writer_name(key)} to run first (it reads {key.place}, "
                    "which no pass before it writes); run the passes in the order of "
                    "reconvene_fx.passes.compile_passes(...)"
                )
        later = {str(k): type(q).__name__ for q in passes[i + 1 :] for k in _declared(q, "writes")}
        for key in _declared(p, "uses"):
            if str(key) in later and str(key) not in have:
                raise PassOrderError(
                    f"{name} reads {key.place}, which {later[str(key)]} writes after it; "
                    f"run {later[str(key)]} first"
                )
        have |= {str(key) for key in _declared(p, "writes")}


def passes_for(keys: Sequence[MetaKey[Any]], passes: Sequence[PassBase]) -> list[PassBase]:
    """The passes of ``passes`` (in their order) that writing ``keys`` needs: their writers,
    and the writers of what those read or use, and so on.

    :func:`reconvene_fx.analyze` runs ``passes_for([SENSITIVITY_TABLE],
    compile_passes(...))``: tracing's shapes, lifted layers and the scores, no plan.

    Example:
        >>> from reconvene_fx.meta import SENSITIVITY_TABLE
        >>> x = torch.randn(1, 3, 8, 8)
        >>> [type(p).__name__ for p in passes_for([SENSITIVITY_TABLE], compile_passes(0.5, (x,)))]
        ['ShapePass', 'LiftLayersPass', 'SensitivityPass']
    """
    wanted = {str(key) for key in keys}
    chosen: list[PassBase] = []
    for p in reversed(passes):
        if wanted & {str(k) for k in _declared(p, "writes")}:
            chosen.append(p)
            wanted |= {str(k) for k in _declared(p, "reads") + _declared(p, "uses")}
    return chosen[::-1]


def pass_table(passes: Sequence[PassBase] | None = None) -> str:
    """A Markdown table of ``passes`` (default: those of :func:`compile_passes`) with what
    each reads and writes, from their declarations; the README's pass table is this one.
    Node keys (in ``node.meta``) are shown by name, graph keys as ``gm.meta["name"]``.

    Example:
        >>> print(pass_table().splitlines()[2])  # doctest: +ELLIPSIS
        | `ShapePass` | | `tensor_meta`, `reconvene.value` | Runs the graph once on ...
    """
    if passes is None:
        passes = compile_passes(0.5, ())
    rows = ["| pass | reads | writes | what |", "| --- | --- | --- | --- |"]
    for p in passes:
        cls = type(p)
        reads = [_cell(k) for k in _declared(p, "reads")]
        reads += [f"{_cell(k)} if present" for k in _declared(p, "uses")]
        writes = [_cell(k) for k in _declared(p, "writes")]
        writes += [f"{_cell(k)} (updated)" for k in _declared(p, "updates")]
        if cls.edits_graph:
            writes.append("graph nodes")
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        summary = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"`\1`", summary).replace("``", "`")
        cells = [f"`{cls.__name__}`", ", ".join(reads), ", ".join(writes), summary]
        rows.append(("| " + " | ".join(cells) + " |").replace("|  |", "| |"))
    return "\n".join(rows)


def _cell(key: MetaKey[Any]) -> str:
    """A node key as its name, a graph key as ``gm.meta["name"]`` (the table's shorthand)."""
    return f"`{key.place}`" if key.where == "graph" else f"`{key}`"
