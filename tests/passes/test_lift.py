"""LiftLayersPass: functional layers on a module's own tensors are compiled like modules."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import reconvene_fx as rfx
from reconvene_fx.passes import LiftLayersPass, ShapePass, UnknownOpWarning, run_passes


class FunctionalConv(nn.Module):
    """A conv that keeps its own tensors and calls F.conv2d (as timm's Conv2dSame does)."""

    def __init__(self, cin: int, cout: int, groups: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin // groups, 3, 3) * 0.2)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)
        self.groups, self.stride = groups, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, 1, 1, self.groups)


class BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d in short: an nn.BatchNorm2d whose forward is F.batch_norm."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU()
        with torch.no_grad():
            self.running_mean.normal_()
            self.running_var.uniform_(0.5, 2.0)
            self.weight.normal_()
            self.bias.normal_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                         self.training, self.momentum, self.eps)  # fmt: skip
        return self.act(x)


class GroupNormFn(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: channels-last layer norm of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LinearFn(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Net(nn.Module):
    def __init__(self, norm: str = "bn") -> None:
        super().__init__()
        self.stem = FunctionalConv(3, 16)
        self.bn1 = BatchNormAct(16)
        self.dw = FunctionalConv(16, 16, groups=16, stride=2)
        self.norm = {"bn": lambda: BatchNormAct(16), "gn": lambda: GroupNormFn(4, 16),
                     "ln": lambda: LayerNorm2d(16)}[norm]()  # fmt: skip
        self.pw = nn.Conv2d(16, 24, 1)
        self.fc = LinearFn(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.dw(self.bn1(self.stem(x))))
        return self.fc(self.pw(x).mean((2, 3)))


def _x() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("norm", "kind", "exact"), [
    ("bn", nn.BatchNorm2d, True), ("gn", nn.GroupNorm, False), ("ln", nn.LayerNorm, False),
])  # fmt: skip
def test_functional_layers_are_pruned_like_modules(norm: str, kind: type, exact: bool) -> None:
    torch.manual_seed(0)
    model = Net(norm).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownOpWarning)  # nothing pinned as unknown
        gm = rfx.compile(model, budget=0.5, example_inputs=(_x(),), reinit=False)
    assert type(gm.stem) is nn.Conv2d and type(gm.dw) is nn.Conv2d
    assert type(gm.bn1) is nn.BatchNorm2d and type(gm.norm) is kind
    assert type(gm.fc) is nn.Linear
    assert isinstance(gm.bn1.act, nn.ReLU)  # the module's children moved with it
    rep = rfx.report(gm)
    assert rep.params_after <= 0.5 * rep.params_before
    # the functional stem was narrowed, and the depthwise conv with it
    assert gm.stem.out_channels < 16
    assert gm.dw.groups == gm.dw.in_channels == gm.stem.out_channels
    result = rfx.verify(model, gm, (_x(),))
    assert result.exact is exact
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_lifted_batchnorm_follows_train_and_eval_like_the_original() -> None:
    torch.manual_seed(0)
    model = Net("bn").eval()
    gm = rfx.compile(model, budget=1.0, example_inputs=(_x(),), reinit=False)
    x = _x()
    torch.testing.assert_close(gm(x), model(x))
    # the traced call had training=False baked in; the lifted module uses batch statistics
    # in train mode as the model's own BatchNormAct does
    gm.train()
    model.train()
    torch.testing.assert_close(gm(x), model(x))


def test_lift_keeps_the_same_tensors_and_records_what_it_built() -> None:
    model = Net("bn").eval()
    gm = rfx.trace(model)
    gm = run_passes(gm, [ShapePass((_x(),), fake=True), LiftLayersPass()])
    assert gm.stem.weight is model.stem.weight  # lifted, not copied
    assert gm.bn1.running_var is model.bn1.running_var
    lifted = gm.meta["reconvene.lifted"]
    assert sorted(lifted) == ["bn1", "dw", "fc", "norm", "stem"]
    assert lifted["dw"].kwargs["groups"] == 16 and lifted["dw"].kwargs["stride"] == 2
    assert not any(n.op == "get_attr" for n in gm.graph.nodes)
    torch.testing.assert_close(gm(_x()), model(_x()))


class StandardizedConv(nn.Module):
    """A computed weight (weight standardization): not a module's tensor, not lifted."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        return F.conv2d(x, w)


class TiedWeight(nn.Module):
    """The conv's weight is also read by another op: not lifted."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = FunctionalConv(3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.proj.weight, None, 1, 1) + self.proj.weight.sum()


@pytest.mark.parametrize("model", [StandardizedConv(), TiedWeight()], ids=["computed", "tied"])
def test_calls_that_are_not_plain_layers_stay_functions(model: nn.Module) -> None:
    gm = run_passes(rfx.trace(model), [ShapePass((_x(),), fake=True), LiftLayersPass()])
    assert gm.meta["reconvene.lifted"] == {}
    assert any(n.op == "call_function" and n.target is F.conv2d for n in gm.graph.nodes)


def test_lift_needs_shapes() -> None:
    with pytest.raises(rfx.PassOrderError, match="LiftLayersPass needs ShapePass"):
        LiftLayersPass()(rfx.trace(Net()))
