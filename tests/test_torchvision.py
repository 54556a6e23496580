"""Real torchvision models: compile, verify equivalence, export to ONNX and run it.

Small inputs (64x64; 299x299 where inception_v3 needs it) keep CI fast. Norm layers get
random statistics so that every kept and removed channel changes the numbers.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torchvision.models as tvm
from models import randomize_norms

import reconvene_fx as rfx
from reconvene_fx.emit import export_onnx

MODELS = [
    "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "densenet121",
    "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
    "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf", "mnasnet0_5",
    "shufflenet_v2_x0_5", "squeezenet1_0", "alexnet", "convnext_tiny",
]  # fmt: skip
SHAPE_ONLY = {"convnext_tiny"}  # LayerNorm over channels: equivalence is not exact


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = {"aux_logits": False} if name in ("googlenet", "inception_v3") else {}
    return randomize_norms(tvm.get_model(name, weights=None, **kwargs)).eval()


def _input(name: str) -> torch.Tensor:
    size = 299 if name == "inception_v3" else 64
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("budget", [0.5, 0.25])
@pytest.mark.parametrize("name", MODELS)
def test_torchvision_model(name: str, budget: float, tmp_path) -> None:
    model, x = _model(name), _input(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = rfx.compile(model, budget=budget, example_inputs=(x,), reinit=False)
    rep = rfx.report(gm)
    assert rep.params_after == sum(p.numel() for p in gm.parameters())
    assert rep.params_after <= budget * rep.params_before
    assert sum(lp.narrowed for lp in rep.layers.values()) >= 2

    with torch.no_grad():
        out = gm(x)
    assert out.shape == (1, 1000)
    assert bool(torch.isfinite(out).all())
    if name not in SHAPE_ONLY:
        assert rfx.verify(model, gm, (x,)).exact

    scale = float(out.abs().max())
    path = export_onnx(gm, tmp_path / f"{name}.onnx", (x,), atol=1e-4 * scale)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, out.numpy(), rtol=1e-3, atol=1e-4 * scale)
