"""Latency: how much of the MAC reduction turns into speed, ours against Torch-Pruning.

For each model (torchvision, ``weights=None``, seed 0, eval mode, input 3xSxS, S = 224 or
``--size``) the dense model and each pruned variant are timed in eager PyTorch and
onnxruntime (and TensorRT, through ``trtexec``, when a GPU and TensorRT are present) at
batch 1 and 32.

Variants:

    ours  rfx.compile(model, budget=rfx.Budget(macs=1/R), example_inputs=(x,),
          strategy=S, round_to=K) for R in --reductions (2, 4), S in --strategies
          (reconvene, uniform, global) and K in --round-to (auto, 1, 8; auto is the
          default call's round_to=None, the summary's headline); default method
          (magnitude) and reinit. Compiled once at batch 1; the GraphModule runs at any batch.
          Where 1/R lies below the smallest reachable macs budget by at most 1 %
          (regnet's 13-group convs cannot round to 8 channels), it compiles at that floor
          and the table says so.
    TP    torch_pruning.pruner.MetaPruner(copy, x, MagnitudeImportance(p=2),
          global_pruning=False, pruning_ratio=p, ignored_layers=[final Linear], round_to=8)
          + step(). The uniform ratio p is found by bisection (at most 10 tries, a fresh
          deep copy each) until TP's MAC ratio is within 2 % of 1/R; the closest try is kept.
          An error is recorded and the run goes on.

MACs of every variant (ours, TP, dense) come from one counter, forward hooks on nn.Conv2d
and nn.Linear at batch 1: conv = out.numel()/batch * in_channels/groups * kh*kw, linear =
out.numel()/batch * in_features. mac_reduction = dense MACs / variant MACs is measured,
never assumed; params = sum of numel.

Timing. Eager: ``torch.inference_mode()``, eval mode, ``torch.set_num_threads(cpu
count)``. onnxruntime: ``reconvene_fx.latency.onnxruntime_session`` (intra_op_num_threads
= cpu count, ORT_ENABLE_ALL, CPUExecutionProvider, no spin-waiting threads); every model is
exported with ``rfx.export_onnx`` (the dense and TP models too) at the batch being timed,
checked against PyTorch at batch 1 only.
For each (variant, runtime, batch) the dense model and the variant are warmed up, then
timed in alternating rounds (dense, variant, dense, variant, ...; ``--repeats-b1`` = 10 /
``--repeats-b32`` = 3 rounds each) so that drift of the shared machine hits both alike. A
round calls the model back to back until about 0.2 s have passed (at least once) and
records ms per call; the figure is the median round. speedup = dense / variant median from
that same alternation; ratio = speedup / mac_reduction ("speedup per MAC": 1.0 means all
of the MAC reduction became speed, the limit for compute-bound layers; above 1 happens where
time goes to moving weights rather than to MACs, e.g. batch 1 at small inputs, since
params shrink faster than MACs). Every dense round is kept; a model's dense figure is the
median of all of them.

Usage:
    .venv/bin/python benchmarks/latency.py                     # the full grid (hours on CPU)
    .venv/bin/python benchmarks/latency.py --quick --out /tmp/lat   # pipeline check, < 1 min
    .venv/bin/python benchmarks/latency.py --models mobilenet_v2 --strategies reconvene \\
        --round-to 8 --reductions 4 --batches 1
    .venv/bin/python benchmarks/latency.py --from-json benchmarks/results/latency.json

Writes latency.json (after every model, atomically, so an interrupted run keeps what it
measured), latency.md and latency.png to ``--out`` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (lazily)

__all__ = ["DEFAULT_MODELS", "count_macs", "load", "main", "render"]

DEFAULT_MODELS = [
    "resnet50",
    "vgg16_bn",
    "mobilenet_v2",
    "efficientnet_b0",
    "regnet_y_400mf",
    "densenet121",
]
STRATEGIES = ("reconvene", "uniform", "global")
RUNTIMES = ("eager", "onnxruntime", "tensorrt")

TP_ROUND_TO = 8
TP_TOLERANCE = 0.02  # |TP's MAC ratio / target - 1|
TP_STEPS = 10
REACHABLE_SLACK = 0.01  # compile at the smallest reachable macs budget when this close
TP_MAX_RATIO = 0.95
MIN_ROUND_S = 0.2  # a timed round repeats the call until this long
WARMUP_B1 = 3  # untimed calls before the alternation, batch 1
WARMUP_BATCH = 1  # larger batches
TRT_TIMEOUT_S = 900.0

# The targets the summary answers.
TARGET_RATIO = 0.85
TARGET_REDUCTION = 4.0
TARGET_ROUND_TO = "auto"  # the default call's widths
TARGET_RUNTIME = "onnxruntime"

# A Runner warms a model up and returns a Round; a Round times one round: ms per call.
Round = Callable[[], float]
Runner = Callable[[], Round]


@dataclass(frozen=True)
class Variant:
    """One pruned version of a model: ours (``kind="reconvene"``) or Torch-Pruning's."""

    kind: str  # "reconvene" | "torch_pruning"
    strategy: str  # ours: the strategy; TP: "uniform" (one ratio for every layer)
    round_to: int | str  # "auto": the library's default (round_to=None)
    reduction: float  # target MAC reduction

    @property
    def label(self) -> str:
        return f"{_name(vars(self))} r{self.round_to} {self.reduction:g}x"


