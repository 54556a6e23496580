"""PyTorch emitters: save a compiled GraphModule as ``.pt``, ``.pt2`` or ``.onnx``, and load it.

- ``.pt``: the model as plain data (graph, module attributes, tensors, composite masks and
  the pruning report; see :mod:`reconvene_fx.emit._state`) that
  ``torch.load(path, weights_only=True)`` reads: loading runs no pickled code. :func:`load`
  rebuilds a trainable ``GraphModule``: training flags, masks (masked weights stay zero
  through training) and ``rfx.report`` as they were.
- ``.pt2``: ``torch.export`` of the module in eval mode (``torch.export.save``), for
  deployment: portable and safe to load, **inference only** (``.train()`` raises on the
  loaded module), masks baked into the weights.
- ``.onnx``: :func:`reconvene_fx.emit.export_onnx` with its defaults (checked with onnxruntime).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from reconvene_fx._atomic import atomic_write, check_writable
from reconvene_fx._inputs import check_inputs
from reconvene_fx._mode import eval_mode
from reconvene_fx.composite import bake_masks
from reconvene_fx.emit._state import from_state, to_state
from reconvene_fx.errors import ArgumentError, ExportError, InputError, ReconveneError

__all__ = ["load", "save"]

_SAVE_SUFFIXES = (".pt", ".pt2", ".onnx")
_LOAD_SUFFIXES = (".pt", ".pt2")


def save(
    gm: torch.nn.Module,
    path: str | os.PathLike,
    example_inputs: tuple | list | torch.Tensor | None = None,
) -> Path:
    """Save ``gm`` in the format its file suffix names: ``.pt``, ``.pt2`` or ``.onnx``.

    ``.pt`` keeps everything needed to train on (composite masks stay masks, the report
    comes back with :func:`load`) and reads with ``weights_only=True``. ``.pt2`` and
    ``.onnx`` are for deployment: captured in eval mode with the masks multiplied into the
    weights (``gm`` keeps its masks and training flags). Parent folders are created; the
    path is checked first and the file written atomically: an existing file at ``path``
    is replaced only once the new one is complete (an error or a killed process leaves it
    as it was).

    Args:
        gm: the module to save, a ``torch.fx.GraphModule`` for ``.pt``.
        path: target file; its suffix picks the format.
        example_inputs: positional inputs for ``torch.export`` / ONNX tracing, as
            :func:`reconvene_fx.compile` takes them: a tuple, a list or one bare tensor.
            Needed by ``.pt2`` and ``.onnx``, unused by ``.pt``.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ArgumentError: the suffix is not one of ``.pt``, ``.pt2``, ``.onnx``, or ``.pt2``
            / ``.onnx`` without ``example_inputs``.
        InputError: the model rejects ``example_inputs`` (the message names their shapes
            and the error).
        OSError: ``path`` cannot be written (checked before anything is exported).
        ExportError: ``.pt`` of a module that is not a GraphModule, or with an attribute
            the format cannot hold (the message names it); ``torch.export`` could not
            capture the model; the ONNX export failed its check.

    Example:
        >>> import tempfile, torch
        >>> from reconvene_fx.emit import load, save
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
        >>> x = torch.randn(1, 3, 8, 8)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = save(gm, f"{d}/tiny.pt")
        ...     state = torch.load(path, weights_only=True)  # plain data, no pickled code
        ...     print(path.name, torch.equal(load(path)(x), gm(x)))
        tiny.pt True
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SAVE_SUFFIXES:
        raise ArgumentError(_suffix_message("save", path, _SAVE_SUFFIXES))
    check_writable(path)
    if suffix != ".pt":
        usage = f"rfx.save(gm, {path.name!r}, (x,))"
        example_inputs = _example_inputs(gm, example_inputs, f"the {suffix} format", usage)
    if suffix == ".pt":
        if not isinstance(gm, torch.fx.GraphModule):
            raise ExportError(
                f"cannot save {path.name}: .pt holds a torch.fx.GraphModule (what "
                f"reconvene_fx.compile returns), got {type(gm).__name__}; use .pt2 or .onnx"
            )
        state = to_state(gm)
        with atomic_write(path) as tmp:
            torch.save(state, str(tmp))
        return path
    gm = bake_masks(gm)
    if suffix == ".onnx":
        from reconvene_fx.emit.onnx import export_onnx  # imports onnx: only when asked for

        return export_onnx(gm, path, example_inputs)
    _run_example(gm, example_inputs)  # a wrong input is an InputError, not a torch.export one
    with eval_mode(gm):
        try:
            program = torch.export.export(gm, example_inputs)
        except Exception as exc:
            raise ExportError(
                f"cannot save {path.name}: torch.export could not capture the model "
                f"({type(exc).__name__}: {_first_line(exc)}); save it as .pt or .onnx instead"
            ) from exc
    with atomic_write(path) as tmp:
        torch.export.save(program, str(tmp))
    return path


