"""The compiler passes, each a ``torch.fx.passes.infra.pass_base.PassBase``.

:func:`compile_passes` lists them in the order :func:`reconvene_fx.compile` runs them.
Each is a :class:`ReconvenePass` that declares the meta keys it reads and writes
(:class:`~reconvene_fx.meta.MetaKey`): :func:`check_order` checks a pipeline against them
before it runs (a pass run too early raises
:class:`~reconvene_fx.errors.PassOrderError` naming the pass it needs),
:func:`passes_for` picks the passes a key needs, and :func:`pass_table` prints them.
"""

from ._base import ReconvenePass
from .channels import ChannelGroupPass, UnknownOpWarning
from .detach import DetachPass
from .lift import LiftedLayer, LiftLayersPass
from .masks import MaskPass
from .pipeline import check_order, compile_passes, pass_table, passes_for, run_passes
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
    "ReconvenePass",
    "ReportPass",
    "SensitivityPass",
    "ShapePass",
    "ShrinkPass",
    "UnknownOpWarning",
    "check_order",
    "compile_passes",
    "default_init",
    "matched_init",
    "pass_table",
    "passes_for",
    "torchvision_init",
    "run_passes",
]
