"""``benchmarks/accuracy/run.py --quick`` runs end to end offline and writes its three files.

It asserts nothing about accuracy: one epoch on the digits set only checks the pipeline
(every condition compiles, trains, is measured and reported).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))  # last: benchmarks/coverage.py must not shadow coverage

from accuracy import run  # noqa: E402

FAMILIES = ("resnet", "vgg")


def test_quick_study_writes_json_markdown_and_png(tmp_path: Path) -> None:
    assert run.main(["--quick", "--out", str(tmp_path), "--jobs", "1"]) == 0

    study = json.loads((tmp_path / "accuracy.json").read_text())
    runs = study["runs"]
    keys = sorted((r["family"], r["condition"]) for r in runs)
    assert keys == sorted((f, c) for f in FAMILIES for c in run.DEFAULT_CONDITIONS)
    for r in runs:
        assert "error" not in r, r
        assert r["dataset"] == "digits" and r["seed"] == 0
        assert r["budget"] == (None if r["condition"] == "dense" else 0.25)
        assert 0.0 <= r["accuracy"] <= 100.0
        assert 0 < r["nonzero"] <= r["params"] <= r["params_dense"]
        assert 0 < r["macs"] <= r["macs_dense"]
        if r["condition"] in ("unstructured", "composite"):
            assert r["nonzero"] < r["params"], r
        if r["condition"] in ("reconvene", "composite", "control"):
            assert r["widths"] and all(len(w) == 4 for w in r["widths"].values())
    assert study["recipe"]["digits"]["epochs"] == 1
    assert study["machine"]["torch"]

    text = (tmp_path / "accuracy.md").read_text()
    for cond in run.DEFAULT_CONDITIONS:
        assert f"`{cond}`" in text and f" {cond} " in text
    assert "Gaps against the targets" in text

    png = (tmp_path / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
