"""What the compiled model may keep, as fractions of the original."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ArgumentError, ArgumentTypeError

__all__ = ["Budget", "as_budget"]


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Fractions of the original model that the compiled model may keep.

    Every field that is given must hold; ``None`` means unconstrained.

    Args:
        params: fraction of parameters kept, in (0, 1].
        flops: fraction of multiply-accumulates of conv and linear layers kept, in (0, 1].
        latency: fraction of the forward-pass latency kept, in (0, 1]. The planner measures
            shrunk candidates against the original with ``latency_fn`` of
            :class:`~reconvene_fx.config.CompileConfig` if given, else with
            :func:`~reconvene_fx.latency.measure_latency` (median wall time on this machine).

    Example:
        >>> Budget(params=0.5, flops=0.4)
        Budget(params=0.5, flops=0.4, latency=None)
    """

    params: float | None = None
    flops: float | None = None
    latency: float | None = None

    def __post_init__(self) -> None:
        given = {k: v for k, v in self.limits().items() if v is not None}
        if not given:
            raise ArgumentError("Budget needs at least one of params=, flops=, latency=")
        for name, value in given.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ArgumentTypeError(
                    f"Budget.{name} must be a number, got {type(value).__name__}"
                )
            if not (0.0 < float(value) <= 1.0) or math.isnan(value):
                raise ArgumentError(f"Budget.{name} must be in (0, 1], got {value}")

    def limits(self) -> dict[str, float | None]:
        """The fields as a dict, ``None`` for the unconstrained ones."""
        return {"params": self.params, "flops": self.flops, "latency": self.latency}


def as_budget(budget: float | Budget) -> Budget:
    """Normalise a float (fraction of parameters kept) or a :class:`Budget`.

    Example:
        >>> as_budget(0.25)
        Budget(params=0.25, flops=None, latency=None)
    """
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise ArgumentTypeError(f"budget must be a float in (0, 1] or a Budget, got {budget!r}")
    return Budget(params=float(budget))
