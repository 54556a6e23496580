"""What the compiled model may keep, as fractions of the original."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._deprecation import RenamedAttribute, warn_renamed
from .errors import ArgumentError, ArgumentTypeError

__all__ = ["Budget", "as_budget"]


@dataclass(frozen=True, kw_only=True, init=False)
class Budget:
    """Fractions of the original model that the compiled model may keep.

    Every field that is given must hold; ``None`` means unconstrained.

    Args:
        params: fraction of parameters kept, in (0, 1].
        macs: fraction of multiply-accumulates of conv and linear layers kept, in (0, 1].
        latency: fraction of the forward-pass latency kept, in (0, 1]. The planner measures
            shrunk candidates against the original with ``latency_fn`` of
            :class:`~reconvene_fx.config.CompileConfig` if given, else with
            :func:`~reconvene_fx.latency.measure_latency` (median wall time on this machine).
        flops: deprecated spelling of ``macs`` (a ``DeprecationWarning``; removed in the
            next release). Giving both is an :class:`~reconvene_fx.errors.ArgumentError`.

    Example:
        >>> Budget(params=0.5, macs=0.4)
        Budget(params=0.5, macs=0.4, latency=None)
    """

    params: float | None = None
    macs: float | None = None
    latency: float | None = None

    # Not a field: reading it warns and returns ``macs``.
    flops = RenamedAttribute("macs")

    # A hand-written __init__ rather than an InitVar: the deprecated keyword and the
    # deprecated attribute share the name ``flops``, which an InitVar (a class attribute
    # holding its default) cannot; the signature also shows ``flops=`` to editors.
    def __init__(
        self,
        *,
        params: float | None = None,
        macs: float | None = None,
        latency: float | None = None,
        flops: float | None = None,
    ) -> None:
        if flops is not None:
            if macs is not None:
                raise ArgumentError(
                    "Budget takes macs= or its deprecated spelling flops=, not both"
                )
            warn_renamed("Budget(flops=...)", "Budget(macs=...)")
            macs = flops
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "macs", macs)
        object.__setattr__(self, "latency", latency)
        given = {k: v for k, v in self.limits().items() if v is not None}
        if not given:
            raise ArgumentError("Budget needs at least one of params=, macs=, latency=")
        for name, value in given.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ArgumentTypeError(
                    f"Budget.{name} must be a number, got {type(value).__name__}"
                )
            if not (0.0 < float(value) <= 1.0) or math.isnan(value):
                raise ArgumentError(f"Budget.{name} must be in (0, 1], got {value}")

    def limits(self) -> dict[str, float | None]:
        """The fields as a dict, ``None`` for the unconstrained ones."""
        return {"params": self.params, "macs": self.macs, "latency": self.latency}


def as_budget(budget: float | Budget) -> Budget:
    """Normalise a float (fraction of parameters kept) or a :class:`Budget`.

    Example:
        >>> as_budget(0.25)
        Budget(params=0.25, macs=None, latency=None)
    """
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ArgumentTypeError(f"budget must be a float in (0, 1] or a Budget, got {budget!r}")
    return Budget(params=float(budget))
