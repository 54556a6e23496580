"""ShapePass: shapes and small values recorded; the model's state left alone."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from models import HAND_BUILT, build

from reconvene_fx.meta import TENSOR_META, VALUE
from reconvene_fx.passes import ShapePass
from reconvene_fx.passes.shape import _run_fake


def test_records_shapes_and_sizes_without_touching_state() -> None:
    model = build("flatten").train()
    gm = torch.fx.symbolic_trace(model)
    stats = gm.get_submodule("features.0.1").running_mean.clone()
    result = ShapePass((torch.randn(4, 3, 16, 16),))(gm)
    assert not result.modified
    nodes = {n.name: n for n in gm.graph.nodes}
    assert tuple(nodes["features_3"].meta[TENSOR_META].shape) == (4, 24, 4, 4)
    assert nodes["size"].meta[VALUE].value == 4  # x.size(0)
    assert torch.equal(gm.get_submodule("features.0.1").running_mean, stats)
    assert gm.training and gm.get_submodule("features.0.1").training


def test_a_bad_example_input_names_the_node_and_the_cause() -> None:
    import reconvene_fx as rfx

    gm = torch.fx.symbolic_trace(build("se"))
    with pytest.raises(rfx.ReconveneError, match=r"conv_0.*channels"):
        ShapePass((torch.randn(1, 5, 16, 16),))(gm)


def test_fake_propagation_records_the_same_shapes_and_values_as_a_real_run() -> None:
    x = torch.randn(2, 3, 16, 16)
    real = torch.fx.symbolic_trace(build("shufflenet"))
    fake = torch.fx.symbolic_trace(build("shufflenet"))
    ShapePass((x,))(real)
    assert _run_fake(fake, (x,))  # the shape-only run itself works (no silent fallback)
    ShapePass((x,), fake=True)(fake)
    for a, b in zip(real.graph.nodes, fake.graph.nodes, strict=True):
        meta_a, meta_b = a.meta.get(TENSOR_META), b.meta.get(TENSOR_META)
        if hasattr(meta_a, "shape"):
            assert meta_a.shape == meta_b.shape, a.name
        if VALUE in a.meta:
            assert a.meta[VALUE].value == b.meta[VALUE].value, a.name


def _shapes(gm: torch.fx.GraphModule) -> dict[str, object]:
    return {n.name: n.meta.get(TENSOR_META) for n in gm.graph.nodes}


def _meta_and_real(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict, dict]:
    fake, real = torch.fx.symbolic_trace(model), torch.fx.symbolic_trace(model)
    ShapePass((x,), fake=True)(fake)
    ShapePass((x,))(real)
    return _shapes(fake), _shapes(real)


@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_meta_shortcuts_record_what_a_real_run_records(name: str) -> None:
    """Convs, linears and cats are computed from shapes on meta tensors: the recorded
    shapes, dtypes and strides equal those of a real run."""
    fake, real = _meta_and_real(build(name), torch.randn(2, 3, 16, 16))
    assert fake == real


def test_meta_shortcuts_handle_strides_dilations_and_odd_sizes() -> None:
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
        torch.nn.Conv2d(8, 6, 1, stride=3),
        torch.nn.Flatten(),
        torch.nn.Linear(6 * 2 * 3, 5),
    )
    fake, real = _meta_and_real(net, torch.randn(2, 3, 11, 13))
    assert fake == real


class _Excite(torch.nn.Module):
    """Adaptive pools (int, tuple and None sizes) and broadcasting arithmetic with numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.squeeze = torch.nn.AdaptiveAvgPool2d(1)
        self.rows = torch.nn.AdaptiveAvgPool2d((None, 3))
        self.line = torch.nn.AdaptiveAvgPool1d(4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = self.conv(x)
        scaled = y * torch.sigmoid(self.squeeze(y)) + y
        half = 0.5 * scaled - 1 / (scaled + 2)
        flat = self.line(half.flatten(2))
        return torch.div(self.rows(half), 3), flat, torch.add(half, half), y.sum() * 2


@pytest.mark.parametrize(
    ("model", "size"),
    [(_Excite, 9), (lambda: torchvision.models.efficientnet_b0(), 32),
     (lambda: torchvision.models.mobilenet_v3_small(), 32)],
)  # fmt: skip
def test_pools_and_arithmetic_are_computed_from_shapes_as_a_real_run_records(
    model: Any, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    run_node = torch.fx.Interpreter.run_node

    def counted(self: torch.fx.Interpreter, n: torch.fx.Node) -> Any:
        if any(
            isinstance(a, torch.Tensor) and a.is_meta for a in self.fetch_args_kwargs_from_env(n)[0]
        ):
            ran.append(n.name)  # an op run on meta tensors, not computed from shapes
        return run_node(self, n)

    monkeypatch.setattr(torch.fx.Interpreter, "run_node", counted)
    fake, real = _meta_and_real(model().eval(), torch.randn(2, 3, size, size))
    assert fake == real
    shortcut = [n for n in fake if n.startswith(("squeeze", "rows", "line", "mul", "add", "sub"))]
    assert shortcut and not set(shortcut) & set(ran)


@pytest.mark.parametrize(
    "make",
    [lambda: torch.randn(2, 3, 4, 5),
     lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
     lambda: torch.randn(4, 5).t(), lambda: torch.randn(2, 1, 1, 7),
     lambda: torch.randn(1, 3, 1, 1), lambda: torch.empty(0, 3, 2, 2),
     lambda: torch.randn(2, 3, 2, 2, 2), lambda: torch.tensor(1.5),
     lambda: torch.randn(3, requires_grad=True), lambda: torch.randn(2, 8, 4)[:, ::2],
     lambda: torch.empty(2, 3, 4, 5, device="meta"),
     lambda: torch.empty(2, 8, 1, 1).to(memory_format=torch.channels_last)],
)  # fmt: skip
def test_tensor_metadata_is_what_torch_fx_records(make: Any) -> None:
    from torch.fx.passes.shape_prop import _extract_tensor_metadata

    from reconvene_fx.passes.shape import _tensor_metadata

    t = make()
    assert _tensor_metadata(t) == _extract_tensor_metadata(t)


def test_a_contiguous_input_with_other_strides_is_recorded_as_a_real_run_does() -> None:
    """A contiguous [n, c, 1, 1] tensor can have channels-last strides: a norm and an
    activation give what a real run gives (the plain strides), and arithmetic on it (which
    keeps them) is left to the op."""
    from reconvene_fx.passes.shape import _elementwise_shape, _row_major

    x = torch.randn(2, 8, 1, 1).to(memory_format=torch.channels_last)
    assert x.is_contiguous() and not _row_major(x) and _row_major(torch.randn(2, 8, 1, 1))
    assert _elementwise_shape(x.to("meta"), 2.0) is None
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    fake, real = _meta_and_real(net, x)
    assert fake == real and fake["_1"].stride == (8, 1, 1, 1)
