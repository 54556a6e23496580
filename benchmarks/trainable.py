"""Train after compile: does a compiled model train like the dense one it came from?

For each model (built with ``weights=None`` / ``pretrained=False`` after
``torch.manual_seed(seed)``, in train mode) one fixed batch ``x`` (``BxCxSxS``, drawn from
``seed``) with fixed random labels ``y`` (uniform over the model's classes, drawn from
``seed``). The dense model and every compiled variant start from the same weights (each is
built from a deep copy of one freshly built model) and are trained the same way:
``model.train()``, ``torch.manual_seed(seed)``, ``SGD(model.parameters(), lr=0.05,
momentum=0.9)``, ``--steps`` (30) steps of cross-entropy on ``(x, y)``; the loss of every
step is recorded (the loss the step's forward pass computed, before its update).

Modes (the compile call on the copy):

- ``default``: ``rfx.compile(model, 0.5, (x,))``, the default call (the headline);
- ``composite``: ``composite=True``;
- one mode per registered width strategy other than the default ``reconvene``
  (``strategy=S``; built in: ``uniform``, ``global``); ``none`` runs as ``unstructured``
  (``strategy="none", composite=True``: the unstructured PaI model, masks only);
- ``reinit_false``: ``reinit=False`` (narrowed layers keep their sliced weights).

``--budget`` (0.5) and ``--method`` (the library's default unless given) apply to every
mode. A compiled run passes when all three hold:

- every loss is finite;
- no loss exceeds 3x the first;
- the final loss <= max(1.5 x the dense final loss, the dense final loss + 0.3).

Target (issue 20): the six default models pass in ``default``, ``composite`` and
``uniform``. Per model the script also records which norm layers the model initialized to
all-zero weights (timm's ``zero_init_last``, torchvision's ``zero_init_residual``) and
how many of them are still all zero after compile (re-initialization must not reset them).

Usage:
    .venv/bin/python benchmarks/trainable.py                  # 6 models x 7 runs, ~10 min
    .venv/bin/python benchmarks/trainable.py --quick          # 2 small models, < 1 min, temp dir
    .venv/bin/python benchmarks/trainable.py --models timm/resnet50d --modes default,uniform

Models: ``timm/<name>``, ``tv/<name>`` (torchvision), ``tv/<name>_zir`` (torchvision with
``zero_init_residual=True``). Writes trainable.json and trainable.md to ``--out`` (default
benchmarks/results; a temporary folder with ``--quick``), rewritten after every run.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as C

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_MODELS = ["timm/resnet50d", "tv/resnet50_zir", "timm/efficientnet_b0",
                  "timm/convnext_atto", "timm/regnety_008", "tv/resnet18"]  # fmt: skip
QUICK_MODELS = ["tv/resnet18_zir", "timm/resnet10t"]
HEADLINE_MODES = ("default", "composite", "uniform")
FULL = {"size": 96, "batch": 8, "steps": 30}
QUICK = {"size": 64, "batch": 4, "steps": 30}
LR, MOMENTUM = 0.05, 0.9
SPIKE, FINAL_FACTOR, FINAL_SLACK = 3.0, 1.5, 0.3


def check(losses: Sequence[float], dense_final: float) -> dict[str, Any]:
    """The pass criteria of one compiled run against the dense run's final loss.

    Example:
        >>> check([6.9, 3.0, 0.5], dense_final=0.4)["passed"]
        True
        >>> r = check([6.9, 9.0, 25.0], dense_final=0.4)
        >>> r["passed"], r["bounded"], r["final_ok"]
        (False, False, False)
        >>> check([6.9, float("nan")], dense_final=0.4)["finite"]
        False
    """
    losses = [float(v) for v in losses]
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    limit = max(FINAL_FACTOR * dense_final, dense_final + FINAL_SLACK)
    bounded = finite and max(losses) <= SPIKE * losses[0]
    final_ok = finite and math.isfinite(limit) and losses[-1] <= limit
    return {
        "finite": finite,
        "bounded": bounded,
        "final_ok": final_ok,
        "final_limit": limit if math.isfinite(limit) else None,
        "passed": finite and bounded and final_ok,
    }


def modes(budget: float, method: str | None) -> dict[str, dict[str, Any]]:
    """Mode name -> keyword options of ``rfx.compile`` (``default``: none)."""
    from reconvene_fx.strategies import STRATEGIES

    table: dict[str, dict[str, Any]] = {"default": {}, "composite": {"composite": True}}
    for name in STRATEGIES:
        if name == "reconvene":
            continue
        if name == "none":
            table["unstructured"] = {"strategy": "none", "composite": True}
        else:
            table[name] = {"strategy": name}
    table["reinit_false"] = {"reinit": False}
    if method is not None:
        table = {k: {"method": method, **v} for k, v in table.items()}
    return table


def build(name: str, seed: int) -> Any:
    """A freshly initialized model in train mode, drawn after ``torch.manual_seed(seed)``."""
    import torch

    kind, _, model_name = name.partition("/")
    torch.manual_seed(seed)
    if kind == "timm":
        import timm

        model = timm.create_model(model_name, pretrained=False)
    elif kind == "tv":
        import torchvision

        kwargs: dict[str, Any] = {}
        if model_name.endswith("_zir"):
            model_name, kwargs = model_name.removesuffix("_zir"), {"zero_init_residual": True}
        model = torchvision.models.get_model(model_name, weights=None, **kwargs)
    else:
        raise SystemExit(f"unknown model {name!r}: use timm/<name>, tv/<name> or tv/<name>_zir")
    return model.train()


def constructor(name: str) -> str:
    kind, _, model_name = name.partition("/")
    if kind == "timm":
        return f"timm.create_model({model_name!r}, pretrained=False)"
    if model_name.endswith("_zir"):
        fn = model_name.removesuffix("_zir")
        return f"torchvision.models.{fn}(weights=None, zero_init_residual=True)"
    return f"torchvision.models.{model_name}(weights=None)"


def zero_norms(model: Any) -> list[str]:
    """Names of the norm layers whose affine weight is all zero."""
    import torch

    kinds = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    return [
        n for n, m in model.named_modules()
        if isinstance(m, kinds) and isinstance(getattr(m, "weight", None), torch.Tensor)
        and m.weight.numel() and not bool(m.weight.detach().any())
    ]  # fmt: skip


def still_zero(gm: Any, names: Sequence[str]) -> int:
    """How many of ``names`` are still norm layers with an all-zero weight in ``gm``."""
    kept = 0
    for n in names:
        try:
            w = gm.get_submodule(n).weight
        except AttributeError:
            continue
        kept += int(w.numel() > 0 and not bool(w.detach().any()))
    return kept


def train(model: Any, x: Any, y: Any, steps: int, seed: int) -> tuple[list[float], float]:
    """``steps`` SGD steps on ``(x, y)``; the loss of each (stops at a non-finite one)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    losses: list[float] = []
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        losses.append(float(loss.detach()))
        if not math.isfinite(losses[-1]):
            break
        loss.backward()
        opt.step()
    return losses, time.perf_counter() - t0


