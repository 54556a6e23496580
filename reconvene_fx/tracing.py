"""Symbolic tracing with torch.fx that goes as far as it can, with errors that say what to do.

Beyond ``torch.fx.symbolic_trace``:

* functions that model libraries mark as not FX-traceable (timm's
  ``register_notrace_function``) are kept as calls, and any module type a channel rule
  knows is kept whole (timm's ``Conv2dSame``; a subclass that keeps its base's
  ``forward`` included);
* a forward taking ``*args``/``**kwargs`` is traced for its named parameters, and with
  example inputs the parameters they leave out keep their defaults;
* iterating over, or taking ``len()`` of, the result of ``chunk``/``split``/``tensor_split``
  with literal section counts works (``list(x.chunk(2, 1))``, as Ultralytics' C2f does);
* with example inputs, any other question the forward asks of a traced value (a branch
  on ``x.shape``, ``len()``, iteration, ``int()``/``float()`` of a size) is answered from
  its value for those inputs (:mod:`reconvene_fx._shadow`), recorded, and guarded;
* ``round()`` of a traced value, and ``torch.tensor``/``torch.as_tensor`` of one
  (``torch.tensor(x.shape[1])``), are recorded as calls computed at run time;
* ``torch.jit.isinstance(x, torch.Tensor)`` answers for a traced value as it does in
  eager mode (MONAI concatenates its skips only when it holds);
* a submodule that still cannot be traced becomes a leaf (called as a black box, its
  channels pinned), with one :class:`AutoLeafWarning` naming it; only a failure in the
  model's own ``forward`` is a :class:`~reconvene_fx.errors.TraceError`;
* with example inputs, the graph is checked once against the model on them
  (:mod:`reconvene_fx._fidelity`): a graph that computes something else is a
  :class:`~reconvene_fx.errors.TraceError` naming where it goes its own way.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import functools
import inspect
import linecache
import operator
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
import torch.fx

from ._copy import structural_copy, tensors_of
from ._fidelity import check_fidelity
from ._shadow import UNKNOWN, ShadowValues
from .errors import ArgumentTypeError, TraceError
from .guards import check_decision
from .log import logger
from .meta import AUTO_LEAVES, BORROWED, OWNED, SOURCE, TRACE_DECISIONS, BorrowedTensors
from .rules import DEFAULT_RULES

__all__ = ["AutoLeafWarning", "BranchDecisionWarning", "trace"]

LeafSpec = str | type[torch.nn.Module]

# a model needing more automatic leaves than this is reported rather than retried on
_MAX_AUTO_LEAVES = 64


class AutoLeafWarning(UserWarning):
    """A submodule could not be traced and is called as a black box (not pruned through)."""


class BranchDecisionWarning(UserWarning):
    """The forward branches on a traced value (``if x.shape[-1] > 16:``): the graph holds
    only the branch the example inputs take, and guards it (inputs taking the other
    branch raise an :class:`~reconvene_fx.errors.InputError`). One warning per source
    line names it and the branch taken. Likewise when it reads a traced size as a Python
    number (``int(x.shape[1] * 0.5)``): the graph holds the number of the example inputs,
    guarded."""


# torch's and this package's folders (with the separator: torchvision is not torch)
_OWN_FILES = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(__file__) + os.sep)


def _user_source_line() -> str:
    """``file:line  code`` of the innermost frame outside torch and this package: the
    line of the user's forward that asked the question being answered."""
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_code.co_filename
        if not path.startswith(_OWN_FILES) and not path.startswith("<"):
            code = linecache.getline(path, frame.f_lineno).strip()
            where = f"{os.path.basename(path)}:{frame.f_lineno}"
            return f"{where} ({code})" if code else where
        frame = frame.f_back
    return "<unknown source line>"


# the files of the tracing machinery: torch.fx's and this one
_TRACING_FILES = (os.path.dirname(torch.fx.__file__) + os.sep, __file__)


