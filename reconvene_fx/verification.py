"""``verify``: the compact model equals the original with the pruned channels zeroed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves

from ._copy import independent_copy
from .composite import masks_of
from .errors import ReconveneError, VerifyError
from .layers import LayerRegistry, module_layer
from .meta import LIFTED
from .passes.lift import LiftedLayer
from .reporting import PruningReport, report
from .rules.attention import query_layer

__all__ = ["VerifyResult", "verify", "zeroed_reference"]


@dataclass(frozen=True)
class VerifyResult:
    """``exact``: values were compared (False: approximate ops, shapes and finiteness only).
    ``max_error``: the largest absolute difference of the outputs."""

    exact: bool
    max_error: float


def zeroed_reference(
    model: nn.Module,
    rep: PruningReport,
    masks: Mapping[str, torch.Tensor] | None = None,
    lifted: Mapping[str, LiftedLayer] | None = None,
    queries: Iterable[str] = (),
    layers: LayerRegistry | None = None,
) -> nn.Module:
    """A copy of ``model`` where every conv/linear ignores the inputs the plan removed.

    Removing channel set R is equivalent to zeroing, in every consumer that mixes channels,
    the input slices R feeds (design §5). ``masks`` (composite mode: ``{module: mask}``)
    are multiplied into the named modules' weights. ``lifted`` (``gm.meta`` of
    :class:`~reconvene_fx.passes.LiftLayersPass`) says which layer a module whose forward
    calls a functional layer was compiled as. ``queries`` name the layers that compute the
    query of a scaled dot-product attention (an attention mixes the features of its query
    and key): their removed outputs are zeroed too. ``layers``: the layer registry the
    model was compiled with (None: the built-in one), whose handlers zero the inputs.
    """
    ref = independent_copy(model)  # also copies tensors the model computed and cached
    with torch.no_grad():
        for name, mask in (masks or {}).items():
            weight = ref.get_submodule(name).weight
            if mask.shape != weight.shape:  # sliced with its layer's kept inputs
                mask = _unsliced(name, ref.get_submodule(name), mask, rep, layers)
            weight.mul_(mask.to(weight.dtype))
        for name, lp in rep.layers.items():
            if lp.in_idx.numel() == lp.in_channels:
                continue
            held = ref.get_submodule(name)
            layer = module_layer(name, held, layers)
            if layer is None and name in (lifted or {}):
                layer = module_layer(name, lifted[name].build(held), layers)  # type: ignore[index]
            if layer is None:
                raise ReconveneError(
                    f"no layer handler knows module {name!r} of the model; a model compiled "
                    "with compile(layers=registry) is verified with verify(..., layers=registry)"
                )
            removed = torch.ones(lp.in_channels, dtype=torch.bool)
            removed[lp.in_idx] = False
            layer.handler.zero_inputs(layer, removed)
        for name in queries:
            _zero_outputs(ref.get_submodule(name), rep.layers[name].out_idx)
    return ref


def _zero_outputs(module: nn.Module, kept: torch.Tensor) -> None:
    """Zero the outputs of a conv/linear (dim 0 of its weight) that are not ``kept``."""
    removed = torch.ones(module.weight.shape[0], dtype=torch.bool)
    removed[kept] = False
    module.weight[removed] = 0
    if getattr(module, "bias", None) is not None:
        module.bias[removed] = 0


def _query_layers(gm: nn.Module, rep: PruningReport) -> list[str]:
    """The layers whose outputs the plan narrowed and that compute an attention's query."""
    if not isinstance(gm, torch.fx.GraphModule):
        return []
    found = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is F.scaled_dot_product_attention:
            name = query_layer(node)
            plan = rep.layers.get(name) if name is not None else None
            if plan is not None and plan.out_idx.numel() < plan.out_channels:
                found.append(name)
    return found


def _unsliced(
    name: str,
    module: nn.Module,
    mask: torch.Tensor,
    rep: PruningReport,
    layers: LayerRegistry | None = None,
) -> torch.Tensor:
    """The mask of a narrowed layer in the original weight's shape (False where the
    channels went): the handler slices a tensor of positions the way it sliced the mask."""
    layer = module_layer(name, module, layers)
    lp = rep.layers.get(name)
    if layer is None or lp is None:
        raise ReconveneError(f"no layer handler knows masked module {name!r} of the model")
    positions = torch.arange(module.weight.numel()).view(module.weight.shape)
    in_idx = lp.in_idx if lp.in_idx.numel() < lp.in_channels else None
    out_idx = lp.out_idx if lp.out_idx.numel() < lp.out_channels else None
    kept = layer.handler.slice_weight(layer, positions, in_idx, out_idx)
    full = torch.zeros(module.weight.numel(), dtype=torch.bool)
    full[kept.flatten()] = mask.flatten()
    return full.view(module.weight.shape)


