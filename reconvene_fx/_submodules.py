"""Compiling a model whose own ``forward`` torch.fx cannot trace: its largest traceable
submodules, in place.

torchvision's detectors iterate over their list of images, proposals and detections in
``forward``; their backbone and heads trace. :func:`compile_in_place` makes of such a
model a copy of the same type whose traceable parts are compiled:

1. **Find the parts.** Below the model, each child with parameters is traced on the inputs
   the model gives it, recorded with hooks by one eval-mode run of the model on the
   example inputs. A child that traces is a part; one that does not is searched the same
   way one level down, its children's inputs recorded by one run of that child alone on
   its own inputs. A child without parameters is left as it is; one never called is
   searched inside when it holds submodules (a ``ModuleList``), else left as it is.
2. **Plan once.** The parts' graphs are put side by side in one ``GraphModule``
   (:mod:`reconvene_fx._side_by_side`): each
   part's inputs are its own placeholders and its outputs elements of the output, so their
   channels are kept, as a graph's inputs and outputs always are. The passes of
   :func:`~reconvene_fx.passes.compile_passes` run on it once: one global PaI mask and one
   plan at the budget, as compile would make for the whole model if its glue code were
   opaque calls. The params budget is the whole model's: what the parts may keep is
   what the budget leaves after the parts left whole.
3. **Split.** Each part's nodes (its connected component of that graph) become a
   ``GraphModule`` of their own, with the part's forward signature and its own report,
   installed in a copy of the model where the part was.

:func:`verify_in_place` checks each compiled part against the original part, on the inputs
the original model gives it.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx
import torch.nn as nn
from torch.utils._pytree import tree_map

from ._copy import structural_copy, tensors_of
from ._mode import eval_mode
from ._side_by_side import Part, combine, split
from .budget import Budget
from .config import CompileConfig
from .costs import count_params
from .errors import (
    ArgumentError,
    BudgetError,
    InputError,
    ReconveneError,
    TraceError,
    VerifyError,
)
from .layers import LayerRegistry
from .meta import AUTO_LEAVES, REPORT, TRACE_DECISIONS
from .passes import compile_passes, run_passes
from .reporting import PruningReport, SubmodulePlan, attach_report, report
from .rules import DEFAULT_RULES
from .tracing import trace

if TYPE_CHECKING:
    from .verification import VerifyResult

__all__ = ["SubmoduleCompileWarning", "compile_in_place", "verify_in_place"]

# the left parts named in the warning; the report lists them all
_SHOWN = 8
# methods and functions that change a list or dict in place
_MUTATORS = frozenset(("append", "extend", "insert", "update", "setdefault", "setitem"))
# why a layer is not compiled alone
_LAYER = "a layer, or a forward on its own parameters: not compiled alone"


class SubmoduleCompileWarning(UserWarning):
    """The model's own ``forward`` could not be traced: its largest traceable submodules
    were compiled in place (their input and output channels kept) and the rest left as it
    was. One warning names both; ``rfx.report(model).submodules`` lists them."""


@dataclass
class _Call:
    """The first call of a submodule during a forward, and how many calls there were."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    count: int = 1


