"""``compile``: trace, analyse, plan and shrink a model in one call."""

from __future__ import annotations

import copy
import sys
import time
from typing import Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassBase

from .budget import Budget, as_budget
from .composite import apply_masks, masked_count, masks_of
from .config import CompileConfig
from .costs import CONV_TYPES, count_macs, count_params, layer_macs
from .errors import ReconveneError
from .meta import (
    APPROXIMATE,
    KEEP,
    PLAN,
    REPORT,
    SENSITIVITY_TABLE,
    TENSOR_META,
    ChannelKeep,
    PlanSummary,
)
from .passes import ChannelGroupPass, PlanPass, SensitivityPass, ShapePass, ShrinkPass
from .report import LayerPlan, PruningReport
from .scoring import get_scorer
from .tracing import trace

__all__ = ["check_inputs", "compile"]


def compile(
    model: torch.nn.Module,
    budget: float | Budget,
    example_inputs: tuple[Any, ...] | torch.Tensor,
    *,
    progress: bool = False,
    **options: Any,
) -> torch.fx.GraphModule:
    """Return a physically smaller ``GraphModule`` of ``model`` that fits ``budget``.

    The caller's model is not modified. Module qualified names are kept: the compact
    ``layer1.0.conv1`` is at ``layer1.0.conv1``. The result carries its
    :class:`~reconvene_fx.report.PruningReport` (see :func:`reconvene_fx.report`).

    Args:
        model: an ``nn.Module`` that ``torch.fx`` can trace.
        budget: fraction of parameters kept, in (0, 1], or a :class:`Budget`.
        example_inputs: a tuple of inputs (or one tensor) to run the model on.
        progress: print one line per step to stderr (and SynFlow's progress bar).
        **options: fields of :class:`~reconvene_fx.config.CompileConfig` (``method``,
            ``strategy``, ``composite``, ``seed``, ``round_to``, ``ignore``, ``reinit``,
            ``targets``, ``method_options``, ...).

    The steps: trace; ShapePass and ChannelGroupPass (which channels are coupled);
    SensitivityPass (score every conv/linear weight with ``method``, global top-k mask at
    the budget, per-layer density and sensitivity); PlanPass (``strategy``, default
    ``reconvene``: narrow the least sensitive layers first); ShrinkPass (slice, and with
    ``reinit=True`` re-initialize what was narrowed: RLR); with ``composite=True`` the
    untouched layers keep their masks.

    Raises:
        TraceError: the model cannot be traced.
        BudgetError: the budget is below what the unprunable layers keep.

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.BatchNorm2d(32),
        ...                           torch.nn.ReLU(), torch.nn.Conv2d(32, 10, 1))
        >>> gm = rfx.compile(net, budget=0.5, example_inputs=(torch.randn(2, 3, 16, 16),))
        >>> gm.get_submodule("0").out_channels, net[0].out_channels
        (15, 32)
    """
    budget = as_budget(budget)
    config = CompileConfig(**options)
    get_scorer(config.method)  # fail fast on an unknown method
    example_inputs = check_inputs(model, example_inputs)

    steps = _Progress(progress)
    work = copy.deepcopy(model)
    gm = trace(work, leaf_modules=config.leaf_modules, concrete_args=config.concrete_args)
    steps.done("trace")
    params_before = count_params(model)
    _run_passes(gm, ShapePass(example_inputs, fake=True), ChannelGroupPass(config.rules))
    steps.done("channel groups")
    _run_passes(
        gm,
        SensitivityPass(
            budget,
            example_inputs=example_inputs,
            method=config.method,
            targets=config.targets,
            seed=config.seed,
            progress=progress,
            options=config.method_options,
            keep_scores=config.composite,
        ),
    )
    steps.done(f"scores ({config.method})")
    _run_passes(gm, PlanPass(budget, example_inputs=example_inputs, config=config))
    steps.done(f"plan ({config.strategy})")
    flops_before = count_macs(gm)
    layers_before = _layer_shapes(gm)
    keeps = _module_keeps(gm)
    approximate = _approximations(gm)
    _run_passes(
        gm,
        ShrinkPass(reinit=config.reinit, seed=config.seed, init_fn=config.init_fn),
        ShapePass(example_inputs, fake=True),
    )
    plan = gm.meta.get(PLAN)
    if config.composite and isinstance(plan, PlanSummary):
        apply_masks(gm, plan.masks)
    steps.done("shrink")
    gm.meta[REPORT] = _build_report(
        gm, params_before, flops_before, layers_before, keeps, approximate, budget, config
    )
    return gm


