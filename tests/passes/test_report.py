"""ReportPass: layers left computing nothing (all kept weights zero) are named by one
LayerCollapseWarning, marked in the report and not counted as work."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm

import reconvene_fx as rfx
from reconvene_fx.emit._state import from_state, to_state
from reconvene_fx.meta import LayerChange, ShrinkRecord
from reconvene_fx.passes.report import dead_layers

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class TinyBranch(nn.Module):
    """A residual whose 1x1 branch has weights far below the others': magnitude scoring
    at half the parameters masks all of them (``branch`` then outputs its bias alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.branch = nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(16, 4, 1)
        with torch.no_grad():
            self.branch.weight.mul_(1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        return self.head(h + self.branch(h))


def _compile(model: nn.Module, budget: float, **options) -> tuple[torch.fx.GraphModule, list]:
    options = {"method": "magnitude", "composite": True, "strategy": "none", **options}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gm = rfx.compile(model, budget, (X,), **options)
    return gm, [w for w in seen if issubclass(w.category, rfx.LayerCollapseWarning)]


def test_a_fully_masked_layer_is_warned_marked_and_not_counted() -> None:
    torch.manual_seed(0)
    gm, collapse = _compile(TinyBranch(), 0.5)
    assert not bool(gm.branch.weight.any())  # the mask holds every weight at zero
    assert len(collapse) == 1
    assert "branch (fully masked)" in str(collapse[0].message)
    assert "stem" not in str(collapse[0].message)
    rep = rfx.report(gm)
    assert rep.dead == ["branch"]
    assert rep.layers["branch"].dead and rep.layers["branch"].macs_after == 0
    assert not rep.layers["stem"].dead and not rep.layers["head"].dead
    # nothing is narrowed (strategy "none"): the MACs after are the others' MACs before
    assert rep.macs_after == rep.macs_before - rep.layers["branch"].macs_before
    assert rep.macs_after == sum(lp.macs_after for lp in rep.layers.values())
    table = rep.format_table()
    assert "dead" in table.splitlines()[0]
    assert "dead (output is its bias alone, MACs not counted): branch" in table
    assert rep.to_dict()["layers"]["branch"]["dead"] is True
    # the layer stays: its output is its bias alone
    h = torch.relu(gm.stem(X))
    assert torch.equal(gm.branch(h), gm.branch.bias.view(1, -1, 1, 1).expand_as(h))


def test_a_compile_without_dead_layers_does_not_warn() -> None:
    torch.manual_seed(0)
    gm, collapse = _compile(TinyBranch(), 0.9)
    assert collapse == []
    rep = rfx.report(gm)
    assert rep.dead == [] and not any(lp.dead for lp in rep.layers.values())
    assert "dead (" not in rep.format_table()


def test_dead_survives_save_and_load_and_old_files_load_as_alive(tmp_path) -> None:
    torch.manual_seed(0)
    gm, _ = _compile(TinyBranch(), 0.5)
    assert rfx.report(rfx.load(rfx.save(gm, tmp_path / "m.pt"))).layers["branch"].dead
    state = to_state(gm)
    for layer in state["report"]["layers"].values():
        del layer["dead"]  # a file written before the field existed
    assert not rfx.report(from_state(state)).layers["branch"].dead


def test_dead_layers_names_layers_without_input_or_output_channels() -> None:
    gm = rfx.trace(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1), nn.Linear(8, 3)))
    all_, none = torch.arange(4), torch.empty(0, dtype=torch.long)

    def change(in_idx: torch.Tensor, out_idx: torch.Tensor) -> LayerChange:
        return LayerChange(4, 4, in_idx, out_idx, 0, 0, 0, 0)

    record = ShrinkRecord(
        layers={"0": change(none, all_), "1": change(all_, none), "2": change(all_, all_)},
        params_before=0, macs_before=0, macs_after=0,
    )  # fmt: skip
    with torch.no_grad():
        gm.get_submodule("2").weight.zero_()
    assert dead_layers(gm, record) == {
        "0": "no input channels",
        "1": "no output channels",
        "2": "all weights zero",
    }


@pytest.mark.parametrize(
    ("fill", "dead"),
    [(0.0, True), (-0.0, True), (1e-30, False), (float("nan"), False), (float("-inf"), False)],
)
def test_one_weight_other_than_zero_keeps_a_layer_alive(fill: float, dead: bool) -> None:
    gm = rfx.trace(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Linear(4, 3)))
    record = ShrinkRecord(layers={}, params_before=0, macs_before=0, macs_after=0)
    with torch.no_grad():
        gm.get_submodule("1").weight.zero_()[-1, -1] = fill  # the last entry read
    assert ("1" in dead_layers(gm, record)) is dead


@pytest.mark.parametrize(
    ("name", "method", "options"),
    [
        ("resnet18", "magnitude", {}),
        ("mobilenet_v2", "magnitude", {}),
        ("resnet18", "synflow", {"iterations": 10}),  # masks two downsample convs whole
    ],
)
def test_every_all_zero_layer_of_a_torchvision_model_is_warned(
    name: str, method: str, options: dict
) -> None:
    torch.manual_seed(0)
    model = tvm.get_model(name, weights=None)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gm = rfx.compile(model, 0.1, (x,), method=method, composite=True, method_options=options)
    collapse = [str(w.message) for w in seen if issubclass(w.category, rfx.LayerCollapseWarning)]
    zero = [
        n
        for n, m in gm.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not bool(m.weight.any())
    ]
    assert len(collapse) == (1 if zero else 0)
    assert all(f"{n} (" in collapse[0] for n in zero)
    assert rfx.report(gm).dead == zero
