"""``benchmarks/latency.py --quick`` runs end to end and writes its three files.

It asserts nothing about speed: resnet18 at 64x64 with three rounds on a shared machine
only checks the pipeline (compile, Torch-Pruning's bisection, ONNX export, both runtimes
timed, markdown and plot written). TensorRT is asked for too: without a GPU and trtexec
it is skipped, the config saying why, and the rest runs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "latency.py"


def test_quick_latency_writes_json_markdown_and_png(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path),
         "--runtimes", "eager,onnxruntime,tensorrt"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    data = json.loads((tmp_path / "latency.json").read_text())
    assert data["config"]["grid"]["quick"] is True
    assert data["config"]["threads"]["torch"] >= 1
    recs = data["results"]
    trt = data["config"]["tensorrt"]
    timed = {"eager", "onnxruntime"} | ({"tensorrt"} if trt == "trtexec" else set())
    if trt != "trtexec":
        assert trt.startswith("skipped: "), trt
        assert f"TensorRT: {trt}" in proc.stderr
    assert {r["runtime"] for r in recs} == timed
    ours = [r for r in recs if r["kind"] == "reconvene"]
    assert {r["runtime"] for r in ours} == timed
    for r in ours:
        assert "error" not in r, r
        assert r["model"] == "resnet18" and r["batch"] == 1 and r["round_to"] == "auto"
        assert r["mac_reduction"] > 1.5
        assert 0 < r["params_ratio"] < 1
    for r in recs:
        if "error" in r:  # Torch-Pruning may fail; its error is recorded
            assert r["kind"] == "torch_pruning", r
            continue
        for key in ("dense_ms", "variant_ms", "speedup", "ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert len(r["dense_rounds_ms"]) == len(r["variant_rounds_ms"]) == 3
    assert data["dense"] and all(d["dense_ms"] > 0 for d in data["dense"])

    text = (tmp_path / "latency.md").read_text()
    assert "## Summary" in text and "median ratio" in text
    assert "### resnet18" in text

    png = (tmp_path / "latency.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
