"""Binary search for the first index where a monotone predicate holds."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["first_true"]


def first_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """Smallest k in [lo, hi] with pred(k), given pred monotone and pred(hi) true; lo
    itself is tried first (composite counts are not monotone everywhere).

    Example:
        >>> first_true(lambda k: k * k >= 50, 0, 10)
        8
    """
    if pred(lo):
        return lo
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
