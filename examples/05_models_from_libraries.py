"""Compile models from timm and Ultralytics as they are: no wrapper, leaf list or rule.

Run: python examples/05_models_from_libraries.py   (needs: pip install timm ultralytics)
"""

import torch
from timm import create_model
from ultralytics.nn.tasks import DetectionModel

import reconvene_fx as rfx

torch.manual_seed(0)

# timm traces its BatchNormAct2d through to F.batch_norm and uses TF "same" padding convs:
# both are compiled like torch.nn layers
net = create_model("tf_efficientnet_b0", pretrained=False).eval()
x = torch.randn(1, 3, 160, 160)
gm = rfx.compile(net, budget=0.5, example_inputs=(x,), reinit=False)
print("tf_efficientnet_b0:", rfx.report(gm).summary())
assert rfx.verify(net, gm, (x,)).exact

# YOLOv8n from its yaml config: forward(x, *args, **kwargs), list(x.chunk(2, 1)) in C2f,
# a Detect head that branches on the input's shape (answered for the example input)
yolo = DetectionModel("yolov8n.yaml", verbose=False).eval()
x = torch.randn(1, 3, 320, 320)
gm = rfx.compile(yolo, budget=0.5, example_inputs=(x,), reinit=False)
rep = rfx.report(gm)
print("yolov8n:", rep.summary())
for decision in rep.decisions[:3]:
    print("  traced for this input:", decision)
assert rfx.verify(yolo, gm, (x,)).exact
