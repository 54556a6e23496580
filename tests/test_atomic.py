"""Output files are written atomically and their paths checked before any work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import reconvene_fx.emit.onnx as onnx_emit
from reconvene_fx import cli
from reconvene_fx._atomic import atomic_write, check_writable
from reconvene_fx.emit import save
from reconvene_fx.errors import ExportError

X = torch.randn(1, 3, 8, 8)


def _gm() -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_an_error_mid_write_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model.pt"
    target.write_bytes(b"old model")

    def half_then_fail(obj: object, f: str) -> None:
        Path(f).write_bytes(b"half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        save(_gm(), target, (X,))
    assert target.read_bytes() == b"old model"
    assert _only(tmp_path) == ["model.pt"]  # the partial folder is gone


def test_a_killed_writer_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    script = textwrap.dedent(f"""
        import sys, time
        from reconvene_fx._atomic import atomic_write
        with atomic_write({str(target)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
                f.flush()
                print("writing", flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert target.read_bytes() == b"old"


def test_a_failed_onnx_check_leaves_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old onnx")

    def differs(*args: object, **kwargs: object) -> None:
        raise ExportError("output 0 differs")

    monkeypatch.setattr(onnx_emit, "_check_outputs", differs)
    with pytest.raises(ExportError, match="differs"):
        onnx_emit.export_onnx(_gm(), target, (X,))
    assert target.read_bytes() == b"old onnx"
    assert _only(tmp_path) == ["model.onnx"]


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ".onnx"])
def test_a_successful_save_replaces_the_file(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"model{suffix}"
    target.write_bytes(b"old")
    save(_gm(), target, (X,))
    assert target.read_bytes() != b"old" and target.stat().st_size > 100
    assert _only(tmp_path) == [target.name]


def test_atomic_write_needs_something_written(tmp_path: Path) -> None:
    with (
        pytest.raises(FileNotFoundError, match="nothing was written"),
        atomic_write(tmp_path / "empty.txt"),
    ):
        pass
    assert _only(tmp_path) == []


def test_unwritable_paths_are_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        check_writable(tmp_path / "file" / "model.onnx")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "new" / "deeper" / "model.onnx").name == "model.onnx"
    assert not (tmp_path / "new").exists()  # nothing created


def test_cli_checks_the_output_path_before_loading(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "file").write_text("")

    def fail(spec: str) -> None:
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(cli, "load_model", fail)
    start = time.perf_counter()
    out = str(tmp_path / "file" / "model.onnx")
    assert cli.main(["compile", "torchvision:resnet18", "--budget", "0.5", "-o", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0]
    assert time.perf_counter() - start < 5