def compile_in_place(
    model: nn.Module,
    budget: Budget,
    example_inputs: tuple[Any, ...],
    config: CompileConfig,
    error: TraceError,
) -> nn.Module:
    """A copy of ``model`` with its largest traceable submodules compiled (see the module
    docstring); ``error`` is why ``model`` itself could not be traced.

    Raises:
        TraceError: ``error``, when no submodule could be compiled either.
        ArgumentError: ``data=`` or ``targets=`` were given: they are the model's, and the
            submodules' are not known.
        BudgetError: the parts left whole, and what the compiled ones cannot lose, exceed
            the budget (``smallest`` is the whole model's).
    """
    if config.data is not None or config.targets is not None:
        raise ArgumentError(
            f"{type(model).__name__}.forward cannot be traced, so its submodules are "
            "compiled in place; data= and targets= are the whole model's and cannot be "
            "given to them: use a method that needs no targets (magnitude, synflow)"
        )
    parts, left, untraced = _find_parts(model, example_inputs, config, _reason(error))
    if not parts:
        raise TraceError(
            f"{error}\nNo submodule could be compiled in its place either: "
            + "; ".join(f"{n or '(model)'}: {sp.note}" for n, sp in left.items())
        ) from error
    total = count_params(model)
    owned = {id(t): t for part in parts for t in part.original.parameters()}
    compiled = sum(t.numel() for t in owned.values())
    share = _share(budget, total, compiled)
    combined, inputs = combine(type(model).__name__, parts)
    try:
        combined = run_passes(combined, compile_passes(share, inputs, config))
    except BudgetError as exc:
        raise _whole_model_budget_error(exc, total, compiled) from exc
    rep = combined.meta[REPORT]
    subs, nodes_of = split(combined, parts)
    result = structural_copy(model)
    for part in parts:
        sub = subs[part.name]
        sub.training = part.original.training
        sub.meta[REPORT] = _part_report(rep, part, sub, nodes_of[part.name])
        _replace(result, part.name, sub)
    _own_tensors(result, {id(t) for t in tensors_of(model)})
    plans = {
        p.name: SubmodulePlan(
            True, type(p.original).__name__, count_params(p.original), count_params(subs[p.name]),
            f"called {p.calls} times; compiled for its first call's inputs" if p.calls > 1 else "",
        )
        for p in parts
    }  # fmt: skip
    plans.update(left)
    order = {name: i for i, (name, _) in enumerate(model.named_modules(remove_duplicate=False))}
    plans = dict(sorted(plans.items(), key=lambda item: order.get(item[0], len(order))))
    params_after = count_params(result)
    whole = dataclasses.replace(
        rep,
        params_before=total,
        params_after=params_after,
        nonzero_after=params_after - (rep.params_after - rep.nonzero_after),
        budget=budget,
        submodules=plans,
    )
    attach_report(result, whole)
    warnings.warn(_message(model, plans, untraced, share, budget), SubmoduleCompileWarning,
                  stacklevel=3)  # fmt: skip
    return result


# -- finding the parts ----------------------------------------------------------------------
def _find_parts(
    model: nn.Module, inputs: tuple[Any, ...], config: CompileConfig, why: str
) -> tuple[list[Part], dict[str, SubmodulePlan], dict[str, str]]:
    """The largest traceable submodules, the parts left as they are, and the modules
    searched inside because they could not be traced or were not called (``{name: why}``).

    The children of a module that cannot be traced get their inputs from one run of that
    module on its own recorded inputs (the model on ``example_inputs`` at the top); the
    children of one never called (a ``ModuleList``) from a run of its nearest called
    ancestor."""
    parts: list[Part] = []
    left: dict[str, SubmodulePlan] = {}
    untraced = {"": why}
    calls = {"": _Call(tuple(inputs), {})}
    seen: set[int] = set()
    frontier = [("", "")]  # (module searched below, the called ancestor run for it)
    while frontier:
        children: list[tuple[str, nn.Module, str]] = []
        for parent, runner in frontier:
            own = sum(p.numel() for p in model.get_submodule(parent).parameters(recurse=False))
            if own:
                note = f"its own parameters; its forward: {untraced[parent]}"
                kind = type(model.get_submodule(parent)).__name__
                left[parent] = SubmodulePlan(False, kind, own, own, note)
            for child, module in model.get_submodule(parent).named_children():
                name = f"{parent}.{child}" if parent else child
                if id(module) in seen:
                    continue
                seen.add(id(module))
                if count_params(module) == 0:
                    left[name] = SubmodulePlan(False, type(module).__name__, 0, 0, "no parameters")
                else:
                    children.append((name, module, runner))
        runners: dict[str, list[str]] = {}
        for name, _, runner in children:
            runners.setdefault(runner, []).append(name)
        for runner, names in runners.items():
            calls.update(_calls_below(model, runner, calls, names))
        frontier = []
        for name, module, runner in children:
            call = calls.get(name)
            found, reason = (None, "not called on the example inputs")
            if call is not None:
                found, reason = _traced(name, module, call, config)
            if found is not None:
                parts.append(found)
            elif any(count_params(c) for c in module.children()):
                untraced[name] = reason
                frontier.append((name, runner if call is None else name))
            else:
                n = count_params(module)
                left[name] = SubmodulePlan(False, type(module).__name__, n, n, reason)
    return parts, left, untraced


