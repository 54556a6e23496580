"""``benchmarks/accuracy/compare.py`` puts two runs of the study side by side, cell by cell,
and flags a difference only beyond 2 standard errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))  # last: benchmarks/coverage.py must not shadow coverage

from accuracy import compare  # noqa: E402


def _runs(accuracies: dict[str, list[float]], params: int = 1000) -> list[dict[str, object]]:
    return [
        {"dataset": "digits", "family": "vgg", "condition": cond, "budget": 0.25, "seed": s,
         "accuracy": acc, "params": params, "macs": 10 * params}
        for cond, values in accuracies.items() for s, acc in enumerate(values)
    ]  # fmt: skip


def test_only_differences_beyond_noise_are_flagged(tmp_path: Path) -> None:
    a = _runs({"reconvene": [90.0, 91.0, 92.0], "uniform": [95.0, 95.1, 94.9]})
    b = _runs({"reconvene": [91.0, 90.0, 93.0], "uniform": [90.0, 90.2, 89.8]}, params=800)
    paths = []
    for name, runs in (("a", a), ("b", b)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"runs": [*runs, {"dataset": "digits", "accuracy": None}]}))
        paths.append(str(path))
    out = tmp_path / "cmp.md"
    assert compare.main([*paths, "--labels", "before", "after", "--out", str(out)]) == 0
    text = out.read_text()
    assert "2 cells; the setting changed the model (params or MACs) in 2" in text
    assert "B below A beyond noise in 1, above in 0" in text
    rows = {line.split(" | ")[2]: line for line in text.splitlines() if line.startswith("| digits")}
    assert "**worse**" in rows["uniform"] and "-5.00" in rows["uniform"]
    assert "**worse**" not in rows["reconvene"] and "+0.33" in rows["reconvene"]
    assert "1.0k / 0.8k" in rows["uniform"]
