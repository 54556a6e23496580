"""Module attributes imported on first use (PEP 562), so heavy optional imports wait."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["declared_exports", "lazy_exports", "type_checking_imports"]

# name -> (module, attribute): the name is ``getattr(module, attribute)``, or the submodule
# ``attribute`` when ``module`` is the package itself (``from . import passes``)
_Table = Mapping[str, tuple[str, str]]
# a module's __getattr__ and __dir__
_Hooks = tuple[Callable[[str], Any], Callable[[], list[str]]]


def lazy_exports(
    namespace: dict[str, Any], sources: Mapping[str, str], submodules: Sequence[str] = ()
) -> _Hooks:
    """``__getattr__`` and ``__dir__`` for a module whose names in ``sources`` (name ->
    defining module) are imported when first read, then cached in ``namespace``. A package
    also finds its ``submodules`` (and any other submodule of its own) that way.

    Example:
        >>> ns = {"__name__": "demo"}
        >>> getattr_, dir_ = lazy_exports(ns, {"sqrt": "math"})
        >>> getattr_("sqrt")(9.0), "sqrt" in ns, "sqrt" in dir_()
        (3.0, True, True)
    """

    def __dir__() -> list[str]:
        return sorted({*namespace, *sources, *submodules})

    table = {name: (module, name) for name, module in sources.items()}
    return _importer(namespace, table), __dir__


def declared_exports(namespace: dict[str, Any]) -> _Hooks:
    """``__getattr__`` and ``__dir__`` for a package whose public names are those its own
    source imports under ``if TYPE_CHECKING:`` (see :func:`type_checking_imports`).

    Each name is thus written once: type checkers read those imports, and at run time
    this reads them from the source file and imports each name when it is first read.
    Sets ``namespace["__all__"]`` to the names; ``dir()`` shows them alone. Any other
    submodule of the package is still found when read, unlisted.
    """
    with open(namespace["__file__"], encoding="utf-8") as file:
        table = type_checking_imports(file.read(), namespace["__name__"])
    namespace["__all__"] = list(table)

    def __dir__() -> list[str]:
        return sorted(table)

    return _importer(namespace, table), __dir__


def type_checking_imports(source: str, package: str) -> dict[str, tuple[str, str]]:
    """What the ``from ... import`` statements in the top-level ``if TYPE_CHECKING:``
    blocks of ``source``, the ``__init__`` of ``package``, bind: name -> (absolute module,
    name there). Other statements are left out.

    Example:
        >>> source = '''
        ... if TYPE_CHECKING:
        ...     from . import passes as passes
        ...     from .errors import BudgetError as BudgetError
        ...     from .emit.onnx import export_onnx as to_onnx
        ... '''
        >>> for name, where in type_checking_imports(source, "pkg").items():
        ...     print(name, where)
        passes ('pkg', 'passes')
        BudgetError ('pkg.errors', 'BudgetError')
        to_onnx ('pkg.emit.onnx', 'export_onnx')
    """
    table = {}
    for block in ast.parse(source).body:
        if not (isinstance(block, ast.If) and _is_type_checking(block.test)):
            continue
        for stmt in block.body:
            if not isinstance(stmt, ast.ImportFrom):
                continue
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - stmt.level + 1]) if stmt.level else ""
            module = ".".join(part for part in (base, stmt.module) if part)
            for alias in stmt.names:
                table[alias.asname or alias.name] = (module, alias.name)
    return table


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def _importer(namespace: dict[str, Any], table: _Table) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``table``'s names (and, for a package, its
    submodules) when first read and caches them in ``namespace``."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        if name in table:
            module, attribute = table[name]
            if module == package:
                value = importlib.import_module(f"{package}.{attribute}")
            else:
                value = getattr(importlib.import_module(module), attribute)
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

    return __getattr__
