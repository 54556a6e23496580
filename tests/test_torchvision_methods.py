"""Every PaI scorer and every strategy on real torchvision models (small inputs).

SynFlow runs its default 100 iterations under the default (reconvene) strategy and 10
under the baselines, to keep CI fast.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from models import randomize_norms

import reconvene_fx as rfx

MODELS = ["resnet18", "densenet121", "mobilenet_v2"]
METHODS = ["magnitude", "random", "snip", "grasp", "synflow"]
STRATEGIES = ["reconvene", "uniform", "global"]
X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=MODELS)
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_norms(tvm.get_model(request.param, weights=None)).eval()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("method", METHODS)
def test_method_and_strategy_compile_verify_and_hold_the_budget(
    model: torch.nn.Module, method: str, strategy: str
) -> None:
    options = {"iterations": 10} if method == "synflow" and strategy != "reconvene" else {}
    gm = rfx.compile(model, 0.3, (X,), method=method, strategy=strategy, reinit=False,
                     method_options=options)  # fmt: skip
    rep = rfx.report(gm)
    assert rep.params_after <= 0.3 * rep.params_before
    assert sum(lp.narrowed for lp in rep.layers.values()) >= 2
    assert 0.29 <= rep.global_density <= 0.31
    assert rep.selected  # the PSE found layers below the global density
    assert rfx.verify(model, gm, (X,)).exact
