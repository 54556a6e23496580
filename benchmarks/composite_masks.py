"""Composite at the paper's sparsities: how many conv/linear layers keep their PaI masks?

Reconvene's composite mode narrows the layers the PSE selects and keeps the unstructured
PaI mask on the others. At 1/8 and 1/16 of the conv/linear weights (the paper's 8x-16x
regime; budgets count every bias and norm parameter as kept, as the accuracy study does,
so the nonzero parameters equal those of the unstructured PaI model) this records, per
model, method and budget: layers keeping a mask, layers narrowed (outputs) and layers
narrowed on their inputs only, dead layers (all kept weights zero), the mask mode the plan
ended in (``as_is``, ``thin``, ``rethreshold``), the nonzero and physical parameter
ratios, and compile time.

Target (issue 20): masks on at least a third of the conv/linear layers of torchvision
resnet18, resnet50 and vgg16_bn (224x224, SNIP with labels, and SynFlow) at 1/8 and 1/16.

Usage:
    .venv/bin/python benchmarks/composite_masks.py                       # ~15 min (SynFlow)
    .venv/bin/python benchmarks/composite_masks.py --methods snip        # ~2 min
    .venv/bin/python benchmarks/composite_masks.py --quick               # resnet18 at 64x64

Writes composite_masks.json and composite_masks.md to ``--out`` (default
benchmarks/results; a temporary folder with ``--quick``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as C
import torch
import torchvision

import reconvene_fx as rfx
from reconvene_fx.composite import masks_of

MODELS = ("resnet18", "resnet50", "vgg16_bn")
METHODS = ("snip", "synflow")
BUDGETS = (0.125, 0.0625)


def params_budget(model: torch.nn.Module, budget: float) -> float:
    """The params fraction that keeps ``budget`` of the conv/linear weights and every
    other parameter (the accuracy study's convention)."""
    total = sum(p.numel() for p in model.parameters())
    prunable = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    )
    return 1.0 - (1.0 - budget) * prunable / total


def run_one(name: str, method: str, budget: float, size: int, seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, size, size, generator=g)
    options: dict[str, Any] = {"method": method, "composite": True, "seed": seed}
    if method in ("snip", "grasp"):
        options["data"] = (x, torch.randint(0, 1000, (2,), generator=g))
    target = params_budget(model, budget)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm = rfx.compile(model, target, (x,), **options)
    seconds = time.perf_counter() - start
    rep = rfx.report(gm)
    masks = masks_of(gm)
    layers = list(rep.layers)
    return {
        "model": name,
        "method": method,
        "budget": budget,
        "params_budget": target,
        "layers": len(layers),
        "masked": len(masks),
        "narrowed_outputs": sum(lp.out_idx.numel() < lp.out_channels for lp in rep.layers.values()),
        "narrowed_inputs_only": sum(
            lp.in_idx.numel() < lp.in_channels and lp.out_idx.numel() == lp.out_channels
            for lp in rep.layers.values()
        ),
        "dead": [n for n, lp in rep.layers.items() if lp.dead],
        "collapse_warnings": sum(isinstance(w.message, rfx.LayerCollapseWarning) for w in caught),
        "mask_mode": gm.meta["reconvene.plan"].mask_mode,
        "nonzero_ratio": rep.nonzero_ratio,
        "params_ratio": rep.params_ratio,
        "compile_s": seconds,
    }


def markdown(records: list[dict[str, Any]], info: dict[str, Any], size: int) -> str:
    lines = [
        "# Composite masks at 1/8 and 1/16",
        "",
        f"{C.library_label(info)}; input 2x3x{size}x{size}; SNIP with labels drawn with the "
        "seed; budgets are fractions of the conv/linear weights (every bias and norm "
        "parameter kept), so the nonzero parameters equal the unstructured PaI model's.",
        "",
        "| model | method | budget | masks / layers | narrowed (outputs) | inputs only | "
        "dead | mask mode | nonzero | params | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    met = 0
    for r in records:
        ok = r["masked"] * 3 >= r["layers"]
        met += ok
        lines.append(
            f"| {r['model']} | {r['method']} | 1/{round(1 / r['budget'])} | "
            f"{r['masked']}/{r['layers']}{'' if ok else ' (below 1/3)'} | "
            f"{r['narrowed_outputs']} | {r['narrowed_inputs_only']} | "
            f"{', '.join(r['dead']) or '-'} | {r['mask_mode']} | {r['nonzero_ratio']:.4f} | "
            f"{r['params_ratio']:.3f} | {r['compile_s']:.0f} |"
        )
    lines += ["", f"Masks on at least a third of the layers: {met} of {len(records)} runs."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help=f"comma-separated torchvision names ({','.join(MODELS)})")
    p.add_argument("--methods", help=f"comma-separated ({','.join(METHODS)})")
    p.add_argument("--budgets", help="comma-separated fractions of conv/linear weights")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="resnet18, snip, 64x64, temp folder")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    models = args.models.split(",") if args.models else list(MODELS)
    methods = args.methods.split(",") if args.methods else list(METHODS)
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else list(BUDGETS)
    if args.quick:
        models, methods, args.size = ["resnet18"], ["snip"], 64
    out = args.out or (Path(tempfile.mkdtemp()) if args.quick else C.RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    info = C.machine()
    records: list[dict[str, Any]] = []
    for name in models:
        for method in methods:
            for budget in budgets:
                rec = run_one(name, method, budget, args.size, args.seed)
                records.append(rec)
                print(
                    f"{name} {method} 1/{round(1 / budget)}: masks {rec['masked']}/"
                    f"{rec['layers']}, mode {rec['mask_mode']}, nonzero "
                    f"{rec['nonzero_ratio']:.4f} ({rec['compile_s']:.0f} s)",
                    flush=True,
                )
                C.write_json(out / "composite_masks.json", {"machine": info, "records": records})
                (out / "composite_masks.md").write_text(markdown(records, info, args.size))
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