def check_inputs(
    model: torch.nn.Module, example_inputs: tuple[Any, ...] | torch.Tensor
) -> tuple[Any, ...]:
    """``example_inputs`` as a tuple, after checking ``model`` and the inputs' form."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError("example_inputs must be a non-empty tuple of inputs, e.g. (x,)")
    return tuple(example_inputs)


def _run_passes(gm: torch.fx.GraphModule, *passes: PassBase) -> None:
    """Run passes in order. Like torch.fx's PassManager, a failure names the pass; unlike
    it, our own errors (and bad-argument errors) reach the caller with their type."""
    for p in passes:
        try:
            p(gm)
        except (ReconveneError, ValueError, TypeError, NotImplementedError):
            raise
        except Exception as exc:
            raise ReconveneError(f"{type(p).__name__} failed: {exc}") from exc


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()

    def done(self, step: str) -> None:
        if self.enabled:
            print(f"[reconvene_fx] {step}: {time.perf_counter() - self.start:.2f}s",
                  file=sys.stderr)  # fmt: skip


def _layer_shapes(gm: torch.fx.GraphModule) -> dict[str, tuple[int, int, int, int]]:
    """(in, out, params, MACs) of every conv/linear module."""
    shapes: dict[str, tuple[int, int, int, int]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(str(node.target))
        if isinstance(m, (*CONV_TYPES, torch.nn.Linear)) and TENSOR_META in node.meta:
            name = str(node.target)
            in_ch = m.in_channels if isinstance(m, CONV_TYPES) else m.in_features
            out_ch = m.out_channels if isinstance(m, CONV_TYPES) else m.out_features
            prev = shapes.get(name, (in_ch, out_ch, count_params(m), 0))
            shapes[name] = (*prev[:3], prev[3] + layer_macs(m, node.meta[TENSOR_META]))
    return shapes


def _module_keeps(gm: torch.fx.GraphModule) -> dict[str, tuple[ChannelKeep | None, ...]]:
    keeps: dict[str, tuple[ChannelKeep | None, ...]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target not in keeps:
            src = node.args[0] if node.args and isinstance(node.args[0], torch.fx.Node) else None
            in_keep = src.meta.get(KEEP) if src is not None else None
            keeps[str(node.target)] = (
                in_keep if isinstance(in_keep, ChannelKeep) else None,
                node.meta.get(KEEP) if isinstance(node.meta.get(KEEP), ChannelKeep) else None,
            )
    return keeps


def _approximations(gm: torch.fx.GraphModule) -> dict[str, str]:
    found = {}
    for node in gm.graph.nodes:
        keep = node.meta.get(KEEP)
        if APPROXIMATE in node.meta and isinstance(keep, ChannelKeep) and keep.narrowed:
            found[node.name] = node.meta[APPROXIMATE]
    return found


def _build_report(
    gm: torch.fx.GraphModule,
    params_before: int,
    flops_before: int,
    before: dict[str, tuple[int, int, int, int]],
    keeps: dict[str, tuple[ChannelKeep | None, ...]],
    approximate: dict[str, str],
    budget: Budget,
    config: CompileConfig,
) -> PruningReport:
    after = _layer_shapes(gm)
    table = gm.meta[SENSITIVITY_TABLE]
    plan = gm.meta.get(PLAN)
    masks = masks_of(gm)
    layers = {}
    for name, (in_ch, out_ch, p_before, f_before) in before.items():
        in_a, out_a, p_after, f_after = after.get(name, (in_ch, out_ch, p_before, f_before))
        in_keep, out_keep = keeps.get(name, (None, None))
        in_idx = _index(in_keep, in_ch, in_a)
        out_idx = _index(out_keep, out_ch, out_a)
        sens = table.layers.get(name)
        mask = masks.get(name)
        layers[name] = LayerPlan(
            in_idx=in_idx,
            out_idx=out_idx,
            in_channels=in_ch,
            out_channels=out_ch,
            density=sens.density if sens is not None else 1.0,
            sensitivity=sens.sensitivity if sens is not None else 1.0,
            narrowed=(in_idx.numel() < in_ch) or (out_idx.numel() < out_ch),
            params_before=p_before,
            params_after=p_after,
            flops_before=f_before,
            flops_after=f_after,
            selected=bool(sens.selected) if sens is not None else False,
            masked=mask is not None,
            nonzero_after=p_after
            - (mask.numel() - int(torch.count_nonzero(mask)) if mask is not None else 0),
        )
    params_after = count_params(gm)
    return PruningReport(
        params_before=params_before,
        params_after=params_after,
        flops_before=flops_before,
        flops_after=count_macs(gm),
        layers=layers,
        approximate=approximate,
        budget=budget,
        method=config.method,
        strategy=config.strategy,
        reinit=config.reinit,
        composite=config.composite,
        nonzero_after=params_after - sum(masked_count(m) for m in masks.values()),
        global_density=table.global_density,
        latency_before=plan.latency_before if isinstance(plan, PlanSummary) else None,
        latency_after=plan.latency_after if isinstance(plan, PlanSummary) else None,
    )


def _index(keep: ChannelKeep | None, full: int, kept: int) -> torch.Tensor:
    if keep is not None and keep.size == full and keep.index.numel() == kept:
        return keep.index.clone()
    if kept != full:
        raise AssertionError(f"internal error: {kept} of {full} channels kept, plan unknown")
    return torch.arange(full)
