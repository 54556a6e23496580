"""Models whose own forward cannot be traced: their traceable submodules compiled in place."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
from models import randomize_norms

import reconvene_fx as rfx
from reconvene_fx.compiler import SubmoduleCompileWarning
from reconvene_fx.emit._state import _report_from, _report_state


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class Normalize(nn.Module):
    """No parameters: left as it is."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - image.mean()) / (image.std() + 1e-5)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = _block(32, 48)
        self.cls = nn.Conv2d(48, 5, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.cls(self.conv(features))


class ListDetector(nn.Module):
    """Takes a list of images, as torchvision's detectors do; keeps the score maps whose
    mean is positive: a question about values, which tracing cannot answer."""

    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.backbone = nn.Sequential(_block(3, 16), _block(16, 32), _block(32, 32))
        self.head = Head()
        self.aux = nn.Conv2d(32, 7, 1)  # training only: never called in eval mode
        self.threshold = -1e9

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        scores = []
        for image in images:
            features = self.backbone(self.normalize(image).unsqueeze(0))
            if self.training:
                scores.append(self.aux(features))
            scores.append(self.head(features))
        return [s for s in scores if s.mean() > self.threshold]


def _detector() -> ListDetector:
    torch.manual_seed(0)
    return randomize_norms(ListDetector()).eval()


def _images(count: int = 1, size: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(3, size, size, generator=g) for _ in range(count)]


def _compile(model: nn.Module, *args: object, **options: object) -> tuple[nn.Module, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = rfx.compile(model, *args, **options)
    return result, [w for w in caught if issubclass(w.category, SubmoduleCompileWarning)]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_top_level_forward_untraceable_compiles_submodules_in_place() -> None:
    model, images = _detector(), _images()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result, caught = _compile(model, 0.5, (images,), reinit=False)

    assert type(result) is ListDetector and result is not model
    assert isinstance(result.backbone, torch.fx.GraphModule)
    assert isinstance(result.head, torch.fx.GraphModule)
    assert type(result.aux) is nn.Conv2d and result.aux.weight is not model.aux.weight
    assert torch.equal(result.aux.weight, model.aux.weight)
    assert result.threshold == model.threshold

    # the caller's model is untouched
    assert isinstance(model.backbone, nn.Sequential) and type(model.head) is Head
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())

    # one warning names what was compiled and what was left
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "ListDetector.forward" in text
    assert (
        f"backbone (Sequential, {_params(model.backbone):,} ->" in text and "head (Head, " in text
    )
    assert "normalize (no parameters)" in text
    assert "aux (not called on the example inputs)" in text

    # interface channels kept, inside pruned
    assert result.backbone.get_submodule("0.0").in_channels == 3
    assert result.backbone.get_submodule("2.0").out_channels == 32
    assert result.head.get_submodule("conv.0").in_channels == 32
    assert result.head.get_submodule("cls").out_channels == 5
    narrowed = [result.backbone.get_submodule(f"{i}.0").out_channels for i in (0, 1)]
    narrowed.append(result.head.get_submodule("conv.0").out_channels)
    assert narrowed != [16, 32, 48]

    with torch.no_grad():
        outputs = result(images)
    assert [o.shape for o in outputs] == [torch.Size([1, 5, 16, 16])]
    assert rfx.verify(model, result, (images,)).exact


def test_report_lists_compiled_and_left_submodules() -> None:
    model, images = _detector(), _images()
    result, _ = _compile(model, 0.5, (images,), reinit=False)
    rep = rfx.report(result)

    assert rep.compiled == ["backbone", "head"]
    assert rep.left == ["normalize", "aux"]
    assert rep.submodules["normalize"].params_before == 0
    assert rep.submodules["normalize"].note == "no parameters"
    aux = rep.submodules["aux"]
    assert not aux.compiled and aux.params_before == aux.params_after == _params(model.aux)
    for name in ("backbone", "head"):
        sp = rep.submodules[name]
        assert sp.compiled and sp.kind == type(model.get_submodule(name)).__name__
        assert sp.params_before == _params(model.get_submodule(name))
        assert sp.params_after == _params(result.get_submodule(name)) < sp.params_before

    # the whole model's totals; the budget holds for it, the left parts included
    assert rep.params_before == _params(model)
    assert rep.params_after == _params(result) <= 0.5 * rep.params_before
    assert sum(sp.params_before for sp in rep.submodules.values()) == rep.params_before
    assert sum(sp.params_after for sp in rep.submodules.values()) == rep.params_after
    assert "backbone.0.0" in rep.layers and "head.cls" in rep.layers

    table = rep.format_table()
    assert (
        f"compiled in place: backbone (Sequential): params {_params(model.backbone):,} ->" in table
    )
    assert "left as it was: aux (Conv2d): params 231; not called on the example inputs" in table
    assert rep.to_dict()["submodules"]["head"]["compiled"] is True

    # each compiled submodule carries its own report, names relative to it
    part = rfx.report(result.backbone)
    assert set(part.layers) == {k.removeprefix("backbone.") for k in rep.layers
                                if k.startswith("backbone.")}  # fmt: skip
    assert part.params_before == _params(model.backbone) and not part.submodules

    # the report keeps its submodules through the .pt format's plain data
    again = _report_from(_report_state(rep))
    assert again.submodules == rep.submodules


def test_verify_checks_each_compiled_submodule_on_its_inputs() -> None:
    model, images = _detector(), _images()
    result, _ = _compile(model, 0.5, (images,), reinit=False)
    assert rfx.verify(model, result, (images,)).max_error < 1e-4
    # the compiled submodule alone checks against the original one
    with torch.no_grad():
        x = model.normalize(images[0]).unsqueeze(0)
    assert rfx.verify(model.backbone, result.backbone, (x,)).exact

    broken = copy.deepcopy(result)
    with torch.no_grad():
        broken.head.get_submodule("cls").weight.mul_(1.5)
    with pytest.raises(rfx.VerifyError) as info:
        rfx.verify(model, broken, (images,))
    assert info.value.layer == "head.cls"
    assert "submodule 'head'" in str(info.value)


def test_submodule_called_for_each_image_is_compiled_for_its_first_call() -> None:
    model, images = _detector(), _images(count=2)
    result, caught = _compile(model, 0.5, (images,), reinit=False)
    rep = rfx.report(result)
    assert rep.submodules["backbone"].note == "called 2 times; compiled for its first call's inputs"
    assert rfx.verify(model, result, (images,)).exact
    with torch.no_grad():
        assert len(result(images)) == 2
    assert len(caught) == 1


def test_budget_is_the_whole_models() -> None:
    model, images = _detector(), _images()
    total, aux = _params(model), _params(model.aux)
    result, caught = _compile(model, 0.3, (images,), reinit=False)
    assert rfx.report(result).params_after <= 0.3 * total
    assert "is the whole model's" in str(caught[0].message)
    # what the parts left whole keep alone is more than the budget
    with pytest.raises(rfx.BudgetError) as info:
        rfx.compile(model, aux / total / 2, (images,))
    assert info.value.smallest == pytest.approx(aux / total)


def test_auto_leaf_false_and_data_keep_the_trace_error() -> None:
    model, images = _detector(), _images()
    with pytest.raises(rfx.TraceError, match=r"ListDetector\.forward"):
        rfx.compile(model, 0.5, (images,), auto_leaf=False)
    with pytest.raises(rfx.ArgumentError, match="data= and targets="):
        rfx.compile(model, 0.5, (images,), method="snip", data=((images,), torch.zeros(1)))


def test_no_traceable_submodule_raises_the_trace_error() -> None:
    class Threshold(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
            return [i * self.scale[:, None, None] for i in images if i.mean() > -1e9]

    with pytest.raises(rfx.TraceError, match="No submodule could be compiled"):
        rfx.compile(Threshold(), 0.5, (_images(),))


def test_torchvision_detector_compiles_in_place() -> None:
    detection = pytest.importorskip("torchvision.models.detection")
    torch.manual_seed(0)
    model = detection.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, min_size=96, max_size=96
    ).eval()
    images = [torch.randn(3, 96, 96, generator=torch.Generator().manual_seed(0))]
    result, caught = _compile(model, 0.5, (images,), reinit=False)
    assert type(result) is type(model) and len(caught) == 1
    rep = rfx.report(result)
    assert {"rpn.head", "roi_heads.box_head", "roi_heads.box_predictor"} <= set(rep.compiled)
    assert "transform" in rep.left and "rpn.anchor_generator" in rep.left
    assert all(rep.submodules[n].params_before == 0 for n in rep.left)  # every weight compiled
    assert rep.params_after <= 0.5 * rep.params_before == 0.5 * _params(model)
    assert rfx.verify(model, result, (images,)).exact
    with torch.no_grad():
        (out,) = result(images)
    assert set(out) == {"boxes", "labels", "scores"}


def test_submodules_held_in_a_module_list_are_found() -> None:
    class Heads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = _block(3, 8)
            self.heads = nn.ModuleList([nn.Sequential(_block(8, 16), nn.Conv2d(16, 2, 1))
                                        for _ in range(2)])  # fmt: skip

        def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
            x = self.stem(torch.stack(images))
            return [h(x) for h in self.heads if x.mean() > -1e9]

    torch.manual_seed(0)
    model, images = randomize_norms(Heads()).eval(), _images(count=2)
    result, caught = _compile(model, 0.6, (images,), reinit=False)
    assert rfx.report(result).compiled == ["stem", "heads.0", "heads.1"]
    assert "Searched inside heads (not called on the example inputs)" in str(caught[0].message)
    assert rfx.verify(model, result, (images,)).exact


def test_layers_on_their_own_parameters_are_not_compiled_alone() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(_block(8, 16), nn.Conv2d(16, 8, 1))
            self.weight = nn.Parameter(torch.randn(8, 8, 1, 1) * 0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(self.body(x), self.weight)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.scaled = Scaled()

        def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
            return [self.scaled(self.stem(i[None])) for i in images if i.mean() > -1e9]

    torch.manual_seed(0)
    model, images = randomize_norms(Net()).eval(), _images()
    result, _ = _compile(model, 0.7, (images,), reinit=False)
    rep = rfx.report(result)
    assert rep.compiled == ["scaled.body"]
    assert rep.submodules["stem"].note == rep.submodules["scaled"].note.split(": ", 1)[1]
    assert rep.submodules["scaled"].params_before == 64  # its own weight only
    assert sum(sp.params_before for sp in rep.submodules.values()) == _params(model)
    assert rep.params_after <= 0.7 * rep.params_before
    assert rfx.verify(model, result, (images,)).exact


def test_submodule_that_extends_its_input_list_is_not_compiled_alone() -> None:
    class Extra(nn.Module):  # as torchvision's LastLevelP6P7: adds levels to its input
        def __init__(self) -> None:
            super().__init__()
            self.p6 = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())

        def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
            levels.extend([self.p6(levels[-1])])
            return levels

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(_block(3, 8), _block(8, 8))
            self.extra = Extra()
            self.head = nn.Sequential(_block(8, 16), nn.Conv2d(16, 2, 1))

        def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
            levels = self.extra([self.stem(torch.stack(images))])
            return [self.head(level) for level in levels if level.mean() > -1e9]

    torch.manual_seed(0)
    model, images = randomize_norms(Net()).eval(), _images()
    result, caught = _compile(model, 0.7, (images,), reinit=False)
    assert "extra (changes its inputs in place (levels.extend)" in str(caught[0].message)
    rep = rfx.report(result)
    assert rep.compiled == ["stem", "extra.p6", "head"]
    assert rep.submodules["head"].note == "called 2 times; compiled for its first call's inputs"
    assert result.extra.p6.get_submodule("0").out_channels == 8  # what extra hands back
    assert rfx.verify(model, result, (images,)).exact
