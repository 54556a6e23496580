"""Compile time per PaI method on resnet50 at 224x224, batch 1, against the issue's targets.

Targets (issue 3): ``snip`` compiles end to end within 5 s on this 2-core machine;
``synflow`` (100 iterations) costs at most 3x as much as 100 forward+backward passes of the
same model.

Per method, in a fresh subprocess (so one method's memory or threads cannot affect the
next): build ``resnet50(weights=None)`` (seed 0, eval mode), draw ``x`` (1x3x224x224), one
untimed warm-up compile of a tiny CNN, then time ``rfx.compile(model, budget, (x,),
method=m)`` end to end -- deep copy, tracing, shape and channel analysis, scoring, global
top-k, plan, shrink, re-initialization, report -- ``--repeats`` times (median; SynFlow
once by default, it takes a minute), and time the scorer alone on the traced model. The
baseline subprocess times ``--passes`` forward+backward passes of the same model on the
same input in float32 (``model(x).sum().backward()``, gradients cleared each pass).

    .venv/bin/python benchmarks/scoring_speed.py                  # all methods, ~3 min
    .venv/bin/python benchmarks/scoring_speed.py --methods snip --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

_SCRIPT = str(Path(__file__).resolve())
METHODS = ("magnitude", "random", "snip", "grasp", "synflow")
MODEL = "resnet50"
TARGET_SNIP_S = 5.0
TARGET_SYNFLOW_RATIO = 3.0


def _warm_up() -> None:
    import torch

    import reconvene_fx as rfx

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    rfx.compile(net, 0.5, (torch.randn(1, 3, 8, 8),), method="snip")


def method_child(method: str, budget: float, repeats: int) -> dict[str, Any]:
    import torch

    import reconvene_fx as rfx
    from reconvene_fx.scoring import run_scorer

    model, inputs = C.build(MODEL)
    _warm_up()
    compile_s: list[float] = []
    gm = None
    for _ in range(repeats):
        start = time.perf_counter()
        gm = rfx.compile(model, budget, inputs, method=method)
        compile_s.append(time.perf_counter() - start)
    assert gm is not None
    rep = rfx.report(gm)
    traced = rfx.trace(model)
    start = time.perf_counter()
    run_scorer(method, traced, inputs, seed=0, density=budget)
    score_s = time.perf_counter() - start
    return {
        "method": method,
        "compile_s": compile_s,
        "compile_median_s": statistics.median(compile_s),
        "score_s": score_s,
        "params_ratio": rep.params_ratio,
        "flops_ratio": rep.macs_ratio,  # the key of the stored results; it counts MACs
        "selected": len(rep.selected),
        "narrowed": sum(lp.narrowed for lp in rep.layers.values()),
        "threads": torch.get_num_threads(),
    }


def baseline_child(passes: int) -> dict[str, Any]:
    import torch

    model, (x,) = C.build(MODEL)
    for _ in range(2):  # warm-up
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    for _ in range(passes):
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)
    total = time.perf_counter() - start
    return {"passes": passes, "total_s": total, "per_pass_s": total / passes,
            "threads": torch.get_num_threads()}  # fmt: skip


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    cfg, base = data["config"], data.get("baseline", {})
    lines = [
        f"# Compile time per PaI method: {MODEL}, 1x3x224x224",
        "",
        f"{C.library_label(data['machine'])}; budget {cfg['budget']} (params kept); "
        f"started {data['started']}; load average (1 min) before/after each row in the JSON.",
        "",
        "| method | compile (median s) | runs | scorer alone (s) | params kept | MACs kept "
        "| PSE-selected | narrowed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["results"]:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['compile_median_s']:.2f} | {len(r['compile_s'])} | "
            f"{r['score_s']:.2f} | {100 * r['params_ratio']:.1f}% | "
            f"{100 * r['flops_ratio']:.1f}% | {r['selected']} | {r['narrowed']} |"
        )
    lines.append("")
    if "per_pass_s" in base:
        lines.append(f"Baseline: {base['passes']} forward+backward passes (float32) took "
                     f"{base['total_s']:.1f} s ({base['per_pass_s']:.3f} s per pass).")  # fmt: skip
    for t in data.get("targets", []):
        lines.append(f"- {t['what']}: {t['value']} (target {t['target']}) -- "
                     f"**{'met' if t['met'] else 'not met'}**")  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def _targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    by_method = {r["method"]: r for r in data["results"] if "error" not in r}
    out = []
    if "snip" in by_method:
        s = by_method["snip"]["compile_median_s"]
        out.append({"what": "snip compile end to end", "value": f"{s:.2f} s",
                    "target": f"<= {TARGET_SNIP_S:g} s", "met": s <= TARGET_SNIP_S})  # fmt: skip
    base = data.get("baseline", {})
    if "synflow" in by_method and "total_s" in base:
        ratio = by_method["synflow"]["compile_median_s"] / base["total_s"]
        out.append({
            "what": f"synflow compile / {base['passes']} forward+backward passes",
            "value": f"{ratio:.2f}x ({by_method['synflow']['compile_median_s']:.1f} s / "
                     f"{base['total_s']:.1f} s)",
            "target": f"<= {TARGET_SYNFLOW_RATIO:g}x",
            "met": ratio <= TARGET_SYNFLOW_RATIO,
        })  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    p.add_argument("--budget", type=float, default=0.1, help="params kept (default 0.1)")
    p.add_argument("--repeats", type=int, default=3, help="compiles per method (3)")
    p.add_argument("--synflow-repeats", type=int, default=1, help="compiles for synflow (1)")
    p.add_argument("--passes", type=int, default=100, help="baseline passes (100)")
    p.add_argument("--timeout", type=float, default=1200.0, help="seconds per subprocess")
    p.add_argument("--out", type=Path, default=C.RESULTS / "scoring_speed.json")
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_out:
        if args.child == "baseline":
            result = baseline_child(args.passes)
        else:
            repeats = args.synflow_repeats if args.child == "synflow" else args.repeats
            result = method_child(args.child, args.budget, repeats)
        Path(args.child_out).write_text(json.dumps(result))
        return 0

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    data: dict[str, Any] = {
        "config": {
            "model": MODEL,
            "size": 224,
            "batch": 1,
            "budget": args.budget,
            "repeats": args.repeats,
            "synflow_repeats": args.synflow_repeats,
            "baseline_passes": args.passes,
        },
        "machine": C.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results": [],
    }
    jobs = [*methods, "baseline"] if "synflow" in methods else methods
    for job in jobs:
        load0 = os.getloadavg()[0]
        child_args = ["--child", job, "--budget", str(args.budget), "--repeats",
                      str(args.repeats), "--synflow-repeats", str(args.synflow_repeats),
                      "--passes", str(args.passes)]  # fmt: skip
        out = C.run_child(_SCRIPT, child_args, args.timeout)
        rec = out.result or {"method": job, "error": C.crash_reason(out)}
        rec["load_before"], rec["load_after"] = load0, os.getloadavg()[0]
        if job == "baseline":
            data["baseline"] = rec
            print(f"baseline: {json.dumps(rec)}", flush=True)
        else:
            data["results"].append(rec)
            print(f"{job}: {json.dumps(rec)}", flush=True)
        data["targets"] = _targets(data)
        C.write_json(args.out, data)
        write_markdown(args.out.with_suffix(".md"), data)
    for t in data["targets"]:
        print(f"{t['what']}: {t['value']} (target {t['target']}): "
              f"{'met' if t['met'] else 'NOT met'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
