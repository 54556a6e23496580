"""Use the analysis passes inside your own torch.fx pipeline, then shrink.

Run: python examples/02_passes_in_a_pipeline.py
"""

import torch
import torch.fx
import torchvision

from reconvene_fx.meta import CHANNELS, KEEP
from reconvene_fx.passes import ChannelGroupPass, PlanPass, ShapePass, ShrinkPass

torch.manual_seed(0)
gm = torch.fx.symbolic_trace(torchvision.models.mobilenet_v2(weights=None).eval())
x = torch.randn(1, 3, 64, 64)

for p in (ShapePass((x,)), ChannelGroupPass(), PlanPass(0.5, example_inputs=(x,))):
    p(gm)  # analysis passes only write node.meta

node = next(n for n in gm.graph.nodes if n.target == "features.2.conv.0.0")
info, keep = node.meta[CHANNELS], node.meta[KEEP]
print(
    f"{node.target}: {info.size} channels in coupled group {info.group},",
    f"{keep.index.numel()} kept",
)

before = sum(p.numel() for p in gm.parameters())
ShrinkPass(reinit=True, seed=0)(gm)  # the one pass that rewrites modules
after = sum(p.numel() for p in gm.parameters())
print(f"params {before:,} -> {after:,}")
assert gm(x).shape == (1, 1000) and after <= 0.5 * before
