"""How a rule describes the channels of one tensor value while the coupling pass runs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Layout", "Scrambled"]


@dataclass(frozen=True)
class Layout:
    """The tensor's dimension ``dim`` holds the ``size`` channels of channel space ``space``."""

    space: int
    dim: int
    size: int


@dataclass(frozen=True, eq=False)
class Scrambled:
    """A tensor whose channels are spread over several dimensions (mid-way through a channel
    shuffle, say). ``small`` holds the global channel id of each element, with every
    dimension along which the ids do not vary narrowed to size 1; ``shape`` is the
    tensor's shape. Only data-movement ops may consume it; anything else pins it."""

    small: torch.Tensor
    shape: tuple[int, ...]

    @property
    def ids(self) -> torch.Tensor:
        """The ids at full shape (a broadcast view; no copy)."""
        return self.small.expand(self.shape)
