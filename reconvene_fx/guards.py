"""Run-time guards for what tracing decided from the example inputs.

When the forward asks a question of a traced value (``if x.shape[-1] > 16:``), tracing
answers it for the example inputs and records only the branch those inputs take
(:func:`reconvene_fx.trace`). When it reads a traced size as a Python number
(``int(x.shape[1] * 0.5)``, ``float(c)``, ``range(n)``), the graph holds the number those
inputs give as a literal. Either way the graph then holds a :func:`check_decision` call at
that point, so the compiled model refuses, with an :class:`~reconvene_fx.errors.InputError`
naming the source line, inputs that would have taken the other branch or given another
number, instead of silently computing something else.
"""

from __future__ import annotations

from typing import Any

import torch.fx

from .errors import InputError

__all__ = ["check_decision"]


@torch.fx.node.has_side_effect  # kept by dead-code elimination: it has no users
def check_decision(condition: Any, taken: Any, where: str) -> None:
    """Raise :class:`~reconvene_fx.errors.InputError` unless the inputs give the answer
    tracing recorded at ``where`` (the user's source line): for a branch (``taken`` a
    bool), unless ``bool(condition)`` is ``taken``; for a traced size read as a Python
    number (``taken`` the int or float the graph holds in its place), unless
    ``condition`` converted as the forward converted it (``int(...)`` or ``float(...)``)
    equals ``taken``.

    Example:
        >>> check_decision(32 > 16, True, "net.py:7 if x.shape[-1] > 16:")
        >>> try:
        ...     check_decision(8 > 16, True, "net.py:7 if x.shape[-1] > 16:")
        ... except InputError as exc:
        ...     print(str(exc).splitlines()[0])
        the model was compiled for inputs that take one branch at net.py:7 ... the other
        >>> check_decision(64 * 0.5, 32, "net.py:8 k = int(c * 0.5)")
        >>> try:
        ...     check_decision(48 * 0.5, 32, "net.py:8 k = int(c * 0.5)")
        ... except InputError as exc:
        ...     print(str(exc).splitlines()[0])
        the model was compiled for inputs that give int() = 32 at net.py:8 ... give 24
    """
    if isinstance(taken, bool):
        if bool(condition) != taken:
            raise InputError(
                f"the model was compiled for inputs that take one branch at {where} "
                f"({taken}), and these inputs take the other\n"
                "The compiled graph holds only the branch of the example inputs. Compile it "
                "again with example inputs of the shape you will run, or fix the condition "
                "with concrete_args."
            )
        return
    convert = type(taken)
    given = convert(condition)
    if given != taken:
        raise InputError(
            f"the model was compiled for inputs that give {convert.__name__}() = {taken!r} "
            f"at {where}, and these inputs give {given!r}\n"
            "The compiled graph holds the number the example inputs gave there as a "
            "literal. Compile it again with example inputs of the shape you will run."
        )
