"""Latency budgets on onnxruntime: does ``Budget(latency=T)`` land within 10 % of T?

For each model (torchvision, ``weights=None``, input 1x3xSxS) and each target T:

    rfx.compile(model, rfx.Budget(latency=T), (x,), latency_backend="onnxruntime",
                latency_cache=FOLDER)

with FOLDER a fresh temporary folder (a cold per-layer table: the compile time includes
timing every layer geometry it visits) unless ``--cache`` names one. The compiled model
is then measured again, independently of the planner: ``LatencyRuler`` (the original and
the compiled model exported to ONNX, timed in alternating rounds on onnxruntime) three
times with 15 rounds each; the achieved ratio is the median of the three. The target is
met when the achieved ratio lies within 10 % of T (|achieved / T - 1| <= 0.1).

Usage:
    .venv/bin/python benchmarks/latency_budget.py                 # six models, T = 0.5
    .venv/bin/python benchmarks/latency_budget.py --models resnet18 --targets 0.5,0.3

Writes latency_budget.json and latency_budget.md to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_MODELS = ["resnet50", "vgg16_bn", "mobilenet_v2", "efficientnet_b0",
                  "regnet_y_400mf", "densenet121"]  # fmt: skip
TOLERANCE = 0.10


class _PlanLog(logging.Handler):
    """Keeps the planner's 'latency plan' and 'latency table' lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(("latency plan", "latency table:")):
            self.lines.append(text)


def run_one(name: str, target: float, size: int, cache: Path | None) -> dict[str, Any]:
    import reconvene_fx as rfx
    from reconvene_fx.latency.ruler import LatencyRuler

    model, (x,) = C.build(name, size)
    record: dict[str, Any] = {"model": name, "target": target, "size": size}
    log = _PlanLog()
    logger = logging.getLogger("reconvene_fx")
    logger.addHandler(log)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory(prefix="rfx_latency_table_") as fresh:
            t0 = time.perf_counter()
            table = cache or Path(fresh)
            gm = rfx.compile(model, rfx.Budget(latency=target), (x,),
                             latency_backend="onnxruntime", latency_cache=table)  # fmt: skip
            record["compile_s"] = round(time.perf_counter() - t0, 1)
    except Exception as exc:
        return {**record, "error": C.first_line(exc)}
    finally:
        logger.removeHandler(log)
        logger.setLevel(old_level)
    rep = rfx.report(gm)
    ruler = LatencyRuler(model, (x,), backend="onnxruntime", rounds=15)
    again = [ruler.ratio(gm) for _ in range(3)]
    achieved = statistics.median(again)
    timed = [int(m.group(1)) for line in log.lines
             if (m := re.match(r"latency table: (\d+) layers timed, \d+ known", line))]  # fmt: skip
    return {
        **record,
        "planner_ratio": rep.latency_ratio,
        "achieved_ratio": achieved,
        "achieved_runs": again,
        "error_vs_target": achieved / target - 1,
        "met": abs(achieved / target - 1) <= TOLERANCE,
        "flops_ratio": rep.macs_ratio,  # the key of the stored results; it counts MACs
        "params_ratio": rep.params_ratio,
        "dense_ms": ruler.before * 1e3,
        "plans_measured": sum(line.startswith("latency plan") for line in log.lines),
        "layers_timed": timed[0] if timed else None,
        "plan_log": log.lines,
        "load_avg": round(os.getloadavg()[0], 2),
    }


def markdown(data: dict[str, Any]) -> str:
    cfg = data["config"]
    rows = data["results"]
    ok = [r for r in rows if "error" not in r]
    met = sum(r["met"] for r in ok)
    lines = [
        "# Latency budgets on onnxruntime",
        "",
        f"Command: `{cfg['command']}`; {C.library_label(cfg['machine'])}.",
        f"Date {cfg['date']}. Protocol: see the docstring of `benchmarks/latency_budget.py`.",
        "",
        f"**Target: the achieved ratio within 10 % of the budget: met in {met} of {len(rows)}.**",
        "",
        "| model | budget | planner | achieved (3 runs) | off target | met | MACs kept "
        "| params kept | dense ms | plans measured | layers timed | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['target']:g} | error: {r['error']} |" + " |" * 9)
            continue
        runs = ", ".join(f"{v:.3f}" for v in r["achieved_runs"])
        lines.append(
            f"| {r['model']} | {r['target']:g} | {r['planner_ratio']:.3f} | "
            f"{r['achieved_ratio']:.3f} ({runs}) | {100 * r['error_vs_target']:+.1f} % | "
            f"{'yes' if r['met'] else 'no'} | {r['flops_ratio']:.3f} | {r['params_ratio']:.3f} | "
            f"{r['dense_ms']:.1f} | {r['plans_measured']} | {r['layers_timed']} | "
            f"{r['compile_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--targets", default="0.5", help="latency budgets (0.5)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--cache", type=Path, help="keep the per-layer tables here (default: cold)")
    p.add_argument("--out", type=Path, default=C.RESULTS)
    args = p.parse_args(argv)
    names = C.parse_models(args.models, DEFAULT_MODELS)
    targets = [float(t) for t in args.targets.split(",")]

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    data: dict[str, Any] = {
        "config": {
            "models": names,
            "targets": targets,
            "size": args.size,
            "machine": C.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        },
        "results": [],
    }
    t_start = time.perf_counter()
    for name in names:
        for target in targets:
            rec = run_one(name, target, args.size, args.cache)
            data["results"].append(rec)
            cell = rec.get("error") or (
                f"planner {rec['planner_ratio']:.3f}, achieved {rec['achieved_ratio']:.3f} "
                f"({100 * rec['error_vs_target']:+.1f} %), compile {rec['compile_s']:.0f}s"
            )
            print(f"[{time.perf_counter() - t_start:7.1f}s] {name} latency={target:g}: {cell}",
                  file=sys.stderr, flush=True)  # fmt: skip
            C.write_json(args.out / "latency_budget.json", data)
            (args.out / "latency_budget.md").write_text(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
