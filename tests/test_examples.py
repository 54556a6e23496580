"""Every script in examples/ runs to completion (so the docs cannot go stale)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    args = [sys.executable, str(script)]
    if "onnx" in script.name:
        args.append(str(tmp_path / "out.onnx"))
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
    if script.name == "06_tensorrt.py" and not _tensorrt_and_gpu():
        # the ONNX file is still written and checked; the engine step says why it skipped
        assert "checked with onnxruntime" in done.stdout
        assert "TensorRT engine: skipped (" in done.stdout, done.stdout


def _tensorrt_and_gpu() -> bool:
    import torch

    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()
