"""Compile speed and memory: reconvene_fx against Torch-Pruning's MagnitudePruner.

Timing (one fresh subprocess per model, the three calls in that same process, alternating
ours / Torch-Pruning / uniform@0.25 for ``--repeats`` rounds, median per column):

    ours          rfx.compile(m, 0.5, (x,)): the default call (magnitude scores, the
                  reconvene strategy, RLR re-initialization, automatic round_to), as a
                  user calls it. This is the headline column.
    uniform@0.25  rfx.compile(m, budget=0.25, method="magnitude", strategy="uniform",
                  reinit=False): uniform removes the same fraction of every coupled group,
                  and a quarter of the parameters is what removing ~50% of the channels
                  of every layer leaves (0.5 x 0.5), i.e. the same amount of pruning as
                  Torch-Pruning at ratio 0.5, and like it without redrawing weights (the
                  headline column of earlier runs).
    TP            tp.pruner.MagnitudePruner(m, x, importance=MagnitudeImportance(p=1),
                  pruning_ratio=0.5, ignored_layers=[final classifier]) + pruner.step():
                  the constructor (which traces the model and builds the dependency
                  graph) and the step are timed together.

Every run gets a fresh ``copy.deepcopy`` of a freshly built model (``weights=None``, seed 0,
eval mode), made outside the timed region; input 1x3x224x224 for every model (299 for
inception_v3). ``compile`` also deep-copies the model internally (it never mutates its
argument) and that copy is inside our timing, whereas Torch-Pruning prunes in place. A
Torch-Pruning run that raises or takes longer than ``--tp-timeout`` seconds (120) is
recorded and not repeated.

Memory (three more fresh subprocesses per model; ``ru_maxrss`` is the process's peak RSS):

    B  peak RSS after importing torch, torchvision, reconvene_fx and torch_pruning
    M  after building the model
    P  after the measured work: one inference under no_grad / our default compile /
       Torch-Pruning's constructor + step

    footprint = P - B (model weights + everything the work allocated, without the
    interpreter and libraries); mem ratio = footprint(compile) /
    footprint(inference), target <= 2. The stricter delta ratio
    (P_compile - M) / (P_inference - M), over the built model, is reported too.

Targets checked, on the headline column: median(ours / TP) <= 0.5 over the list and no
model above 1.0; densenet201 compiles in under 1 s; compile peak memory at most 2x the
model's inference peak. The median ratio of uniform@0.25 is reported beside them.

Usage:
    .venv/bin/python benchmarks/compile_speed.py                       # coverage-ok models
    .venv/bin/python benchmarks/compile_speed.py --set representative  # 15 models
    .venv/bin/python benchmarks/compile_speed.py --models resnet18,vgg16 --repeats 5 --update

Writes benchmarks/results/compile_speed.json and compile_speed.md after every model
(``--out`` elsewhere).
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

__all__ = ["REPRESENTATIVE", "main"]

_SCRIPT = str(Path(__file__).resolve())

REPRESENTATIVE = [
    "resnet18",
    "resnet50",
    "densenet121",
    "densenet201",
    "mobilenet_v2",
    "efficientnet_b0",
    "vgg16",
    "shufflenet_v2_x1_0",
    "regnet_y_400mf",
    "googlenet",
    "inception_v3",
    "squeezenet1_0",
    "mnasnet1_0",
    "resnext50_32x4d",
    "convnext_tiny",
]

SIZE = 224
OURS_BUDGET = 0.5  # the headline: rfx.compile(m, OURS_BUDGET, (x,)), every option default
VARIANT = "uniform@0.25"  # the named variant column
VARIANT_BUDGET = 0.25
VARIANT_OPTIONS = {"method": "magnitude", "strategy": "uniform", "reinit": False}
TP_RATIO = 0.5
TARGET_RATIO = 0.5  # median of ours / TP over the models
TARGET_MAX_RATIO = 1.0  # no model above
TARGET_DENSENET201_S = 1.0
TARGET_MEMORY = 2.0


class _Timeout(Exception):
    pass


# --------------------------------------------------------------------------- child side


def _classifier(model: Any) -> Any:
    """The final classifier: the last Conv/Linear module registered (squeezenet's is a conv)."""
    import torch.nn as nn

    last = None
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            last = module
    return last


def _out_channels(model: Any) -> dict[str, int]:
    import torch.nn as nn

    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            widths[name] = m.out_channels
        elif isinstance(m, nn.Linear):
            widths[name] = m.out_features
    return widths


def _kept_channels(before: dict[str, int], after_model: Any) -> float:
    """Fraction of conv/linear output channels kept, summed over the original's layers."""
    after = _out_channels(after_model)
    total = sum(before.values())
    return sum(after.get(n, w) for n, w in before.items()) / max(total, 1)


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def _ours(model: Any, inputs: tuple) -> Any:
    """The headline: the default call."""
    import reconvene_fx as rfx

    return rfx.compile(model, OURS_BUDGET, inputs)


def _variant(model: Any, inputs: tuple) -> Any:
    """uniform@0.25: the same amount of pruning as Torch-Pruning, weights kept."""
    import reconvene_fx as rfx

    return rfx.compile(model, VARIANT_BUDGET, inputs, **VARIANT_OPTIONS)


def _tp(model: Any, inputs: tuple) -> Any:
    import torch_pruning as tp

    pruner = tp.pruner.MagnitudePruner(
        model,
        inputs[0],
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=TP_RATIO,
        ignored_layers=[_classifier(model)],
    )
    pruner.step()
    return model


def _timed(fn: Any, limit: float | None = None) -> tuple[float, float, Any]:
    """Run ``fn()``; return (wall seconds, CPU seconds of this process, result). ``limit``
    raises _Timeout via SIGALRM."""
    import signal

    def _alarm(signum: int, frame: Any) -> None:
        raise _Timeout

    if limit:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        return time.perf_counter() - t0, time.process_time() - c0, result
    finally:
        if limit:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _warm_up() -> None:
    """Run both libraries once on a tiny CNN, so one-time costs (lazy imports, first
    torch.fx code generation) are not charged to the first timed run of either."""
    import torch
    import torch.nn as nn

    def tiny() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
        ).eval()  # fmt: skip

    x = (torch.randn(1, 3, 16, 16),)
    _ours(tiny(), x)
    _variant(tiny(), x)
    _tp(tiny(), x)


