"""Does a traced graph compute what its model computes? One check on the example inputs.

torch.fx records the path the forward takes while tracing. A forward that tests something
which answers differently for a traced value than for a tensor (builtin
``isinstance(x, torch.Tensor)``, torch.fx's ``is_fx_tracing()``, a flag a hook sets)
takes another path, and the graph silently computes something else: a skip connection
goes missing and a pass fails far away, or the compact model is simply wrong.
:func:`check_fidelity` runs the graph and the model once each on the example inputs and
compares the outputs; when they differ it names the first module call (or node) where
the graph goes its own way. A graph that read nothing off the inputs' sizes is checked
on a corner of large inputs first, its large conv/linear calls taken from the model's
run when they get the model's very inputs (:mod:`reconvene_fx._replay`): the check of a
224x224 CNN costs about one forward at 64x64 instead of two at 224x224.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.fx
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map

from ._copy import attributes_restored, structural_copy
from ._replay import Recording, replayable, replaying
from .errors import TraceMismatchError
from .log import logger

__all__ = ["check_fidelity"]

_SEED = 0  # both runs draw the same random numbers (dropout, stochastic depth in training)
_RTOL = 1e-4  # of the largest magnitude of a value: differences below are rounding
# output values compared with ``==`` (other objects are not compared)
_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.Size, torch.dtype, torch.device)


def check_fidelity(
    model: torch.nn.Module,
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    kwargs: Mapping[str, Any] | None = None,
    *,
    size_generic: bool = False,
) -> None:
    """Raise :class:`~reconvene_fx.errors.TraceError` unless ``gm(*example_inputs)``
    gives what ``model(*example_inputs, **kwargs)`` gives.

    Both run once without grad, each module in the training mode ``model`` has (the mode
    the graph was traced in), from the same random seed; the global random state,
    ``model``'s attributes and buffers (BatchNorm statistics in training mode) and
    ``gm``'s attributes are left as they were. Outputs match when every tensor is within
    a tolerance relative to its largest magnitude. When they differ and the model
    differs from itself on a second run (randomness outside torch's generators), or the
    model does not run on the inputs at all, nothing is checked (a log line says so).

    ``size_generic`` says that the graph holds no number or branch read off the inputs'
    sizes (tracing recorded no decision): it computes what the model computes at any
    size, or it goes its own way at every size. The two then run first on a corner of
    the inputs (:func:`_corner`: each dim past the second cut to about a quarter, a
    multiple of the power of two that divides it, up to 64; a 224x224 image becomes
    64x64, a 16x16 one stays whole), at a tenth of the cost on large inputs, the graph's
    large conv/linear calls that get the model's very inputs taking the model's outputs
    (:mod:`reconvene_fx._replay`); when they agree there, that is the answer. When either
    fails there or they differ, the whole inputs decide, as above (a graph that goes its
    own way is then named on them).

    Example:
        >>> class Net(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x * 2 if torch.fx._symbolic_trace.is_fx_tracing() else x
        >>> gm = torch.fx.symbolic_trace(Net())
        >>> try:
        ...     check_fidelity(Net(), gm, (torch.ones(2),))
        ... except TraceMismatchError as exc:
        ...     print(str(exc).splitlines()[0].split(": ", 1)[1])
        output 0 differs by up to 1 (values up to 1), computed by node 'mul'
    """
    kwargs = dict(kwargs or {})
    corner = _corner(example_inputs) if size_generic else None
    if corner is not None and _agree_on(model, gm, corner, kwargs):
        return
    try:
        expected = _run_model(model, example_inputs, kwargs)
    except Exception as exc:
        logger.info(
            "trace: not checked against the model, which does not run on the example "
            "inputs (%s: %s)",
            type(exc).__name__,
            _first_line(exc),
        )
        return
    try:
        problem = _difference(_run(gm, example_inputs, {}), expected)
    except Exception as exc:
        problem = f"the graph fails ({type(exc).__name__}: {_first_line(exc)})"
    if problem is None:
        return
    try:
        again = _run_model(model, example_inputs, kwargs)
    except Exception:
        again = None
    if again is None or _difference(again, expected) is not None:
        logger.info(
            "trace: not checked against the model: two runs of the model on the example "
            "inputs differ (it is not deterministic)"
        )
        return
    found = _first_divergence(model, gm, example_inputs, kwargs, expected)
    what, scope = found if found is not None else (problem, None)
    leaf = (
        f"mark {scope!r} as a leaf (leaf_modules=[{scope!r}]) so it runs as written, or "
        if scope
        else ""
    )
    raise TraceMismatchError(
        f"the traced graph does not compute what {type(model).__name__}.forward computes "
        f"on the example inputs: {what}\n"
        "The forward takes another path while torch.fx traces it than when it runs: a test "
        "that answers otherwise for a traced value (builtin isinstance(x, torch.Tensor), "
        "torch.fx's is_fx_tracing(), a flag set by a hook) or a Python value fixed while "
        f"tracing.\nWhat to do: {leaf}make the forward take the same path in both cases."
    )


def _agree_on(
    model: torch.nn.Module,
    gm: torch.fx.GraphModule,
    inputs: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> bool:
    """Whether the graph and the model both run on ``inputs`` and give the same outputs.

    The graph's run takes the output of each large conv/linear call from the model's run
    when the call gets the very input the model's call got (:mod:`reconvene_fx._replay`): what the
    module computes from it is known, so only the graph's own path is run again."""
    try:
        recording = Recording(replayable(gm))
        expected = _run_model(model, inputs, kwargs, recording)
        with _isolated(gm), replaying(gm, recording):
            got = gm.forward(*_snapshot(inputs))
        return _difference(got, expected) is None
    except Exception:
        return False


# the corner of an input that the first comparison runs on: each dim past the second cut
# to a quarter or more, keeping a power-of-two factor up to this (strides, poolings)
_CORNER_ALIGN = 64
_CORNER_MAX_FRACTION = 0.5  # of the elements: a smaller saving is not worth a third run


def _corner(inputs: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``inputs`` with each floating tensor of three or more dims cut, from the start, to
    about a quarter of each dim past the second (a multiple of the largest power of two,
    up to 64, that divides it: 224 -> 64, 299 -> 75, 16 -> 16); None when that does not
    at least halve the elements.

    Example:
        >>> [tuple(t.shape) for t in _corner((torch.zeros(1, 3, 224, 224),))]
        [(1, 3, 64, 64)]
        >>> _corner((torch.zeros(2, 3, 16, 16),)) is None
        True
    """
    before = after = 0

    def cut(value: Any) -> Any:
        nonlocal before, after
        if not isinstance(value, torch.Tensor) or value.dim() < 3 or not value.is_floating_point():
            return value
        sizes = [_corner_size(d) for d in value.shape[2:]]
        before += value.numel()
        after += value.numel() // max(math.prod(value.shape[2:]), 1) * math.prod(sizes)
        return value[(slice(None), slice(None), *(slice(0, d) for d in sizes))]

    cornered = tree_map(cut, tuple(inputs))
    if not before or after > _CORNER_MAX_FRACTION * before:
        return None
    return cornered


def _corner_size(size: int) -> int:
    """About a quarter of ``size``, rounded up to a multiple of the largest power of two
    (up to 64) that divides it, and never more than ``size``."""
    if size <= 0:
        return size
    align = min(size & -size, _CORNER_ALIGN)
    return min(size, -(-max(1, -(-size // 4)) // align) * align)


@contextlib.contextmanager
def _isolated(module: torch.nn.Module) -> Iterator[None]:
    """No grad, a fixed seed, and ``module``'s buffers and attributes as they were after."""
    with _seeded(), attributes_restored(module), _buffers_cloned(module):
        yield


@contextlib.contextmanager
def _buffers_cloned(module: torch.nn.Module) -> Iterator[None]:
    """Each module of ``module`` holds clones of its buffers (a buffer held twice, one
    clone), and its own buffers again after: what ``torch.func.functional_call`` with
    cloned buffers does, at a fraction of its cost (~10 us a buffer)."""
    clones: dict[int, torch.Tensor] = {}
    held: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
    try:
        for owner in module.modules():
            for name, b in list(owner._buffers.items()):
                if b is not None:
                    held.append((owner, name, b))
                    owner._buffers[name] = clones.setdefault(id(b), b.clone())
        yield
    finally:
        for owner, name, b in held:
            owner._buffers[name] = b


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    """No grad, and every generator seeded with ``_SEED``; the random state as it was after."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.no_grad(), torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(_SEED)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(_SEED)
        yield


def _run_model(
    model: torch.nn.Module,
    inputs: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    recording: Recording | None = None,
) -> Any:
    """What :func:`_run` gives for ``model``, run on a structural copy of it whose buffers
    are clones: the copy is thrown away, so nothing of it needs putting back (the shared
    parameters are only read, as a forward does). ``recording`` records its calls."""
    module = structural_copy(model)
    if recording is not None:
        recording.attach(module)
    clones: dict[int, torch.Tensor] = {}
    for held in module.modules():
        for name, b in list(held._buffers.items()):
            if b is not None:
                held._buffers[name] = clones.setdefault(id(b), b.clone())
    call = module.forward if isinstance(module, torch.fx.GraphModule) else module
    with _seeded():
        return call(*_snapshot(inputs), **kwargs)


def _run(module: torch.nn.Module, inputs: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """``module``'s output on copies of ``inputs`` (a forward may write into its inputs).
    A ``GraphModule`` runs its ``forward`` directly: its ``__call__`` prints the traceback
    of a failure to stderr, and a failure here is a finding, reported as one."""
    call = module.forward if isinstance(module, torch.fx.GraphModule) else module
    with _isolated(module):
        return call(*_snapshot(inputs), **kwargs)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def _leaves(value: Any) -> tuple[list[Any], Any]:
    """The leaves of an output (dataclass outputs opened field by field) and its form."""
    return tree_flatten(_plain_mappings(value))


def _plain_mappings(value: Any) -> Any:
    """``value`` with every mapping (an ``OrderedDict``, which a traced graph returns as a
    plain ``dict``) and dataclass as a plain dict in the same order, inside lists and
    tuples too: the form that counts is the keys and the order, not the mapping type. A
    dataclass that is also a mapping (diffusers' and transformers' outputs, which leave out
    their None fields) counts by its keys."""
    if isinstance(value, Mapping):  # also a dataclass that is a mapping (HF ModelOutput)
        return {key: _plain_mappings(item) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {key: _plain_mappings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain_mappings(item) for item in value]
    if type(value) is tuple:
        return tuple(_plain_mappings(item) for item in value)
    return value


def _difference(got: Any, expected: Any) -> str | None:
    """How ``got`` differs from ``expected`` (outputs of the graph and of the model)."""
    got_leaves, got_form = _leaves(got)
    expected_leaves, expected_form = _leaves(expected)
    if got_form != expected_form:
        return f"the output has another form: {got_form} instead of {expected_form}"
    for index, (a, b) in enumerate(zip(got_leaves, expected_leaves, strict=True)):
        problem = _value_difference(a, b)
        if problem is not None:
            return f"output {index} {problem}"
    return None


def _value_difference(a: Any, b: Any) -> str | None:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return _tensor_difference(a, b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return f"is {type(a).__name__} instead of {type(b).__name__}"
    plain = isinstance(a, _PLAIN), isinstance(b, _PLAIN)
    if not any(plain):  # objects of the model's own: no notion of equal to rely on
        return None
    both_nan = isinstance(a, float) and isinstance(b, float) and a != a and b != b
    if not all(plain) or (a != b and not both_nan):
        return f"is {a!r} instead of {b!r}"
    return None


def _tensor_difference(a: torch.Tensor, b: torch.Tensor) -> str | None:
    if a.shape != b.shape:
        return f"has shape {tuple(a.shape)} instead of {tuple(b.shape)}"
    if a.dtype != b.dtype:
        return f"has dtype {a.dtype} instead of {b.dtype}"
    if a.device != b.device:
        return f"is on {a.device} instead of {b.device}"
    if a.numel() == 0:
        return None
    if not (a.is_floating_point() or a.is_complex()):
        return None if torch.equal(a, b) else "differs"
    a, b = a.detach(), b.detach()
    finite = torch.isfinite(b)
    if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(
        a[~finite].nan_to_num(), b[~finite].nan_to_num()
    ):
        return "differs where values are not finite (inf or nan)"
    if not finite.any():
        return None
    error = float((a[finite] - b[finite]).abs().max())
    scale = float(b[finite].abs().max())
    rtol = max(_RTOL, 16 * torch.finfo(a.dtype).eps)
    if error <= rtol * max(scale, torch.finfo(a.dtype).tiny):
        return None
    return f"differs by up to {error:.3g} (values up to {scale:.3g})"


def _snapshot(value: Any) -> Any:
    """``value`` with its tensors copied: later in-place ops do not change it."""
    return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, value)


def _tensors(value: Any) -> list[torch.Tensor]:
    return [v for v in tree_leaves(value) if isinstance(v, torch.Tensor)]


def _describe(node: torch.fx.Node) -> str:
    """``node 'name'`` and the module whose forward created it."""
    scope = _scope(node)
    where = f" in the forward of {scope[0]!r} ({scope[1]})" if scope else ""
    return f"node {node.name!r}{where}"


def _scope(node: torch.fx.Node) -> tuple[str, str] | None:
    """The innermost module (qualified name, type name) whose forward holds ``node``: for
    a module call, the module calling it."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    if stack and node.op == "call_module" and str(stack[-1][0]) == str(node.target):
        stack.pop()
    if not stack:
        return None
    name, kind = stack[-1]
    return str(name), getattr(kind, "__name__", str(kind))


class _Diverged(Exception):
    def __init__(self, what: str, scope: str | None) -> None:
        super().__init__(what)
        self.what, self.scope = what, scope


class _Compare(torch.fx.Interpreter):
    """Runs the graph node by node and stops at the first module call whose inputs or
    output differ from the model's (recorded by hooks), or at a node that fails."""

    def __init__(self, gm: torch.fx.GraphModule, calls: Mapping[str, list[Any]]) -> None:
        super().__init__(gm)
        self.calls = calls
        self.count: dict[str, int] = defaultdict(int)

    def run_node(self, n: torch.fx.Node) -> Any:
        recorded = None
        if n.op == "call_module":
            recorded = self._recorded(n)
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            self._compare_inputs(n, _tensors((args, kwargs)), recorded[0])
        try:
            result = super().run_node(n)
        except _Diverged:
            raise
        except Exception as exc:
            raise _Diverged(
                f"{_describe(n)} fails ({type(exc).__name__}: {_first_line(exc)}), where "
                "the model runs",
                _outer(n),
            ) from exc
        if recorded is not None:
            problem = _difference(result, recorded[1])
            if problem is not None:
                raise _Diverged(
                    f"module {n.target!r} (node {n.name!r}) gets the same inputs as in the "
                    f"model but its {problem}",
                    str(n.target),
                )
        return result

    def _recorded(self, n: torch.fx.Node) -> Any:
        target = str(n.target)
        index = self.count[target]
        self.count[target] += 1
        calls = self.calls.get(target, [])
        if index >= len(calls):
            raise _Diverged(
                f"the graph calls module {target!r} (node {n.name!r}) {index + 1} times, "
                f"the model {len(calls)} times",
                _outer(n),
            )
        return calls[index]

    def _compare_inputs(
        self, n: torch.fx.Node, got: list[torch.Tensor], expected: list[torch.Tensor]
    ) -> None:
        sources: list[torch.fx.Node] = []
        torch.fx.node.map_arg((n.args, n.kwargs), lambda a: sources.append(a) or a)
        if len(got) != len(expected):
            raise _Diverged(
                f"module {n.target!r} (node {n.name!r}) gets {len(got)} tensors in the "
                f"graph and {len(expected)} in the model",
                _outer(n),
            )
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            problem = _tensor_difference(a, b)
            if problem is None:
                continue
            source = sources[index] if len(sources) == len(got) else None
            made = f"; {_describe(source)} computed it" if source is not None else ""
            raise _Diverged(
                f"input {index} of module {n.target!r} (node {n.name!r}) {problem} in the "
                f"graph{made}",
                _outer(source if source is not None else n),
            )


def _outer(node: torch.fx.Node) -> str | None:
    """The module whose forward holds ``node``: the one to call whole instead."""
    scope = _scope(node)
    return None if scope is None else scope[0]


def _first_divergence(
    model: torch.nn.Module,
    gm: torch.fx.GraphModule,
    inputs: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    expected: Any,
) -> tuple[str, str | None] | None:
    """Where the graph first goes its own way: runs the model again recording the inputs
    and output of every module the graph calls, then the graph node by node."""
    eager = structural_copy(model)
    targets = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    calls: dict[str, list[Any]] = defaultdict(list)
    pending: dict[str, list[Any]] = defaultdict(list)
    for name in targets:
        try:
            module = eager.get_submodule(name)
        except AttributeError:
            continue

        def before(_: Any, args: Any, kw: Any, name: str = name) -> None:
            pending[name].append(_snapshot(_tensors((args, kw))))

        def after(_: Any, args: Any, kw: Any, out: Any, name: str = name) -> None:
            calls[name].append((pending[name].pop(), _snapshot(out)))

        module.register_forward_pre_hook(before, with_kwargs=True)
        module.register_forward_hook(after, with_kwargs=True)
    try:
        _run(eager, inputs, kwargs)
        with _isolated(gm):
            got = _Compare(gm, calls).run(*_snapshot(inputs))
    except _Diverged as found:
        return found.what, found.scope
    except Exception:
        return None
    return _output_divergence(gm, got, expected)


def _output_divergence(
    gm: torch.fx.GraphModule, got: Any, expected: Any
) -> tuple[str, str | None] | None:
    """The first output that differs, and the node that computed it."""
    problem = _difference(got, expected)
    if problem is None:
        return None
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    sources: list[torch.fx.Node] = []
    torch.fx.node.map_arg(output.args, lambda a: sources.append(a) or a)
    got_leaves, _ = _leaves(got)
    expected_leaves, _ = _leaves(expected)
    if len(got_leaves) != len(expected_leaves) or len(sources) != len(got_leaves):
        return problem, None
    for index, (a, b) in enumerate(zip(got_leaves, expected_leaves, strict=True)):
        if _value_difference(a, b) is not None:
            return f"{problem}, computed by {_describe(sources[index])}", _outer(sources[index])
    return problem, None
