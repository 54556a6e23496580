"""A compiled GraphModule as plain data that ``torch.load(..., weights_only=True)`` reads.

What a ``.pt`` file of :func:`reconvene_fx.emit.save` holds (a dict of strings, numbers,
lists, dicts and tensors; no pickled objects, no code):

- ``graph``: the nodes (op, name, target, encoded args and kwargs). A function target is
  named ``module:qualname`` and resolved on load only inside trusted modules (torch,
  operator, math, torchvision, timm, ultralytics, reconvene_fx, or ones the caller names).
- ``modules``: per submodule its class (``module:qualname``, trusted modules only) and its
  plain attributes (``in_channels``, ``stride``, ``training``, ...).
- ``tensors``: every parameter and buffer; composite masks separately in ``masks``, so they
  are parametrizations again after loading and masked weights stay zero through training.
- ``report``: the :class:`~reconvene_fx.PruningReport`.

Analysis scratch (node metadata, sensitivity tables, scores) is not stored.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.fx
from torch.nn.utils import parametrize

from ..budget import Budget
from ..composite import WeightMask, apply_masks
from ..errors import ExportError, ReconveneError
from ..meta import REPORT
from ..reporting import LayerPlan, PruningReport, SubmodulePlan

__all__ = ["FORMAT", "TRUSTED_MODULES", "from_state", "to_state"]

FORMAT = "reconvene_fx.graph_module/1"
TRUSTED_MODULES = (
    "torch", "operator", "math", "builtins", "torchvision", "timm", "ultralytics",
    "reconvene_fx",
)  # fmt: skip
# module attributes that are torch.nn.Module's own bookkeeping, rebuilt on load
_SKIPPED = {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"}
_MODULE_ALIASES = {"_operator": "operator"}  # where a function says it lives -> importable
_HOOKS_PREFIX = ("_forward", "_backward", "_state_dict", "_load_state_dict", "_is_full_backward")


def to_state(gm: torch.fx.GraphModule) -> dict[str, Any]:
    """The plain-data form of ``gm`` (see the module docstring).

    Raises:
        ExportError: a module attribute or graph argument of a kind the format cannot hold
            (the message names it; ``.pt2`` or a pickled ``torch.save`` can).
    """
    tensors: dict[str, torch.Tensor] = {}
    frozen: list[str] = []
    masks: dict[str, torch.Tensor] = {}
    modules: dict[str, Any] = {}
    for name, module in gm.named_modules():
        if not name or _inside_parametrization(name):
            continue
        modules[name] = _module_state(name, module)
        for attr, tensor in _own_tensors(module):
            key = f"{name}.{attr}"
            tensors[key] = tensor.detach()
            if isinstance(tensor, torch.nn.Parameter) and not tensor.requires_grad:
                frozen.append(key)
        if parametrize.is_parametrized(module):
            masks[name] = _mask_of(name, module)
    for attr, tensor in _own_tensors(gm):
        tensors[attr] = tensor.detach()
    empty = [f"{name}.{attr}" if name else attr for name, module in gm.named_modules()
             if not _inside_parametrization(name)
             for attr, value in (*module._parameters.items(), *module._buffers.items())
             if value is None]  # fmt: skip
    report = gm.meta.get(REPORT)
    return {
        "format": FORMAT,
        "class_name": type(gm).__name__,
        "training": gm.training,
        "graph": [_node_state(n) for n in gm.graph.nodes],
        "modules": modules,
        "tensors": tensors,
        "frozen": frozen,
        "buffers": sorted(_buffer_names(gm)),
        "non_persistent": sorted(_buffer_names(gm, persistent=False)),
        "empty": empty,
        "masks": masks,
        "report": _report_state(report) if isinstance(report, PruningReport) else None,
    }


def from_state(state: Mapping[str, Any], trusted: Iterable[str] = ()) -> torch.fx.GraphModule:
    """The GraphModule ``state`` describes, with its masks and report.

    Raises:
        ReconveneError: not this format, or a class or function outside the trusted
            modules (``trusted`` adds module names, e.g. your model's package).
    """
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise ReconveneError(
            f"not a reconvene_fx model file (expected format {FORMAT!r}); a file pickled "
            "by torch.save loads with torch.load(path, weights_only=False), if you trust it"
        )
    allowed = (*TRUSTED_MODULES, *trusted)
    root = torch.nn.Module()
    for name in sorted(state["modules"], key=lambda n: n.count(".")):
        module = _build_module(state["modules"][name], allowed, name)
        parent, _, leaf = name.rpartition(".")
        (root.get_submodule(parent) if parent else root).add_module(leaf, module)
    buffers, non_persistent = set(state["buffers"]), set(state["non_persistent"])
    for key, tensor in state["tensors"].items():
        owner, _, attr = key.rpartition(".")
        module = root.get_submodule(owner) if owner else root
        if key in buffers:
            module.register_buffer(attr, tensor, persistent=key not in non_persistent)
        else:
            module.register_parameter(attr, torch.nn.Parameter(tensor, key not in state["frozen"]))
    for key in state["empty"]:  # a conv without bias: .bias is None, not missing
        owner, _, attr = key.rpartition(".")
        (root.get_submodule(owner) if owner else root).register_parameter(attr, None)
    graph = torch.fx.Graph()
    made: dict[str, torch.fx.Node] = {}
    for node in state["graph"]:
        target = _decode_target(node["op"], node["target"], allowed)
        args = _decode(node["args"], made)
        kwargs = _decode(node["kwargs"], made)
        kind = node.get("type") or {}
        type_expr = (
            _resolve(kind["class"], allowed, "a type annotation") if "class" in kind
            else kind.get("text")
        )  # fmt: skip
        made[node["name"]] = graph.create_node(
            node["op"], target, args, kwargs, node["name"], type_expr
        )
    gm = torch.fx.GraphModule(root, graph, state["class_name"])
    apply_masks(gm, state["masks"])
    gm.train(state["training"])
    for name, spec in state["modules"].items():
        gm.get_submodule(name).training = spec["attrs"].get("training", state["training"])
    if state.get("report") is not None:
        gm.meta[REPORT] = _report_from(state["report"])
    return gm


def _mask_of(name: str, module: torch.nn.Module) -> torch.Tensor:
    """The composite mask of a parametrized module; other parametrizations are refused."""
    found = dict(module.parametrizations)
    chain = list(found.get("weight", []))
    if set(found) != {"weight"} or len(chain) != 1 or not isinstance(chain[0], WeightMask):
        kinds = ", ".join(f"{t}: {type(p).__name__}" for t, ps in found.items() for p in ps)
        raise ExportError(
            f"cannot save module {name!r}: .pt keeps composite masks (WeightMask) only, and "
            f"it has parametrizations {kinds}; save as .pt2 or .onnx (baked in)"
        )
    return chain[0].mask


# -- modules --------------------------------------------------------------------------------
def _own_tensors(module: torch.nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    """Direct parameters and buffers; a masked weight's trainable original as ``weight``."""
    if parametrize.is_parametrized(module, "weight"):
        yield "weight", module.parametrizations["weight"].original
    for attr, p in module._parameters.items():
        if p is not None:
            yield attr, p
    for attr, b in module._buffers.items():
        if b is not None:
            yield attr, b


def _inside_parametrization(name: str) -> bool:
    """``conv.parametrizations.weight.0``: parametrize's own modules (rebuilt on load)."""
    return "parametrizations" in name.split(".")


def _buffer_names(gm: torch.nn.Module, *, persistent: bool | None = None) -> set[str]:
    names = set()
    for name, module in gm.named_modules():
        if _inside_parametrization(name):
            continue
        prefix = f"{name}." if name else ""
        skip = module._non_persistent_buffers_set
        for attr, b in module._buffers.items():
            if b is not None and (persistent is None or (attr not in skip) == persistent):
                names.add(prefix + attr)
    return names


def _module_state(name: str, module: torch.nn.Module) -> dict[str, Any]:
    cls = type(module)
    if parametrize.is_parametrized(module):
        cls = cls.__bases__[0]  # the class parametrize derived the module's class from
    attrs = {}
    for attr, value in vars(module).items():
        if attr in _SKIPPED or attr == "parametrizations":
            continue
        if attr.startswith(_HOOKS_PREFIX):
            if value:
                raise ExportError(f"cannot save module {name!r}: it has {attr} registered")
            continue
        try:
            attrs[attr] = _encode(value)
        except ExportError as exc:
            raise ExportError(
                f"cannot save module {name!r} ({cls.__name__}): attribute {attr!r} is a "
                f"{type(value).__name__} ({exc}); save as .pt2 or .onnx instead"
            ) from None
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "attrs": attrs}