@dataclass
class Dense:
    """The dense model of one run, its inputs per batch, ONNX files per batch (or why the
    export failed), its runners (built once, reused beside every variant) and every dense
    round timed so far per (runtime, batch)."""

    name: str
    model: Any
    inputs: dict[int, Any]
    macs: int
    params: int
    onnx: dict[int, Path | str] = field(default_factory=dict)
    runners: dict[tuple[str, int], Runner] = field(default_factory=dict)
    rounds: dict[tuple[str, int], list[float]] = field(default_factory=dict)


# --------------------------------------------------------------------------- counting


def count_macs(model: Any, x: Any) -> int:
    """Multiply-accumulates per sample of the nn.Conv2d and nn.Linear layers on ``x``."""
    import torch
    import torch.nn as nn

    batch = x.shape[0]
    total = [0]

    def conv(m: nn.Conv2d, inputs: Any, out: torch.Tensor) -> None:
        total[0] += out.numel() // batch * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m: nn.Linear, inputs: Any, out: torch.Tensor) -> None:
        total[0] += out.numel() // batch * m.in_features

    handles = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def count_params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- variants


def compile_ours(model: Any, x: Any, v: Variant) -> tuple[Any, float, dict[str, Any]]:
    """Our compiled GraphModule, compile seconds and the library's own MACs ratio."""
    import reconvene_fx as rfx

    t0 = time.perf_counter()
    budget, extra = 1 / v.reduction, {}
    try:
        gm = rfx.compile(model, budget=rfx.Budget(macs=budget), example_inputs=(x,),
                         strategy=v.strategy, round_to=_round_to(v))  # fmt: skip
    except rfx.BudgetError as exc:
        # a floor a hair above the target (regnet's 13-group convs cannot round to 8):
        # compile at the floor and say so, rather than leave the model out
        if exc.quantity != "macs" or exc.smallest > budget * (1 + REACHABLE_SLACK):
            raise
        budget = exc.smallest * (1 + 1e-4)
        extra["note"] = f"budget raised to the reachable macs={budget:.4f}"
        gm = rfx.compile(model, budget=rfx.Budget(macs=budget), example_inputs=(x,),
                         strategy=v.strategy, round_to=_round_to(v))  # fmt: skip
    secs = time.perf_counter() - t0
    rep = rfx.report(gm)
    # the record keeps the key of the stored results (benchmarks/results/latency.json)
    return gm, secs, {"library_flops_ratio": rep.macs_after / rep.macs_before, **extra}


def _classifier_name(model: Any) -> str:
    import torch.nn as nn

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError("no nn.Linear classifier to leave unpruned")
    return names[-1]


def prune_tp(
    model: Any, x: Any, keep: float, dense_macs: int, steps: int = TP_STEPS
) -> tuple[Any, float, dict[str, Any]]:
    """Torch-Pruning at the uniform ratio whose MAC ratio is closest to ``keep`` (bisection,
    stopping once within TP_TOLERANCE); its pruning seconds (constructor + step)."""
    import torch_pruning as tp

    head = _classifier_name(model)
    lo, hi, ratio = 0.0, TP_MAX_RATIO, 1 - math.sqrt(keep)  # first guess: MACs ~ (1-p)^2
    best: tuple[float, float, Any, float, float] | None = None
    t_search = time.perf_counter()
    tries = 0
    for tries in range(1, steps + 1):  # noqa: B007  (tries is reported)
        m = copy.deepcopy(model)
        t0 = time.perf_counter()
        pruner = tp.pruner.MetaPruner(
            m, x, importance=tp.importance.MagnitudeImportance(p=2), global_pruning=False,
            pruning_ratio=ratio, ignored_layers=[m.get_submodule(head)], round_to=TP_ROUND_TO,
        )  # fmt: skip
        pruner.step()
        secs = time.perf_counter() - t0
        kept = count_macs(m, x) / dense_macs
        err = abs(kept / keep - 1)
        if best is None or err < best[0]:
            best = (err, ratio, m, secs, kept)
        if err <= TP_TOLERANCE:
            break
        lo, hi = (ratio, hi) if kept > keep else (lo, ratio)
        if hi - lo < 1e-3:  # round_to makes MACs a step function of the ratio
            break
        ratio = (lo + hi) / 2
    assert best is not None
    err, ratio, m, secs, _ = best
    info = {"tp_pruning_ratio": round(ratio, 5), "tp_tries": tries,
            "tp_converged": err <= TP_TOLERANCE, "tp_mac_ratio_error": round(err, 4),
            "tp_search_s": round(time.perf_counter() - t_search, 2)}  # fmt: skip
    return m, secs, info


