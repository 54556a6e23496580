"""The Reconvene method step by step: PaI scores, PSE layer selection, composite pruning.

Run: python examples/04_reconvene_pse_composite.py
"""

import torch
import torchvision

import reconvene_fx as rfx

torch.manual_seed(0)
model = torchvision.models.resnet18(weights=None).eval()
x = torch.randn(4, 3, 32, 32)
targets = torch.tensor([3, 1, 4, 1])
data = (x, targets)  # SNIP's loss uses these labels (or several batches: a list of pairs)

# 1. Score every conv/linear weight with SNIP and rate each layer under the global mask
table = rfx.analyze(model, budget=0.3, example_inputs=(x,), method="snip", data=data)
print(table)  # density per layer, sensitivity = density / global density, PSE selection
print("PSE selects:", ", ".join(table.selected))

# 2. Reconvene: narrow the selected layers (their dense size matches what their masks
#    kept), keep the unstructured PaI mask on the others (composite), re-initialize what
#    was narrowed (RLR). At much tighter budgets the min_width floor stops the selected
#    layers short of their targets and the plan narrows the other layers too (few masks).
gm = rfx.compile(model, budget=0.3, example_inputs=(x,), method="snip", data=data,
                 composite=True)  # fmt: skip
rep = rfx.report(gm)
print(rep.summary())
narrowed = [name for name, lp in rep.layers.items() if lp.narrowed]
masked = [name for name, lp in rep.layers.items() if lp.masked]
print(f"{len(narrowed)} layers narrowed, {len(masked)} keep their mask")
assert rep.nonzero_after <= 0.3 * rep.params_before
for name in masked[:3]:  # PaI density and the density kept: the masks are not thinned
    print(f"  {name}: PaI {rep.layers[name].density:.3f}, kept {rep.layers[name].kept_density:.3f}")

# The baseline the method is measured against: the unstructured PaI model (masks only)
pai = rfx.compile(model, budget=0.3, example_inputs=(x,), method="snip", data=data,
                  strategy="none", composite=True)  # fmt: skip
print("unstructured SNIP:", rfx.report(pai).summary())

# 3. The masks survive training: masked weights stay zero after an optimizer step
optimizer = torch.optim.SGD(gm.parameters(), lr=0.1)
gm.train()
torch.nn.functional.cross_entropy(gm(x), targets).backward()
optimizer.step()
conv = gm.get_submodule(masked[0])
mask = conv.parametrizations.weight[0].mask
print(f"{masked[0]}: {int((conv.weight[~mask] != 0).sum())} nonzero masked weights after a step")

# 4. SynFlow is data-free and iterative (100 rounds by default; fewer here to stay quick)
gm = rfx.compile(model, budget=0.1, example_inputs=(x,), method="synflow",
                 method_options={"iterations": 20})  # fmt: skip
print("synflow:", rfx.report(gm).summary())