def _json_losses(losses: Sequence[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in losses]


def run_model(name: str, mode_table: dict[str, dict[str, Any]], cfg: dict[str, Any],
              on_run: Any = None) -> dict[str, Any]:  # fmt: skip
    """Dense and every mode for one model; ``on_run(record)`` after each run."""
    import torch

    import reconvene_fx as rfx

    seed, steps, budget = cfg["seed"], cfg["steps"], cfg["budget"]
    base = build(name, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], generator=gen)
    with torch.no_grad():
        classes = copy.deepcopy(base).eval()(x[:1]).shape[-1]
    y = torch.randint(0, classes, (cfg["batch"],), generator=gen)
    zeros = zero_norms(base)
    record: dict[str, Any] = {
        "model": name,
        "constructor": constructor(name),
        "classes": classes,
        "params": sum(p.numel() for p in base.parameters()),
        "zero_init_norms": len(zeros),
        "modes": {},
    }
    losses, train_s = train(copy.deepcopy(base), x, y, steps, seed)
    dense_final = losses[-1]
    record["dense"] = {
        "losses": _json_losses(losses),
        "final": dense_final if math.isfinite(dense_final) else None,
        "finite": all(math.isfinite(v) for v in losses),
        "bounded_self": all(math.isfinite(v) for v in losses) and max(losses) <= SPIKE * losses[0],
        "train_s": round(train_s, 1),
    }
    if on_run:
        on_run(record, "dense")
    for mode, options in mode_table.items():
        rec: dict[str, Any] = {"options": {k: v for k, v in options.items()}}
        try:
            src = copy.deepcopy(base)
            t0 = time.perf_counter()
            gm = rfx.compile(src, budget, (x,), **options)
            rec["compile_s"] = round(time.perf_counter() - t0, 2)
            rep = rfx.report(gm)
            rec["params_ratio"] = rep.params_ratio
            rec["nonzero_ratio"] = rep.nonzero_ratio
            rec["layers_narrowed"] = sum(lp.narrowed for lp in rep.layers.values())
            rec["zero_init_norms_kept"] = still_zero(gm, zeros)
            del src
            losses, train_s = train(gm, x, y, steps, seed)
        except Exception as exc:
            rec.update({"error": C.first_line(exc), "passed": False})
        else:
            rec.update({"losses": _json_losses(losses), "final": losses[-1],
                        "train_s": round(train_s, 1), **check(losses, dense_final)})  # fmt: skip
            if not math.isfinite(rec["final"]):
                rec["final"] = None
        record["modes"][mode] = rec
        if on_run:
            on_run(record, mode)
    return record


