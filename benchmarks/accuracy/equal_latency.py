# ruff: noqa: E402
# (the imports follow the sys.path set-up below)
"""Accuracy at equal latency: reconvene, uniform and Torch-Pruning at the same onnxruntime time.

One command, offline (the data sets, models and recipe of the accuracy study, ``run.py``)::

    .venv/bin/python benchmarks/accuracy/equal_latency.py            # full study (see README)
    .venv/bin/python benchmarks/accuracy/equal_latency.py --quick    # pipeline check
    .venv/bin/python benchmarks/accuracy/equal_latency.py --families resnet --targets 0.5 \\
        --seeds 0 --out /tmp/el

Latency: every model is exported with ``rfx.export_onnx`` and run on one onnxruntime CPU
session (``reconvene_fx.latency.onnxruntime_session``: all graph optimizations, threads that
do not spin-wait, ``--ort-threads`` intra-op threads, default onnxruntime's own, as the
planner's) on the first ``--batch`` training images of the data set (default 256: at 64 these
16-64-channel models are bound by per-call overhead: one uniform resnet measured 0.87, 1.24
and 1.30 of dense in three sessions, and no budget below about 0.55 of dense could be met).
The dense model's session is set up once per data set and family; every other model is
warmed up and timed in ``--rounds`` rounds alternating with it (a round repeats the call for
about ``--min-round-s``): its latency is the median of its rounds, its fraction of dense the
median of the per-round ratios, so that load on the shared machine hits both alike.

Per data set, family, target fraction T of the dense latency and seed (the model built after
``torch.manual_seed(seed)``, SNIP scores on the study's scoring batch of that seed):

- ``reconvene``: ``rfx.compile(model, rfx.Budget(latency=T), (x,), data=(xs, ys),
  method="snip", latency_backend="onnxruntime", seed=seed)``; a ``BudgetError`` (T below
  what the model can reach) is recorded as refused with the library's floor.
- ``reconvene_time``: the same call with ``price="latency"`` (each coupled group's
  channels priced by their seconds per MAC in the planner's onnxruntime table), a variant
  beside the headline.
- ``uniform``: ``strategy="uniform"`` at ``Budget(macs=b)``, ``b`` bisected (geometric
  midpoints, at most ``--steps`` tries, the closest kept) until the measured fraction lies
  within ``--tolerance`` of the goal: with ``--match reconvene`` (the default) the fraction
  the reconvene model of the first seed measured at T (equal measured latency: a latency
  budget lands at or below T, a bisection on either side of it), T itself with ``--match
  target`` or when reconvene was refused or not run. ``b`` is bisected on the first seed and
  reused for the others (each model still measured; the widths it gives can differ by seed
  where the scores decide which groups take the last rounding step).
- ``torch_pruning``: ``MagnitudePruner`` with ``MagnitudeImportance(p=2)``, the final linear
  layer ignored, ``round_to=4`` (``--tp-round-to``; see ``TP_ROUND_TO``), its
  ``pruning_ratio`` bisected the same way, to the same goal (first seed, then reused; the
  kept fraction not below ``tp_lowest_keep``); an error is recorded and the study goes on.

Every model is then measured with the same clock (the reconvene one too: the record holds
what was measured, not what was asked) and, after all latency work is done, trained with the
study's recipe (``train.train``; compiled models as ``rfx.compile`` re-initialized them, the
Torch-Pruning models as they are). ``dense`` is trained once per seed. Writes
``equal_latency.json`` (rewritten after every record), ``equal_latency.md`` and
``equal_latency.png`` (accuracy against the measured latency fraction) to ``--out``;
``--from-json FILE`` re-renders the last two beside FILE.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_BENCH = _HERE.parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_BENCH)  # run as a script: import the package, not its modules
if str(_BENCH) not in sys.path:
    sys.path.append(str(_BENCH))  # imported: after everything else
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import _common as C
import torch
import torch.nn as nn

import reconvene_fx as rfx
from accuracy import data as datasets
from accuracy import equal_latency_tables as tables
from accuracy import models
from accuracy import run as study
from accuracy import train as training
from reconvene_fx.latency import onnxruntime_session
from reconvene_fx.latency.ruler import time_rounds

__all__ = ["Clock", "Pruner", "Timing", "bisect", "compile_uniform", "main", "prune_tp",
           "tp_lowest_keep"]  # fmt: skip

RESULTS = C.RESULTS / "accuracy_equal_latency"
BATCH = 256  # images per timed call (quick: 64)
METHODS = ("reconvene", "reconvene_time", "uniform", "torch_pruning")
RECONVENE = ("reconvene", "reconvene_time")  # compiled with Budget(latency=T), not bisected
UNIFORM_LOWEST = 1e-3  # the bisection's lower end for the macs budget (the library raises it)
TP_LOWEST_KEEP = 0.05  # Torch-Pruning's pruning_ratio at most 0.95, as in latency.py
# Torch-Pruning's widths: multiples of 4. Any width (1) gives odd widths that onnxruntime runs
# slowly (MNIST ResNetS at keep 0.35: 0.59 of dense against 0.36 at 4); 8, as latency.py uses
# on torchvision models, cannot narrow these 16-channel layers below 8 and leaves a layer
# whole when its rounded width would be 0 (measured: keep 0.25 ran at 0.62 of dense).
TP_ROUND_TO = 4
FULL = {"datasets": ("mnist",), "families": tuple(models.FAMILIES), "targets": (0.7, 0.55, 0.4),
        "seeds": (0, 1, 2), "batch": BATCH}  # fmt: skip
QUICK = {"datasets": ("digits",), "families": ("resnet",), "targets": (0.5,), "seeds": (0,),
         "epochs": 1, "rounds": 5, "min_round_s": 0.05, "steps": 6, "batch": 64}  # fmt: skip


# --- latency ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    ms: float  # median of the model's rounds
    fraction: float  # median over rounds of model / dense, timed in turn
    dense_ms: float  # median of the dense rounds timed beside it


def ort_run(model: nn.Module, x: torch.Tensor, threads: int | None) -> Callable[[], Any]:
    """``model`` exported with ``rfx.export_onnx`` and one onnxruntime session on it: a
    function that runs it once on ``x``."""
    with tempfile.TemporaryDirectory(prefix="rfx_equal_latency_") as tmp:
        path = rfx.export_onnx(model, Path(tmp) / "model.onnx", (x,), check=False)
        session = onnxruntime_session(path.read_bytes(), threads)
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


class Clock:
    """onnxruntime latency of models against one dense model, on the batch ``x``."""

    def __init__(self, dense: nn.Module, x: torch.Tensor, *, threads: int | None, rounds: int,
                 warmup: int, min_round_s: float) -> None:  # fmt: skip
        self.x, self.threads = x, threads
        self.options = {"rounds": rounds, "warmup": warmup, "min_round_s": min_round_s}
        self._dense = ort_run(dense, x, threads)
        self.dense_rounds: list[float] = time_rounds([self._dense], **self.options)[0]

    @property
    def dense_ms(self) -> float:
        """The median of every dense round timed so far."""
        return 1e3 * statistics.median(self.dense_rounds)

    def measure(self, model: nn.Module) -> Timing:
        run = ort_run(model, self.x, self.threads)
        dense, mine = time_rounds([self._dense, run], **self.options)
        self.dense_rounds += dense
        ratio = statistics.median(m / d for d, m in zip(dense, mine, strict=True))
        return Timing(1e3 * statistics.median(mine), ratio, 1e3 * statistics.median(dense))


# --- the three ways to a target -----------------------------------------------------------


@dataclass
class Bisection:
    """The closest try of :func:`bisect` and every try as ``(knob, measured fraction)``."""

    knob: float
    model: nn.Module
    timing: Timing
    tries: list[tuple[float, float]] = field(default_factory=list)
    converged: bool = False
    seconds: float = 0.0


Make = Callable[[float], tuple[nn.Module, float]]
Batch = tuple[torch.Tensor, torch.Tensor]  # the scoring images and their labels


def bisect(make: Make, clock: Clock, target: float, *, lo: float, hi: float, first: float,
           tolerance: float, steps: int) -> Bisection:  # fmt: skip
    """Find the knob in ``[lo, hi]`` whose model's measured latency fraction lies within
    ``tolerance`` of ``target``; latency grows with the knob. ``make(knob)`` returns the
    model and the knob it used (raised to the smallest reachable one when below it).
    Geometric midpoints; at most ``steps`` tries; the closest try is returned."""
    start = time.perf_counter()
    best: Bisection | None = None
    tries: list[tuple[float, float]] = []
    knob = first
    for _ in range(steps):
        model, used = make(knob)
        lo = max(lo, used) if used > knob else lo  # the floor, found by the library
        timing = clock.measure(model)
        tries.append((used, timing.fraction))
        err = abs(timing.fraction / target - 1)
        if best is None or err < abs(best.timing.fraction / target - 1):
            best = Bisection(used, model, timing)
        if err <= tolerance:
            break
        if timing.fraction > target:
            if used <= lo:
                break  # at the floor and still too slow
            hi = used
        else:
            if used >= hi:
                break
            lo = used
        if hi / lo < 1.002:
            break
        knob = math.sqrt(lo * hi)
    assert best is not None
    best.tries = tries
    best.converged = abs(best.timing.fraction / target - 1) <= tolerance
    best.seconds = time.perf_counter() - start
    return best


def compile_uniform(model: nn.Module, macs: float, x: torch.Tensor, scoring: Batch, seed: int,
                    method: str) -> tuple[nn.Module, float]:  # fmt: skip
    """Uniform widths at ``Budget(macs=macs)``, or at the smallest reachable macs budget."""
    options = {"data": scoring, "method": method, "strategy": "uniform", "seed": seed,
               "progress": False}  # fmt: skip
    try:
        return rfx.compile(model, rfx.Budget(macs=macs), (x,), **options), macs
    except rfx.BudgetError as exc:
        if exc.quantity != "macs" or exc.smallest <= macs:
            raise
        macs = min(exc.smallest * (1 + 1e-4), 1.0)
        return rfx.compile(model, rfx.Budget(macs=macs), (x,), **options), macs


def _classifier(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear``, which Torch-Pruning must leave whole."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("no nn.Linear classifier to leave unpruned")
    return linears[-1]


def tp_lowest_keep(model: nn.Module, round_to: int | None) -> float:
    """The smallest keep at which Torch-Pruning still narrows every layer: it rounds a kept
    width down to a multiple of ``round_to`` and leaves a layer whole where that gives 0, so
    below ``round_to / narrowest width`` smaller keeps give slower models (the bisection
    assumes the opposite)."""
    if not round_to or round_to <= 1:
        return TP_LOWEST_KEEP
    head = _classifier(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not head]
    widths = [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for m in layers]
    return max(TP_LOWEST_KEEP, round_to / min(widths) + 1e-6)


def prune_tp(model: nn.Module, keep: float, x: torch.Tensor, round_to: int | None) -> nn.Module:
    """Torch-Pruning's MagnitudePruner at ``pruning_ratio = 1 - keep``, the final linear
    layer ignored, on a deep copy (in eval mode, so no norm statistics move)."""
    import torch_pruning as tp

    m = copy.deepcopy(model).eval()
    pruner = tp.pruner.MagnitudePruner(
        m, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=1 - keep,
        ignored_layers=[_classifier(m)], round_to=round_to,
    )  # fmt: skip
    pruner.step()
    return m.train()


# --- one data set and family --------------------------------------------------------------


@dataclass
class Study:
    """What ``equal_latency.json`` holds, and the models still to train."""

    out: Path
    config: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    to_train: list[tuple[dict[str, Any], nn.Module]] = field(default_factory=list)

    @property
    def json_path(self) -> Path:
        return self.out / "equal_latency.json"

    def save(self) -> None:
        C.write_json(self.json_path, {"config": self.config, "runs": self.runs})

    def add(self, rec: dict[str, Any], model: nn.Module | None) -> None:
        self.runs.append(rec)
        if model is not None and "error" not in rec:
            self.to_train.append((rec, model))
        self.save()
        print(progress(rec), flush=True)


def progress(rec: dict[str, Any]) -> str:
    target = "dense" if rec["target"] is None else f"T={rec['target']:g}"
    what = f"{rec['dataset']} {rec['family']} {target} {rec['method']} seed {rec['seed']}"
    if "error" in rec:
        return f"{what}: {'REFUSED' if rec.get('refused') else 'ERROR'} {rec['error'][:160]}"
    if "accuracy" in rec:
        return f"{what}: acc {rec['accuracy']:6.2f}%  train {rec['train_s']:5.1f}s"
    return (f"{what}: {rec['latency_ms']:.3f} ms = {rec['latency_fraction']:.3f} of dense, "
            f"{rec['macs'] / 1e3:.0f}k MACs, {rec['params'] / 1e3:.1f}k params, "
            f"{rec['compile_s']:.1f}s")  # fmt: skip


def _measured(rec: dict[str, Any], model: nn.Module, timing: Timing, ds: datasets.Dataset,
              tolerance: float) -> dict[str, Any]:  # fmt: skip
    rec.update(latency_ms=timing.ms, latency_fraction=timing.fraction,
               dense_ms_beside=timing.dense_ms,
               params=sum(p.numel() for p in model.parameters()),
               macs=study.macs_per_image(model, ds.x_test))  # fmt: skip
    if rec["target"] is not None:
        rec["on_target"] = abs(timing.fraction / rec["target"] - 1) <= tolerance
    return rec


def _failed(rec: dict[str, Any], exc: Exception) -> dict[str, Any]:
    rec["error"] = C.first_line(exc)
    if isinstance(exc, rfx.BudgetError):
        rec.update(refused=True, floor=exc.smallest, floor_quantity=exc.quantity)
    else:
        rec["traceback"] = traceback.format_exc()[-3000:]
    return rec


def measure_family(dataset: str, family: str, args: argparse.Namespace, st: Study,
                   cache: Path) -> None:  # fmt: skip
    """Every pruned model of one data set and family: built, measured, queued for training."""
    ds = datasets.load(dataset)
    x = ds.x_train[: args.batch]

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return models.build(family, ds.x_train.shape[1], ds.num_classes, ds.image_size)

    clock = Clock(build(args.seeds[0]), x, threads=args.ort_threads, rounds=args.rounds,
                  warmup=args.warmup, min_round_s=args.min_round_s)  # fmt: skip
    base = {"dataset": dataset, "family": family, "epochs": args.recipe[dataset].epochs}
    for seed in args.seeds:
        model = build(seed)
        rec = {**base, "target": None, "method": "dense", "seed": seed, "compile_s": 0.0,
               "params_dense": sum(p.numel() for p in model.parameters()),
               "macs_dense": study.macs_per_image(model, ds.x_test)}  # fmt: skip
        st.add(_measured(rec, model, clock.measure(model), ds, args.tolerance), model)
    pruner = Pruner(x, clock, cache, args)
    for target in args.targets:
        goal = target  # the bisections' aim: reconvene's measured fraction when matched
        for seed in args.seeds:
            model = build(seed)
            scoring = study.scoring_batch(ds, seed)
            dense = {"params_dense": sum(p.numel() for p in model.parameters()),
                     "macs_dense": study.macs_per_image(model, ds.x_test)}  # fmt: skip
            for method in args.methods:
                rec = {**base, "target": target, "method": method, "seed": seed, **dense}
                if method not in RECONVENE:
                    rec["goal"] = goal
                try:
                    pruned = pruner.prune(method, model, target, seed, scoring, rec)
                except Exception as exc:  # one failed method must not stop the study
                    st.add(_failed(rec, exc), None)
                    continue
                timing = clock.measure(pruned)
                st.add(_measured(rec, pruned, timing, ds, args.tolerance), pruned)
                if method == "reconvene" and args.match == "reconvene" and seed == args.seeds[0]:
                    goal = timing.fraction
    print(f"{dataset} {family}: dense {clock.dense_ms:.3f} ms over {len(clock.dense_rounds)} "
          "rounds", flush=True)  # fmt: skip


@dataclass
class Pruner:
    """The three ways to a latency target, on one data set and family: the latency batch
    ``x``, the clock, the planner's table folder and the knobs bisected on the first seed."""

    x: torch.Tensor
    clock: Clock
    cache: Path
    args: argparse.Namespace
    knobs: dict[tuple[str, float], float] = field(default_factory=dict)

    def prune(self, method: str, model: nn.Module, target: float, seed: int,
              scoring: Batch, rec: dict[str, Any]) -> nn.Module:  # fmt: skip
        """The model of ``method`` at ``target``; ``rec`` gains how it was found."""
        start = time.perf_counter()
        if method in RECONVENE:
            variant = {"price": "latency"} if method == "reconvene_time" else {}
            gm = rfx.compile(model, rfx.Budget(latency=target), (self.x,), data=scoring,
                             method=self.args.method, latency_backend="onnxruntime", seed=seed,
                             latency_cache=self.cache, progress=False, **variant)  # fmt: skip
            rec.update(compile_s=time.perf_counter() - start,
                       planner_fraction=rfx.report(gm).latency_ratio)  # fmt: skip
            return gm
        make, lo, first = self._maker(method, model, target, seed, scoring)
        if (method, target) in self.knobs:  # bisected on the first seed: the same knob
            pruned, used = make(self.knobs[method, target])
            rec.update(knob=used, knob_from_seed=self.args.seeds[0],
                       compile_s=time.perf_counter() - start)  # fmt: skip
            return pruned
        found = bisect(make, self.clock, rec.get("goal", target), lo=lo, hi=1.0, first=first,
                       tolerance=self.args.tolerance, steps=self.args.steps)  # fmt: skip
        self.knobs[method, target] = found.knob
        rec.update(knob=found.knob, bisection=found.tries, bisection_converged=found.converged,
                   compile_s=found.seconds)  # fmt: skip
        return found.model

    def _maker(self, method: str, model: nn.Module, target: float, seed: int,
               scoring: Batch) -> tuple[Make, float, float]:  # fmt: skip
        """``make(knob)``, the knob's lower end and first guess."""
        if method == "uniform":
            return (lambda macs: compile_uniform(model, macs, self.x, scoring, seed,
                                                 self.args.method),
                    UNIFORM_LOWEST, target)  # fmt: skip
        if method == "torch_pruning":
            round_to = self.args.tp_round_to
            return (lambda keep: (prune_tp(model, keep, self.x, round_to), keep),
                    tp_lowest_keep(model, round_to), math.sqrt(target))  # fmt: skip
        raise ValueError(f"unknown method {method!r}")