def time_child(name: str, repeats: int, tp_timeout: float) -> dict[str, Any]:
    """Alternate ours / TP / uniform@0.25 ``repeats`` times in this process."""
    import copy
    import gc
    import warnings

    import torch

    import reconvene_fx as rfx

    warnings.filterwarnings("ignore")
    _warm_up()
    base, inputs = C.build(name, SIZE)
    params0 = _params(base)
    widths0 = _out_channels(base)
    rec: dict[str, Any] = {"model": name, "params": params0, "ours_s": [], "variant_s": [],
                           "tp_s": [], "ours_cpu_s": [], "variant_cpu_s": [], "tp_cpu_s": [],
                           "tp_error": None, "ours_error": None, "variant_error": None}  # fmt: skip

    def fresh() -> Any:
        m = copy.deepcopy(base)
        gc.collect()
        return m

    def ours_like(key: str, fn: Any, first: bool) -> None:
        m = fresh()
        try:
            secs, cpu, gm = _timed(lambda: fn(m, inputs))
            rec[f"{key}_s"].append(secs)
            rec[f"{key}_cpu_s"].append(cpu)
            if first:
                rec[f"{key}_params_ratio"] = rfx.report(gm).params_ratio
                rec[f"{key}_channels_kept"] = _kept_channels(widths0, gm)
        except Exception as exc:
            rec[f"{key}_error"] = C.first_line(exc)

    for i in range(repeats):
        if rec["ours_error"] is None:
            ours_like("ours", _ours, i == 0)
        if rec["tp_error"] is None:
            m = fresh()
            try:
                secs, cpu, pruned = _timed(lambda m=m: _tp(m, inputs), tp_timeout)
                rec["tp_s"].append(secs)
                rec["tp_cpu_s"].append(cpu)
                if i == 0:
                    rec["tp_params_ratio"] = _params(pruned) / params0
                    rec["tp_channels_kept"] = _kept_channels(widths0, pruned)
                    try:
                        with torch.no_grad():
                            pruned(*inputs)
                        rec["tp_model_runs"] = True
                    except Exception as exc:
                        rec["tp_model_runs"] = False
                        rec["tp_forward_error"] = C.first_line(exc)
            except _Timeout:
                rec["tp_error"] = f"timeout (> {tp_timeout:g} s)"
            except Exception as exc:
                rec["tp_error"] = C.first_line(exc)
            del m
        if rec["variant_error"] is None:
            ours_like("variant", _variant, i == 0)
    return rec


