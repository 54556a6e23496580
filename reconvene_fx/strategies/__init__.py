"""Width-allocation strategies behind one interface (see :class:`Strategy`).

Built in: ``reconvene`` (default), ``uniform``, ``global``, ``none`` (masks only, with
``composite=True``: the unstructured PaI model), declared by name in :data:`STRATEGIES` (a
:class:`~reconvene_fx._registry.NamedRegistry`). Register your own with
:func:`register_strategy`.
"""

from . import baselines, reconvene
from .base import (
    STRATEGIES,
    PlanInputs,
    RemovalOrder,
    Strategy,
    by_key,
    fraction_in_group,
    get_strategy,
    register_strategy,
)

__all__ = [
    "STRATEGIES",
    "PlanInputs",
    "RemovalOrder",
    "Strategy",
    "baselines",
    "by_key",
    "fraction_in_group",
    "get_strategy",
    "reconvene",
    "register_strategy",
]
