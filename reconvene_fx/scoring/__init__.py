"""Pruning-at-initialization scorers behind one interface (see :class:`Scorer`).

Built in: ``magnitude``, ``random``, ``snip``, ``grasp``, ``synflow`` (declared by name in
:data:`SCORERS`, a :class:`~reconvene_fx._registry.NamedRegistry`). Register your own
with :func:`register_scorer`. :mod:`.threshold` turns scores into the global top-k mask
and each layer's rating (:func:`rate_layers`).
"""

from . import grasp, magnitude, random, snip, synflow, threshold
from .base import (
    SCORERS,
    Scorer,
    get_scorer,
    kth_largest,
    prunable_weights,
    register_scorer,
    run_scorer,
)
from .threshold import break_ties, rate_layers

__all__ = [
    "SCORERS",
    "Scorer",
    "break_ties",
    "get_scorer",
    "grasp",
    "kth_largest",
    "magnitude",
    "prunable_weights",
    "random",
    "rate_layers",
    "register_scorer",
    "run_scorer",
    "snip",
    "synflow",
    "threshold",
]
