"""Which layers ``ignore=`` names: module names, blocks, globs over names, class names."""

from __future__ import annotations

import difflib
import fnmatch
import sys
from collections.abc import Iterable, Mapping

from torch import nn

from ..errors import ArgumentError

__all__ = ["resolve_ignore"]


def resolve_ignore(
    patterns: Iterable[str], layers: Mapping[str, nn.Module], modules: Mapping[str, nn.Module]
) -> tuple[str, ...]:
    """The names of the ``layers`` (the conv, linear and norm layers whose channels are
    planned) that ``patterns`` name, in the order given, each once.

    A pattern is a module name (a block stands for every layer inside it), a glob over
    qualified names (``fnmatch``: ``layer4.*``) or a class name (``Linear``,
    ``torch.nn.Linear``: every layer of that class or a subclass). ``modules`` (every
    module by name) words the error of a pattern that matches no layer: an
    :class:`~reconvene_fx.errors.ArgumentError` naming close matches.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8),
        ...                     nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU()), nn.Linear(8, 4))
        >>> modules = dict(net.named_modules())
        >>> layers = {n: modules[n] for n in ("0", "1", "2.0", "3")}
        >>> resolve_ignore(["2", "torch.nn.Linear", "Conv2d", "1"], layers, modules)
        ('2.0', '3', '0', '1')
        >>> resolve_ignore(["2.*"], layers, modules)
        ('2.0',)
        >>> try:
        ...     resolve_ignore(["2.1"], layers, modules)
        ... except ArgumentError as exc:
        ...     print(str(exc)[:75])
        ignore pattern '2.1' matches no prunable layer: it names a ReLU, whose chan
    """
    chosen: dict[str, None] = {}
    for pattern in patterns:
        if pattern in modules or pattern in layers:
            found = [n for n in layers if n == pattern or n.startswith(f"{pattern}.")]
        else:
            cls = _class_named(pattern)
            found = [n for n, m in layers.items() if _matches(n, m, pattern, cls)]
        if not found:
            raise ArgumentError(_no_match(pattern, layers, modules))
        chosen.update(dict.fromkeys(found))
    return tuple(chosen)


def _class_named(pattern: str) -> type | None:
    """The class a dotted name such as ``torch.nn.Linear`` names, if its module is loaded."""
    owner, _, attr = pattern.rpartition(".")
    found = getattr(sys.modules.get(owner), attr, None) if owner else None
    return found if isinstance(found, type) else None


def _matches(name: str, module: nn.Module, pattern: str, cls: type | None) -> bool:
    """Whether a glob over qualified names or a class name matches a layer."""
    if fnmatch.fnmatchcase(name, pattern):
        return True
    if cls is not None:
        return isinstance(module, cls)
    return any(pattern in (c.__name__, f"{c.__module__}.{c.__qualname__}")
               for c in type(module).__mro__)  # fmt: skip


def _no_match(
    pattern: str, layers: Mapping[str, nn.Module], modules: Mapping[str, nn.Module]
) -> str:
    """The error for a pattern that matches nothing: what it hit, and the close names."""
    blocks = {n.rsplit(".", k)[0] for n in layers for k in range(n.count(".") + 1)}
    candidates = sorted(blocks) + sorted({type(m).__name__ for m in layers.values()})
    close = difflib.get_close_matches(pattern.rstrip("*?.["), candidates, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else (
        f"prunable layers include: {', '.join(list(layers)[:6])}")  # fmt: skip
    if pattern in modules:
        hint = (
            f"it names a {type(modules[pattern]).__name__}, whose channels are not planned; {hint}"
        )
    return (
        f"ignore pattern {pattern!r} matches no prunable layer: {hint}. A pattern is a "
        "module name (a block stands for every layer in it), a glob over module names "
        "(layer4.*) or a class name (Linear, torch.nn.Linear)"
    )
