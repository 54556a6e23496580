"""PlanPass: kept channels per node, strategies, budgets."""

from __future__ import annotations

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.config import CompileConfig
from reconvene_fx.meta import KEEP
from reconvene_fx.passes import ChannelGroupPass, PlanPass, SensitivityPass, ShapePass
from reconvene_fx.scoring import SCORERS, prunable_weights, register_scorer

X = torch.randn(2, 3, 16, 16)


def planned(name: str, budget, **config) -> dict:
    gm = torch.fx.symbolic_trace(build(name))
    ShapePass((X,))(gm)
    ChannelGroupPass()(gm)
    SensitivityPass(budget, example_inputs=(X,), config=CompileConfig(**config))(gm)
    result = PlanPass(budget, example_inputs=(X,), config=CompileConfig(**config))(gm)
    assert not result.modified
    return {n.name: n.meta.get(KEEP) for n in gm.graph.nodes}


def test_uniform_removes_the_same_fraction_from_every_group() -> None:
    keep = planned("residual", 0.4, strategy="uniform", round_to=1)
    groups = ("stem_0", "conv1_0", "conv3_0")  # three separate coupled groups
    fractions = [keep[n].index.numel() / keep[n].size for n in groups]
    assert max(fractions) - min(fractions) <= 1 / 16 + 1e-9
    assert max(fractions) < 1


def test_magnitude_keeps_the_heaviest_channels() -> None:
    model = build("se")
    gm = rfx.compile(model, budget=0.5, example_inputs=(X,), reinit=False, strategy="uniform",
                     round_to=1)  # fmt: skip
    lp = rfx.report(gm).layers["reduce"]
    produced = model.get_submodule("reduce").weight.detach().abs().flatten(1).sum(1)
    consumed = model.get_submodule("expand").weight.detach().abs().sum((0, 2, 3))
    mass = produced / produced.mean() + consumed / consumed.mean()  # relative to each layer
    kept = set(lp.out_idx.tolist())
    dropped = [i for i in range(8) if i not in kept]
    assert dropped and min(mass[lp.out_idx]) >= max(mass[dropped])


def test_global_strategy_differs_from_uniform_and_holds_the_budget() -> None:
    uniform = planned("inception", 0.5, strategy="uniform")
    global_ = planned("inception", 0.5, strategy="global")
    tensors = [n for n, k in uniform.items() if k is not None and not isinstance(k, tuple)]
    assert any(not torch.equal(uniform[n].index, global_[n].index) for n in tensors)
    gm = rfx.compile(build("inception"), budget=0.5, example_inputs=(X,), strategy="global")
    assert rfx.report(gm).params_ratio <= 0.5


def test_every_tensor_keeps_at_least_one_channel() -> None:
    keep = planned("residual", rfx.Budget(macs=0.01 + 0.02), round_to=1)
    assert all(k.index.numel() >= 1 for k in keep.values() if k is not None)


# -- the reconvene strategy -------------------------------------------------------------
class Chain(torch.nn.Module):
    """A VGG-like chain: each coupled group has exactly one producer and one consumer."""

    def __init__(self) -> None:
        super().__init__()
        widths = {"a": (3, 16), "b": (16, 32), "c": (32, 32), "d": (32, 16)}
        for name, (cin, cout) in widths.items():
            self.add_module(name, torch.nn.Conv2d(cin, cout, 3, padding=1))
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in "abcd":
            x = torch.relu(getattr(self, name)(x))
        return self.fc(x.mean((2, 3)))


# per-layer score scale: "a" and "fc" keep most weights, "c" loses most
SCALE = {"a": 8.0, "b": 1.0, "c": 0.2, "d": 1.0, "fc": 8.0}


@pytest.fixture
def layered_scorer():
    @register_scorer("test-layered")
    def layered(gm, example_inputs, targets, *, seed):
        g = torch.Generator().manual_seed(seed)
        return {n: SCALE[n.split(".")[0]] * torch.rand(w.shape, generator=g)
                for n, w in prunable_weights(gm)}  # fmt: skip

    yield "test-layered"
    SCORERS.pop("test-layered")


