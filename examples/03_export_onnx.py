"""Compile a model and export it to ONNX (checked with onnxruntime).

Run: python examples/03_export_onnx.py [output.onnx]
"""

import sys
import tempfile
from pathlib import Path

import torch
import torchvision

import reconvene_fx as rfx
from reconvene_fx.emit import export_onnx

torch.manual_seed(0)
model = torchvision.models.shufflenet_v2_x0_5(weights=None).eval()
x = torch.randn(1, 3, 64, 64)
gm = rfx.compile(model, budget=0.5, example_inputs=(x,), round_to=8)

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "shufflenet.onnx"
path = export_onnx(gm, out, (x,))  # raises if onnxruntime disagrees with PyTorch
print(rfx.report(gm).summary())
print("wrote", path, f"({path.stat().st_size / 1e6:.1f} MB)")
