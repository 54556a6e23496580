"""Use the passes inside your own torch.fx pipeline: analyse, look, then shrink.

Run: python examples/02_passes_in_a_pipeline.py
"""

import torch
import torchvision
from torch.fx.passes.infra.pass_manager import PassManager

import reconvene_fx as rfx
from reconvene_fx.meta import CHANNELS, KEEP
from reconvene_fx.passes import ShrinkPass, compile_passes

torch.manual_seed(0)
model = torchvision.models.mobilenet_v2(weights=None).eval()
x = torch.randn(1, 3, 64, 64)

# rfx.trace shares the model's tensors instead of copying them; no pass writes into them
gm = rfx.trace(model)
passes = compile_passes(0.5, (x,))  # Shape, Lift, ChannelGroup, Sensitivity, Plan, Shrink...
cut = next(i for i, p in enumerate(passes) if isinstance(p, ShrinkPass))
analysis, rewrite = passes[:cut], passes[cut:]
PassManager(analysis)(gm)  # analysis passes only write node.meta / gm.meta

node = next(n for n in gm.graph.nodes if n.target == "features.2.conv.0.0")
info, keep = node.meta[CHANNELS], node.meta[KEEP]
print(
    f"{node.target}: {info.size} channels in coupled group {info.group},",
    f"{keep.index.numel()} kept",
)

gm = PassManager(rewrite)(gm).graph_module  # ShrinkPass rewrites, ReportPass reports
print(rfx.report(gm).summary())
before = sum(p.numel() for p in model.parameters())
after = sum(p.numel() for p in gm.parameters())
assert gm(x).shape == (1, 1000) and after <= 0.5 * before
assert model.features[2].conv[0][0].out_channels == 96  # the model itself is untouched
