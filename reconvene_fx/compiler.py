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
from .config import CompileConfig
from .costs import CONV_TYPES, count_macs, count_params, layer_macs
from .errors import ReconveneError
from .meta import APPROXIMATE, KEEP, REPORT, TENSOR_META, ChannelKeep
from .passes import ChannelGroupPass, PlanPass, ShapePass, ShrinkPass
from .report import LayerPlan, PruningReport
from .scoring import get_scorer
from .tracing import trace

__all__ = ["compile"]


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
        progress: print one line per step to stderr.
        **options: fields of :class:`~reconvene_fx.config.CompileConfig` (``method``,
            ``strategy``, ``seed``, ``round_to``, ``ignore``, ``reinit``, ...).

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
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError("example_inputs must be a non-empty tuple of inputs, e.g. (x,)")
    example_inputs = tuple(example_inputs)

    steps = _Progress(progress)
    work = copy.deepcopy(model)
    gm = trace(work, leaf_modules=config.leaf_modules, concrete_args=config.concrete_args)
    steps.done("trace")
    params_before = count_params(model)
    _run_passes(
        gm,
        ShapePass(example_inputs, fake=True),
        ChannelGroupPass(config.rules),
        PlanPass(budget, example_inputs=example_inputs, config=config),
    )
    steps.done("analyse and plan")
    flops_before = count_macs(gm)
    layers_before = _layer_shapes(gm)
    keeps = _module_keeps(gm)
    approximate = _approximations(gm)
    _run_passes(
        gm,
        ShrinkPass(reinit=config.reinit, seed=config.seed, init_fn=config.init_fn),
        ShapePass(example_inputs, fake=True),
    )
    steps.done("shrink")
    gm.meta[REPORT] = _build_report(
        gm, params_before, flops_before, layers_before, keeps, approximate, budget, config
    )
    return gm


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
    params_after = count_params(gm)
    weights_before = sum(b[2] for b in before.values()) or 1
    weights_after = sum(after[n][2] for n in before if n in after)
    global_density = weights_after / weights_before
    layers = {}
    for name, (in_ch, out_ch, p_before, f_before) in before.items():
        in_a, out_a, p_after, f_after = after.get(name, (in_ch, out_ch, p_before, f_before))
        in_keep, out_keep = keeps.get(name, (None, None))
        in_idx = _index(in_keep, in_ch, in_a)
        out_idx = _index(out_keep, out_ch, out_a)
        density = p_after / max(p_before, 1)
        layers[name] = LayerPlan(
            in_idx=in_idx,
            out_idx=out_idx,
            in_channels=in_ch,
            out_channels=out_ch,
            density=density,
            sensitivity=density / global_density if global_density else 0.0,
            narrowed=(in_idx.numel() < in_ch) or (out_idx.numel() < out_ch),
            params_before=p_before,
            params_after=p_after,
            flops_before=f_before,
            flops_after=f_after,
        )
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
    )


def _index(keep: ChannelKeep | None, full: int, kept: int) -> torch.Tensor:
    if keep is not None and keep.size == full and keep.index.numel() == kept:
        return keep.index.clone()
    if kept != full:
        raise AssertionError(f"internal error: {kept} of {full} channels kept, plan unknown")
    return torch.arange(full)
