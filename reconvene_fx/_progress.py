"""A minimal progress bar on stderr for long loops (SynFlow's iterations)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``update()`` once per step; draws ``label  37/100 [#######.......] 4.2s`` on stderr.

    On a terminal the line is redrawn in place; otherwise a line is printed at every tenth
    of the way, so logs stay short. Disabled bars print nothing.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> bar = ProgressBar(4, "synflow", stream=out)
        >>> for _ in range(4):
        ...     bar.update()
        >>> out.getvalue().splitlines()[-1].startswith("[reconvene_fx] synflow 4/4")
        True
    """

    def __init__(
        self, total: int, label: str, *, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.count = 0
        self.start = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown_tenths = -1

    def update(self, steps: int = 1) -> None:
        self.count = min(self.total, self.count + steps)
        if not self.enabled:
            return
        tenths = 10 * self.count // self.total
        if not self._tty and tenths == self._shown_tenths:
            return
        self._shown_tenths = tenths
        width = 24
        filled = width * self.count // self.total
        line = (
            f"[reconvene_fx] {self.label} {self.count:>{len(str(self.total))}}/{self.total} "
            f"[{'#' * filled}{'.' * (width - filled)}] {time.perf_counter() - self.start:.1f}s"
        )
        end = "\n" if (not self._tty or self.count == self.total) else ""
        self.stream.write(("\r" if self._tty else "") + line + end)
        self.stream.flush()
