"""The compiler passes, each a ``torch.fx.passes.infra.pass_base.PassBase``.

:func:`compile_passes` lists them in the order :func:`reconvene_fx.compile` runs them;
each declares what it needs (``requires``) and raises
:class:`~reconvene_fx.errors.PassOrderError` naming the missing pass.
"""

from .channels import ChannelGroupPass, UnknownOpWarning
from .detach import DetachPass
from .lift import LiftedLayer, LiftLayersPass
from .masks import MaskPass
from .pipeline import compile_passes, run_passes
from .plan import PlanPass
from .report import ReportPass
from .sensitivity import SensitivityPass
from .shape import ShapePass
from .shrink import ShrinkPass, default_init, matched_init, torchvision_init

__all__ = [
    "ChannelGroupPass",
    "DetachPass",
    "LiftLayersPass",
    "LiftedLayer",
    "MaskPass",
    "PlanPass",
    "ReportPass",
    "SensitivityPass",
    "ShapePass",
    "ShrinkPass",
    "UnknownOpWarning",
    "compile_passes",
    "default_init",
    "matched_init",
    "torchvision_init",
    "run_passes",
]