def load(path: str | os.PathLike, *, trusted: Iterable[str] = ()) -> torch.nn.Module:
    """Load a module written by :func:`save` from a ``.pt`` or ``.pt2`` file.

    ``.pt`` is read with ``torch.load(path, weights_only=True)`` and rebuilt: a trainable
    ``GraphModule`` with its masks (as parametrizations) and its report (``rfx.report``).
    Its classes and functions must come from trusted modules (torch, torchvision, timm,
    ultralytics, operator, math, reconvene_fx): name your own packages in ``trusted``.
    ``.pt2`` returns ``torch.export.load(path).module()``, inference only.

    Raises:
        ArgumentError: the suffix is not ``.pt2`` or ``.pt`` (run ``.onnx`` with
            onnxruntime).
        ReconveneError: the ``.pt`` file is not in this format (an older pickled file:
            ``torch.load(path, weights_only=False)``, if you trust it) or names a class or
            function outside the trusted modules.

    Example:
        >>> import tempfile, torch
        >>> from reconvene_fx.emit import load, save
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 2)))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     print(isinstance(load(save(gm, f"{d}/tiny.pt")), torch.fx.GraphModule))
        True
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        return torch.export.load(str(path)).module()
    if suffix == ".pt":
        try:
            state = torch.load(str(path), weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ReconveneError(
                f"{path.name} is not a reconvene_fx model file (it holds pickled objects, "
                "as .pt files saved before reconvene_fx 0.3 do); load it with "
                "torch.load(path, weights_only=False) only if you trust it"
            ) from exc
        return from_state(state, trusted)
    raise ArgumentError(_suffix_message("load", path, _LOAD_SUFFIXES))


def _suffix_message(verb: str, path: Path, supported: tuple[str, ...]) -> str:
    got = path.suffix or "no suffix"
    return f"cannot {verb} {path.name!r}: unsupported suffix {got!r}; use one of {supported}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _example_inputs(
    gm: torch.nn.Module, example_inputs: Any, needs: str, usage: str
) -> tuple[Any, ...]:
    """``example_inputs`` as a tuple, accepted as :func:`reconvene_fx.compile` accepts them
    (a tuple, a list or one bare tensor) and checked against ``gm.forward``'s parameters;
    ``needs`` and ``usage`` word the error when there are none.

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.ReLU())
        >>> len(_example_inputs(gm, torch.zeros(2, 3), "the .pt2 format", "save(...)"))
        1
        >>> try:
        ...     _example_inputs(gm, (), "the .pt2 format", "save(gm, 'm.pt2', (x,))")
        ... except ArgumentError as exc:
        ...     print(str(exc).split(":")[0])
        the .pt2 format needs example_inputs to trace the model on
    """
    if example_inputs is None or (isinstance(example_inputs, (tuple, list)) and not example_inputs):
        raise ArgumentError(
            f"{needs} needs example_inputs to trace the model on: pass a batch it accepts, "
            f"as in {usage} (a bare tensor x works too)"
        )
    return check_inputs(gm, example_inputs)


def _run_example(gm: torch.nn.Module, example_inputs: tuple[Any, ...]) -> Any:
    """``gm``'s outputs on ``example_inputs`` in eval mode without autograd; the flags of
    ``gm`` are restored. A failure is an :class:`InputError` naming the input shapes, the
    node that failed (for a GraphModule) and the error, as compile words it.

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)))
        >>> try:
        ...     _run_example(gm, (torch.zeros(1, 1, 2, 2),))
        ... except InputError as exc:
        ...     print(str(exc)[:72])
        the model rejected example_inputs of shape (1, 1, 2, 2) at node '_0' (ca
    """
    with eval_mode(gm), torch.no_grad():
        try:
            return gm(*example_inputs)
        except ReconveneError:  # already worded for the user (a run-time guard of compile)
            raise
        except Exception as exc:
            raise InputError(_rejected(gm, example_inputs, exc)) from exc


def _rejected(gm: torch.nn.Module, example_inputs: tuple[Any, ...], exc: Exception) -> str:
    """The message of an :class:`InputError` for ``exc``, raised running ``gm``."""
    from reconvene_fx.passes.shape import _own_message, _shapes, _target_name

    where = ""
    if isinstance(gm, torch.fx.GraphModule):
        node = _failing_node(gm, example_inputs)
        if node is not None:
            where = f" at node {node.name!r} ({node.op} {_target_name(node)})"
    return (
        f"the model rejected example_inputs of shape {_shapes(example_inputs)}{where}: "
        f"{type(exc).__name__}: {_own_message(exc)}"
    )


def _failing_node(gm: torch.fx.GraphModule, example_inputs: tuple[Any, ...]) -> Any:
    """The node whose run fails on ``example_inputs`` (run again, node by node), or None."""
    reached: list[torch.fx.Node] = []

    class _Locate(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            reached.append(n)
            return super().run_node(n)

    try:
        _Locate(gm).run(*example_inputs)
    except Exception:
        return reached[-1] if reached else None
    return None
