"""Composite pruning: unstructured PaI masks kept on the layers that were not narrowed.

A mask is a ``torch.nn.utils.parametrize`` parametrization of the module's ``weight``:
``module.weight`` is ``original * mask`` on every access, so masked weights stay zero
through any number of optimizer steps, and ``module.parametrizations.weight.original``
holds the trainable values.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ._copy import independent_copy
from .errors import ArgumentError

__all__ = ["WeightMask", "apply_masks", "bake_masks", "masked_count", "masks_of"]


class WeightMask(nn.Module):
    """Parametrization ``weight -> weight * mask`` with a fixed bool mask (a buffer).

    Example:
        >>> lin = torch.nn.Linear(2, 2)
        >>> mask = torch.tensor([[True, False], [False, True]])
        >>> _ = torch.nn.utils.parametrize.register_parametrization(lin, "weight", WeightMask(mask))
        >>> bool((lin.weight[~mask] == 0).all())
        True
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Register a :class:`WeightMask` on ``weight`` of each named module (in place).

    Masks must have the weight's shape; modules whose mask keeps everything are skipped.
    """
    for name, mask in masks.items():
        module = model.get_submodule(name)
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ArgumentError(
                f"mask for {name!r} has shape {tuple(mask.shape)}, the weight "
                f"{tuple(module.weight.shape)}"
            )
        if bool(mask.all()):
            continue
        parametrize.register_parametrization(module, "weight", WeightMask(mask))


def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{module_name: mask}`` of every :class:`WeightMask` on a ``weight``."""
    found: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations["weight"]:
                if isinstance(p, WeightMask):
                    found[name] = p.mask
    return found


def masked_count(mask: torch.Tensor) -> int:
    """How many weights one mask holds at zero."""
    return mask.numel() - int(torch.count_nonzero(mask))


def bake_masks(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every mask multiplied into its weight and removed.

    The copy is what to deploy or export (plain ``nn.Conv2d``/``nn.Linear`` with zeros);
    the masks no longer constrain training there. ``model`` is returned unchanged (not
    copied) when it has no masks.
    """
    if not masks_of(model):
        return model
    baked = independent_copy(model)
    for name in masks_of(baked):
        _unparametrize(baked.get_submodule(name))
    return baked


def _unparametrize(module: nn.Module) -> None:
    """Replace a parametrized ``weight`` by a plain parameter holding its current value.

    ``parametrize.remove_parametrizations`` deletes the property from the module's class,
    and a deep copy shares that class with the original module: it would break the
    original. So the copy is switched back to the plain class by hand.
    """
    value = module.weight.detach().clone()
    requires_grad = module.parametrizations["weight"].original.requires_grad
    plain = module.__class__.__bases__[0]
    del module._modules["parametrizations"]
    module.__class__ = plain
    module.weight = nn.Parameter(value, requires_grad=requires_grad)
