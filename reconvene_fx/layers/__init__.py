"""Layer handlers: what each kind of layer holds, registered once (see :mod:`.base`).

Importing this package registers the built-in handlers (convs, linear, norms, timm's
leaf convs when timm is imported) in
:data:`DEFAULT_LAYERS`.
"""

from . import conv, linear, norms, timm
from .base import (
    DEFAULT_LAYERS,
    Layer,
    LayerHandler,
    LayerRegistry,
    get_default_layer_registry,
    layer_calls,
    module_layer,
    new_param,
    take,
)

__all__ = [
    "DEFAULT_LAYERS",
    "Layer",
    "LayerHandler",
    "LayerRegistry",
    "conv",
    "get_default_layer_registry",
    "layer_calls",
    "linear",
    "module_layer",
    "new_param",
    "norms",
    "take",
    "timm",
]
