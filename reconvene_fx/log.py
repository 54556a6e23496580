"""The library's logger, and a switch that shows its INFO lines on stderr.

Library code logs through :data:`logger` (``logging.getLogger("reconvene_fx")``); it has a
``NullHandler``, so nothing is printed unless the application configures logging or a caller
turns progress on with :func:`progress_to_stderr`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TextIO

__all__ = ["PROGRESS_FORMAT", "logger", "progress_to_stderr"]

logger = logging.getLogger("reconvene_fx")
logger.addHandler(logging.NullHandler())

PROGRESS_FORMAT = "[reconvene_fx] %(message)s"


class _ProgressHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`progress_to_stderr` attaches; marked so nesting can see it."""


@contextlib.contextmanager
def progress_to_stderr(enabled: bool, stream: TextIO | None = None) -> Iterator[None]:
    """While active and ``enabled``, print the library's INFO messages to ``stream``.

    Attaches a ``StreamHandler`` (format ``[reconvene_fx] %(message)s``, default stream
    ``sys.stderr`` at the time of the call) to :data:`logger` and lowers the logger's level
    to INFO if it is higher; both are restored on exit, also on error. Inside an active
    ``progress_to_stderr(True)`` another one adds nothing, so lines are never printed twice.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with progress_to_stderr(True, stream=out):
        ...     logger.info("tracing ...")
        ...     with progress_to_stderr(True, stream=out):  # nested: no second handler
        ...         logger.info("tracing: done")
        >>> logger.info("not shown: the handler is gone")
        >>> print(out.getvalue(), end="")
        [reconvene_fx] tracing ...
        [reconvene_fx] tracing: done
        >>> with progress_to_stderr(False, stream=out):
        ...     logger.info("not shown: disabled")
        >>> out.getvalue().count("\\n")
        2
    """
    if not enabled or any(isinstance(h, _ProgressHandler) for h in logger.handlers):
        yield
        return
    handler = _ProgressHandler(sys.stderr if stream is None else stream)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(PROGRESS_FORMAT))
    previous_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()
