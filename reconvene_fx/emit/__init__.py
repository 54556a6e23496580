"""Emitters: write a compiled GraphModule as ONNX (checked with onnxruntime) or PyTorch files.

``export_onnx`` is loaded on first use, so that importing this package (for ``save`` and
``load``) does not import onnx or onnx-graphsurgeon.

Example:
    >>> import reconvene_fx.emit as emit
    >>> callable(emit.save) and callable(emit.export_onnx)  # the latter imports onnx now
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from reconvene_fx.emit.torch import load, save

if TYPE_CHECKING:
    from reconvene_fx.emit.onnx import export_onnx

__all__ = ["export_onnx", "load", "save"]

# name -> the module that defines it, imported when the name is first read
_LAZY = {"export_onnx": "reconvene_fx.emit.onnx"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
