"""Reading a module's submodules by qualified name, fast (imports nothing of torch: the
registries, which the command line reads before torch is imported, use it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.nn as nn

__all__ = ["submodule"]


def submodule(root: nn.Module, target: str) -> nn.Module:
    """``root.get_submodule(target)``, read straight from the modules' ``_modules`` (what
    ``get_submodule`` finds through two ``nn.Module.__getattr__`` calls per name, ~25 us
    for a target five names deep); anything else (a missing name, a module held
    otherwise) is left to ``get_submodule``, which raises as it does.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.ReLU()))
        >>> submodule(net, "0.0") is net[0][0], submodule(net, "") is net
        (True, True)
    """
    module = root
    if target:
        for name in target.split("."):
            child = module._modules.get(name)
            if child is None:
                return root.get_submodule(target)
            module = child
    return module