def _maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def mem_child(name: str, mode: str, tp_timeout: float) -> dict[str, Any]:
    """Peak RSS before the model, after building it, and after the measured work."""
    import warnings

    import torch
    import torch_pruning  # noqa: F401  (imported for an equal baseline in every mode)

    import reconvene_fx

    warnings.filterwarnings("ignore")
    b = _maxrss_mib()
    model, inputs = C.build(name, SIZE)
    m = _maxrss_mib()
    if mode == "infer":
        with torch.no_grad():
            model(*inputs)
    elif mode == "ours":
        try:
            _ours(model, inputs)
        except reconvene_fx.ReconveneError as exc:
            return {"model": name, "error": C.first_line(exc)}
    elif mode == "tp":
        try:
            _timed(lambda: _tp(model, inputs), tp_timeout)
        except _Timeout:
            return {"model": name, "error": f"timeout (> {tp_timeout:g} s)"}
    else:
        raise ValueError(mode)
    return {"base_mib": b, "model_mib": m, "peak_mib": _maxrss_mib()}


# -------------------------------------------------------------------------- parent side


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    t_args = ["--models", name, "--mode", "time", "--repeats", str(args.repeats),
              "--tp-timeout", str(args.tp_timeout)]  # fmt: skip
    out = C.run_child(_SCRIPT, t_args, args.timeout)
    if out.result is None:
        rec: dict[str, Any] = {"model": name, "error": C.crash_reason(out)}
    else:
        rec = out.result
    rec["ours_median_s"] = _median(rec.get("ours_s", []))
    rec["variant_median_s"] = _median(rec.get("variant_s", []))
    rec["tp_median_s"] = _median(rec.get("tp_s", []))
    if rec["ours_median_s"] and rec["tp_median_s"]:
        rec["ratio"] = rec["ours_median_s"] / rec["tp_median_s"]
    if rec["variant_median_s"] and rec["tp_median_s"]:
        rec["variant_ratio"] = rec["variant_median_s"] / rec["tp_median_s"]
    ours_cpu, tp_cpu = _median(rec.get("ours_cpu_s", [])), _median(rec.get("tp_cpu_s", []))
    if ours_cpu and tp_cpu:
        rec["cpu_ratio"] = ours_cpu / tp_cpu
    if args.no_memory:
        return rec
    mem: dict[str, Any] = {}
    for mode in ("infer", "ours", "tp"):
        if mode == "tp" and rec.get("tp_error"):
            mem[mode] = {"error": f"skipped: TP failed when timed ({rec['tp_error']})"}
            continue
        mem_args = ["--models", name, "--mode", f"mem-{mode}", "--tp-timeout", str(args.tp_timeout)]
        o = C.run_child(_SCRIPT, mem_args, args.timeout)
        mem[mode] = o.result if o.result is not None else {"error": C.crash_reason(o)}
    rec["memory"] = mem
    inf, ours = mem["infer"], mem["ours"]
    if "peak_mib" in inf and "peak_mib" in ours:
        rec["infer_footprint_mib"] = inf["peak_mib"] - inf["base_mib"]
        rec["ours_footprint_mib"] = ours["peak_mib"] - ours["base_mib"]
        rec["mem_ratio"] = rec["ours_footprint_mib"] / max(rec["infer_footprint_mib"], 1e-9)
        rec["mem_delta_ratio"] = (ours["peak_mib"] - ours["model_mib"]) / max(
            inf["peak_mib"] - inf["model_mib"], 1e-9
        )
    if "peak_mib" in mem["tp"] and "peak_mib" in inf:
        rec["tp_footprint_mib"] = mem["tp"]["peak_mib"] - mem["tp"]["base_mib"]
    return rec