def make_variant(
    model: Any, x: Any, v: Variant, dense_macs: int
) -> tuple[Any, float, dict[str, Any]]:
    if v.kind == "torch_pruning":
        return prune_tp(model, x, 1 / v.reduction, dense_macs)
    return compile_ours(model, x, v)


def variants(args: argparse.Namespace) -> list[Variant]:
    ours = [Variant("reconvene", s, k, r)
            for r in args.reductions for s in args.strategies for k in args.round_to]  # fmt: skip
    if args.no_torch_pruning:
        return ours
    return ours + [Variant("torch_pruning", "uniform", TP_ROUND_TO, r) for r in args.reductions]


# --------------------------------------------------------------------------- timing


def _wall_round(fn: Callable[[], Any], warmup: int) -> Round:
    """Warm ``fn`` up; the returned round calls it ``inner`` times back to back (``inner``
    from the last warm-up call, so that a round lasts about MIN_ROUND_S) -> ms per call."""
    for _ in range(max(warmup - 1, 0)):
        fn()
    t0 = time.perf_counter()
    fn()
    inner = max(1, math.ceil(MIN_ROUND_S / max(time.perf_counter() - t0, 1e-6)))

    def round_() -> float:
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t) * 1000 / inner

    return round_


def _eager_fn(module: Any, x: Any) -> Callable[[], Any]:
    import torch

    module.eval()

    def call() -> Any:
        with torch.inference_mode():
            return module(x)

    return call


def _ort_fn(path: Path, x: Any) -> Callable[[], Any]:
    from reconvene_fx.latency import onnxruntime_session

    # the library's session: all graph optimizations, threads not spin-waiting (two
    # sessions timed in turn would otherwise steal each other's cores)
    session = onnxruntime_session(path, threads=os.cpu_count() or 1)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


_TRT_MEDIAN = re.compile(r"GPU Compute Time:.*?median = ([0-9.eE+-]+) ms")


def _trt_runner(onnx: Path, fp16: bool) -> Runner:
    """TensorRT via trtexec: the engine is built once per ONNX file; a round is one trtexec
    run on it and its median GPU compute time (ms per inference).

    UNTESTED: written on a machine without a GPU or TensorRT."""
    exe = shutil.which("trtexec") or "trtexec"
    engine = onnx.with_suffix(".engine")
    build = [exe, f"--onnx={onnx}", f"--saveEngine={engine}", *(["--fp16"] if fp16 else [])]
    subprocess.run(build, capture_output=True, text=True, check=True, timeout=TRT_TIMEOUT_S)

    def round_() -> float:
        run = [exe, f"--loadEngine={engine}", "--warmUp=200", "--duration=1"]
        out = subprocess.run(run, capture_output=True, text=True, check=True,
                             timeout=TRT_TIMEOUT_S).stdout  # fmt: skip
        found = _TRT_MEDIAN.search(out)
        if found is None:
            raise RuntimeError("trtexec printed no 'GPU Compute Time ... median'")
        return float(found.group(1))

    return lambda: round_


def tensorrt_status() -> str:
    """``"trtexec"`` when TensorRT can run, else why it is skipped."""
    import torch

    if not torch.cuda.is_available():
        return "skipped: no GPU"
    if shutil.which("trtexec"):
        return "trtexec"
    if importlib.util.find_spec("tensorrt") is not None:
        return "skipped: tensorrt package found but no trtexec on PATH (only trtexec is used)"
    return "skipped: no TensorRT"


def make_runner(runtime: str, module: Any, onnx: Path | str | None, x: Any, fp16: bool) -> Runner:
    """How to time ``module`` (or its ONNX file) on ``runtime`` at input ``x``."""
    warmup = WARMUP_B1 if x.shape[0] == 1 else WARMUP_BATCH
    if runtime == "eager":
        fn = _eager_fn(module, x)
        return lambda: _wall_round(fn, warmup)
    if not isinstance(onnx, Path):
        raise RuntimeError(f"no ONNX file: {onnx}")
    if runtime == "tensorrt":
        return _trt_runner(onnx, fp16)
    fn = _ort_fn(onnx, x)
    return lambda: _wall_round(fn, warmup)


def alternate(dense: Round, variant: Round, repeats: int) -> tuple[list[float], list[float]]:
    """``repeats`` rounds of each, dense and variant in turn."""
    d, v = [], []
    for _ in range(repeats):
        d.append(dense())
        v.append(variant())
    return d, v


def export(module: Any, path: Path, x: Any, check: bool) -> Path | str:
    """The ONNX file, or why the export failed."""
    import reconvene_fx as rfx

    try:
        return rfx.export_onnx(module, path, (x,), check=check)
    except Exception as exc:
        return f"ONNX export: {C.first_line(exc)}"


# --------------------------------------------------------------------------- measuring


def _batch_input(x1: Any, batch: int, seed: int = 0) -> Any:
    import torch

    if batch == 1:
        return x1
    gen = torch.Generator().manual_seed(seed + batch)
    return torch.randn(batch, *x1.shape[1:], generator=gen)


