"""``accuracy.md`` and ``accuracy.png`` from the records of ``accuracy.json``.

A record is one training run: ``dataset``, ``family``, ``condition``, ``budget`` (None for
``dense``), ``seed``, ``method`` and either ``accuracy``, ``params``, ``nonzero``, ``macs``,
``train_s`` or ``error`` (with ``refused`` when the library declined the budget). The
study's settings (``meta``) give the data sets, families, seeds, recipe, machine and the
conditions with their descriptions.

Targets, on the mean over seeds of the per-seed accuracy differences: reconvene within 1.0
point of unstructured PaI at 1/4 and 1/8 and within 1.5 at 1/16, on ResNet and VGG;
reconvene never more than 0.5 below uniform; composite at least unstructured - 0.5.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["GAPS", "markdown", "plot", "target_for"]

Record = dict[str, Any]

GAPS = ("reconvene - unstructured", "composite - unstructured", "reconvene - uniform")
TARGET_FAMILIES = ("resnet", "vgg")
TARGETS_TEXT = (
    "Targets: reconvene within 1.0 point of unstructured PaI at 1/4 and 1/8 and within 1.5 "
    "at 1/16, on ResNet and VGG; reconvene never more than 0.5 below uniform; composite at "
    "least unstructured - 0.5 at every budget."
)


def target_for(gap: str, family: str, budget: float) -> float | None:
    """The lowest acceptable mean gap in points, or None where no target is set."""
    if gap == "reconvene - unstructured":
        if family not in TARGET_FAMILIES:
            return None
        return -1.0 if budget >= 0.125 else -1.5
    if gap in ("composite - unstructured", "reconvene - uniform"):
        return -0.5
    return None


# --- helpers ------------------------------------------------------------------------------


def finished(runs: Iterable[Record]) -> list[Record]:
    return [r for r in runs if "error" not in r and "accuracy" in r]


def select(runs: Iterable[Record], **where: Any) -> list[Record]:
    return [r for r in runs if all(r.get(k) == v for k, v in where.items())]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _k(n: float) -> str:
    return f"{n / 1e3:.1f}k" if n < 1e6 else f"{n / 1e6:.2f}M"


def budget_label(b: float) -> str:
    """0.125 -> ``1/8``."""
    return f"1/{round(1 / b)}" if math.isclose(1 / b, round(1 / b)) else f"{b:g}"


def _budgets(runs: Iterable[Record]) -> list[float]:
    return sorted({r["budget"] for r in runs if r["budget"] is not None}, reverse=True)


def _conditions(meta: dict[str, Any], runs: Iterable[Record]) -> list[str]:
    present = {r["condition"] for r in runs}
    return [c for c in meta["conditions"] if c in present]


def _accuracies(runs: Iterable[Record], cond: str, budget: float | None) -> list[float]:
    return [r["accuracy"] for r in finished(select(runs, condition=cond, budget=budget))]


def _paired_gap(runs: list[Record], a: str, b: str, budget: float) -> list[float]:
    """Per-seed accuracy differences a - b (only the seeds both finished)."""
    acc_a = {r["seed"]: r["accuracy"] for r in finished(select(runs, condition=a, budget=budget))}
    acc_b = {r["seed"]: r["accuracy"] for r in finished(select(runs, condition=b, budget=budget))}
    return [acc_a[s] - acc_b[s] for s in sorted(acc_a.keys() & acc_b.keys())]


def _refused(runs: list[Record], cond: str, budget: float | None) -> bool:
    return any(r.get("refused") for r in select(runs, condition=cond, budget=budget))


# --- markdown -----------------------------------------------------------------------------


def _family_table(runs: list[Record], conditions: list[str]) -> list[str]:
    """Rows: budgets; columns: conditions, then sizes. ``runs``: one data set and family."""
    header = ["budget", *conditions, "reconvene params / nonzero", "uniform params / nonzero",
              "nonzero: composite / unstructured", "MACs/img: reconvene / uniform"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    dense = _accuracies(runs, "dense", None)

    def size(cond: str, key: str, b: float) -> str:
        vals = [r[key] for r in finished(select(runs, condition=cond, budget=b))]
        return _k(statistics.fmean(vals)) if vals else "-"

    for b in _budgets(runs):
        cells = [budget_label(b)]
        for cond in conditions:
            accs = dense if cond == "dense" else _accuracies(runs, cond, b)
            if accs:
                mean, std = _mean_std(accs)
                cells.append(f"{mean:.2f} ± {std:.2f}")
            else:
                cells.append("refused" if _refused(runs, cond, b) else "-")
        cells += [
            f"{size('reconvene', 'params', b)} / {size('reconvene', 'nonzero', b)}",
            f"{size('uniform', 'params', b)} / {size('uniform', 'nonzero', b)}",
            f"{size('composite', 'nonzero', b)} / {size('unstructured', 'nonzero', b)}",
            f"{size('reconvene', 'macs', b)} / {size('uniform', 'macs', b)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _gap_rows(runs: list[Record], family: str) -> tuple[list[str], int, int]:
    """Gap table rows of one data set and family, and how many targets were met / missed."""
    rows, met, missed = [], 0, 0
    for b in _budgets(runs):
        cells = [family, budget_label(b)]
        for gap in GAPS:
            a, _, c = gap.split(" ")
            diffs = _paired_gap(runs, a, c, b)
            if not diffs:
                gone = [x for x in (a, c) if _refused(runs, x, b)]
                cells.append(f"- ({', '.join(gone)} refused)" if gone else "-")
                continue
            mean, std = _mean_std(diffs)
            text = f"{mean:+.2f} ± {std:.2f}"
            target = target_for(gap, family, b)
            if target is not None:
                ok = mean >= target
                met, missed = met + ok, missed + (not ok)
                text += f" ({'met' if ok else 'NOT met'}, ≥ {target:+.1f})"
            cells.append(text)
        rows.append("| " + " | ".join(cells) + " |")
    return rows, met, missed


def _recipe_text(r: dict[str, Any]) -> str:
    nesterov = ", Nesterov" if r["nesterov"] else ""
    return (f"{r['epochs']} epochs, SGD lr {r['lr']} momentum {r['momentum']}{nesterov}, "
            f"weight decay {r['weight_decay']}, batch {r['batch_size']}, {r['schedule']}, "
            f"augmentation {r['augmentation']}")  # fmt: skip


def _recipes(recipes: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"{d}: {_recipe_text(r)}" for d, r in recipes.items())


def _header(meta: dict[str, Any], conditions: list[str]) -> list[str]:
    info = meta["machine"]
    label = f"reconvene_fx at {info['commit']}" if info.get("commit") else "reconvene_fx"
    if info.get("library_uncommitted_changes"):
        label += " + uncommitted changes"
    helps = meta.get("condition_help", {})
    return [
        "# Accuracy study",
        "",
        f"{label}; torch {info.get('torch')}, {info.get('cpu_count')} CPUs "
        f"({info.get('cpu', info.get('processor'))}), {meta['jobs']} jobs x 1 thread. PaI "
        f"method `{meta['method']}`, scoring batch of {meta['scoring_batch']} training images "
        f"with their labels. A budget is the fraction of conv/linear weights kept (the PaI "
        "convention); biases and norm parameters stay, so every condition of a budget has "
        "the same parameter count (`rfx.compile` gets that count as its params fraction). "
        f"Cells: test accuracy in %, mean ± std over seeds "
        f"{', '.join(map(str, meta['seeds']))}; `refused`: the library raised BudgetError "
        "(the budget is below what that mode can reach on the model).",
        "",
        f"Recipe (fixed before any test accuracy was seen): {_recipes(meta['recipe'])}.",
        "",
        "Conditions:",
        "",
        *(f"- `{c}`: {helps.get(c, '')}" for c in conditions),
        "",
        "Params are physical (masked weights included), nonzero leaves out the weights masks "
        "hold at zero; MACs per image count conv and linear layers, masked layers at their "
        "dense cost.",
        "",
    ]


def markdown(meta: dict[str, Any], runs: list[Record]) -> str:
    """The study as markdown: per data set and family a table, then the gaps and targets."""
    runs = select(runs, method=meta["method"])
    conditions = _conditions(meta, runs)
    lines = _header(meta, conditions)
    gap_lines = ["| family | budget | " + " | ".join(GAPS) + " |", "|" + "---|" * (2 + len(GAPS))]
    met = missed = 0
    for ds in meta["datasets"]:
        ds_rows = []
        for family in meta["families"]:
            sub = select(runs, dataset=ds, family=family)
            if not finished(sub):
                continue
            lines += [f"## {ds} / {family}", ""]
            dense = finished(select(sub, condition="dense"))
            if dense:
                train_s = statistics.fmean(r["train_s"] for r in dense)
                lines += [f"Dense: {_k(dense[0]['params'])} params, {_k(dense[0]['macs'])} MACs "
                          f"per image, training {train_s:.1f} s.", ""]  # fmt: skip
            lines += [*_family_table(sub, conditions), ""]
            rows, m, n = _gap_rows(sub, family)
            ds_rows += rows
            met, missed = met + m, missed + n
        if ds_rows:
            gap_lines += [f"| **{ds}** |" + " |" * (1 + len(GAPS)), *ds_rows]
    lines += [
        "## Gaps against the targets",
        "",
        "Mean over seeds of the per-seed accuracy differences (points) ± their std. "
        + TARGETS_TEXT,
        "",
        *gap_lines,
        "",
        f"Targets met: {met} of {met + missed}.",
        "",
    ]
    failed = [r for r in runs if "error" in r]
    if failed:
        lines += ["## Refused and failed runs", ""]
        lines += [f"- {r['dataset']} {r['family']} {r['condition']} "
                  f"{budget_label(r['budget']) if r['budget'] else 'dense'} seed {r['seed']}: "
                  f"{'refused' if r.get('refused') else 'FAILED'}: {r['error']}"
                  for r in failed]  # fmt: skip
        lines.append("")
    notes = sorted({n for r in runs for n in r.get("notes", ())})
    if notes:
        lines += ["Notes: " + "; ".join(notes) + ".", ""]
    return "\n".join(lines)


# --- figure -------------------------------------------------------------------------------


def plot(meta: dict[str, Any], runs: list[Record], path: Path) -> None:
    """Per data set two rows (accuracy against nonzero params, against MACs per image), one
    column per family, one line per condition (mean ± std over seeds), log x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = finished(select(runs, method=meta["method"]))
    ds_names, families = list(meta["datasets"]), list(meta["families"])
    fig, axes = plt.subplots(2 * len(ds_names), len(families), squeeze=False,
                             figsize=(4 * len(families), 6.4 * len(ds_names)))  # fmt: skip
    for i, ds in enumerate(ds_names):
        for j, family in enumerate(families):
            sub = select(runs, dataset=ds, family=family)
            for k, (key, label) in enumerate((("nonzero", "nonzero params"),
                                              ("macs", "MACs per image"))):  # fmt: skip
                ax = axes[2 * i + k][j]
                for cond in _conditions(meta, sub):
                    _plot_condition(ax, select(sub, condition=cond), key, cond)
                ax.set_xscale("log")
                ax.set_title(f"{ds} / {family}", fontsize=9)
                ax.set_xlabel(label, fontsize=8)
                ax.set_ylabel("test accuracy %", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
    labelled = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(text, handle)
    if labelled:
        fig.legend(list(labelled.values()), list(labelled), loc="upper center",
                   ncol=min(len(labelled), 9), fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_condition(ax: Any, runs: list[Record], key: str, cond: str) -> None:
    by_budget: dict[Any, list[Record]] = {}
    for r in runs:
        by_budget.setdefault(r["budget"], []).append(r)
    points = []
    for group in by_budget.values():
        mean, std = _mean_std([r["accuracy"] for r in group])
        points.append((statistics.fmean(r[key] for r in group), mean, std))
    if not points:
        return
    points.sort()
    xs, ys, es = zip(*points, strict=True)
    if cond == "dense":
        style: dict[str, Any] = {"marker": "*", "markersize": 10, "linestyle": "none",
                                 "color": "black"}  # fmt: skip
    else:
        style = {"marker": "o", "markersize": 3}
    ax.errorbar(xs, ys, yerr=es, label=cond, capsize=2, linewidth=1, **style)
