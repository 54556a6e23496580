"""Old spellings of renamed public names, kept for one release with a DeprecationWarning."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["RenamedAttribute", "warn_renamed"]


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``.

    ``stacklevel`` counts from this function: the default 3 names the caller of the
    function that calls it (the user's line that spelled ``old``).

    Example:
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     warn_renamed("Budget(flops=...)", "Budget(macs=...)")
        >>> print(seen[0].message)
        Budget(flops=...) is deprecated and will be removed in the next release;
        use Budget(macs=...)
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class RenamedAttribute:
    """A read-only class attribute that returns the attribute it was renamed to, with a
    DeprecationWarning naming the new spelling.

    Example:
        >>> class Report:
        ...     macs = 7
        ...     flops = RenamedAttribute("macs")
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     Report().flops
        7
        >>> print(seen[0].message)
        Report.flops is deprecated and will be removed in the next release;
        use Report.macs
    """

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = new
        self.owner = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.old, self.owner = name, owner.__name__
        self.__doc__ = f"Deprecated: use ``{self.new}``."

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        warn_renamed(f"{self.owner}.{self.old}", f"{self.owner}.{self.new}")
        return getattr(obj, self.new)
