"""Layer handlers: what each kind of layer holds, registered once (see :mod:`.base`).

Importing this package registers the built-in handlers (convs, linear, norms, timm's
leaf convs when timm is imported) in
:data:`DEFAULT_LAYERS`.
"""

from . import conv, init, linear, norms, timm
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
from .init import InitScale, matched_init

__all__ = [
    "DEFAULT_LAYERS",
    "InitScale",
    "Layer",
    "LayerHandler",
    "LayerRegistry",
    "conv",
    "get_default_layer_registry",
    "init",
    "layer_calls",
    "linear",
    "matched_init",
    "module_layer",
    "new_param",
    "norms",
    "take",
    "timm",
]