def verify(
    model: nn.Module,
    gm: nn.Module,
    example_inputs: tuple[Any, ...] | torch.Tensor,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    layers: LayerRegistry | None = None,
) -> VerifyResult:
    """Check that ``gm`` (from ``compile(..., reinit=False)``) is equivalent to ``model``.

    Both run in eval mode on ``example_inputs`` (training flags are restored). The reference
    is ``model`` with the inputs of removed channels zeroed in every conv/linear; outputs
    must match within ``atol + rtol * max|reference|``. When the plan narrowed channels
    through approximate ops (LayerNorm/GroupNorm statistics), only shapes and finiteness
    are checked and ``exact`` is False. Composite masks of ``gm`` are applied to the
    reference too.

    ``gm`` may also be a model whose own forward could not be traced and whose submodules
    ``compile`` compiled in place: each compiled submodule is then checked this way against
    the original one, on the inputs ``model`` gives it for ``example_inputs`` (recorded by
    one eval-mode forward), and the whole compiled model must run on ``example_inputs``.
    Its outputs are not compared: detectors rank and filter their scores, so a rounding
    difference can change which boxes are kept.

    ``layers``: the layer registry ``gm`` was compiled with (``compile(layers=...)``;
    None: the built-in one): its handlers zero the removed inputs of the reference.

    Raises:
        VerifyError: with the largest error and the first module (in execution order)
            whose kept outputs differ.
        ReconveneError: ``gm`` was compiled with ``reinit=True`` (weights were redrawn).

    Example:
        >>> import reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> x = torch.randn(1, 3, 8, 8)
        >>> gm = rfx.compile(net, budget=0.5, example_inputs=(x,), reinit=False)
        >>> rfx.verify(net, gm, (x,)).exact
        True
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(gm, torch.fx.GraphModule) and report(gm).submodules:
        from ._submodules import verify_in_place

        return verify_in_place(
            model, gm, tuple(example_inputs), rtol=rtol, atol=atol, layers=layers
        )
    rep = report(gm)
    if rep.reinit and any(lp.narrowed for lp in rep.layers.values()):
        raise ReconveneError(
            "verify needs the sliced original weights: compile with reinit=False "
            "(this model was re-initialized)"
        )
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    queries = _query_layers(gm, rep)
    ref = zeroed_reference(model, rep, masks_of(gm), gm.meta.get(LIFTED), queries, layers)
    ref_out, ref_acts = _run(ref, example_inputs, rep)
    gm_out, gm_acts = _run(gm, example_inputs, rep)
    ref_leaves, gm_leaves = tree_leaves(ref_out), tree_leaves(gm_out)
    if len(ref_leaves) != len(gm_leaves):
        raise VerifyError(
            f"the models return {len(ref_leaves)} and {len(gm_leaves)} outputs",
            max_error=float("inf"),
            layer=None,
        )
    max_error = 0.0
    mismatch = False
    for r, c in zip(ref_leaves, gm_leaves, strict=True):
        if not isinstance(r, torch.Tensor):
            continue
        if r.shape != c.shape:
            raise VerifyError(
                f"output shape changed: {tuple(r.shape)} -> {tuple(c.shape)}",
                max_error=float("inf"),
                layer=None,
            )
        if not bool(torch.isfinite(c).all()):
            raise VerifyError("the compact model's output is not finite", max_error=float("inf"),
                              layer=None)  # fmt: skip
        err = float((r - c).abs().max()) if r.numel() else 0.0
        max_error = max(max_error, err)
        mismatch |= err > atol + rtol * float(r.abs().max())
    if rep.approximate:
        return VerifyResult(exact=False, max_error=max_error)
    if mismatch:
        layer = _first_divergence(ref, ref_acts, gm_acts, rep, rtol, atol, layers)
        where = f"; it first appears at module {layer!r}" if layer else ""
        raise VerifyError(
            f"the compact model differs from the zeroed reference: max error {max_error:.3g}"
            f"{where}",
            max_error=max_error,
            layer=layer,
        )
    return VerifyResult(exact=True, max_error=max_error)


def _run(
    model: nn.Module, inputs: tuple[Any, ...], rep: PruningReport
) -> tuple[Any, dict[str, torch.Tensor]]:
    acts: dict[str, torch.Tensor] = {}
    handles = []
    for name in rep.layers:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and name not in acts:
                acts[name] = out.detach()

        handles.append(module.register_forward_hook(hook))
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            out = model(*inputs)
    finally:
        for m, training in modes.items():
            m.training = training
        for h in handles:
            h.remove()
    return out, acts


def _first_divergence(
    ref_model: nn.Module,
    ref: dict[str, torch.Tensor],
    got: dict[str, torch.Tensor],
    rep: PruningReport,
    rtol: float,
    atol: float,
    layers: LayerRegistry | None = None,
) -> str | None:
    for name, r in ref.items():  # insertion order = execution order
        c = got.get(name)
        if c is None:
            continue
        layer = module_layer(name, ref_model.get_submodule(name), layers)
        if layer is None:
            continue
        dim = layer.out_dim if layer.out_dim >= 0 else r.dim() + layer.out_dim
        kept = r.index_select(dim, rep.layers[name].out_idx)
        if kept.shape != c.shape:
            return name
        if float((kept - c).abs().max()) > atol + rtol * float(kept.abs().max()):
            return name
    return None