def _build_module(spec: Mapping[str, Any], allowed: tuple[str, ...], name: str) -> torch.nn.Module:
    cls = _resolve(spec["class"], allowed, f"module {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ReconveneError(f"module {name!r}: {spec['class']} is not a torch.nn.Module")
    module = cls.__new__(cls)
    torch.nn.Module.__init__(module)
    for attr, value in spec["attrs"].items():
        object.__setattr__(module, attr, _decode(value, {}))
    return module


# -- graph ----------------------------------------------------------------------------------
def _node_state(node: torch.fx.Node) -> dict[str, Any]:
    try:
        target = _function_path(node.target) if node.op == "call_function" else str(node.target)
        return {"op": node.op, "name": node.name, "target": target, "type": _type_path(node),
                "args": _encode(node.args), "kwargs": _encode(dict(node.kwargs))}  # fmt: skip
    except ExportError as exc:
        raise ExportError(
            f"cannot save node {node.format_node()}: {exc}; save as .pt2 or .onnx instead"
        ) from None


def _type_path(node: torch.fx.Node) -> dict[str, str] | None:
    """The node's type annotation (``x: torch.Tensor``): a class by its path, or text."""
    if isinstance(node.type, str):
        return {"text": node.type}
    if not isinstance(node.type, type):
        return None
    try:
        return {"class": _function_path(node.type)}
    except ExportError:
        return None


def _function_path(fn: Any) -> str:
    """``module:qualname`` that resolves back to ``fn`` (checked now, not at load time);
    an :class:`ExportError` when there is none (a lambda, a local function)."""
    module = getattr(fn, "__module__", None) or "builtins"
    module = _MODULE_ALIASES.get(module, module)
    names = [getattr(fn, "__qualname__", None), getattr(fn, "__name__", None)]
    candidates = [(module, n) for n in names if n]
    name = getattr(fn, "__name__", None)
    if name:  # torch's C functions say torch:_VariableFunctionsClass.flatten
        candidates += [(m, name) for m in ("torch", "torch.nn.functional", "operator", "math")]
    for module_name, qualname in candidates:
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except (ImportError, AttributeError):
            continue
        if found is fn:
            return f"{module_name}:{qualname}"
    raise ExportError(f"the function {fn!r} cannot be named by an importable path")


def _decode_target(op: str, target: str, allowed: tuple[str, ...]) -> Any:
    return _resolve(target, allowed, "a graph function") if op == "call_function" else target


def _resolve(path: str, allowed: tuple[str, ...], what: str) -> Any:
    module_name, _, qualname = path.partition(":")
    if module_name.split(".")[0] not in {a.split(".")[0] for a in allowed} or not any(
        module_name == a or module_name.startswith(f"{a}.") for a in allowed
    ):
        raise ReconveneError(
            f"{what} is {path}, outside the trusted modules; if you trust the file, pass "
            f"trusted=[{module_name.split('.')[0]!r}] to load"
        )
    try:
        value: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ReconveneError(
            f"{what} is {path}, which cannot be imported here ({exc}); load the file where "
            "the library versions it was saved with are installed"
        ) from exc
    return value


# -- values ---------------------------------------------------------------------------------
def _encode(value: Any) -> Any:
    """``value`` as plain data; an :class:`ExportError` for a kind the format cannot hold."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"$float": repr(value)} if not math.isfinite(value) else value
    if isinstance(value, torch.fx.Node):
        return {"$node": value.name}
    if isinstance(value, torch.Size):
        return {"$size": list(value)}
    if isinstance(value, tuple):
        return {"$tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, slice):
        return {"$slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if value is Ellipsis:
        return {"$ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"$dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"$device": str(value)}
    if isinstance(value, (torch.memory_format, torch.layout)):
        return {"$torch": str(value).removeprefix("torch.")}
    raise ExportError(f"values of type {type(value).__name__} are not supported")


def _decode(value: Any, nodes: Mapping[str, torch.fx.Node]) -> Any:
    if isinstance(value, list):
        return [_decode(v, nodes) for v in value]
    if not isinstance(value, dict):
        return value
    ((tag, item),) = value.items()
    if tag == "$node":
        return nodes[item]
    if tag == "$tuple":
        return tuple(_decode(v, nodes) for v in item)
    if tag == "$dict":
        return {_decode(k, nodes): _decode(v, nodes) for k, v in item}
    if tag == "$slice":
        return slice(*(_decode(v, nodes) for v in item))
    if tag == "$size":
        return torch.Size(item)
    if tag == "$float":
        return float(item)
    if tag == "$ellipsis":
        return Ellipsis
    if tag == "$dtype":
        return getattr(torch, item)
    if tag == "$device":
        return torch.device(item)
    if tag == "$torch":
        return getattr(torch, item)
    raise ReconveneError(f"unknown value tag {tag!r} in the model file")


# -- report ---------------------------------------------------------------------------------
# Fields added later ("dead") take their LayerPlan default when an older file lacks them.
_LAYER_FIELDS = ("in_channels", "out_channels", "density", "sensitivity", "narrowed",
                 "params_before", "params_after", "macs_before", "macs_after", "selected",
                 "masked", "nonzero_after", "dead")  # fmt: skip
_REPORT_FIELDS = ("params_before", "params_after", "macs_before", "macs_after", "method",
                  "strategy", "reinit", "composite", "nonzero_after", "global_density",
                  "latency_before", "latency_after", "batch_size")  # fmt: skip
# Keys of files saved before the report and Budget said MACs -> today's names.
_RENAMED = {"flops_before": "macs_before", "flops_after": "macs_after", "flops": "macs"}


def _report_state(rep: PruningReport) -> dict[str, Any]:
    budget = rep.budget
    return {
        **{f: getattr(rep, f) for f in _REPORT_FIELDS},
        "budget": budget.limits() if isinstance(budget, Budget) else budget,
        "approximate": dict(rep.approximate),
        "leaves": dict(rep.leaves),
        "decisions": list(rep.decisions),
        "scoring_batches": rep.scoring_batches,
        "submodules": {name: dict(vars(sp)) for name, sp in rep.submodules.items()},
        "layers": {name: _layer_state(lp) for name, lp in rep.layers.items()},
    }


def _layer_state(lp: LayerPlan) -> dict[str, Any]:
    return {
        "in_idx": lp.in_idx,
        "out_idx": lp.out_idx,
        **{f: getattr(lp, f) for f in _LAYER_FIELDS},
    }


def _current_names(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with the keys that older files used renamed to today's (see ``_RENAMED``).

    Example:
        >>> _current_names({"params": 0.5, "flops": 0.4, "latency": None})
        {'params': 0.5, 'macs': 0.4, 'latency': None}
    """
    return {_RENAMED.get(k, k): v for k, v in state.items()}


def _report_from(state: Mapping[str, Any]) -> PruningReport:
    state = _current_names(state)
    budget = state["budget"]
    if isinstance(budget, dict):
        budget = Budget(**_current_names(budget))
    return PruningReport(
        **{f: state[f] for f in _REPORT_FIELDS},
        budget=budget,
        approximate=dict(state["approximate"]),
        leaves=dict(state["leaves"]),
        decisions=tuple(state["decisions"]),
        scoring_batches=state.get("scoring_batches"),  # absent in files saved before it
        submodules={n: SubmodulePlan(**sp) for n, sp in state.get("submodules", {}).items()},
        layers={name: LayerPlan(**_current_names(lay)) for name, lay in state["layers"].items()},
    )
