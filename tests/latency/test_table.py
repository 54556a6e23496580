"""The per-layer latency table: layer specs, timing on each backend, the cache on disk."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from reconvene_fx.latency import LatencyTable, layer_spec
from reconvene_fx.latency._onnxruntime import onnxruntime_layer_seconds
from reconvene_fx.latency._torch import torch_layer_seconds


@pytest.mark.parametrize(
    ("module", "shape", "key"),
    [
        (nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), (2, 8, 32, 32),
         "conv|2x8x32x32|16|k3x3|s2x2|p1x1|d1x1|g1|b0"),
        (nn.Conv2d(8, 8, 3, groups=8), (1, 8, 9, 9), "conv|1x8x9x9|8|k3x3|s1x1|p0x0|d1x1|g8|b1"),
        (nn.Conv1d(4, 6, 5, dilation=2), (1, 4, 40), "conv|1x4x40|6|k5|s1|p0|d2|g1|b1"),
        (nn.Linear(32, 10), (4, 32), "linear|4x32|10|b1"),
    ],
)  # fmt: skip
def test_layer_spec_keys_name_the_geometry(module: nn.Module, shape: tuple, key: str) -> None:
    spec = layer_spec(module, shape)
    assert spec is not None and spec.key() == key
    rebuilt = spec.module()
    assert type(rebuilt) is type(module)
    assert rebuilt(torch.randn(shape)).shape == module(torch.randn(shape)).shape


@pytest.mark.parametrize(
    "module",
    [nn.ConvTranspose2d(4, 4, 3), nn.Conv2d(4, 4, 3, padding="same"),
     nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4)],
)  # fmt: skip
def test_layers_the_table_cannot_time_alone_have_no_spec(module: nn.Module) -> None:
    assert layer_spec(module, (1, 4, 8, 8)) is None


def test_with_widths_changes_channels_and_groups_only() -> None:
    spec = layer_spec(nn.Conv2d(32, 32, 3, groups=32), (1, 32, 16, 16))
    narrow = spec.with_widths(8, 8, 8)
    assert narrow.module().weight.shape == (8, 1, 3, 3)
    assert (narrow.in_shape, narrow.kernel, narrow.stride) == ((1, 8, 16, 16), (3, 3), (1, 1))


@pytest.mark.parametrize("timer", [onnxruntime_layer_seconds, torch_layer_seconds])
def test_a_wide_layer_times_slower_than_a_narrow_one(timer) -> None:
    wide = layer_spec(nn.Conv2d(256, 256, 3, padding=1), (1, 256, 48, 48))
    narrow = wide.with_widths(8, 8, 1)
    # 1024x the MACs (1.4 GMAC): far beyond timing noise, even on a loaded machine
    assert timer(wide, repeats=3) > 2 * timer(narrow, repeats=3)


class CountingTable(LatencyTable):
    """Times every spec as its MACs (deterministic) and counts the timings."""

    def _timer(self):
        def seconds(spec):
            self.calls.append(spec.key())
            return spec.in_channels * spec.out_channels * 1e-9

        self.calls: list[str] = []
        return seconds


def test_table_times_each_spec_once_and_a_second_table_reads_the_file(tmp_path) -> None:
    spec = layer_spec(nn.Conv2d(8, 16, 3), (1, 8, 16, 16))
    first = CountingTable("torch", tmp_path)
    assert first.seconds(spec) == first.seconds(spec) == 8 * 16 * 1e-9
    assert first.calls == [spec.key()] and first.timed == 1
    first.save()
    (path,) = tmp_path.glob("latency-torch-*.json")
    assert json.loads(path.read_text())["entries"] == {spec.key(): 8 * 16 * 1e-9}
    second = CountingTable("torch", tmp_path)
    assert second.seconds(spec) == 8 * 16 * 1e-9
    assert second.calls == [] and second.timed == 0


def test_tables_of_two_processes_merge_on_save(tmp_path) -> None:
    a, b = CountingTable("torch", tmp_path), CountingTable("torch", tmp_path)
    spec_a = layer_spec(nn.Conv2d(8, 16, 3), (1, 8, 16, 16))
    spec_b = layer_spec(nn.Conv2d(4, 16, 3), (1, 4, 16, 16))
    a.seconds(spec_a)
    b.seconds(spec_b)
    a.save()
    b.save()
    merged = CountingTable("torch", tmp_path)
    merged.seconds(spec_a), merged.seconds(spec_b)
    assert merged.calls == [] and len(merged) == 2


def test_backend_gets_its_own_file_and_memory_only_writes_nothing(tmp_path) -> None:
    spec = layer_spec(nn.Conv2d(8, 16, 3), (1, 8, 16, 16))
    for backend in ("torch", "onnxruntime"):
        table = CountingTable(backend, tmp_path)
        table.seconds(spec)
        table.save()
    assert len(list(tmp_path.glob("latency-*.json"))) == 2
    memory = CountingTable("torch", False)
    assert memory.path is None
    memory.seconds(spec)
    memory.save()  # a no-op
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"format": 1, "fingerprint": {"cpu": "another"}, "entries": {}})],
)
def test_a_corrupt_or_foreign_file_is_ignored_with_a_warning(tmp_path, content: str) -> None:
    path = CountingTable("torch", tmp_path).path
    path.write_text(content)
    with pytest.warns(UserWarning, match="ignoring the latency table"):
        table = CountingTable("torch", tmp_path)
    assert len(table) == 0


def test_an_unwritable_cache_folder_only_warns(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    table = CountingTable("torch", blocker / "cache")
    table.seconds(layer_spec(nn.Linear(4, 4), (1, 4)))
    with pytest.warns(UserWarning, match="not saved"):
        table.save()


def test_unknown_backend_and_bad_repeats_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown latency_backend 'tensorrt'"):
        LatencyTable("tensorrt", False)
    with pytest.raises(ValueError, match="repeats"):
        LatencyTable("torch", False, repeats=0)
