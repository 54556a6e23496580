"""PyTorch emitters: save a compiled GraphModule as ``.pt2``, ``.pt`` or ``.onnx``, and load it.

- ``.pt2``: ``torch.export`` of the module in eval mode (``torch.export.save``). Portable and
  safe to load; the loaded module is inference-only (``.train()`` is not supported on it).
- ``.pt``: the whole module pickled with ``torch.save``. Loading runs pickle, so it needs
  ``torch.load(path, weights_only=False)``: load only files you trust. The loaded
  ``GraphModule`` keeps its training flags and can be trained further.
- ``.onnx``: :func:`reconvene_fx.emit.export_onnx` with its defaults (checked with onnxruntime).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from reconvene_fx._atomic import atomic_write, check_writable
from reconvene_fx._mode import eval_mode
from reconvene_fx.composite import bake_masks
from reconvene_fx.errors import ExportError

__all__ = ["load", "save"]

_SAVE_SUFFIXES = (".pt2", ".pt", ".onnx")
_LOAD_SUFFIXES = (".pt2", ".pt")


def save(gm: torch.nn.Module, path: str | os.PathLike, example_inputs: tuple) -> Path:
    """Save ``gm`` in the format its file suffix names: ``.pt2``, ``.pt`` or ``.onnx``.

    Composite masks are baked into the weights of a copy first (see
    :func:`reconvene_fx.bake_masks`), so every format holds plain modules with zeros.
    ``.pt2`` and ``.onnx`` capture the module in eval mode; the ``training`` flags of ``gm``
    are restored afterwards. ``.pt`` pickles the module as it is, so loading it needs
    ``weights_only=False`` (see :func:`load`). Parent folders are created. The file is
    written atomically: an existing file at ``path`` is replaced only once the new one is
    complete (an error or a killed process leaves it as it was).

    Args:
        gm: the module to save, usually a ``torch.fx.GraphModule``.
        path: target file; its suffix picks the format.
        example_inputs: positional inputs for ``torch.export`` / ONNX tracing (unused by ``.pt``).

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        ValueError: the suffix is not one of ``.pt2``, ``.pt``, ``.onnx``.
        OSError: ``path`` cannot be written (checked before anything is exported).
        ExportError: ``.pt`` of a module with parametrizations (pickle cannot hold them;
            use ``.pt2`` or a ``state_dict``), or the ONNX export failed its check.

    Example:
        >>> import tempfile, torch
        >>> from reconvene_fx.emit import load, save
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
        >>> x = torch.randn(1, 3, 8, 8)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = save(gm, f"{d}/tiny.pt2", (x,))
        ...     print(path.name, torch.allclose(load(path)(x), gm(x)))
        tiny.pt2 True
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SAVE_SUFFIXES:
        raise ValueError(_suffix_message("save", path, _SAVE_SUFFIXES))
    check_writable(path)
    gm = bake_masks(gm)
    if suffix == ".onnx":
        from reconvene_fx.emit.onnx import export_onnx  # imports onnx: only when asked for

        return export_onnx(gm, path, example_inputs)
    if suffix == ".pt2":
        with eval_mode(gm):
            program = torch.export.export(gm, tuple(example_inputs))
        with atomic_write(path) as tmp:
            torch.export.save(program, str(tmp))
        return path
    parametrized = [n for n, m in gm.named_modules() if parametrize.is_parametrized(m)]
    if parametrized:
        raise ExportError(
            f"cannot pickle {path.name}: modules {parametrized[:3]} have parametrizations "
            "(e.g. composite masks); save as .pt2 or .onnx, or save gm.state_dict()"
        )
    with atomic_write(path) as tmp:
        torch.save(gm, str(tmp))
    return path


def load(path: str | os.PathLike) -> torch.nn.Module:
    """Load a module written by :func:`save` from a ``.pt2`` or ``.pt`` file.

    ``.pt2`` returns ``torch.export.load(path).module()``, an inference-only module.
    ``.pt`` returns the pickled module via ``torch.load(path, weights_only=False)``, which
    executes pickle code: load only files you trust.

    Args:
        path: a ``.pt2`` or ``.pt`` file.

    Returns:
        The loaded module.

    Raises:
        ValueError: the suffix is not ``.pt2`` or ``.pt`` (run ``.onnx`` with onnxruntime).

    Example:
        >>> import tempfile, torch
        >>> from reconvene_fx.emit import load, save
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 2)))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     print(type(load(save(gm, f"{d}/tiny.pt", ()))).__name__)
        GraphModule
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        return torch.export.load(str(path)).module()
    if suffix == ".pt":
        return torch.load(str(path), weights_only=False)
    raise ValueError(_suffix_message("load", path, _LOAD_SUFFIXES))


def _suffix_message(verb: str, path: Path, supported: tuple[str, ...]) -> str:
    got = path.suffix or "no suffix"
    return f"cannot {verb} {path.name!r}: unsupported suffix {got!r}; use one of {supported}"
