"""Pruning-at-initialization scorers behind one interface (see :class:`Scorer`).

Built in: ``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow``. Register your own
with :func:`register_scorer`.
"""

from . import grasp, magnitude, random, snip, synflow
from .base import (
    SCORERS,
    Scorer,
    get_scorer,
    kth_largest,
    prunable_weights,
    register_scorer,
    run_scorer,
)

__all__ = [
    "SCORERS",
    "Scorer",
    "get_scorer",
    "grasp",
    "kth_largest",
    "magnitude",
    "prunable_weights",
    "random",
    "register_scorer",
    "run_scorer",
    "snip",
    "synflow",
]
