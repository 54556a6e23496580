"""Compile an untrained ResNet-18 to a quarter of its parameters and check it.

Run: python examples/01_compile_and_verify.py
"""

import torch
import torchvision

import reconvene_fx as rfx

torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
x = torch.randn(1, 3, 64, 64)

# reinit=False keeps the sliced original weights, so the result can be verified exactly
gm = rfx.compile(model, budget=0.25, example_inputs=(x,), reinit=False)
rep = rfx.report(gm)
print(rep.summary())
print("layer1.0.conv1 keeps", rep.layers["layer1.0.conv1"].out_idx.numel(), "of 64 channels")

result = rfx.verify(model, gm, (x,))
print("equivalent to the original with pruned channels zeroed:", result.exact)
assert rep.params_after <= 0.25 * rep.params_before and result.exact
