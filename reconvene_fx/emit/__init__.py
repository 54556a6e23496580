"""Emitters: write a compiled GraphModule as ONNX (checked with onnxruntime) or PyTorch files."""

from __future__ import annotations

from reconvene_fx.emit.onnx import export_onnx
from reconvene_fx.emit.torch import load, save

__all__ = ["export_onnx", "load", "save"]
