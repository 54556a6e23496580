"""A picture of a plan: per layer, the PaI density, sensitivity, PSE selection and widths."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from ._atomic import atomic_write, check_writable
from .reporting import PruningReport

__all__ = ["plot_report"]

# Above this many layers only every n-th name is written under the x axis.
_MAX_LABELS = 60


def plot_report(rep: PruningReport, path: str | os.PathLike, *, title: str = "") -> Path:
    """Draw ``rep`` to an image file (PNG, SVG or PDF by its suffix), one column per
    conv/linear layer in graph order, in three panels: the PaI density of the layer with
    the global density as a line; its sensitivity (density over the global one; PSE
    selects the layers below 1, drawn in orange); its output channels before (grey) and
    after (blue, log scale), with masked (composite) layers hatched. ``title`` heads the
    figure (default: the strategy and method), above the report's summary line. Needs matplotlib
    (``pip install "reconvene-fx[plot]"``). The file is written atomically.

    Example:
        >>> import tempfile, torch, reconvene_fx as rfx
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = rfx.compile(net, budget=0.6, example_inputs=(torch.randn(1, 3, 8, 8),))
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = plot_report(rfx.report(gm), f"{d}/plan.png")
        ...     print(out.name, out.stat().st_size > 0)
        plan.png True
    """
    path = check_writable(path)
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            'plotting a report needs matplotlib: pip install "reconvene-fx[plot]"'
        ) from exc

    names = list(rep.layers)
    plans = list(rep.layers.values())
    xs = range(len(names))
    selected = ["tab:orange" if lp.selected else "tab:gray" for lp in plans]
    fig, (density, sens, width) = plt.subplots(
        3, 1, sharex=True, figsize=(max(6.0, 0.18 * len(names) + 2.0), 7.5)
    )
    density.bar(xs, [lp.density for lp in plans], color=selected)
    density.axhline(rep.global_density, color="black", lw=1, ls="--", label="global density")
    density.set_ylabel("PaI density")
    density.legend(loc="best", fontsize=8)
    sens.bar(xs, [lp.sensitivity for lp in plans], color=selected)
    sens.axhline(1.0, color="black", lw=1, ls="--")
    sens.set_ylabel("sensitivity\n(orange: PSE)")
    width.bar(xs, [lp.out_channels for lp in plans], color="lightgray", label="before")
    width.bar(xs, [lp.out_idx.numel() for lp in plans], color="tab:blue", label="after")
    masked = [i for i, lp in enumerate(plans) if lp.masked]
    if masked:
        width.bar(masked, [plans[i].out_idx.numel() for i in masked], color="none",
                  edgecolor="white", hatch="//", label="masked")  # fmt: skip
    width.set_yscale("log")  # a classifier's 1000 outputs beside a stem's 32
    width.set_ylabel("output channels")
    width.legend(loc="best", fontsize=8)
    step = max(1, -(-len(names) // _MAX_LABELS))
    width.set_xticks(list(xs)[::step])
    width.set_xticklabels(names[::step], rotation=90, fontsize=6)
    heading = title or f"{rep.strategy or 'plan'} ({rep.method})"
    fig.suptitle("\n".join([heading, *textwrap.wrap(rep.summary(), 90)]), fontsize=8)
    fig.tight_layout()
    try:
        # SVG text stays text (searchable, selectable), not glyph outlines
        with matplotlib.rc_context({"svg.fonttype": "none"}), atomic_write(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=120)
    finally:
        plt.close(fig)
    return path
