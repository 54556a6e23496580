"""Layer handlers: what each kind of layer holds, registered once (see :mod:`.base`).

Importing this package registers the built-in handlers (convs, linear, norms, timm's
leaf convs when timm is imported) in
:data:`DEFAULT_LAYERS`. :mod:`.reinit` re-initializes narrowed layers through them.
"""

from . import conv, init, linear, norms, reinit, timm
from .base import (
    DEFAULT_LAYERS,
    Layer,
    LayerHandler,
    LayerRegistry,
    consumed_input,
    get_default_layer_registry,
    layer_calls,
    module_layer,
    new_param,
    take,
)
from .init import InitScale, matched_init
from .reinit import InitFn, reinitialize, torchvision_init

__all__ = [
    "DEFAULT_LAYERS",
    "InitFn",
    "InitScale",
    "Layer",
    "LayerHandler",
    "LayerRegistry",
    "consumed_input",
    "conv",
    "get_default_layer_registry",
    "init",
    "layer_calls",
    "linear",
    "matched_init",
    "module_layer",
    "new_param",
    "norms",
    "reinit",
    "reinitialize",
    "take",
    "timm",
    "torchvision_init",
]
