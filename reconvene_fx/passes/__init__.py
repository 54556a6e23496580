"""The compiler passes, each a ``torch.fx.passes.infra.pass_base.PassBase``."""

from .channels import ChannelGroupPass, UnknownOpWarning
from .plan import PlanPass
from .sensitivity import SensitivityPass
from .shape import ShapePass
from .shrink import ShrinkPass, default_init

__all__ = [
    "ChannelGroupPass",
    "PlanPass",
    "SensitivityPass",
    "ShapePass",
    "ShrinkPass",
    "UnknownOpWarning",
    "default_init",
]
