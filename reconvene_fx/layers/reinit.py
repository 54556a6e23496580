"""Re-initializing a narrowed layer (RLR): the one entry that ShrinkPass calls.

By default a layer's handler redraws it from the model's own initial values
(:meth:`~.base.LayerHandler.reinit`, from the
:class:`~.init.InitScale` its handler measured before the layer was sliced). A user's
``init_fn(module, generator)`` replaces that; :func:`torchvision_init` is one, a fixed
scheme that asks each handler's :meth:`~.base.LayerHandler.fresh_init`. This module
sits above :mod:`.base` (it looks handlers up), which is why it is not :mod:`.init`
(that one sits below :mod:`.base`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .base import Layer, module_layer
from .init import InitScale

__all__ = ["InitFn", "reinitialize", "torchvision_init"]

InitFn = Callable[[nn.Module, torch.Generator], None]
"""A user's re-initialization: ``init_fn(module, generator)`` redraws ``module`` in place."""


def reinitialize(
    layer: Layer,
    generator: torch.Generator,
    before: InitScale | None,
    init_fn: InitFn | None = None,
) -> None:
    """Re-initialize the narrowed ``layer`` in place: by ``init_fn`` when given, else by
    its handler's ``reinit`` at the model's own initialization (``before``: what
    ``layer.handler.init_scale`` measured before the layer was sliced).

    Example:
        >>> before = InitScale.of(torch.nn.Conv2d(64, 32, 3))
        >>> narrow = module_layer("conv", torch.nn.Conv2d(16, 32, 3))  # a quarter of the fan-in
        >>> reinitialize(narrow, torch.Generator().manual_seed(0), before)
        >>> round(float(narrow.module.weight.detach().std()) / before.weight_std, 1)
        1.0
    """
    if init_fn is not None:
        init_fn(layer.module, generator)
    else:
        layer.handler.reinit(layer, generator, before)


def torchvision_init(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialize a narrowed layer at its new shape, as torchvision initializes CNNs
    (pass it as ``init_fn`` to use it instead of :func:`~.init.matched_init`).

    Convs: Kaiming normal (fan-out, ReLU), zero bias. Linear: PyTorch's default
    (Kaiming uniform, a=sqrt(5)) at the new fan-in. Norms: weight 1, bias 0, fresh stats.
    Each layer type's handler (:mod:`reconvene_fx.layers`) says how.

    Example:
        >>> conv = torch.nn.Conv2d(3, 8, 3)
        >>> torchvision_init(conv, torch.Generator().manual_seed(0))
        >>> float(conv.bias.detach().abs().sum())
        0.0
    """
    layer = module_layer("", module)
    if layer is not None:
        layer.handler.fresh_init(layer, generator)
    elif hasattr(module, "reset_parameters"):
        module.reset_parameters()
