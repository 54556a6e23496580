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

import torch

from reconvene_fx._atomic import atomic_write, check_writable
from reconvene_fx._mode import eval_mode
from reconvene_fx.composite import bake_masks
from reconvene_fx.emit._state import from_state, to_state
from reconvene_fx.errors import ExportError, ReconveneError

__all__ = ["load", "save"]

_SAVE_SUFFIXES = (".pt", ".pt2", ".onnx")
_LOAD_SUFFIXES = (".pt", ".pt2")


def save(gm: torch.nn.Module, path: str | os.PathLike, example_inputs: tuple = ()) -> Path:
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
        example_inputs: positional inputs for ``torch.export`` / ONNX tracing (unused by
            ``.pt``).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: the suffix is not one of ``.pt``, ``.pt2``, ``.onnx``.
        OSError: ``path`` cannot be written (checked before anything is exported).
        ExportError: ``.pt`` of a module that is not a GraphModule, or with an attribute
            the format cannot hold (the message names it); the ONNX export failed its check.

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
        raise ValueError(_suffix_message("save", path, _SAVE_SUFFIXES))
    check_writable(path)
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
    with eval_mode(gm):
        program = torch.export.export(gm, tuple(example_inputs))
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
        ValueError: the suffix is not ``.pt2`` or ``.pt`` (run ``.onnx`` with onnxruntime).
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
    raise ValueError(_suffix_message("load", path, _LOAD_SUFFIXES))


def _suffix_message(verb: str, path: Path, supported: tuple[str, ...]) -> str:
    got = path.suffix or "no suffix"
    return f"cannot {verb} {path.name!r}: unsupported suffix {got!r}; use one of {supported}"