def prepare_dense(name: str, args: argparse.Namespace, tmp: Path) -> Dense:
    model, (x1,) = C.build(name, args.size)
    inputs = {b: _batch_input(x1, b) for b in {1, *args.batches}}  # MACs: batch 1
    dense = Dense(name, model, inputs, count_macs(model, x1), count_params(model))
    if set(args.runtimes) - {"eager"}:
        for b in args.batches:
            dense.onnx[b] = export(model, tmp / f"dense_b{b}.onnx", inputs[b], check=b == 1)
    return dense


def _dense_runner(dense: Dense, runtime: str, batch: int, fp16: bool) -> Runner:
    key = (runtime, batch)
    if key not in dense.runners:
        x = dense.inputs[batch]
        dense.runners[key] = make_runner(runtime, dense.model, dense.onnx.get(batch), x, fp16)
    return dense.runners[key]


def _repeats(args: argparse.Namespace, batch: int) -> int:
    return args.repeats_b1 if batch == 1 else args.repeats_b32


def measure_variant(
    dense: Dense, v: Variant, args: argparse.Namespace, tmp: Path
) -> list[dict[str, Any]]:
    """One record per (runtime, batch) of variant ``v`` of ``dense``."""
    base: dict[str, Any] = {"model": dense.name, "kind": v.kind, "strategy": v.strategy,
                            "round_to": v.round_to, "target_reduction": v.reduction,
                            "size": int(dense.inputs[1].shape[-1]), "dense_macs": dense.macs,
                            "dense_params": dense.params}  # fmt: skip
    try:
        module, secs, extra = make_variant(dense.model, dense.inputs[1], v, dense.macs)
        macs, params = count_macs(module, dense.inputs[1]), count_params(module)
    except Exception as exc:
        err = C.first_line(exc)
        return [{**base, "runtime": rt, "batch": b, "error": err}
                for b in args.batches for rt in args.runtimes]  # fmt: skip
    base.update(
        macs=macs,
        params=params,
        mac_reduction=dense.macs / macs,
        params_ratio=params / dense.params,
        compile_s=round(secs, 3),
        **extra,
    )
    stem = re.sub(r"[^A-Za-z0-9]+", "_", v.label)
    records = []
    for b in args.batches:
        x = dense.inputs[b]
        path = tmp / f"{stem}_b{b}.onnx"
        onnx = export(module, path, x, check=b == 1) if set(args.runtimes) - {"eager"} else None
        for rt in args.runtimes:
            records.append(_time_one(dense, module, onnx, x, rt, {**base, "runtime": rt,
                                                                   "batch": b}, args))  # fmt: skip
        path.unlink(missing_ok=True)
        path.with_suffix(".engine").unlink(missing_ok=True)
    return records