def summarize(recs: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["ratio"] for r in recs if r.get("ratio") is not None]
    variant = [r["variant_ratio"] for r in recs if r.get("variant_ratio") is not None]
    mems = [r["mem_ratio"] for r in recs if r.get("mem_ratio") is not None]
    dn = next((r for r in recs if r["model"] == "densenet201"), None)
    dn_s = dn.get("ours_median_s") if dn else None
    worst = max((r for r in recs if r.get("ratio") is not None), key=lambda r: r["ratio"],
                default=None)  # fmt: skip
    return {
        "models": len(recs),
        "compared": len(ratios),
        "median_ratio": _median(ratios),
        "max_ratio": worst["ratio"] if worst else None,
        "max_ratio_model": worst["model"] if worst else None,
        "median_cpu_ratio": _median([r["cpu_ratio"] for r in recs if r.get("cpu_ratio")]),
        "variant_median_ratio": _median(variant),
        "models_faster_than_tp": sum(1 for x in ratios if x < 1),
        "ratio_target": TARGET_RATIO,
        "ratio_met": (_median(ratios) or 1e9) <= TARGET_RATIO if ratios else None,
        "max_ratio_target": TARGET_MAX_RATIO,
        "max_ratio_met": max(ratios) <= TARGET_MAX_RATIO if ratios else None,
        "densenet201_s": dn_s,
        "densenet201_variant_s": dn.get("variant_median_s") if dn else None,
        "densenet201_target_s": TARGET_DENSENET201_S,
        "densenet201_met": dn_s < TARGET_DENSENET201_S if dn_s is not None else None,
        "memory_ratio_median": _median(mems),
        "memory_ratio_max": max(mems) if mems else None,
        "memory_ratio_max_model": max(recs, key=lambda r: r.get("mem_ratio") or -1)["model"]
        if mems
        else None,
        "memory_within_target": sum(1 for m in mems if m <= TARGET_MEMORY),
        "memory_measured": len(mems),
        "memory_target": TARGET_MEMORY,
        "memory_met": all(m <= TARGET_MEMORY for m in mems) if mems else None,
        "tp_failed": [r["model"] for r in recs if r.get("tp_error")],
    }