@pytest.mark.parametrize("budget", [0.25, 0.5])
def test_composite_keeps_the_pai_masks_and_narrows_only_selected_groups(
    layered_scorer: str, budget: float
) -> None:
    """Layers left whole keep exactly their PaI mask (never thinned); the narrowed layers
    hold no more dense weights than their masks kept, so the nonzero budget splits as the
    global mask split it."""
    model = Chain()
    table = rfx.analyze(model, budget, (X,), method=layered_scorer)
    assert table.selected == [n for n, lay in table.layers.items()
                              if lay.density < table.global_density]  # fmt: skip
    assert set(table.selected) >= {"c"} and "a" not in table.selected
    gm = rfx.compile(model, budget, (X,), method=layered_scorer, composite=True, reinit=False,
                     round_to=1)  # fmt: skip
    rep = rfx.report(gm)
    masks = rfx.composite.masks_of(gm)
    for name in "abcd":
        narrowed = rep.layers[name].out_idx.numel() < getattr(model, name).out_channels
        assert narrowed == table.layers[name].selected, name
    # outputs narrowed: dense at the new width; the others keep their PaI masks, sliced to
    # the inputs they kept (a consumer of a narrowed group keeps its mask too)
    touched = [n for n, lp in rep.layers.items() if lp.out_idx.numel() < lp.out_channels]
    for name, lp in rep.layers.items():
        if name in touched:
            assert name not in masks
        elif table.layers[name].kept < table.layers[name].total:
            pai = table.layers[name].mask[:, lp.in_idx]
            assert torch.equal(masks[name], pai), name
    assert any(lp.narrowed and n not in touched for n, lp in rep.layers.items())
    # the narrowed layers together hold no more dense weights than their masks and those
    # of the layers they feed kept (the min_width floor keeps "c", whose mask is empty)
    fed = [n for n, lp in rep.layers.items() if lp.narrowed]
    dense_weights = sum(gm.get_submodule(n).weight.numel() for n in touched)
    assert dense_weights <= sum(table.layers[n].kept for n in fed)
    assert rep.nonzero_after <= budget * rep.params_before
    assert rfx.verify(model, gm, (X,)).exact


@pytest.mark.parametrize("budget", [0.25, 0.5])
def test_least_sensitive_layers_lose_the_most(layered_scorer: str, budget: float) -> None:
    model = Chain()
    table = rfx.analyze(model, budget, (X,), method=layered_scorer)
    gm = rfx.compile(model, budget, (X,), method=layered_scorer, reinit=False, min_width=0.0)
    rep = rfx.report(gm)
    assert rep.params_after <= budget * rep.params_before
    kept = {n: rep.layers[n].kept for n in table.layers}
    by_density = sorted(table.layers, key=lambda n: table.layers[n].density)
    # the PaI mask's least dense layer keeps the smallest share, its densest the largest
    assert kept[by_density[0]] == min(kept.values()) < max(kept.values())
    assert kept[by_density[-1]] == max(kept.values())
    assert rfx.verify(model, gm, (X,)).exact


@pytest.mark.parametrize("min_width", [0.0, 0.25, 0.5])
def test_min_width_floors_every_group(layered_scorer: str, min_width: float) -> None:
    model = Chain()
    gm = rfx.compile(model, 0.4, (X,), method=layered_scorer, reinit=False, min_width=min_width,
                     composite=True, round_to=1)  # fmt: skip
    rep = rfx.report(gm)
    widths = [rep.layers[n].out_idx.numel() / rep.layers[n].out_channels for n in "abcd"]
    assert min(widths) >= min_width
    assert rep.nonzero_after <= 0.4 * rep.params_before
    if min_width == 0.0:  # "c" (density ~0) collapses without the floor
        assert min(widths) < 0.25


def test_min_width_too_high_for_the_budget_is_a_budget_error(layered_scorer: str) -> None:
    pattern = r"(?s)smallest reachable params budget.*min_width"
    with pytest.raises(rfx.BudgetError, match=pattern) as info:
        rfx.compile(Chain(), 0.1, (X,), method=layered_scorer, min_width=0.5)
    # what keeps the channels of the largest layers is the floor, no node of the graph
    floor = [row for row in info.value.pinned_by if "min_width=0.5 floor" in row[3]]
    assert floor and all(node == "" and source is None for _, _, node, _, source in floor)


