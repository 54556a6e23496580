"""Pruning-at-initialization scorers behind one interface (see :class:`Scorer`)."""

from . import magnitude, random
from .base import SCORERS, Scorer, get_scorer, prunable_weights, register_scorer

__all__ = [
    "SCORERS",
    "Scorer",
    "get_scorer",
    "magnitude",
    "prunable_weights",
    "random",
    "register_scorer",
]
