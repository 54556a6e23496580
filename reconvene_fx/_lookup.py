"""Looking a module type up in a table keyed by type, the way both registries do."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

__all__ = ["for_type"]

V = TypeVar("V")


def for_type(table: Mapping[type, V], module_type: type) -> V | None:
    """The entry of ``module_type`` or of its nearest base class in ``table``; a subclass
    inherits its base's entry only when it does not override ``forward`` (a forward of
    its own may use channels and tensors differently).

    Example:
        >>> import torch
        >>> class Same(torch.nn.ReLU): pass
        >>> class Own(torch.nn.ReLU):
        ...     def forward(self, x): return x
        >>> table = {torch.nn.ReLU: "relu"}
        >>> for_type(table, Same), for_type(table, Own)
        ('relu', None)
    """
    for base in module_type.__mro__:
        entry = table.get(base)
        if entry is not None:
            if base is module_type or module_type.forward is base.forward:  # type: ignore[attr-defined]
                return entry
            return None
    return None
