"""``equal_latency.md`` and ``equal_latency.png`` from the records of ``equal_latency.json``.

A record is one model: ``dataset``, ``family``, ``target`` (None for ``dense``),
``method`` (``dense``, ``reconvene``, ``reconvene_time``, ``uniform``, ``torch_pruning``),
``seed`` and either
``latency_ms``, ``latency_fraction`` (measured, of the dense model), ``params``, ``macs``,
``accuracy`` (%, once trained) or ``error`` (with ``refused`` and the library's ``floor``
when it declined the budget).

A cell is (data set, family, target). Reconvene wins a cell when its mean accuracy over the
seeds is at least that of uniform and of Torch-Pruning (of those that finished there; a
cell where no baseline finished is left out); target: wins in at least two thirds of the
cells. ``reconvene_time`` (the same compile with ``price="latency"``) is shown beside it, a
variant that does not count.

A bisection does not always land on reconvene's latency, so beside the headline each cell
also compares on the *fronts* (:func:`front_accuracy`): a baseline's mean accuracy read off
the line through its own mean (latency, accuracy) points of the family, the dense model's
at latency 1, at reconvene's mean measured latency; a baseline whose points do not reach
that latency is not compared there.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import tables as study_tables

__all__ = ["cell_rows", "front_accuracy", "markdown", "plot", "summary"]

Record = dict[str, Any]
PRUNED = ("reconvene", "reconvene_time", "uniform", "torch_pruning")
BASELINES = ("uniform", "torch_pruning")
LABELS = {"dense": "dense", "reconvene": "reconvene", "reconvene_time": "reconvene, time price",
          "uniform": "uniform", "torch_pruning": "Torch-Pruning"}  # fmt: skip
SHARE = 2 / 3

select, finished = study_tables.select, study_tables.finished
_mean_std, _k = study_tables._mean_std, study_tables._k


def _pm(values: Sequence[float], fmt: str = ".2f") -> str:
    if not values:
        return "-"
    mean, std = _mean_std(values)
    return f"{mean:{fmt}} ± {std:{fmt}}"


def _cells(config: dict[str, Any], runs: list[Record]) -> list[tuple[str, str, float]]:
    present = {(r["dataset"], r["family"], r["target"]) for r in runs if r["target"] is not None}
    return [(d, f, t) for d in config["datasets"] for f in config["families"]
            for t in config["targets"] if (d, f, t) in present]  # fmt: skip


def _accuracies(runs: Iterable[Record], **where: Any) -> list[float]:
    return [r["accuracy"] for r in finished(select(runs, **where))]


def cell_rows(config: dict[str, Any], runs: list[Record]) -> list[dict[str, Any]]:
    """Per cell: the mean accuracy of each method that finished, whether reconvene won
    (None: no baseline finished, the cell is not counted), and the same on the fronts:
    ``front`` (each baseline's accuracy at reconvene's mean latency, None where its points
    do not reach it) and ``won_front`` (None: reconvene has no model or no baseline
    reaches its latency)."""
    rows = []
    for ds, family, target in _cells(config, runs):
        sub = select(runs, dataset=ds, family=family, target=target)
        means = {m: statistics.fmean(a) for m in PRUNED if (a := _accuracies(sub, method=m))}
        base = [means[m] for m in BASELINES if m in means]
        won = None if not base else ("reconvene" in means and means["reconvene"] >= max(base))
        front: dict[str, float | None] = {}
        won_front = None
        if "reconvene" in means:
            at = statistics.fmean(r["latency_fraction"]
                                  for r in finished(select(sub, method="reconvene")))  # fmt: skip
            family_runs = select(runs, dataset=ds, family=family)
            front = {m: front_accuracy(family_runs, m, at) for m in BASELINES}
            reached = [v for v in front.values() if v is not None]
            won_front = means["reconvene"] >= max(reached) if reached else None
        rows.append({"cell": (ds, family, target), "means": means, "won": won, "runs": sub,
                     "front": front, "won_front": won_front})  # fmt: skip
    return rows


def front_accuracy(runs: list[Record], method: str, latency: float) -> float | None:
    """``method``'s mean accuracy at the latency fraction ``latency``, read linearly off the
    line through its mean (latency, accuracy) points, one per target of ``runs`` (one data
    set and family), and the dense model's at latency 1; None when ``latency`` lies outside
    those points (below the fastest).

    Example:
        >>> runs = [{"method": "dense", "target": None, "seed": 0, "accuracy": 98.0,
        ...          "latency_fraction": 1.0},
        ...         {"method": "uniform", "target": 0.5, "seed": 0, "accuracy": 90.0,
        ...          "latency_fraction": 0.6}]
        >>> front_accuracy(runs, "uniform", 0.7), front_accuracy(runs, "uniform", 0.5)
        (92.0, None)
    """
    points = []
    dense = _accuracies(runs, method="dense")
    if dense:
        points.append((1.0, statistics.fmean(dense)))
    for target in sorted({r["target"] for r in runs if r["target"] is not None}):
        done = finished(select(runs, method=method, target=target))
        if done:
            points.append((statistics.fmean(r["latency_fraction"] for r in done),
                           statistics.fmean(r["accuracy"] for r in done)))  # fmt: skip
    points.sort()
    if not points or not points[0][0] <= latency <= points[-1][0]:
        return None
    if len(points) == 1:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 <= latency <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (latency - x0) / (x1 - x0)
    return None


def summary(rows: list[dict[str, Any]]) -> str:
    counted = [r for r in rows if r["won"] is not None]
    won = sum(bool(r["won"]) for r in counted)
    need = math.ceil(SHARE * len(counted))
    verdict = "met" if counted and won >= need else "NOT met"
    compiled = sum("reconvene" in r["means"] for r in counted)
    left_out = len(rows) - len(counted)
    text = (f"Reconvene's mean accuracy >= uniform's and >= Torch-Pruning's in **{won} of "
            f"{len(counted)}** (family x target) cells (target: at least two thirds, "
            f"{need}): **{verdict}**.")  # fmt: skip
    if compiled < len(counted):
        text += (f" Reconvene has no trained model (refused or failed) in "
                 f"{len(counted) - compiled} of them")  # fmt: skip
        text += f"; it wins {won} of the {compiled} where it has." if compiled else "."
    if left_out:
        text += f" {left_out} cell(s) without any finished baseline are left out."
    fronts = [r for r in rows if r.get("won_front") is not None]
    if fronts:
        wins = sum(bool(r["won_front"]) for r in fronts)
        text += (
            " On the fronts (each baseline's accuracy read off its own accuracy-latency line "
            f"at reconvene's measured latency): **{wins} of {len(fronts)}** cells."
        )
    return text


def _cell_text(runs: list[Record], method: str) -> str:
    done = finished(select(runs, method=method))
    if done:
        acc = _pm([r["accuracy"] for r in done])
        frac = statistics.fmean(r["latency_fraction"] for r in done)
        return f"{acc} @ {frac:.2f}"
    gone = select(runs, method=method)
    if any(r.get("refused") for r in gone):
        floor = min(r["floor"] for r in gone if r.get("refused"))
        return f"refused (floor {floor:.2f})"
    return "failed" if any("error" in r for r in gone) else "-"


def _cell_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| data | family | target | " + " | ".join(LABELS[m] for m in PRUNED)
             + " | reconvene wins | on the fronts: " + ", ".join(LABELS[m] for m in BASELINES)
             + " | wins there |", "|---|---|---|" + "---|" * (len(PRUNED) + 3)]  # fmt: skip
    for row in rows:
        ds, family, target = row["cell"]
        won, won_front = ({None: "(not counted)", True: "yes", False: "no"}[w]
                          for w in (row["won"], row.get("won_front")))  # fmt: skip
        cells = [_cell_text(row["runs"], m) for m in PRUNED]
        front = ", ".join("-" if (v := row.get("front", {}).get(m)) is None else f"{v:.2f}"
                          for m in BASELINES)  # fmt: skip
        lines.append(f"| {ds} | {family} | {study_tables.budget_label(target)} | "
                     + " | ".join(cells) + f" | {won} | {front} | {won_front} |")  # fmt: skip
    return lines


def _detail_rows(runs: list[Record], family: str, target: float | None) -> list[str]:
    lines = []
    for method in ("dense", *PRUNED):
        sel = select(runs, family=family, target=target, method=method)
        if not sel:
            continue
        done = [r for r in sel if "latency_fraction" in r and "error" not in r]
        trained = finished(sel)
        label = "-" if target is None else study_tables.budget_label(target)
        if not done:
            lines.append(f"| {family} | {label} | {LABELS[method]} | "
                         f"{_cell_text(sel, method)} |" + " |" * 7)  # fmt: skip
            continue
        on = [r for r in done if r.get("on_target")]
        lines.append(" | ".join([
            f"| {family}", label, LABELS[method],
            _pm([r["latency_fraction"] for r in done], ".3f"),
            _pm([r["latency_ms"] for r in done], ".3f"),
            "-" if target is None else f"{len(on)}/{len(done)}",
            _k(statistics.fmean(r["params"] for r in done)),
            _k(statistics.fmean(r["macs"] for r in done)),
            _pm([r["accuracy"] for r in trained]),
            f"{statistics.fmean(r['compile_s'] for r in done):.1f}",
            f"{statistics.fmean(r['train_s'] for r in trained):.1f} |" if trained else "- |",
        ]))  # fmt: skip
    return lines


def _header(config: dict[str, Any]) -> list[str]:
    lat, info = config["latency"], config["machine"]
    recipes = "; ".join(f"{d}: {study_tables._recipe_text(r)}"
                        for d, r in config["recipe"].items())  # fmt: skip
    return [
        "# Accuracy at equal latency",
        "",
        f"{config['library']}; "
        f"torch {info.get('torch')}, onnxruntime {config['versions']['onnxruntime']}, "
        f"torch-pruning {config['versions']['torch_pruning']}; {info.get('cpu_count')} CPUs "
        f"({info.get('cpu', info.get('processor'))}). Command: `{config['command']}`, "
        f"{config['date']}.",
        "",
        f"Latency: onnxruntime CPU, batch {lat['batch']} of the data set's images, "
        f"intra-op threads {lat['ort_intra_op_threads']} ({lat['cpu_count']} CPUs), "
        f"{lat['warmup_rounds']} warm-up rounds then {lat['rounds']} rounds of about "
        f"{lat['min_round_s']} s alternating with the dense model; a model's fraction is the "
        f"median of the per-round ratios (the dense rows: the dense model against its own "
        f"session, a check of the noise). Load average {_loads(lat)}. "
        f"Uniform and Torch-Pruning bisected to within {100 * config['bisection']['tolerance']:g} "
        f"% of {_goal(config)} (at most {config['bisection']['steps']} tries, the closest "
        "kept); reconvene compiled once with `Budget(latency=T)` on onnxruntime. "
        f"PaI scoring `{config['scoring']}` on {config['scoring_batch']} labelled images.",
        "",
        f"Recipe: {recipes}.",
        "",
    ]


def _loads(lat: dict[str, Any]) -> str:
    text = "at the start " + ", ".join(f"{v:.1f}" for v in lat["load_avg_start"])
    if "load_avg_end" in lat:
        text += "; after the latency work " + ", ".join(f"{v:.1f}" for v in lat["load_avg_end"])
    return text


def markdown(config: dict[str, Any], runs: list[Record]) -> str:
    rows = cell_rows(config, runs)
    lines = [*_header(config), "## Summary", "", summary(rows), "",
             "Cells: test accuracy %, mean ± std over seeds "
             f"{', '.join(map(str, config['seeds']))} @ the mean measured latency fraction.",
             "", *_cell_table(rows), ""]  # fmt: skip
    for ds in config["datasets"]:
        sub = select(runs, dataset=ds)
        if not sub:
            continue
        lines += [f"## {ds}", "",
                  "| family | target | method | latency (of dense) | ms | on target | params | "
                  "MACs/img | accuracy % | compile / bisection s | train s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for family in config["families"]:
            for target in (None, *config["targets"]):
                lines += _detail_rows(sub, family, target)
        lines.append("")
    failed = [r for r in runs if "error" in r]
    if failed:
        lines += ["## Refused and failed", ""]
        lines += [f"- {r['dataset']} {r['family']} {r['method']} T={r['target']} seed "
                  f"{r['seed']}: {'refused' if r.get('refused') else 'FAILED'}: {r['error']}"
                  for r in failed]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def plot(config: dict[str, Any], runs: list[Record], path: Path) -> None:
    """Per data set and family: accuracy against measured latency as a fraction of dense
    (robust to load drift: each fraction comes from rounds alternating with the dense model),
    one line per method (mean ± std over seeds at each target), the dense model a star at 1,
    the targets dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds_names, families = list(config["datasets"]), list(config["families"])
    fig, axes = plt.subplots(len(ds_names), len(families), squeeze=False,
                             figsize=(4.2 * len(families), 3.6 * len(ds_names)))  # fmt: skip
    colors = {"reconvene": "C0", "reconvene_time": "C3", "uniform": "C1", "torch_pruning": "C2"}
    for i, ds in enumerate(ds_names):
        for j, family in enumerate(families):
            ax = axes[i][j]
            sub = finished(select(runs, dataset=ds, family=family))
            title = f"{ds} / {family}"
            dense = select(sub, method="dense")
            if dense:
                acc, std = _mean_std([r["accuracy"] for r in dense])
                ax.errorbar([1.0], [acc], yerr=[std], marker="*", markersize=11, color="k",
                            linestyle="none", label="dense", capsize=2)  # fmt: skip
                title += f" (dense {statistics.fmean(r['latency_ms'] for r in dense):.2f} ms)"
            for t in config["targets"]:
                ax.axvline(t, color="0.6", linestyle=":", linewidth=0.8)
            for method in PRUNED:
                points = []
                for t in config["targets"]:
                    sel = select(sub, method=method, target=t)
                    if sel:
                        x, xe = _mean_std([r["latency_fraction"] for r in sel])
                        y, ye = _mean_std([r["accuracy"] for r in sel])
                        points.append((x, y, xe, ye))
                if points:
                    points.sort()
                    xs, ys, xes, yes = zip(*points, strict=True)
                    ax.errorbar(xs, ys, xerr=xes, yerr=yes, marker="o", markersize=4,
                                capsize=2, linewidth=1, color=colors[method],
                                label=LABELS[method])  # fmt: skip
            ax.set_xlim(0, 1.1)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(
                "measured onnxruntime latency, fraction of dense "
                f"(batch {config['latency'].get('batch', 64)})",
                fontsize=8,
            )
            ax.set_ylabel("test accuracy %", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    labelled: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(text, handle)
    if labelled:
        fig.legend(list(labelled.values()), list(labelled), loc="upper center",
                   ncol=len(labelled), fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 1, 0.92 if len(ds_names) == 1 else 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _goal(config: dict[str, Any]) -> str:
    """What the bisections aimed at (runs before ``--match`` aimed at the target)."""
    if config["bisection"].get("match", "target") == "reconvene":
        return ("the fraction the reconvene model of the first seed measured at the target "
                "(the target where reconvene was refused)")  # fmt: skip
    return "the target"
