"""``benchmarks/composite_masks.py --quick``: composite keeps masks at 1/16 on resnet18.

resnet18 at 64x64 with SNIP: at 1/16 of the conv/linear weights the selected groups stop
at their width floor, so the plan thins the masks instead of narrowing every group (before
issue 20 it kept no mask at all there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "composite_masks.py"


def test_quick_composite_keeps_masks_on_most_layers(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--budgets", "0.0625", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rec,) = json.loads((tmp_path / "composite_masks.json").read_text())["records"]
    assert rec["masked"] * 3 >= rec["layers"] > 0
    assert rec["narrowed_outputs"] >= 1  # the selected groups did narrow
    assert rec["nonzero_ratio"] <= rec["params_budget"] + 1e-9
    assert not rec["dead"] and rec["collapse_warnings"] == 0
    assert "masks / layers" in (tmp_path / "composite_masks.md").read_text()