# --- training -----------------------------------------------------------------------------


def train_all(st: Study, args: argparse.Namespace) -> None:
    """Train every queued model with the study's recipe; its record gains the accuracy."""
    total, start = len(st.to_train), time.perf_counter()
    for done, (rec, model) in enumerate(st.to_train, 1):
        try:
            result = training.train(model, datasets.load(rec["dataset"]), rec["seed"],
                                    args.recipe[rec["dataset"]])  # fmt: skip
            rec.update(accuracy=result.accuracy, train_s=result.train_s,
                       final_loss=result.final_loss)  # fmt: skip
        except Exception as exc:
            _failed(rec, exc)
        st.save()
        eta = (time.perf_counter() - start) / done * (total - done)
        print(f"[{done}/{total}] {progress(rec)}  | ETA {study._fmt_s(eta)}", flush=True)
    st.to_train.clear()


# --- command line -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="digits, resnet, T=0.5, seed 0, 1 epoch, fewer rounds")  # fmt: skip
    p.add_argument("--datasets", help="comma-separated (mnist,digits; default mnist)")
    p.add_argument("--families", help="comma-separated (resnet,vgg,densenet,mobilenet)")
    p.add_argument("--targets", help="fractions of the dense latency (0.7,0.55,0.4)")
    p.add_argument("--batch", type=int, help=f"images per timed call ({BATCH}; quick 64)")
    p.add_argument("--seeds", help="comma-separated ints (0,1,2)")
    p.add_argument("--methods", help=f"comma-separated, of {','.join(METHODS)} (all)")
    p.add_argument("--method", default="snip", help="PaI scoring method (snip)")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="bisection: |measured / target - 1| (0.05)")  # fmt: skip
    p.add_argument("--match", choices=("reconvene", "target"), default="reconvene",
                   help="bisect uniform and Torch-Pruning to the fraction reconvene measured "
                        "at T on the first seed (default), or to T")  # fmt: skip
    p.add_argument("--steps", type=int, help="bisection: most tries (10; quick 6)")
    p.add_argument("--rounds", type=int, help="timed rounds per measurement (9; quick 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (3)")
    p.add_argument("--min-round-s", type=float, help="seconds per round (0.1; quick 0.05)")
    p.add_argument("--ort-threads", type=int,
                   help="onnxruntime intra-op threads (default: its own)")  # fmt: skip
    p.add_argument("--tp-round-to", type=int, default=TP_ROUND_TO,
                   help=f"Torch-Pruning round_to ({TP_ROUND_TO}; 1: any width)")  # fmt: skip
    p.add_argument("--latency-cache", type=Path,
                   help="the planner's per-layer table folder (default: a fresh one)")  # fmt: skip
    p.add_argument("--from-json", type=Path, help="only re-render the md and png of this JSON")
    p.add_argument("--out", type=Path, help="output folder (default results/accuracy_equal_"
                   "latency/; quick: a temp folder)")  # fmt: skip
    args = p.parse_args(argv)
    preset = {**FULL, "rounds": 9, "min_round_s": 0.1, "steps": 10, **(QUICK if args.quick else {})}
    args.datasets = study._names(args.datasets, datasets.DATASETS, "dataset") if args.datasets \
        else list(preset["datasets"])  # fmt: skip
    args.families = study._names(args.families, models.FAMILIES, "family") if args.families \
        else list(preset["families"])  # fmt: skip
    args.methods = study._names(args.methods, METHODS, "method") if args.methods \
        else list(METHODS)  # fmt: skip
    args.targets = study._floats(args.targets) if args.targets else list(preset["targets"])
    args.seeds = study._ints(args.seeds) if args.seeds else list(preset["seeds"])
    for name in ("steps", "rounds", "min_round_s", "batch"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    if args.epochs is None and args.quick:
        args.epochs = QUICK["epochs"]
    args.recipe = {d: training.recipe(d, args.epochs) for d in args.datasets}
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="rfx_equal_latency_")) if args.quick else RESULTS
    if any(not 0 < t < 1 for t in args.targets):
        raise SystemExit("targets must lie in (0, 1)")
    return args