def _f(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _yes(flag: bool | None) -> str:
    return {True: "**met**", False: "**not met**"}.get(flag, "n/a")


def write_markdown(path: Path, data: dict[str, Any]) -> None:
    s, recs, mach = data["summary"], data["results"], data["machine"]
    options = ", ".join(f"{k}={v!r}" for k, v in VARIANT_OPTIONS.items())
    lines = [
        "# Compile speed and memory: reconvene_fx vs Torch-Pruning",
        "",
        f"Machine: {mach.get('cpu', '?')}, {mach['cpu_count']} cores "
        f"({mach['torch_threads']} torch threads), {mach.get('memory_gib', '?')} GiB RAM, "
        f"CPU only; torch {mach['torch']}, torchvision {mach['torchvision']}, "
        f"torch-pruning {data['config']['torch_pruning']}, {C.library_label(mach)}. "
        f"Run: {data['started']}.",
        "",
        f"ours = `rfx.compile(m, {OURS_BUDGET}, (x,))`, the default call (magnitude, "
        "reconvene, RLR re-initialization, automatic round_to); "
        f"{VARIANT} = `rfx.compile(m, {VARIANT_BUDGET}, (x,), {options})` (~50% of every "
        "layer's channels removed, weights kept: the headline of earlier runs); TP = "
        f"`MagnitudePruner(importance=MagnitudeImportance(p=1), pruning_ratio={TP_RATIO}, "
        "ignored_layers=[classifier])` constructor + `step()`. Input 1x3x224x224; median of "
        f"{data['config']['repeats']} alternating runs, fresh deepcopy per run. Memory: peak "
        "RSS (ru_maxrss) in fresh processes, minus the peak after imports; mem ratio = "
        "compile footprint (the default call) / inference-under-no_grad footprint. load = "
        "the 1-minute load average before/after the model; above "
        f"{mach['cpu_count']} means other processes shared the cores, inflating absolute "
        "seconds (ratios less: runs alternate).",
        "",
        "## Targets",
        "",
        f"- Median ours / TP over {s['compared']} models: **{_f(s['median_ratio'], '.2f')}** "
        f"(target <= {TARGET_RATIO}): {_yes(s['ratio_met'])}. On process CPU time (less "
        f"sensitive to other load): {_f(s['median_cpu_ratio'], '.2f')}. Ours is faster on "
        f"{s['models_faster_than_tp']} of {s['compared']} models.",
        f"- Largest ours / TP: **{_f(s['max_ratio'], '.2f')}** ({s['max_ratio_model']}) "
        f"(target: none above {TARGET_MAX_RATIO:g}): {_yes(s['max_ratio_met'])}.",
        f"- {VARIANT}: median {VARIANT} / TP {_f(s['variant_median_ratio'], '.2f')} "
        "(reference, no target).",
        f"- densenet201 compile: **{_f(s['densenet201_s'], '.2f')} s** "
        f"({_f(s['densenet201_variant_s'], '.2f')} s as {VARIANT}) "
        f"(target < {TARGET_DENSENET201_S:g} s): {_yes(s['densenet201_met'])}.",
        f"- Compile peak memory / inference peak: median **{_f(s['memory_ratio_median'], '.2f')}"
        f"x**, max {_f(s['memory_ratio_max'], '.2f')}x ({s['memory_ratio_max_model']}); "
        f"{s['memory_within_target']} of {s['memory_measured']} models within "
        f"{TARGET_MEMORY:g}x: {_yes(s['memory_met'])}.",
    ]
    if s["tp_failed"]:
        lines.append(f"- Torch-Pruning failed or timed out on: {', '.join(s['tp_failed'])}.")
    lines += [
        "",
        "## Per model",
        "",
        f"| model | params (M) | ours s | {VARIANT} s | TP s | ours/TP | {VARIANT}/TP | "
        "ours/TP CPU | ours params kept | TP params kept | ours ch. kept | "
        f"{VARIANT} ch. kept | TP ch. kept | infer MiB | compile MiB | TP MiB | mem ratio | "
        "mem delta ratio | load before/after | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        notes = [x for x in (r.get("error"), r.get("ours_error") and f"ours: {r['ours_error']}",
                             r.get("variant_error") and f"{VARIANT}: {r['variant_error']}",
                             r.get("tp_error") and f"TP: {r['tp_error']}",
                             r.get("tp_model_runs") is False and "TP model fails forward: "
                             + r.get("tp_forward_error", "")) if x]  # fmt: skip
        note = "; ".join(notes).replace("|", "\\|")
        load = "/".join(_f(v, ".1f") for v in r.get("load_avg") or [None])
        lines.append(
            f"| {r['model']} | {_f(r.get('params') and r['params'] / 1e6, '.1f')} | "
            f"{_f(r.get('ours_median_s'), '.3f')} | {_f(r.get('variant_median_s'), '.3f')} | "
            f"{_f(r.get('tp_median_s'), '.3f')} | {_f(r.get('ratio'), '.2f')} | "
            f"{_f(r.get('variant_ratio'), '.2f')} | {_f(r.get('cpu_ratio'), '.2f')} | "
            f"{_f(r.get('ours_params_ratio'), '.3f')} | {_f(r.get('tp_params_ratio'), '.3f')} | "
            f"{_f(r.get('ours_channels_kept'), '.3f')} | "
            f"{_f(r.get('variant_channels_kept'), '.3f')} | "
            f"{_f(r.get('tp_channels_kept'), '.3f')} | "
            f"{_f(r.get('infer_footprint_mib'), '.0f')} | "
            f"{_f(r.get('ours_footprint_mib'), '.0f')} | {_f(r.get('tp_footprint_mib'), '.0f')} "
            f"| {_f(r.get('mem_ratio'), '.2f')} | {_f(r.get('mem_delta_ratio'), '.2f')} | "
            f"{load} | {note} |"
        )
    lines.append("")
    path.write_text("\n".join(lines))


def _default_models(which: str) -> list[str]:
    if which == "representative":
        return list(REPRESENTATIVE)
    if which == "all":
        return C.classification_models()
    cov = C.RESULTS / "coverage.json"
    if not cov.exists():
        print("no coverage.json yet; using the representative set", flush=True)
        return list(REPRESENTATIVE)
    return [r["model"] for r in json.loads(cov.read_text())["results"] if r["status"] == "ok"]