def _calls_below(
    model: nn.Module, runner: str, calls: Mapping[str, _Call], names: list[str]
) -> dict[str, _Call]:
    """The first calls of the submodules ``names`` in a run of the submodule ``runner``
    on its recorded call (``calls[runner]``); if it does not run alone, in a run of the
    whole model on ``calls[""]``, the example inputs."""
    prefix = f"{runner}." if runner else ""
    relative = [name.removeprefix(prefix) for name in names]
    try:
        found = _record_calls(model.get_submodule(runner), relative, calls[runner])
    except Exception as exc:
        if not runner:
            raise InputError(
                f"{type(model).__name__} cannot be traced, and running it on example_inputs "
                f"to find the inputs of its submodules failed: {type(exc).__name__}: {exc}"
            ) from exc
        return _calls_below(model, "", calls, names)
    return {f"{prefix}{name}": c for name, c in found.items()}


def _record_calls(module: nn.Module, names: list[str], call: _Call) -> dict[str, _Call]:
    """The first call (its inputs cloned) of each named submodule, and how many calls
    there were, in one run of ``module`` on ``call`` (in eval mode, without grad, on a
    structural copy)."""
    if not names:
        return {}
    work = structural_copy(module)
    found: dict[str, _Call] = {}
    handles = []
    for name in names:

        def hook(_m: nn.Module, args: Any, kwargs: Any, name: str = name) -> None:
            if name in found:
                found[name].count += 1
            else:
                found[name] = _Call(_cloned(args), _cloned(kwargs))

        handles.append(work.get_submodule(name).register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with eval_mode(work), torch.no_grad():
            work(*_cloned(call.args), **_cloned(call.kwargs))
    finally:
        for handle in handles:
            handle.remove()
    return found


def _cloned(value: Any) -> Any:
    """``value`` with every tensor in it cloned (a forward may write into its inputs)."""
    return tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, value)


def _positional(module: nn.Module, call: _Call) -> tuple[Any, ...] | None:
    """The call's arguments as positional ones (defaults filling the gaps), or None when
    it passes keyword-only or variadic arguments."""
    try:
        sig = inspect.signature(module.forward)
        bound = sig.bind(*call.args, **call.kwargs).arguments
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(sig.parameters.values())
    if any(p.name in bound and p.kind not in kinds for p in params):
        return None
    count = max((i + 1 for i, p in enumerate(params) if p.name in bound), default=0)
    return tuple(bound.get(p.name, p.default) for p in params[:count])


def _traced(
    name: str, module: nn.Module, call: _Call, config: CompileConfig
) -> tuple[Part | None, str]:
    """``module`` traced on its recorded call, or None and why not."""
    positional = _positional(module, call)
    if positional is None:
        return None, "called with keyword-only or variadic arguments"
    if torch.fx.Tracer().is_leaf_module(module, "") or DEFAULT_RULES.for_module(module):
        return None, _LAYER
    prefix = f"{name}."
    leaves = [  # types apply everywhere, names inside this submodule become relative
        spec.removeprefix(prefix) if isinstance(spec, str) else spec
        for spec in config.leaf_modules
        if not isinstance(spec, str) or spec.startswith(prefix)
    ]
    try:
        gm = trace(module, leaf_modules=leaves, auto_leaf=config.auto_leaf,
                   example_inputs=positional)  # fmt: skip
    except ReconveneError as exc:
        return None, _reason(exc)
    changed = _changed_input(gm)
    if changed is not None:
        return None, f"changes its inputs in place ({changed}): not all it returns is an output"
    own = {n for n, _ in module.named_parameters(recurse=False)}
    if any(node.op == "get_attr" and node.target in own for node in gm.graph.nodes):
        # a functional layer on its own weights would be lifted to a module at the
        # part's own name, which the part's GraphModule cannot hold: searched inside
        return None, _LAYER
    sig = inspect.signature(module.forward)
    named = dict(zip(sig.parameters, positional, strict=False))
    values = []
    for node in gm.graph.find_nodes(op="placeholder"):
        if node.target in named:
            values.append(named[node.target])
        elif node.args:
            values.append(node.args[0])
        else:
            return None, f"its traced input {node.target!r} has no value in its call"
    return Part(name, module, gm, values, call.count), ""


