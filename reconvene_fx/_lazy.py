"""Module attributes imported on first use (PEP 562), so heavy optional imports wait."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, Any], sources: Mapping[str, str], submodules: Sequence[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a module whose names in ``sources`` (name ->
    defining module) are imported when first read, then cached in ``namespace``. A package
    also finds its ``submodules`` (and any other submodule of its own) that way.

    Example:
        >>> ns = {"__name__": "demo"}
        >>> getattr_, dir_ = lazy_exports(ns, {"sqrt": "math"})
        >>> getattr_("sqrt")(9.0), "sqrt" in ns, "sqrt" in dir_()
        (3.0, True, True)
    """

    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name in sources:
            value = getattr(importlib.import_module(sources[name]), name)
        elif "__path__" in namespace and not name.startswith("__"):
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *sources, *submodules})

    return __getattr__, __dir__