def config(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime
    import torch_pruning

    machine = C.machine()
    return {
        "study": "accuracy at equal latency",
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "datasets": args.datasets,
        "families": args.families,
        "targets": args.targets,
        "seeds": args.seeds,
        "methods": args.methods,
        "scoring": args.method,
        "scoring_batch": study.SCORING_BATCH,
        "recipe": {d: r.as_dict() for d, r in args.recipe.items()},
        "latency": {
            "runtime": "onnxruntime CPUExecutionProvider, ORT_ENABLE_ALL, no spinning",
            "batch": args.batch,
            "rounds": args.rounds,
            "warmup_rounds": args.warmup,
            "min_round_s": args.min_round_s,
            "ort_intra_op_threads": args.ort_threads or "onnxruntime default",
            "cpu_count": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "torch_threads": torch.get_num_threads(),
            "planner_table": str(args.latency_cache or "a fresh temporary folder"),
            "load_avg_start": list(os.getloadavg()),
        },
        "bisection": {
            "tolerance": args.tolerance,
            "match": args.match,
            "steps": args.steps,
            "uniform": f"Budget(macs=b), b in [{UNIFORM_LOWEST}, 1], first b = T",
            "torch_pruning": f"keep = 1 - pruning_ratio in [max({TP_LOWEST_KEEP}, round_to / "
            "narrowest layer), 1], first keep = sqrt(T)",
        },
        "torch_pruning": {
            "pruner": "MagnitudePruner",
            "importance": "MagnitudeImportance(p=2)",
            "ignored": "the final nn.Linear",
            "round_to": args.tp_round_to,
        },
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "torch_pruning": torch_pruning.__version__,
        },
        "machine": machine,
        "library": C.library_label(machine),
    }


