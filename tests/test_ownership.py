"""The caller's model is never touched: not by tracing, compiling, nor training the result."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from models import build

import reconvene_fx as rfx

X = torch.randn(2, 3, 16, 16)


def test_training_the_compiled_model_leaves_the_callers_weights_alone() -> None:
    model = build("residual")
    before = copy.deepcopy(model.state_dict())
    gm = rfx.compile(model, budget=0.5, example_inputs=(X,), composite=True)
    ours = {id(t) for t in (*model.parameters(), *model.buffers())}
    assert not ours & {id(t) for t in (*gm.parameters(), *gm.buffers())}
    optimizer = torch.optim.SGD(gm.parameters(), lr=0.1)
    gm.train()
    for _ in range(3):
        optimizer.zero_grad()
        gm(X).square().mean().backward()
        optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_tied_weights_stay_tied_in_the_compiled_model() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3)
            self.mid = nn.Conv2d(16, 8, 3)
            self.a = nn.Conv2d(8, 8, 1)
            self.b = nn.Conv2d(8, 8, 1)
            self.b.weight = self.a.weight  # one parameter, two modules
            self.head = nn.Conv2d(8, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.mid(self.stem(x).relu())
            return self.head(self.b(self.a(h)))

    model = Tied()
    gm = rfx.compile(model, budget=0.9, example_inputs=(X,), ignore=["a", "b"])
    assert gm.get_submodule("stem").out_channels < 16
    assert gm.get_submodule("a").weight is gm.get_submodule("b").weight
    assert gm.get_submodule("a").weight is not model.a.weight


class _Caching(nn.Module):
    """Fills a cache on ``self`` during forward, as timm's levit attention does."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.head = nn.Conv2d(8, 4, 1)
        self.cache: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.cache["last"] = x
        return self.head(self.conv(x).relu())


def test_tracing_a_module_that_caches_on_self_leaves_the_model_unchanged() -> None:
    model = _Caching()
    state = copy.deepcopy(model.state_dict())
    rfx.trace(model)
    assert model.cache == {}
    gm = rfx.compile(model, budget=0.5, example_inputs=(X,), reinit=False)
    assert model.cache == {}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert rfx.verify(model, gm, (X,)).exact
    model(X)  # still an ordinary eager module
    assert torch.equal(model.cache["last"], X)


def test_compiling_a_graph_module_does_not_shrink_it() -> None:
    traced = torch.fx.symbolic_trace(build("residual"))
    widths = [m.out_channels for m in traced.modules() if isinstance(m, nn.Conv2d)]
    rfx.compile(traced, budget=0.4, example_inputs=(X,))
    assert [m.out_channels for m in traced.modules() if isinstance(m, nn.Conv2d)] == widths