def _calling_instruction() -> tuple[FrameType | None, int]:
    """The innermost frame outside the tracing machinery (the forward being traced), and
    the instruction it runs (the call in progress)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_TRACING_FILES):
        frame = frame.f_back
    return frame, -1 if frame is None else frame.f_lasti


def _library_notrace() -> tuple[Callable[..., Any], ...]:
    """The functions of already imported model libraries that are kept as single calls:
    those timm's FX registry marks as not traceable, and einops' ``rearrange``,
    ``repeat``, ``reduce`` and ``einsum`` (they reject torch.fx proxies; their channel
    rules are in :mod:`reconvene_fx.rules.einops_ops`). Nothing is imported here. (timm's
    list of leaf *modules* is not used: it serves feature extraction, and holds whole
    blocks that trace fine.)

    Only calls by the name the model imported (``from einops import rearrange``) are
    kept; ``einops.rearrange(...)`` is looked up on the module at call time.
    """
    found: list[Callable[..., Any]] = []
    fx = sys.modules.get("timm.layers._fx")
    if fx is not None:
        found.extend(f for f in fx.get_notrace_functions() if callable(f))
    einops = sys.modules.get("einops")
    if einops is not None:
        names = ("rearrange", "repeat", "reduce", "einsum")
        found.extend(f for f in (getattr(einops, n, None) for n in names) if callable(f))
    return tuple(found)


def _sections(node: torch.fx.Node) -> int | None:
    """How many tensors ``node`` returns when that is fixed by literals in the graph:
    ``chunk(n)``, ``split([a, b, ...])``, ``tensor_split([i, j, ...])`` / ``(n)``."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", None)
    if node.op not in ("call_method", "call_function") or len(node.args) < 2:
        return None
    spec = node.args[1]
    if name == "chunk" and isinstance(spec, int):
        return spec
    if name == "split" and isinstance(spec, (list, tuple)):
        return len(spec)
    if name == "tensor_split":
        if isinstance(spec, int):
            return spec
        if isinstance(spec, (list, tuple)):
            return len(spec) + 1
    return None