def _time_one(
    dense: Dense, module: Any, onnx: Path | str | None, x: Any, runtime: str,
    rec: dict[str, Any], args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """Time dense and variant alternately; fill ``rec``."""
    batch = rec["batch"]
    load0 = os.getloadavg()[0]
    try:
        dense_round = _dense_runner(dense, runtime, batch, args.fp16)()
        variant_round = make_runner(runtime, module, onnx, x, args.fp16)()
        d, v = alternate(dense_round, variant_round, _repeats(args, batch))
    except Exception as exc:
        return {**rec, "error": C.first_line(exc)}
    dense.rounds.setdefault((runtime, batch), []).extend(d)
    speedup = statistics.median(d) / statistics.median(v)
    return {**rec, "dense_ms": statistics.median(d), "variant_ms": statistics.median(v),
            "speedup": speedup, "ratio": speedup / rec["mac_reduction"],
            "dense_rounds_ms": [round(t, 4) for t in d],
            "variant_rounds_ms": [round(t, 4) for t in v],
            "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)]}  # fmt: skip


def _progress(t_start: float, v: Variant, model: str, recs: list[dict[str, Any]]) -> None:
    first = recs[0] if recs else {}
    parts = [f"[{time.perf_counter() - t_start:7.1f}s] {model} {v.label}:"]
    if "mac_reduction" in first:
        parts.append(f"MACs /{first['mac_reduction']:.2f}, params x{first['params_ratio']:.2f},"
                     f" compile {first['compile_s']:.2f}s;")  # fmt: skip
    for r in recs:
        cell = "error" if r.get("error") else f"{r['speedup']:.2f}x ({r['ratio']:.2f})"
        parts.append(f"{r['runtime']}/b{r['batch']} {cell}")
    loads = [x for r in recs for x in r.get("load_avg", [])]
    if loads:
        parts.append(f"load {max(loads):.1f}")
    errors = {r["error"] for r in recs if r.get("error")}
    if errors:
        parts.append("| " + "; ".join(sorted(errors)))
    print(" ".join(parts), file=sys.stderr, flush=True)


def measure_model(
    name: str, args: argparse.Namespace, t_start: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every variant of ``name``: (records, dense figures per runtime and batch)."""
    with tempfile.TemporaryDirectory(prefix="rfx_latency_") as tmp:
        try:
            dense = prepare_dense(name, args, Path(tmp))
        except Exception as exc:
            print(f"{name}: {C.first_line(exc)}", file=sys.stderr, flush=True)
            return [{"model": name, "error": C.first_line(exc)}], []
        records = []
        for v in variants(args):
            recs = measure_variant(dense, v, args, Path(tmp))
            _progress(t_start, v, name, recs)
            records += recs
    figures = [{"model": name, "runtime": rt, "batch": b, "macs": dense.macs,
                "params": dense.params, "dense_ms": statistics.median(rounds),
                "rounds": len(rounds)}
               for (rt, b), rounds in sorted(dense.rounds.items())]  # fmt: skip
    return records, figures


# --------------------------------------------------------------------------- reading


def load(path: Path) -> dict[str, Any]:
    """A latency.json written by this script."""
    return json.loads(Path(path).read_text())


def _name(rec: dict[str, Any]) -> str:
    """``TP`` or our strategy."""
    return "TP" if rec.get("kind") == "torch_pruning" else str(rec.get("strategy"))


def _ok(rec: dict[str, Any]) -> bool:
    return not rec.get("error") and rec.get("ratio") is not None


def _select(recs: Iterable[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    """Measured records matching ``where`` (``name`` matches :func:`_name`)."""
    out = []
    for r in recs:
        fields = {**r, "name": _name(r)}
        if _ok(r) and all(fields.get(k) == val for k, val in where.items()):
            out.append(r)
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _f(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def _names(recs: list[dict[str, Any]]) -> list[str]:
    order = [*STRATEGIES, "TP"]
    found = {_name(r) for r in recs if r.get("kind")}
    return [n for n in order if n in found] + sorted(found - set(order))


def _models(recs: list[dict[str, Any]], order: list[str] | None = None) -> list[str]:
    """The models of ``recs`` in ``order`` (the run's model list), others sorted after."""
    found = {r["model"] for r in recs if r.get("model")}
    first = [m for m in order or [] if m in found]
    return first + sorted(found - set(first))


def _by(recs: list[dict[str, Any]], key: str) -> list[Any]:
    return sorted({r[key] for r in recs if r.get(key) is not None}, key=lambda v: (str(type(v)), v))


# --------------------------------------------------------------------------- markdown


def _header(data: dict[str, Any]) -> list[str]:
    cfg, mach = data["config"], data["config"]["machine"]
    grid = cfg["grid"]
    return [
        "# Latency: how much of the MAC reduction turns into speed",
        "",
        f"Machine: {mach.get('cpu', '?')}, {mach.get('cpu_count')} cores, "
        f"{mach.get('memory_gib', '?')} GiB RAM; torch threads {cfg['threads']['torch']}, "
        f"onnxruntime intra-op threads {cfg['threads']['onnxruntime']}; torch "
        f"{cfg['versions']['torch']}, onnxruntime {cfg['versions']['onnxruntime']}, "
        f"torch-pruning {cfg['versions']['torch_pruning']}, {C.library_label(mach)}. "
        f"TensorRT: {cfg['tensorrt']}. Run: {cfg['date']}.",
        "",
        f"Command: `{cfg['command']}`",
        "",
        f"Protocol: input 3x{grid['size']}x{grid['size']}, batches {grid['batches']}; ours = "
        "`rfx.compile(budget=Budget(macs=1/R), strategy=S, round_to=K)` compiled at batch 1; "
        f"TP = MetaPruner(MagnitudeImportance(p=2), local, round_to={TP_ROUND_TO}, classifier "
        f"ignored) at the uniform ratio bisected to within {TP_TOLERANCE:.0%} of the target "
        "MAC ratio. MACs: forward hooks on Conv2d/Linear, per sample. Dense and variant are "
        f"timed in alternating rounds (median of {grid['repeats_b1']} at batch 1, "
        f"{grid['repeats_b32']} at larger batches, each round >= {MIN_ROUND_S} s of back-to-"
        "back calls); speedup = dense ms / variant ms from the same alternation; **ratio = "
        "speedup / MAC reduction** (1.0 = all of the MAC reduction became speed, the limit "
        "for compute-bound layers; above 1 where moving weights, which shrink faster than "
        "MACs, dominates).",
        "",
    ]


def _widths(name: str) -> dict[str, Any]:
    """The summary's round_to filter: ours at the default call's widths; TP at its own."""
    return {} if name == "TP" else {"round_to": TARGET_ROUND_TO}


def _targets(recs: list[dict[str, Any]], order: list[str]) -> list[str]:
    where = {"runtime": TARGET_RUNTIME, "target_reduction": TARGET_REDUCTION}
    lines = [
        "## Summary",
        "",
        f"Median ratio over models x batches at {TARGET_REDUCTION:g}x MAC reduction, "
        f"round_to {TARGET_ROUND_TO}, on {TARGET_RUNTIME} (target >= {TARGET_RATIO}):",
        "",
        "| variant | median ratio | median speedup | median MAC reduction | n | target |",
        "|---|---|---|---|---|---|",
    ]
    for name in _names(recs):
        sel = _select(recs, name=name, **_widths(name), **where)
        ratio = _median([r["ratio"] for r in sel])
        met = "-" if ratio is None else ("met" if ratio >= TARGET_RATIO else "not met")
        lines.append(
            f"| {name} | {_f(ratio, '.2f')} | {_f(_median([r['speedup'] for r in sel]), '.2f')} "
            f"| {_f(_median([r['mac_reduction'] for r in sel]), '.2f')} | {len(sel)} | {met} |"
        )
    lines += ["", f"Ours against TP per model ({TARGET_REDUCTION:g}x, {TARGET_RUNTIME}; ratio "
              "(speedup)):", ""]  # fmt: skip
    ours = [n for n in ("reconvene", "uniform") if n in _names(recs)]
    head = "| model | batch | " + " | ".join(ours) + " | TP | "
    head += " | ".join(f"{n} above TP" for n in ours) + " |"
    lines += [head, "|---" * (3 + 2 * len(ours)) + "|"]
    for model in _models(recs, order):
        for b in _by(_select(recs, model=model, **where), "batch"):

            def pick(name: str, model: str = model, b: int = b) -> dict[str, Any] | None:
                sel = _select(recs, model=model, batch=b, name=name, **_widths(name), **where)
                return sel[0] if sel else None

            tp = pick("TP")
            cells = [_cell_ratio(pick(n)) for n in ours] + [_cell_ratio(tp)]
            above = [_above(pick(n), tp) for n in ours]
            lines.append(f"| {model} | {b} | " + " | ".join(cells + above) + " |")
    return [*lines, ""]


def _cell_ratio(rec: dict[str, Any] | None) -> str:
    return "-" if rec is None else f"{rec['ratio']:.2f} ({rec['speedup']:.2f}x)"


def _above(ours: dict[str, Any] | None, tp: dict[str, Any] | None) -> str:
    if ours is None or tp is None:
        return "-"
    return "yes" if ours["ratio"] > tp["ratio"] else "no"


def _round_to_table(recs: list[dict[str, Any]]) -> list[str]:
    runtimes = _by(recs, "runtime")
    lines = [
        "## Effect of round_to",
        "",
        "Median ratio (median speedup, n) over models and batches:",
        "",
        "| variant | round_to | target reduction | " + " | ".join(runtimes) + " |",
        "|---|---|---|" + "---|" * len(runtimes),
    ]
    for name in _names(recs):
        for k in _by(_select(recs, name=name), "round_to"):
            for red in _by(_select(recs, name=name, round_to=k), "target_reduction"):
                cells = []
                for rt in runtimes:
                    sel = _select(recs, name=name, round_to=k, target_reduction=red, runtime=rt)
                    ratio = _median([r["ratio"] for r in sel])
                    speed = _median([r["speedup"] for r in sel])
                    cells.append(f"{_f(ratio, '.2f')} ({_f(speed, '.2f')}x, {len(sel)})")
                lines.append(f"| {name} | {k} | {red:g}x | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _model_tables(data: dict[str, Any]) -> list[str]:
    recs = data["results"]
    lines = ["## Per model", "",
             "Cells: variant median ms / speedup / ratio. MAC red. = measured dense / variant "
             "MACs; params = variant / dense.", ""]  # fmt: skip
    for model in _models(recs, data["config"]["grid"]["models"]):
        mine = [r for r in recs if r.get("model") == model]
        cols = sorted({(r["runtime"], r["batch"]) for r in mine if r.get("runtime")})
        dense = {(d["runtime"], d["batch"]): d for d in data.get("dense", [])
                 if d["model"] == model}  # fmt: skip
        first = next((r for r in mine if r.get("dense_macs")), {})
        lines += [f"### {model}", "",
                  f"Dense: {_f(first.get('dense_macs', 0) / 1e6, '.1f')} M MACs, "
                  f"{_f(first.get('dense_params', 0) / 1e6, '.2f')} M params; median of all "
                  "dense rounds: " + ", ".join(f"{rt}/b{b} {d['dense_ms']:.2f} ms"
                                               for (rt, b), d in sorted(dense.items()))
                  + _load_note(mine),
                  "",
                  "| variant | MAC red. | params | compile s | "
                  + " | ".join(f"{rt} b{b}" for rt, b in cols) + " | note |",
                  "|---|---|---|---|" + "---|" * (len(cols) + 1)]  # fmt: skip
        seen: dict[tuple, dict[tuple, dict[str, Any]]] = {}
        for r in mine:
            key = (r.get("kind"), r.get("strategy"), r.get("round_to"), r.get("target_reduction"))
            seen.setdefault(key, {})[(r.get("runtime"), r.get("batch"))] = r
        for cells in seen.values():
            lines.append(_variant_row(cells, cols))
        lines.append("")
    return lines


def _load_note(recs: list[dict[str, Any]]) -> str:
    """The 1-minute load averages seen while timing: above the core count, other work
    shared the CPU (absolute ms inflated; the alternation keeps ratios closer)."""
    loads = [x for r in recs for x in r.get("load_avg", [])]
    return f"; load average {min(loads):.1f}-{max(loads):.1f}" if loads else ""


def _variant_row(cells: dict[tuple, dict[str, Any]], cols: list[tuple]) -> str:
    any_rec = next(iter(cells.values()))
    if not any_rec.get("kind"):  # the model itself failed
        return f"| (model) | - | - | - | {' | '.join('-' for _ in cols)} | {any_rec['error']} |"
    label = f"{_name(any_rec)} r{any_rec['round_to']} {any_rec['target_reduction']:g}x"
    row = [label, _f(any_rec.get("mac_reduction"), ".2f"), _f(any_rec.get("params_ratio"), ".2f"),
           _f(any_rec.get("compile_s"), ".2f")]  # fmt: skip
    for col in cols:
        r = cells.get(col)
        row.append("error" if r is None or not _ok(r) else
                   f"{r['variant_ms']:.2f} / {r['speedup']:.2f}x / {r['ratio']:.2f}")  # fmt: skip
    notes = sorted(
        {r["error"] for r in cells.values() if r.get("error")}
        | {r["note"] for r in cells.values() if r.get("note")}
    )
    if any_rec.get("kind") == "torch_pruning" and "tp_pruning_ratio" in any_rec:
        conv = "" if any_rec.get("tp_converged") else ", not within tolerance"
        notes.insert(0, f"TP ratio {any_rec['tp_pruning_ratio']:.3f} after "
                        f"{any_rec['tp_tries']} tries{conv}")  # fmt: skip
    row.append("; ".join(notes).replace("|", "\\|"))
    return "| " + " | ".join(row) + " |"


def markdown(data: dict[str, Any]) -> str:
    recs = data["results"]
    order = data["config"]["grid"]["models"]
    lines = _header(data) + _targets(recs, order) + _round_to_table(recs) + _model_tables(data)
    return "\n".join(lines)


# --------------------------------------------------------------------------- plot


def _plot_view(recs: list[dict[str, Any]]) -> tuple[str, int] | None:
    """onnxruntime at batch 1, else the first (runtime, batch) measured."""
    views = sorted({(r["runtime"], r["batch"]) for r in recs if _ok(r)})
    if not views:
        return None
    return ("onnxruntime", 1) if ("onnxruntime", 1) in views else views[0]


def plot(recs: list[dict[str, Any]], path: Path, order: list[str] | None = None) -> None:
    """Speedup against measured MAC reduction, one panel per model, y = x as the limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    view = _plot_view(recs)
    models = _models(recs, order) or ["(no results)"]
    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(4.2 * ncols, 3.8 * nrows))
    colors = {"reconvene": "C0", "uniform": "C1", "global": "C2"}
    for ax, model in zip(axes.flat, models, strict=False):
        sel = _select(recs, model=model, runtime=view[0], batch=view[1]) if view else []
        top = max([r["mac_reduction"] for r in sel] + [r["speedup"] for r in sel] + [2.0])
        ax.plot(
            [1, top * 1.1], [1, top * 1.1], "k--", lw=0.8, label="y = x (speedup = MAC reduction)"
        )
        for r in sel:
            tp = r["kind"] == "torch_pruning"
            ax.scatter(r["mac_reduction"], r["speedup"], s=60 if tp else 36,
                       marker="X" if tp else ("o" if r["round_to"] == 1 else "s"),
                       color="k" if tp else colors.get(r["strategy"], "C3"),
                       label=f"{_name(r)}, round_to {r['round_to']}", alpha=0.85)  # fmt: skip
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("MAC reduction (dense / variant)", fontsize=8)
        ax.set_ylabel("speedup (dense ms / variant ms)", fontsize=8)
        ax.set_xlim(1, top * 1.1)
        ax.set_ylim(0, top * 1.1)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(models) :]:
        ax.set_visible(False)
    labelled: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(text, handle)
    ncol = min(len(labelled), 2 * ncols)
    legend_in = 0.2 * math.ceil(len(labelled) / max(ncol, 1)) + 0.05  # inches on top
    fig.legend(list(labelled.values()), list(labelled), loc="upper center", fontsize=8,
               ncol=max(ncol, 1))  # fmt: skip
    where = f"{view[0]}, batch {view[1]}" if view else "nothing measured"
    fig.suptitle(f"Speedup vs MAC reduction ({where})", y=0.005, va="bottom", fontsize=9)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1 - legend_in / height))
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def render(data: dict[str, Any], json_path: Path) -> None:
    """latency.md and latency.png beside ``json_path``, from the JSON data alone."""
    md = json_path.with_suffix(".md")
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(markdown(data) + "\n")
    os.replace(tmp, md)
    plot(data["results"], json_path.with_suffix(".png"), data["config"]["grid"]["models"])


# --------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _round_tos(text: str) -> list[int | str]:
    """``--round-to`` values: ints, or ``auto`` for the library's default."""
    return [t.strip() if t.strip() == "auto" else int(t) for t in text.split(",") if t.strip()]


def _round_to(v: Variant) -> int | None:
    return None if v.round_to == "auto" else int(v.round_to)


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _names_list(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(allowed)})")
    return names


def _commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def config(args: argparse.Namespace, names: list[str], trt: str) -> dict[str, Any]:
    import onnxruntime
    import torch
    import torch_pruning

    return {
        "grid": {
            "models": names,
            "strategies": args.strategies,
            "round_to": args.round_to,
            "reductions": args.reductions,
            "batches": args.batches,
            "runtimes": args.runtimes,
            "repeats_b1": args.repeats_b1,
            "repeats_b32": args.repeats_b32,
            "size": args.size or 224,
            "torch_pruning": not args.no_torch_pruning,
            "quick": args.quick,
            "fp16": args.fp16,
        },
        "timing": {
            "min_round_s": MIN_ROUND_S,
            "warmup_b1": WARMUP_B1,
            "warmup_batch": WARMUP_BATCH,
        },
        "tp": {
            "round_to": TP_ROUND_TO,
            "tolerance": TP_TOLERANCE,
            "max_steps": TP_STEPS,
            "importance": "MagnitudeImportance(p=2)",
            "global_pruning": False,
        },
        "threads": {"torch": torch.get_num_threads(), "onnxruntime": os.cpu_count()},
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "torch_pruning": torch_pruning.__version__,
        },
        "tensorrt": trt,
        "machine": C.machine(),
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="ours (all three)")
    p.add_argument("--round-to", default="auto,1,8",
                   help="our round_to values; auto = the default call's (auto,1,8)")  # fmt: skip
    p.add_argument("--reductions", default="2,4", help="target MAC reductions (2,4)")
    p.add_argument("--batches", default="1,32", help="batch sizes (1,32)")
    p.add_argument(
        "--runtimes",
        default=None,
        help="eager,onnxruntime,tensorrt (default: all three; --quick: eager,onnxruntime); "
        "tensorrt runs only with a GPU and trtexec, else it is skipped and the config says why",
    )
    p.add_argument("--repeats-b1", type=int, default=10, help="alternating rounds, batch 1")
    p.add_argument("--repeats-b32", type=int, default=3, help="rounds at larger batches")
    p.add_argument("--no-torch-pruning", action="store_true", help="skip Torch-Pruning")
    p.add_argument("--size", type=int, default=224, help="input side (224)")
    p.add_argument("--fp16", action="store_true", help="TensorRT engines in fp16")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default benchmarks/results; --quick: a temp folder)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="resnet18 at 64 px, reconvene, default widths, 4x, batch 1, 3 rounds",
    )
    p.add_argument("--name", default="latency", help="stem of the result files (latency)")
    p.add_argument("--from-json", type=Path, help="re-render md and png from this JSON only")
    return p


def _apply_quick(args: argparse.Namespace) -> None:
    args.models, args.size, args.strategies, args.round_to = "resnet18", 64, "reconvene", "auto"
    args.reductions, args.batches = "4", "1"
    args.runtimes = args.runtimes or "eager,onnxruntime"
    args.repeats_b1 = args.repeats_b32 = 3
    args.no_torch_pruning = False
    if args.out is None:
        args.out = Path(tempfile.gettempdir()) / "rfx_latency_quick"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.from_json:
        render(load(args.from_json), args.from_json)
        print(f"wrote {args.from_json.with_suffix('.md')} and .png", flush=True)
        return 0
    if args.quick:
        _apply_quick(args)
    args.strategies = _names_list(args.strategies, STRATEGIES, "strategy")
    args.runtimes = _names_list(args.runtimes or ",".join(RUNTIMES), RUNTIMES, "runtime")
    args.round_to, args.batches = _round_tos(args.round_to), _ints(args.batches)
    args.reductions = _floats(args.reductions)
    names = C.parse_models(args.models, DEFAULT_MODELS)
    out = (args.out or C.RESULTS) / f"{args.name}.json"

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    trt = tensorrt_status() if "tensorrt" in args.runtimes else "not requested"
    if trt != "trtexec" and "tensorrt" in args.runtimes:
        args.runtimes.remove("tensorrt")
    data: dict[str, Any] = {"config": config(args, names, trt), "results": [], "dense": []}
    t_start = time.perf_counter()
    print(f"latency of {len(names)} model(s), {len(variants(args))} variants each, runtimes "
          f"{','.join(args.runtimes)}, batches {args.batches}; TensorRT: {trt}",
          file=sys.stderr, flush=True)  # fmt: skip
    for name in names:
        records, figures = measure_model(name, args, t_start)
        data["results"] += records
        data["dense"] += figures
        C.write_json(out, data)
        render(data, out)
    print(f"done in {time.perf_counter() - t_start:.1f}s: {out}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
