"""Shrinking: the rewrite engine that ShrinkPass and the plan's latency candidates share.

:func:`shrink_layers` slices every layer of a graph module to the channels its ``KEEP``
meta keeps (:mod:`.slicing`) and rewrites the sizes in the graph that cut those channels
(:mod:`.literals`). It runs no pass and imports none: ShrinkPass reads the plan, calls it
and writes what it returns to ``gm.meta[SHRINK]``.
"""

from .literals import rewrite_literals
from .slicing import shrink_layers

__all__ = ["rewrite_literals", "shrink_layers"]