def _changed_input(gm: torch.fx.GraphModule) -> str | None:
    """The first call that changes an input list or dict in place (``p.extend([p6, p7])``,
    as torchvision's ``LastLevelP6P7`` does): what it adds leaves the graph unseen, so its
    channels would not be kept."""
    for node in gm.graph.nodes:
        name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
        if node.op not in ("call_method", "call_function") or name not in _MUTATORS:
            continue
        if (
            node.args
            and isinstance(node.args[0], torch.fx.Node)
            and node.args[0].op == "placeholder"
        ):
            return f"{node.args[0].target}.{name.strip('_')}"
    return None


def _reason(exc: BaseException) -> str:
    """The first sentence of what broke tracing (the cause when there is one)."""
    cause = exc.__cause__ or exc
    text = next((line.strip() for line in str(cause).splitlines() if line.strip()), "")
    text = text.split(". ")[0].rstrip(".")
    return f"{type(cause).__name__}: {text[:160]}"


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, last = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, last, module)


def _own_tensors(model: nn.Module, borrowed: set[int]) -> None:
    """Copy every parameter and buffer ``model`` shares with the caller's (tied ones stay
    tied)."""
    copies: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for key, t in store.items():
                if t is None or id(t) not in borrowed:
                    continue
                if id(t) not in copies:
                    value = t.detach().clone()
                    if isinstance(t, nn.Parameter):
                        value = nn.Parameter(value, requires_grad=t.requires_grad)
                    copies[id(t)] = value
                store[key] = copies[id(t)]


# -- budget, report, warning ----------------------------------------------------------------
def _share(budget: Budget, total: int, compiled: int) -> Budget:
    """The budget of the compiled parts: the params fraction that leaves the whole model
    within ``budget`` with the rest kept whole; other limits apply to the parts as given."""
    if budget.params is None:
        return budget
    rest = total - compiled
    share = (budget.params * total - rest) / max(compiled, 1)
    if share <= 0:
        smallest = rest / max(total, 1)
        raise BudgetError(
            f"params budget {budget.params} is below what the parts left whole keep "
            f"({rest:,} of {total:,} parameters, {smallest:.4f}): the submodules that "
            "trace are compiled in place, the rest keeps all its parameters",
            quantity="params",
            smallest=smallest,
        )
    return dataclasses.replace(budget, params=min(1.0, share))


def _whole_model_budget_error(exc: BudgetError, total: int, compiled: int) -> BudgetError:
    if exc.quantity != "params":
        return exc
    smallest = (exc.smallest * compiled + total - compiled) / max(total, 1)
    return BudgetError(
        f"{exc} (as a fraction of the {compiled:,} parameters of the submodules compiled in "
        f"place; of the whole model's {total:,}: {smallest:.4f})",
        quantity="params",
        smallest=smallest,
        pinned_by=exc.pinned_by,
    )


