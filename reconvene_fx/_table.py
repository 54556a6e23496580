"""Plain-text tables for reports: first column left-aligned, the others right-aligned."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_rows"]


def format_rows(rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned lines: the header (``rows[0]``), a rule of dashes, then the other rows.

    Example:
        >>> print("\\n".join(format_rows([("layer", "kept"), ("conv1", "3"), ("fc", "10")])))
        layer  kept
        -----  ----
        conv1     3
        fc       10
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                  for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
