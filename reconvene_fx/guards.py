"""Run-time guards for the branches tracing took for the example inputs.

When the forward asks a question of a traced value (``if x.shape[-1] > 16:``), tracing
answers it for the example inputs and records only the branch those inputs take
(:func:`reconvene_fx.trace`). The graph then holds a :func:`check_decision` call at that
point, so the compiled model refuses, with an :class:`~reconvene_fx.errors.InputError`
naming the source line, inputs that would have taken the other branch instead of
silently computing something else.
"""

from __future__ import annotations

from typing import Any

import torch.fx

from .errors import InputError

__all__ = ["check_decision"]


@torch.fx.node.has_side_effect  # kept by dead-code elimination: it has no users
def check_decision(condition: Any, taken: bool, where: str) -> None:
    """Raise :class:`~reconvene_fx.errors.InputError` unless ``bool(condition)`` is
    ``taken``, the answer tracing recorded at ``where`` (the user's source line).

    Example:
        >>> check_decision(32 > 16, True, "net.py:7 if x.shape[-1] > 16:")
        >>> try:
        ...     check_decision(8 > 16, True, "net.py:7 if x.shape[-1] > 16:")
        ... except InputError as exc:
        ...     print(str(exc).splitlines()[0])
        the model was compiled for inputs that take one branch at net.py:7 ... the other
    """
    if bool(condition) != taken:
        raise InputError(
            f"the model was compiled for inputs that take one branch at {where} "
            f"({taken}), and these inputs take the other\n"
            "The compiled graph holds only the branch of the example inputs. Compile it "
            "again with example inputs of the shape you will run, or fix the condition "
            "with concrete_args."
        )