def _part_report(
    rep: PruningReport, part: Part, sub: torch.fx.GraphModule, nodes: set[str]
) -> PruningReport:
    """The combined report restricted to one part, its names relative to it."""
    prefix = f"{part.name}."
    layers = {k[len(prefix) :]: lp for k, lp in rep.layers.items() if k.startswith(prefix)}
    after = count_params(sub)
    masked = sum(lp.params_after - lp.nonzero_after for lp in layers.values())
    return dataclasses.replace(
        rep,
        params_before=count_params(part.original),
        params_after=after,
        nonzero_after=after - masked,
        macs_before=sum(lp.macs_before for lp in layers.values()),
        macs_after=sum(lp.macs_after for lp in layers.values()),
        layers=layers,
        approximate={k: v for k, v in rep.approximate.items() if k in nodes},
        leaves=dict(part.gm.meta.get(AUTO_LEAVES, {})),
        decisions=tuple(part.gm.meta.get(TRACE_DECISIONS, ())),
        submodules={},
    )


def _message(
    model: nn.Module,
    plans: Mapping[str, SubmodulePlan],
    untraced: Mapping[str, str],
    share: Budget,
    budget: Budget,
) -> str:
    compiled = [f"{n} ({sp.kind}, {sp.params_before:,} -> {sp.params_after:,} params)"
                for n, sp in plans.items() if sp.compiled]  # fmt: skip
    left = [f"{n or '(model)'} ({sp.note})" for n, sp in plans.items() if not sp.compiled]
    more = f", and {len(left) - _SHOWN} more" if len(left) > _SHOWN else ""
    below = ", ".join(f"{n} ({why})" for n, why in untraced.items() if n)
    text = (
        f"torch.fx could not trace {type(model).__name__}.forward ({untraced['']}); its "
        f"largest traceable submodules were compiled in place instead, their input and "
        f"output channels kept: {', '.join(compiled)}. "
    )
    if below:
        text += f"Searched inside {below}. "
    if left:
        text += f"Left as they were: {', '.join(left[:_SHOWN])}{more}. "
    if budget.params is not None and share.params != budget.params:
        text += (f"The params budget {budget.params} is the whole model's: the compiled "
                 f"submodules keep at most {share.params:.4f} of theirs. ")  # fmt: skip
    return text + (
        "rfx.report(model).submodules lists them; rfx.verify checks each compiled "
        "submodule on the inputs the model gives it."
    )


# -- verify ---------------------------------------------------------------------------------
def verify_in_place(
    model: nn.Module,
    compiled: nn.Module,
    example_inputs: tuple[Any, ...],
    *,
    rtol: float,
    atol: float,
    layers: LayerRegistry | None = None,
) -> VerifyResult:
    """:func:`reconvene_fx.verify` for a model whose submodules were compiled in place:
    each compiled submodule against the original one, on the inputs ``model`` gives it
    for ``example_inputs`` (both in eval mode); then the compiled model must run."""
    from .verification import VerifyResult, verify  # verification imports this module

    rep = report(compiled)
    names = rep.compiled
    if not names:
        raise ReconveneError(
            "this model was not compiled in place (its report lists no compiled submodule); "
            "pass the GraphModule reconvene_fx.compile returned"
        )
    calls = _calls_below(model, "", {"": _Call(example_inputs, {})}, names)
    exact, max_error = True, 0.0
    for name in names:
        call = calls.get(name)
        original, part = model.get_submodule(name), compiled.get_submodule(name)
        positional = None if call is None else _positional(original, call)
        if positional is None:
            raise VerifyError(
                f"submodule {name!r} is not called with positional inputs on example_inputs: "
                "it cannot be checked",
                max_error=float("inf"),
                layer=name,
            )
        try:
            result = verify(original, part, positional, rtol=rtol, atol=atol, layers=layers)
        except VerifyError as exc:
            raise VerifyError(
                f"submodule {name!r}: {exc}",
                max_error=exc.max_error,
                layer=f"{name}.{exc.layer}" if exc.layer else name,
            ) from exc
        exact &= result.exact
        max_error = max(max_error, result.max_error)
    try:
        with eval_mode(compiled), torch.no_grad():
            compiled(*example_inputs)
    except Exception as exc:
        raise VerifyError(
            f"the model with its submodules compiled in place does not run on "
            f"example_inputs: {type(exc).__name__}: {exc}",
            max_error=float("inf"),
            layer=None,
        ) from exc
    return VerifyResult(exact=exact, max_error=max_error)
