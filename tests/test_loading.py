"""Tests of reconvene_fx.loading: model specs and input shapes."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch

from reconvene_fx.errors import ReconveneError
from reconvene_fx.loading import (
    ModelSpecError,
    default_input_shape,
    load_model,
    parse_input_shape,
)

FACTORY_FILE = """
import torch

def make():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())

def not_a_module():
    return 42

def needs_args(width):
    return torch.nn.Conv2d(3, width, 3)

def broken():
    raise RuntimeError("boom")

NOT_CALLABLE = 3
"""


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(FACTORY_FILE)
    return path


def test_model_spec_error_is_a_reconvene_error_and_a_value_error() -> None:
    assert issubclass(ModelSpecError, ReconveneError)
    assert issubclass(ModelSpecError, ValueError)


def test_torchvision_model() -> None:
    model = load_model("torchvision:resnet18")
    assert type(model).__name__ == "ResNet"
    assert model.fc.out_features == 1000


def test_torchvision_googlenet_has_one_output() -> None:
    model = load_model("torchvision:googlenet")
    assert model.aux_logits is False
    out = model.eval()(torch.randn(1, 3, 64, 64))
    assert isinstance(out, torch.Tensor)


def test_unknown_torchvision_model_says_how_to_list_names() -> None:
    with pytest.raises(ModelSpecError, match="list_models") as info:
        load_model("torchvision:resnt18")
    assert "resnet18" in str(info.value)  # close match suggested


def test_timm_missing_says_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(ModelSpecError, match="pip install timm"):
        load_model("timm:resnet18")


def test_timm_model_is_created_without_pretrained_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def create_model(name: str, **kwargs: object) -> torch.nn.Module:
        calls.append((name, kwargs))
        if name != "tiny":
            raise RuntimeError(f"Unknown model ({name})")
        return torch.nn.Linear(2, 2)

    fake = types.ModuleType("timm")
    fake.create_model = create_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", fake)
    assert isinstance(load_model("timm:tiny"), torch.nn.Linear)
    assert calls == [("tiny", {"pretrained": False})]
    with pytest.raises(ModelSpecError, match="unknown timm model 'other'"):
        load_model("timm:other")


def test_file_factory(model_file: Path) -> None:
    model = load_model(f"{model_file}:make")
    assert isinstance(model, torch.nn.Sequential)
    assert model[0].out_channels == 8


def test_file_factory_may_import_its_sibling_modules(tmp_path: Path) -> None:
    (tmp_path / "sibling_blocks_for_test.py").write_text(
        "import torch\nBLOCK = torch.nn.Conv2d(3, 4, 1)\n"
    )
    main = tmp_path / "net.py"
    main.write_text(
        textwrap.dedent(
            """
            from sibling_blocks_for_test import BLOCK

            def build():
                return BLOCK
            """
        )
    )
    assert isinstance(load_model(f"{main}:build"), torch.nn.Conv2d)
    assert str(tmp_path) not in sys.path


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        ("missing", "no attribute 'missing'.*make"),
        ("not_a_module", "returned a int, not a torch.nn.Module"),
        ("NOT_CALLABLE", "not a callable"),
        ("needs_args", "called with no arguments"),
        ("broken", "RuntimeError: boom"),
    ],
)
def test_file_factory_errors(model_file: Path, factory: str, match: str) -> None:
    with pytest.raises(ModelSpecError, match=match):
        load_model(f"{model_file}:{factory}")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model(f"{tmp_path / 'nope.py'}:make")


def test_file_that_fails_to_import(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    path.write_text("import not_a_module_anyone_has\n")
    with pytest.raises(ModelSpecError, match=r"importing .* failed: ModuleNotFoundError"):
        load_model(f"{path}:make")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("resnet18", "expected torchvision:NAME"),
        ("keras:resnet18", "expected torchvision:NAME"),
        ("torchvision:", "no name after ':'"),
        ("models.py", "names a file but no factory"),
    ],
)
def test_malformed_specs(spec: str, match: str) -> None:
    with pytest.raises(ModelSpecError, match=match):
        load_model(spec)


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("1,3,224,224", (1, 3, 224, 224)),
        (" 2, 3, 8, 8 ", (2, 3, 8, 8)),
        ("1x3x64x64", (1, 3, 64, 64)),
        ("(1,16)", (1, 16)),
    ],
)
def test_parse_input_shape(text: str, shape: tuple[int, ...]) -> None:
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["", "1", "a,b", "1,,3", "1,3.5,8", "1,0,8,8", "1,-3,8,8"])
def test_parse_input_shape_rejects(text: str) -> None:
    with pytest.raises(ModelSpecError):
        parse_input_shape(text)


def test_default_input_shape() -> None:
    assert default_input_shape("torchvision:resnet18") == (1, 3, 224, 224)
    assert default_input_shape("torchvision:inception_v3") == (1, 3, 299, 299)
    assert default_input_shape("models.py:make") == (1, 3, 224, 224)