def render(config: dict[str, Any], runs: list[dict[str, Any]], out: Path) -> None:
    (out / "equal_latency.md").write_text(tables.markdown(config, runs))
    tables.plot(config, runs, out / "equal_latency.png")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        data = json.loads(args.from_json.read_text())
        render(data["config"], data["runs"], args.from_json.parent)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # as the study's workers; onnxruntime has its own threads
    st = Study(args.out, config(args))
    st.save()
    start = time.perf_counter()
    print(f"equal-latency study -> {args.out}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="rfx_latency_table_") as fresh:
            cache = args.latency_cache or Path(fresh)  # default: a cold table, as measured
            for dataset in args.datasets:
                for family in args.families:
                    measure_family(dataset, family, args, st, cache)
        st.config["latency"]["load_avg_end"] = list(os.getloadavg())
        st.config["latency_s"] = round(time.perf_counter() - start, 1)
        train_all(st, args)
        st.config["total_s"] = round(time.perf_counter() - start, 1)
    finally:
        st.save()
        render(st.config, st.runs, args.out)
        print(f"wrote {st.json_path}, equal_latency.md and equal_latency.png "
              f"({study._fmt_s(time.perf_counter() - start)})", flush=True)  # fmt: skip
    failed = [r for r in st.runs if "error" in r and not r.get("refused")
              and r["method"] != "torch_pruning"]  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