def _without_varargs(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` without its ``*args``/``**kwargs`` (``forward(self, x, *args, **kwargs)``, as
    Ultralytics writes it): torch.fx would make each a placeholder proxy that the forward
    then unpacks, which cannot be traced. The inputs a model is compiled for are its named
    parameters."""
    sig = inspect.signature(fn)
    varargs = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    named = [p for p in sig.parameters.values() if p.kind not in varargs]
    if len(named) == len(sig.parameters) or any(
        p.kind is inspect.Parameter.POSITIONAL_ONLY for p in named
    ):
        return fn
    defaults = {p.name: p.default for p in named if p.default is not inspect.Parameter.empty}
    params = ", ".join(f"{p.name}=__defaults[{p.name!r}]" if p.name in defaults else p.name
                       for p in named)  # fmt: skip
    call = ", ".join(f"{p.name}={p.name}" for p in named)
    scope: dict[str, Any] = {"__fn": fn, "__defaults": defaults}
    exec(f"def forward({params}):\n    return __fn({call})\n", scope)
    wrapper = scope["forward"]
    wrapper.__qualname__ = getattr(fn, "__qualname__", "forward")
    return wrapper


@dataclass(frozen=True)
class _NumberRead:
    """A traced size read as a Python number, not yet recorded (:meth:`_Tracer._number`)."""

    proxy: torch.fx.Proxy
    number: int | float
    given: str  # "int() = 32"
    where: str  # the module being traced
    source: str  # the user's source line
    at: tuple[FrameType | None, int]  # the call instruction that read it


class _Proxy(torch.fx.Proxy):
    """A proxy whose ``len()`` is known (from literal section counts, or from its value
    for the example inputs), that converts to a Python number when it is a size known
    from the example inputs, and that ``round()`` records as a call."""

    def __len__(self) -> int:
        count = self.tracer._length(self)  # type: ignore[attr-defined]
        if count is None:
            return super().__len__()
        return count

    # Python requires these to return a real number: the value for the example inputs
    def __int__(self) -> int:
        return self.tracer._number(self, int)  # type: ignore[attr-defined]

    def __float__(self) -> float:
        return self.tracer._number(self, float)  # type: ignore[attr-defined]

    def __index__(self) -> int:
        return self.tracer._number(self, operator.index)  # type: ignore[attr-defined]

    def __round__(self, ndigits: Any = None) -> torch.fx.Proxy:
        args = (self,) if ndigits is None else (self, ndigits)
        return self.tracer.create_proxy("call_function", builtins.round, args, {})


class _Tracer(torch.fx.Tracer):
    """A tracer that keeps extra modules and rule-known ones as leaves, iterates over split
    results of known length, and remembers the innermost module that failed."""

    def __init__(
        self,
        leaf_modules: Iterable[LeafSpec] = (),
        auto_leaves: Iterable[str] = (),
        inputs: Mapping[str, Any] | None = None,
    ) -> None:
        # the defaults let pickle rebuild a GraphModule: it re-traces with this class
        super().__init__(autowrap_functions=_library_notrace())
        specs = list(leaf_modules)
        self._leaf_names = {s for s in specs if isinstance(s, str)} | set(auto_leaves)
        self._leaf_types = tuple(s for s in specs if isinstance(s, type))
        self.failed_in: tuple[str, str] | None = None
        self._inputs = inputs
        self._shadow: ShadowValues | None = None
        self._shadowing = False
        self.decisions: list[str] = []
        self.branches: list[tuple[str, bool]] = []  # (user's source line, branch taken)
        self.numbers: list[tuple[str, str]] = []  # (user's source line, "int() = 32")
        self._reads: list[_NumberRead] = []  # recorded when the next node is created

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """Module calls and attribute reads run as they are instead of being recorded."""
        self._shadowing = True
        try:
            yield
        finally:
            self._shadowing = False

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if self._shadowing:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def _value(self, proxy: torch.fx.Proxy) -> Any:
        """The proxy's value for the example inputs (:data:`UNKNOWN` without them)."""
        if self._inputs is None:
            return UNKNOWN
        if self._shadow is None:
            self._shadow = ShadowValues(self.root, self.graph, self._inputs, self._quiet)
        return self._shadow.value(proxy.node)

    def _where(self) -> str:
        stack = getattr(self, "module_stack", None)
        path = next(reversed(stack), "") if stack else ""
        return path or "forward"

    def _length(self, proxy: torch.fx.Proxy) -> int | None:
        count = _sections(proxy.node)
        if count is not None:
            return count
        value = self._value(proxy)
        if isinstance(value, (tuple, list, torch.Size)):
            self.decisions.append(f"{self._where()}: len({proxy.node.name}) = {len(value)}")
            return len(value)
        return None

    def to_bool(self, obj: torch.fx.Proxy) -> bool:
        value = self._value(obj)
        if isinstance(value, (bool, int)):
            node = obj.node
            op = getattr(node.target, "__name__", str(node.target))
            args = ", ".join(str(a) for a in node.args)
            taken = bool(value)
            source = _user_source_line()
            self.decisions.append(f"{self._where()}: {op}({args}) -> {taken}")
            self.branches.append((source, taken))
            # the compiled graph checks, at run time, that its inputs take this branch
            self._guard(obj, taken, source)
            return taken
        return super().to_bool(obj)

    def _guard(self, value: torch.fx.Proxy, taken: Any, source: str) -> None:
        """Record a :func:`check_decision` of ``value`` against what tracing decided. The
        call is marked as wrapped, so that the generated code keeps it a call when it is
        traced again (as unpickling a GraphModule does, without example inputs)."""
        guard = self.create_proxy("call_function", check_decision, (value, taken, source), {})
        guard.node.meta["is_wrapped"] = True

    def _number(self, proxy: torch.fx.Proxy, convert: Callable[[Any], Any]) -> Any:
        """``convert(proxy)`` (``int``, ``float``, ``operator.index``) of a traced size:
        its value for the example inputs, which the graph then holds as a literal. A guard
        checks at run time that the inputs still give it; it and the decision are recorded
        when the next node is created (:meth:`_record_numbers`)."""
        value = self._value(proxy)
        name = getattr(convert, "__name__", "int")
        if isinstance(value, torch.Tensor) or not isinstance(value, (int, float)):
            raise TypeError(
                f"{name}() of the traced value {proxy.node.name!r} "
                f"({proxy.node.format_node()}): it needs a Python number, and this value is "
                + (
                    "not known without example inputs; pass example_inputs"
                    if self._inputs is None
                    else "not a size known from the example inputs (it depends on tensor "
                    "data); compute it with tensor ops, or fix it with concrete_args"
                )
            )
        number = convert(value)
        if convert is operator.index:
            number = int(number)  # the guard converts it back with int()
        given = f"{name}() = {number!r}"
        where, source = self._where(), _user_source_line()
        self._reads.append(_NumberRead(proxy, number, given, where, source,
                                       _calling_instruction()))  # fmt: skip
        return number

    def _record_numbers(self) -> None:
        """Guard and record the numbers read since the last node was created. torch's
        argument parser asks a traced value for ``__index__`` when it only checks an int
        argument (``torch.reshape(x, (x.shape[0], -1))``) before handing the call, with
        the proxy itself, to ``__torch_function__``: a node created by the same call
        instruction shows that the number was never used, and it is dropped."""
        reads, self._reads = self._reads, []
        now = _calling_instruction()
        seen: set[tuple[torch.fx.Node, int | float, str]] = set()
        for read in reads:
            key = (read.proxy.node, read.number, read.source)
            probe = read.at[0] is not None and read.at[0] is now[0] and read.at[1] == now[1]
            if probe or key in seen:
                continue  # a probe of the argument parser, or read twice by one call
            seen.add(key)
            call = read.given.replace("()", f"({read.proxy.node.name})", 1)
            self.decisions.append(f"{read.where}: {call}")
            self.numbers.append((read.source, read.given))
            self._guard(read.proxy, read.number, read.source)

    @contextlib.contextmanager
    def _tensors_of_values(self) -> Iterator[None]:
        """While tracing, ``torch.tensor``/``torch.as_tensor`` of data holding a traced
        value (``torch.tensor(x.shape[1])``) are recorded as calls, so the tensor is made
        at run time from the values then (torch.fx cannot see these calls: they take no
        ``__torch_function__``). The call goes to the tracer of the values it holds."""
        originals = {name: getattr(torch, name) for name in ("tensor", "as_tensor")}

        def recorded(original: Callable[..., Any]) -> Callable[..., Any]:
            target = inspect.unwrap(original)  # torch's own, also within another trace

            @functools.wraps(original)
            def factory(*args: Any, **kwargs: Any) -> Any:
                found: list[torch.fx.Proxy] = []
                torch.fx.node.map_aggregate(
                    (args, kwargs),
                    lambda a: found.append(a) if isinstance(a, torch.fx.Proxy) else a,
                )
                if not found:
                    return original(*args, **kwargs)
                return found[0].tracer.create_proxy("call_function", target, args, kwargs)

            return factory

        for name, original in originals.items():
            setattr(torch, name, recorded(original))
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(torch, name, original)

    def is_leaf_module(self, m: torch.nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self._leaf_names or isinstance(m, self._leaf_types):
            return True
        if super().is_leaf_module(m, module_qualified_name):
            return True
        # a module a channel rule knows is kept whole (timm's weight-standardized convs)
        return DEFAULT_RULES.for_module(m) is not None

    def create_node(self, *args: Any, **kwargs: Any) -> torch.fx.Node:
        if self._reads and not self._shadowing:
            self._record_numbers()
        node = super().create_node(*args, **kwargs)
        # where the model's code made it, which refusals name (the inputs and the output
        # are made by tracing itself)
        if not self._shadowing and node.op not in ("placeholder", "output"):
            node.meta[SOURCE] = _user_source_line()
        return node

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        return _Proxy(node, self)

    def trace(self, root: Any, concrete_args: dict[str, Any] | None = None) -> torch.fx.Graph:
        with _jit_isinstance_answered(self), self._tensors_of_values():
            return super().trace(root, concrete_args)

    def _stand_in(self, obj: Any) -> Any:
        """``obj`` with each proxy replaced by its value for the example inputs, or by a
        tensor when that is unknown (a proxy stands for a tensor unless shown otherwise)."""
        if isinstance(obj, torch.fx.Proxy):
            value = self._value(obj)
            return torch.empty(0) if value is UNKNOWN else value
        if isinstance(obj, list):
            return [self._stand_in(v) for v in obj]
        if isinstance(obj, tuple):
            return tuple(self._stand_in(v) for v in obj)
        if isinstance(obj, dict):
            return {k: self._stand_in(v) for k, v in obj.items()}
        return obj

    def iter(self, obj: torch.fx.Proxy) -> Iterator[Any]:
        count = self._length(obj)
        if count is None:
            return super().iter(obj)
        return iter([obj[i] for i in range(count)])

    def create_args_for_root(
        self, root_fn: Callable[..., Any], is_module: bool, concrete_args: Any = None
    ) -> Any:
        return super().create_args_for_root(_without_varargs(root_fn), is_module, concrete_args)

    def call_module(
        self, m: torch.nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict
    ) -> Any:
        if self._shadowing:
            return forward(*args, **kwargs)
        name = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = (name, type(m).__name__)
            raise


@contextlib.contextmanager
def _jit_isinstance_answered(tracer: _Tracer) -> Iterator[None]:
    """While tracing, ``torch.jit.isinstance(proxy, T)`` answers as in eager mode: for the
    value the proxy stands for (``torch.jit.is_scripting()`` is False already)."""
    original = torch.jit.isinstance

    def isinstance_(obj: Any, target_type: Any) -> bool:
        return original(tracer._stand_in(obj), target_type)

    torch.jit.isinstance = isinstance_
    try:
        yield
    finally:
        torch.jit.isinstance = original


def trace(
    model: torch.nn.Module,
    *,
    leaf_modules: Iterable[LeafSpec] = (),
    concrete_args: dict[str, Any] | None = None,
    auto_leaf: bool = True,
    example_inputs: tuple[Any, ...] | None = None,
    check: bool = True,
) -> torch.fx.GraphModule:
    """Trace ``model`` into a ``torch.fx.GraphModule``.

    Tracing runs on a structural copy of ``model`` (modules, flags and attributes such as
    caches are copied; parameters and buffers are shared, not copied), so a forward that
    writes to ``self`` during tracing leaves ``model`` alone. The shared tensors are listed
    in ``gm.meta["reconvene.borrowed"]``: the passes never write into them, and
    :class:`~reconvene_fx.passes.DetachPass` copies those still in use at the end.

    Functions that timm marks as not traceable are kept as calls when timm is imported,
    and modules a channel rule knows are leaves. A submodule whose forward cannot be
    traced becomes a leaf with one :class:`AutoLeafWarning` (``auto_leaf=False`` raises
    instead); the leaves chosen this way are listed in
    ``gm.meta["reconvene.auto_leaves"]`` (``{name: reason}``).

    With ``example_inputs``, forward parameters they do not fill keep their defaults
    (traced as constants, as ``concrete_args`` would), and what the forward asks of a
    traced value (``if x.shape[-1] <
    7``, ``len(parts)``, ``for p in x.unbind(1)``, ``int(x.shape[1] * 0.5)``) is answered
    from the value those inputs give, computed on the meta device when first asked: the
    graph is the path those inputs take, and holds a number read as a literal. Branches and
    numbers are guarded (inputs that answer otherwise raise
    :class:`~reconvene_fx.errors.InputError`) and warned about
    (:class:`BranchDecisionWarning`); each answer is listed in
    ``gm.meta["reconvene.trace_decisions"]`` and logged. ``round()`` of a traced value and
    ``torch.tensor``/``torch.as_tensor`` of one are calls computed at run time instead.
    The graph is then run once against the model on those inputs (both without grad, in
    the model's training mode, from one random seed, on copies): a graph that does not
    reproduce the model's outputs raises a :class:`TraceError` naming the first module
    call or node that differs. A model that differs from itself on a second run is not
    checked (logged). When tracing answered nothing from the inputs' sizes, the two run
    first on a corner of large inputs (a 224x224 image: its 64x64 corner), which settles
    it when they agree there (see :func:`~reconvene_fx._fidelity.check_fidelity`).

    Args:
        model: the module to trace; it is not modified.
        leaf_modules: module types or qualified names to keep as opaque calls (their
            channels are never pruned through unless a rule knows the type).
        concrete_args: forwarded to ``torch.fx.Tracer.trace`` to fix arguments that drive
            control flow.
        auto_leaf: make submodules that cannot be traced leaves instead of failing.
        example_inputs: the inputs the model will be compiled for (positional).
        check: with ``example_inputs``, check that the graph reproduces the model.

    Raises:
        TraceError: naming the module (or the model's own ``forward``) that broke tracing,
            or where the graph stops reproducing the model.

    Example:
        >>> gm = trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()))
        >>> [n.op for n in gm.graph.nodes]
        ['placeholder', 'call_module', 'call_module', 'output']
    """
    if not isinstance(model, torch.nn.Module):
        raise ArgumentTypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    borrowed = BorrowedTensors(tensors_of(model))
    work = structural_copy(model)
    if isinstance(work, torch.fx.GraphModule) and not concrete_args and not leaf_modules:
        work.meta[BORROWED] = borrowed
        work.meta[OWNED] = True
        return work
    specs = list(leaf_modules)
    inputs = None if example_inputs is None else _named_inputs(work, example_inputs)
    if inputs is not None:  # optional arguments the inputs do not fill keep their defaults
        concrete_args = {**_unfilled_defaults(work, inputs), **(concrete_args or {})} or None
    auto: dict[str, str] = {}
    while True:
        tracer = _Tracer(specs, auto, inputs)
        try:
            graph = tracer.trace(work, concrete_args=concrete_args)
            break
        except Exception as exc:
            failed = tracer.failed_in
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            give_up = not auto_leaf or failed is None or len(auto) >= _MAX_AUTO_LEAVES
            if give_up or failed[0] in auto:  # type: ignore[index]
                where = (
                    f"{failed[0]} ({failed[1]})"
                    if failed
                    else f"{model.__class__.__name__}.forward"
                )
                raise TraceError(
                    f"torch.fx could not trace the model: in {where}: {type(exc).__name__}: "
                    f"{exc}\nWhat to do: mark that module as a leaf (leaf_modules=[...]) so it "
                    "is called as a black box, or fix the arguments that drive its control "
                    "flow with concrete_args={...}."
                ) from exc
            auto[failed[0]] = f"{failed[1]}: {reason}"
    for name, reason in auto.items():
        warnings.warn(
            f"torch.fx could not trace module {name!r} ({reason}); it is called as a black "
            "box and its channels are not pruned through. Pass leaf_modules=[...] to choose "
            "the leaves yourself, or auto_leaf=False to get the error.",
            AutoLeafWarning,
            stacklevel=2,
        )
    gm = torch.fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta[BORROWED] = borrowed
    gm.meta[OWNED] = True
    if auto:
        gm.meta[AUTO_LEAVES] = dict(auto)
    if tracer.decisions:
        gm.meta[TRACE_DECISIONS] = list(tracer.decisions)
        for decision in tracer.decisions:
            logger.info("trace: resolved for the example inputs: %s", decision)
    _warn_decisions(tracer.branches, tracer.numbers)
    if example_inputs is not None and check:
        check_fidelity(model, gm, example_inputs, _fixed_arguments(concrete_args, inputs),
                       size_generic=not tracer.decisions)  # fmt: skip
    return gm


def _fixed_arguments(
    concrete_args: Mapping[str, Any] | None, inputs: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The arguments tracing fixed that the model needs beside the example inputs (the
    graph holds them as constants)."""
    return {
        name: value
        for name, value in (concrete_args or {}).items()
        if name not in (inputs or {}) and not isinstance(value, torch.fx._symbolic_trace.PHBase)
    }


def _warn_decisions(branches: list[tuple[str, bool]], numbers: list[tuple[str, str]]) -> None:
    """One :class:`BranchDecisionWarning` per source line that branched on a traced value
    (with the branch taken) or read a traced size as a Python number (with the number)."""
    events = [
        (source, f"branches on a traced value at {{}}: traced for the example inputs, which "
                 f"take the {taken} branch; the compiled graph holds only that branch and "
                 "raises InputError for inputs taking the other one")
        for source, taken in branches
    ] + [
        (source, f"reads a traced size as a Python number at {{}}: traced for the example "
                 f"inputs, which give {given}; the compiled graph holds that number and "
                 "raises InputError for inputs giving another one")
        for source, given in numbers
    ]  # fmt: skip
    for (source, text), count in collections.Counter(events).items():
        times = f" ({count} times)" if count > 1 else ""
        warnings.warn(
            "the forward " + text.format(source + times), BranchDecisionWarning, stacklevel=3
        )


def _unfilled_defaults(model: torch.nn.Module, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The forward parameters with a default that ``inputs`` does not fill: traced as
    constants (``forward(x, scale=None)`` compiled for ``(x,)``)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {
        p.name: p.default
        for p in params
        if p.name not in inputs
        and p.default is not inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def _named_inputs(model: torch.nn.Module, example_inputs: tuple[Any, ...]) -> dict[str, Any]:
    """The example inputs by the name of the forward parameter each one fills."""
    try:
        bound = inspect.signature(model.forward).bind_partial(*example_inputs)
    except TypeError:
        return {}
    return {
        name: value
        for name, value in bound.arguments.items()
        if not isinstance(value, (tuple, dict)) or name not in ("args", "kwargs")
    }
