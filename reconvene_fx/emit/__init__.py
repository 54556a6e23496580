"""Emitters: write a compiled GraphModule as ONNX (checked with onnxruntime) or PyTorch files.

``export_onnx`` is loaded on first use, so that importing this package (for ``save`` and
``load``) does not import onnx or onnx-graphsurgeon.

Example:
    >>> import reconvene_fx.emit as emit
    >>> callable(emit.save) and callable(emit.export_onnx)  # the latter imports onnx now
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reconvene_fx._lazy import lazy_exports
from reconvene_fx.emit.torch import load, save

if TYPE_CHECKING:
    from reconvene_fx.emit.onnx import export_onnx

__all__ = ["export_onnx", "load", "save"]

# imported when first read, so that importing the package does not import onnx
__getattr__, __dir__ = lazy_exports(globals(), {"export_onnx": "reconvene_fx.emit.onnx"})