def _cell(rec: dict[str, Any]) -> str:
    if "error" in rec:
        return "ERROR"
    final = "nan" if rec["final"] is None else f"{rec['final']:.3g}"
    if rec["passed"]:
        return f"{final} PASS"
    why = [w for w, ok in (("non-finite", rec["finite"]), ("spike", rec["bounded"]),
                           ("final", rec["final_ok"])) if not ok]  # fmt: skip
    return f"{final} **FAIL** ({', '.join(why)})"


def summary(data: dict[str, Any]) -> tuple[int, int, list[str]]:
    """(models passing every headline mode that ran, models, those headline modes)."""
    rows = data["results"]
    heads = [m for m in HEADLINE_MODES if m in data["config"]["modes"]]
    ok = sum(all(r.get("modes", {}).get(m, {}).get("passed", False) for m in heads) for r in rows)
    return ok, len(rows), heads


def markdown(data: dict[str, Any]) -> str:
    cfg = data["config"]
    rows = [r for r in data["results"] if "dense" in r]  # built and trained dense
    mode_names = list(cfg["modes"])
    ok, total, heads = summary(data)
    broken = [r for r in data["results"] if "dense" not in r]
    method = cfg["method"] or "library default"
    if len(heads) > 1:
        headline = f"**{ok} of {total} pass in {', '.join(heads[:-1])} and {heads[-1]}.**"
    else:
        headline = f"**{ok} of {total} pass in {''.join(heads)}.**"
    lines = [
        "# Train after compile",
        "",
        f"Command: `{cfg['command']}`; {C.library_label(cfg['machine'])}.",
        f"Date {cfg['date']}; wall time {data.get('wall_s', 0):.0f} s "
        f"(load average {cfg['load_avg_start']} at start). "
        "Protocol: see the docstring of `benchmarks/trainable.py`.",
        "",
        f"Recipe: one fixed batch of {cfg['batch']} random images {cfg['size']}x{cfg['size']} "
        f"(seed {cfg['seed']}) with fixed random labels over each model's classes (1000), "
        f"{cfg['steps']} steps of SGD (lr {LR}, momentum {MOMENTUM}), train mode, "
        f"cross-entropy; dense and compiled start from the same weights. Compile: "
        f"`rfx.compile(model, {cfg['budget']:g}, (x,), **mode)`, method {method}.",
        f"Pass: every loss finite, no loss above {SPIKE:g}x the first, final loss <= "
        f"max({FINAL_FACTOR:g} x dense final, dense final + {FINAL_SLACK:g}).",
        "",
        headline,
        "",
        "Per mode: "
        + "; ".join(
            f"{m} {sum(r['modes'].get(m, {}).get('passed', False) for r in rows)}/{total}"
            for m in mode_names
        )
        + ".",
        "",
        "Final loss (step " + str(cfg["steps"]) + ") and verdict:",
        "",
        "| model | dense final | " + " | ".join(mode_names) + " |",
        "|---|---|" + "---|" * len(mode_names),
    ]
    for r in rows:
        dense = r["dense"]["final"]
        cells = [_cell(r["modes"][m]) if m in r["modes"] else "" for m in mode_names]
        lines.append(f"| {r['model']} | {'nan' if dense is None else f'{dense:.3g}'} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    lines += [
        "",
        "Params kept (`rfx.report(gm).params_ratio`; nonzero ratio for composite modes) / "
        "compile s / zero-initialized norms still zero after compile:",
        "",
        "| model | zero-init norms | " + " | ".join(mode_names) + " |",
        "|---|---|" + "---|" * len(mode_names),
    ]
    for r in rows:
        cells = []
        for m in mode_names:
            rec = r["modes"].get(m)
            if rec is None:
                cells.append("")
            elif "error" in rec:
                cells.append(f"error: {rec['error']}")
            else:
                ratio = f"{rec['params_ratio']:.3f}"
                if rec["options"].get("composite"):
                    ratio += f" ({rec['nonzero_ratio']:.3f})"
                cells.append(f"{ratio} / {rec['compile_s']:.1f} / "
                             f"{rec['zero_init_norms_kept']}/{r['zero_init_norms']}")  # fmt: skip
        lines.append(f"| {r['model']} | {r['zero_init_norms']} | " + " | ".join(cells) + " |")
    lines += [f"| {r['model']} | error: {r.get('error', 'not run')} |" + " |" * len(mode_names)
              for r in broken]  # fmt: skip
    lines += ["", "Models:", ""]
    lines += [f"- `{r['model']}`: `{r['constructor']}`, {r['params'] / 1e6:.1f} M params"
              for r in rows]  # fmt: skip
    lines += ["", "Losses at steps 1, 5, 10, 20, 30:", ""]
    picks = [i - 1 for i in (1, 5, 10, 20, 30) if i <= cfg["steps"]]

    def fmt(losses: list[float | None]) -> str:
        vals = [losses[i] if i < len(losses) else "-" for i in picks]
        return ", ".join(v if isinstance(v, str) else "nan" if v is None else f"{v:.3g}"
                         for v in vals)  # fmt: skip

    for r in rows:
        parts = [f"dense {fmt(r['dense']['losses'])}"]
        parts += [f"{m} {fmt(rec['losses'])}" for m, rec in r["modes"].items() if "losses" in rec]
        lines.append(f"- `{r['model']}`: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help=f"comma-separated (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--modes", help="comma-separated subset of the modes (default: all)")
    p.add_argument("--budget", type=float, default=0.5, help="params budget (0.5)")
    p.add_argument("--method", help="PaI method (default: the library's default)")
    p.add_argument("--quick", action="store_true",
                   help=f"{', '.join(QUICK_MODELS)} at 64x64, batch 4 (a temp dir)")  # fmt: skip
    p.add_argument("--size", type=int, help="input side (96; quick 64)")
    p.add_argument("--batch", type=int, help="batch size (8; quick 4)")
    p.add_argument("--steps", type=int, help="SGD steps (30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    names = ([n.strip() for n in args.models.split(",") if n.strip()] if args.models
             else list(QUICK_MODELS if args.quick else DEFAULT_MODELS))  # fmt: skip
    table = modes(args.budget, args.method)
    if args.modes:
        wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in table]
        if unknown:
            raise SystemExit(f"unknown mode(s) {unknown}; choose from {', '.join(table)}")
        table = {m: table[m] for m in wanted}
    out = args.out or (Path(tempfile.mkdtemp(prefix="rfx_trainable_")) if args.quick
                       else C.RESULTS)  # fmt: skip
    command = sys.argv if argv is None else ["benchmarks/trainable.py", *argv]
    cfg = {
        "models": names,
        "modes": table,
        "budget": args.budget,
        "method": args.method,
        "size": args.size or preset["size"],
        "batch": args.batch or preset["batch"],
        "steps": args.steps or preset["steps"],
        "seed": args.seed,
        "lr": LR,
        "momentum": MOMENTUM,
        "criteria": {
            "spike_factor": SPIKE,
            "final_factor": FINAL_FACTOR,
            "final_slack": FINAL_SLACK,
        },
        "quick": args.quick,
        "machine": C.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([Path(sys.executable).name, *command]),
        "load_avg_start": round(os.getloadavg()[0], 2),
    }
    data: dict[str, Any] = {"config": cfg, "results": [], "wall_s": 0.0}
    t_start = time.perf_counter()

    def save(record: dict[str, Any] | None = None, mode: str | None = None) -> None:
        if record is not None and mode is not None:
            rec = record["dense"] if mode == "dense" else record["modes"][mode]
            cell = f"final {rec['final']:.3g}" if rec.get("final") is not None else "nan"
            cell = rec.get("error", cell)
            if mode != "dense" and "error" not in rec:
                cell = _cell(rec).replace("**", "")
            print(f"[{time.perf_counter() - t_start:7.1f}s] {record['model']} {mode}: {cell}",
                  file=sys.stderr, flush=True)  # fmt: skip
        data["wall_s"] = round(time.perf_counter() - t_start, 1)
        data["config"]["load_avg_now"] = round(os.getloadavg()[0], 2)
        C.write_json(out / "trainable.json", data)
        (out / "trainable.md").write_text(markdown(data))

    def on_run(record: dict[str, Any], mode: str) -> None:
        if not data["results"] or data["results"][-1] is not record:
            data["results"].append(record)
        save(record, mode)

    for name in names:
        try:
            run_model(name, table, cfg, on_run)
        except Exception as exc:  # the model did not build or its dense run failed
            if data["results"] and data["results"][-1].get("model") == name:
                data["results"][-1]["error"] = C.first_line(exc)
            else:
                data["results"].append({"model": name, "error": C.first_line(exc)})
            print(f"{name}: {C.first_line(exc)}", file=sys.stderr, flush=True)
    save()
    ok, total, heads = summary(data)
    print(f"{ok} of {total} pass in {', '.join(heads)}; results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