def _child(args: argparse.Namespace) -> int:
    C.memory_watchdog(args.child_out, {"model": args.models})
    if args.mode == "time":
        rec = time_child(args.models, args.repeats, args.tp_timeout)
    else:
        rec = mem_child(args.models, args.mode.removeprefix("mem-"), args.tp_timeout)
    Path(args.child_out).write_text(json.dumps(rec))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help="comma-separated names (overrides --set)")
    p.add_argument("--set", choices=("coverage-ok", "representative", "all"),
                   default="coverage-ok",
                   help="model list when --models is not given (default: the models "
                   "benchmarks/results/coverage.json reports ok)")  # fmt: skip
    p.add_argument(
        "--no-densenet201",
        action="store_true",
        help="do not add densenet201 (added by default for its 1 s target)",
    )
    p.add_argument("--repeats", type=int, default=3, help="alternating runs per model (3)")
    p.add_argument("--tp-timeout", type=float, default=120.0, help="seconds per TP run (120)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds per model subprocess (900)")  # fmt: skip
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument(
        "--update",
        action="store_true",
        help="merge into the existing compile_speed.json instead of replacing it",
    )
    p.add_argument("--out", type=Path, default=C.RESULTS / "compile_speed.json")
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_out:
        return _child(args)

    import torch_pruning

    names = C.parse_models(args.models, _default_models(args.set))
    if not args.no_densenet201 and "densenet201" not in names:
        names.append("densenet201")
    previous: list[dict[str, Any]] = []
    if args.update and args.out.exists():
        old = json.loads(args.out.read_text())
        previous = [r for r in old.get("results", []) if r["model"] not in names]
    data: dict[str, Any] = {
        "config": {
            "ours": f"rfx.compile(m, {OURS_BUDGET}, (x,))",
            "ours_budget": OURS_BUDGET,
            "variant": VARIANT,
            "variant_budget": VARIANT_BUDGET,
            "variant_options": dict(VARIANT_OPTIONS),
            "tp_pruning_ratio": TP_RATIO,
            "repeats": args.repeats,
            "size": SIZE,
            "tp_timeout_s": args.tp_timeout,
            "torch_pruning": torch_pruning.__version__,
        },
        "machine": C.machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results: list[dict[str, Any]] = []
    print(f"compile speed of {len(names)} models, {args.repeats} repeats", flush=True)
    for name in names:
        t0, load0 = time.perf_counter(), os.getloadavg()[0]
        rec = measure(name, args)
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        # 1-minute load average before and after: above the core count means other work
        # shared the CPU and the absolute seconds are inflated (ratios less so: alternating).
        rec["load_avg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        results.append(rec)
        print(
            f"{name:<20} ours {_f(rec.get('ours_median_s'), '7.3f')}s  "
            f"{VARIANT} {_f(rec.get('variant_median_s'), '7.3f')}s  "
            f"TP {_f(rec.get('tp_median_s'), '7.3f')}s  ratio {_f(rec.get('ratio'), '5.2f')}  "
            f"mem {_f(rec.get('mem_ratio'), '5.2f')}x  "
            f"{rec.get('error') or rec.get('ours_error') or rec.get('tp_error') or ''}",
            flush=True,
        )
        data["results"] = sorted(previous + results, key=lambda r: r["model"])
        data["summary"] = summarize(data["results"])
        C.write_json(args.out, data)
        write_markdown(args.out.with_suffix(".md"), data)
    s = data["summary"]
    print(
        f"median ours/TP {_f(s['median_ratio'], '.2f')} over {s['compared']} models "
        f"(max {_f(s['max_ratio'], '.2f')}, {s['max_ratio_model']}; {VARIANT} median "
        f"{_f(s['variant_median_ratio'], '.2f')}); "
        f"densenet201 {_f(s['densenet201_s'], '.2f')} s; memory ratio median "
        f"{_f(s['memory_ratio_median'], '.2f')}x max {_f(s['memory_ratio_max'], '.2f')}x",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