@pytest.mark.parametrize("name", ["residual", "densenet", "shufflenet", "depthwise"])
@pytest.mark.parametrize("strategy", ["reconvene", "uniform", "global"])
@pytest.mark.parametrize("method", ["magnitude", "random", "snip", "grasp", "synflow"])
def test_every_method_and_strategy_holds_params_and_macs_budgets(
    name: str, strategy: str, method: str
) -> None:
    model = build(name)
    budget = rfx.Budget(params=0.5, macs=0.6)
    gm = rfx.compile(model, budget, (X,), method=method, strategy=strategy, reinit=False,
                     method_options={"iterations": 10} if method == "synflow" else {})  # fmt: skip
    rep = rfx.report(gm)
    assert rep.params_after <= 0.5 * rep.params_before
    assert rep.macs_after <= 0.6 * rep.macs_before
    assert rep.method == method and rep.strategy == strategy
    assert rfx.verify(model, gm, (X,)).exact


@pytest.mark.parametrize("method", ["random", "snip", "synflow"])
def test_reconvene_is_deterministic_per_seed(method: str) -> None:
    options = {"iterations": 5} if method == "synflow" else {}

    def run(seed: int) -> torch.nn.Module:
        return rfx.compile(build("inception"), 0.4, (X,), method=method, seed=seed,
                           method_options=options)  # fmt: skip

    a, b, c = run(1), run(1), run(2)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    ra, rc = rfx.report(a), rfx.report(c)
    same = all(torch.equal(ra.layers[n].out_idx, rc.layers[n].out_idx) for n in ra.layers)
    assert not same or not all(torch.equal(sa[k], c.state_dict()[k]) for k in sa)


class _NestedHead(torch.nn.Module):
    """A head kept as a leaf whose output nests tuples and dicts two levels deep (as
    Ultralytics' Segment head returns ``((y, proto), dict)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Conv2d(16, 4, 1)
        self.b = torch.nn.Conv2d(16, 3, 1)
        self.c = torch.nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple:
        return ((self.a(x), self.b(x)), {"mask": self.c(x), "extra": (self.a(x),)})


class _NestedNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(),
                                        torch.nn.Conv2d(32, 16, 3), torch.nn.ReLU())  # fmt: skip
        self.head = _NestedHead()

    def forward(self, x: torch.Tensor) -> tuple:
        return self.head(self.stem(x))


def test_a_leaf_with_nested_outputs_at_the_end_is_planned_and_kept_whole() -> None:
    model = _NestedNet().eval()
    with pytest.warns(rfx.passes.UnknownOpWarning, match="module head of type _NestedHead"):
        gm = rfx.compile(model, budget=0.6, example_inputs=(X,), reinit=False,
                         leaf_modules=[_NestedHead])  # fmt: skip
    rep = rfx.report(gm)
    assert rep.layers["stem.0"].narrowed and rep.params_ratio <= 0.6
    assert "head.a" not in rep.layers  # inside a leaf: kept whole
    assert gm.get_submodule("head.a").in_channels == 16
    assert rfx.verify(model, gm, (X,)).exact
    (y, proto), extra = gm(X)
    assert y.shape[1] == 4 and proto.shape[1] == 3 and extra["mask"].shape[1] == 2


@pytest.mark.parametrize("strategy", ["uniform", "reconvene"])
@pytest.mark.parametrize(("name", "parts"), [
    ("densenet", ["stem", "layers.0.2", "layers.1.2", "layers.2.2"]),
    ("inception", ["b1.0", "b2.1.0", "b3.1.0", "b4.1.0"]),
])  # fmt: skip
def test_each_input_of_a_concatenation_loses_the_same_share(
    strategy: str, name: str, parts: list[str]
) -> None:
    model = build(name)
    with torch.no_grad():  # the later parts' weights 100x smaller: weak by magnitude
        for i, part in enumerate(parts):
            model.get_submodule(part).weight.mul_(100.0**-i)
    gm = rfx.compile(model, 0.4, (X,), strategy=strategy, round_to=1, reinit=False)
    kept = [gm.get_submodule(p).out_channels / model.get_submodule(p).out_channels for p in parts]
    # one share per part, up to one channel of each part's width
    widths = [model.get_submodule(p).out_channels for p in parts]
    assert max(kept) - min(kept) <= 1.5 / min(widths) + 1e-9, kept
    assert min(kept) >= 0.1  # no part below the min_width floor
    assert rfx.report(gm).params_ratio <= 0.4
