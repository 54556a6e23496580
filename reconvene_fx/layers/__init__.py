"""Layer handlers: what each kind of layer holds, registered once (see :mod:`.base`).

Importing this package registers the built-in handlers (convs, linear, norms) in
:data:`DEFAULT_LAYERS`.
"""

from . import conv, linear, norms
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
]
