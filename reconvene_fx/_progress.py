"""A progress bar on stderr for long loops (SynFlow's iterations, scored batches, latency
candidates), drawn by tqdm: by default only once a loop has run for a few seconds."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

__all__ = ["progress_bar"]

# Seconds between redraws: often on a terminal, rarely in a log file so that it stays short.
_TTY_INTERVAL = 0.1
_LOG_INTERVAL = 5.0
# ``enabled=None`` (the library's default): a bar appears only after this many seconds,
# so quick steps stay silent and long ones are never silent.
AUTO_DELAY = 3.0


def progress_bar(
    total: int | None, label: str, *, enabled: bool | None = True, stream: TextIO | None = None
) -> tqdm:
    """A tqdm bar of ``total`` steps named ``[reconvene_fx] label``; ``update()`` once per step.
    ``total=None`` (a length not known in advance) counts the steps without a percentage.

    It writes to ``stream`` (default: ``sys.stderr``). ``enabled=True`` draws it from the
    start, ``None`` only once the loop has run for :data:`AUTO_DELAY` seconds (a loop done
    sooner prints nothing), ``False`` never. On a
    terminal the line is redrawn in place up to ten times a second; elsewhere (a log file, a
    pipe) at most every 5 seconds. Use it as a context manager, or ``close()`` it, so that
    the final count is drawn.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with progress_bar(4, "synflow", stream=out) as bar:
        ...     for _ in range(4):
        ...         bar.update()
        >>> last = out.getvalue().split("\\r")[-1]
        >>> last.startswith("[reconvene_fx] synflow: 100%") and " 4/4 " in last
        True
        >>> with progress_bar(4, "quiet", enabled=False, stream=out) as bar:
        ...     bar.update(4)
        >>> with progress_bar(4, "quick", enabled=None, stream=out) as bar:
        ...     bar.update(4)
        >>> "quiet" in out.getvalue() or "quick" in out.getvalue()
        False
    """
    out = sys.stderr if stream is None else stream
    tty = bool(getattr(out, "isatty", lambda: False)())
    return tqdm(
        total=None if total is None else max(int(total), 1),
        desc=f"[reconvene_fx] {label}",
        file=out,
        disable=enabled is False,
        delay=AUTO_DELAY if enabled is None else 0.0,
        mininterval=_TTY_INTERVAL if tty else _LOG_INTERVAL,
        dynamic_ncols=tty,
    )
