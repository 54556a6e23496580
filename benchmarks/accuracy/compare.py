"""Compare two runs of the accuracy study cell by cell (same grid, one setting changed).

    .venv/bin/python benchmarks/accuracy/compare.py A/accuracy.json B/accuracy.json \\
        --labels "round_to=1" "default widths" --out results/accuracy_round_to.md

A cell is (data set, family, condition, budget). For each, the mean and standard deviation
of the test accuracy over the seeds of each run, the difference B - A, and whether it lies
beyond noise: |B - A| > 2 standard errors of the difference (sqrt((s_A^2 + s_B^2) / n)).
The physical params and the MACs per image of B against A are given too (what the setting
changed in the model).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Cell = tuple[str, str, str, Any]
Runs = dict[Cell, list[dict[str, Any]]]


def cells(runs: list[dict[str, Any]]) -> Runs:
    """The finished runs of a study, by cell."""
    out: dict[Cell, list[dict[str, Any]]] = {}
    for r in runs:
        if r.get("accuracy") is None:
            continue
        out.setdefault((r["dataset"], r["family"], r["condition"], r.get("budget")), []).append(r)
    return out


def _stats(rs: list[dict[str, Any]], key: str) -> tuple[float, float]:
    values = [float(r[key]) for r in rs]
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare(a: Runs, b: Runs) -> list[dict[str, Any]]:
    """One row per cell both runs finished."""
    rows = []
    for cell in sorted(set(a) & set(b), key=lambda c: (c[0], c[1], c[2], c[3] or 1.0)):
        (ma, sa), (mb, sb) = _stats(a[cell], "accuracy"), _stats(b[cell], "accuracy")
        n = min(len(a[cell]), len(b[cell]))
        se = math.sqrt((sa**2 + sb**2) / max(n, 1))
        diff = mb - ma
        rows.append({
            "cell": cell, "a": (ma, sa), "b": (mb, sb), "diff": diff, "n": n,
            "beyond_noise": abs(diff) > 2 * se and n > 1,
            "params": (_stats(a[cell], "params")[0], _stats(b[cell], "params")[0]),
            "macs": (_stats(a[cell], "macs")[0], _stats(b[cell], "macs")[0]),
        })  # fmt: skip
    return rows


def markdown(rows: list[dict[str, Any]], labels: Sequence[str], sources: Sequence[str]) -> str:
    worse = [r for r in rows if r["beyond_noise"] and r["diff"] < 0]
    better = [r for r in rows if r["beyond_noise"] and r["diff"] > 0]
    changed = [r for r in rows if r["params"][0] != r["params"][1] or r["macs"][0] != r["macs"][1]]
    lines = [
        f"# Accuracy study: {labels[1]} against {labels[0]}",
        "",
        f"A: `{sources[0]}` ({labels[0]}); B: `{sources[1]}` ({labels[1]}). Command: "
        "`python benchmarks/accuracy/compare.py A B`. Beyond noise: |B - A| > 2 standard "
        "errors of the difference over the seeds.",
        "",
        f"{len(rows)} cells; the setting changed the model (params or MACs) in {len(changed)}; "
        f"B below A beyond noise in {len(worse)}, above in {len(better)}.",
        "",
        "| data | family | condition | budget | A acc | B acc | B - A | beyond noise | "
        "params A / B | MACs A / B |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ds, fam, cond, budget = r["cell"]
        flag = ("**worse**" if r["diff"] < 0 else "better") if r["beyond_noise"] else ""
        lines.append(
            f"| {ds} | {fam} | {cond} | {'-' if budget is None else f'1/{round(1 / budget)}'} "
            f"| {r['a'][0]:.2f} ± {r['a'][1]:.2f} | {r['b'][0]:.2f} ± {r['b'][1]:.2f} "
            f"| {r['diff']:+.2f} | {flag} "
            f"| {r['params'][0] / 1e3:.1f}k / {r['params'][1] / 1e3:.1f}k "
            f"| {r['macs'][0] / 1e3:.0f}k / {r['macs'][1] / 1e3:.0f}k |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="accuracy.json of run A")
    p.add_argument("b", type=Path, help="accuracy.json of run B")
    p.add_argument("--labels", nargs=2, default=("A", "B"), help="names of the two runs")
    p.add_argument("--sources", nargs=2, help="how to name the runs' files in the table")
    p.add_argument("--out", type=Path, help="markdown file (default: stdout)")
    args = p.parse_args(argv)
    a = cells(json.loads(args.a.read_text())["runs"])
    b = cells(json.loads(args.b.read_text())["runs"])
    text = markdown(compare(a, b), args.labels, args.sources or (str(args.a), str(args.b)))
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
