"""What every reconvene_fx pass shares: timing in the log and its ``requires`` checks."""

from __future__ import annotations

import time

import torch.fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import PassOrderError
from ..log import logger

__all__ = ["ReconvenePass", "require_meta", "require_node_meta"]


class ReconvenePass(PassBase):
    """A ``PassBase`` that logs ``"<PassName> done in X.XXs"`` at INFO when it finishes.

    ``requires`` runs first, as in ``PassBase``: it raises
    :class:`~reconvene_fx.errors.PassOrderError` naming the pass that must run before.
    ``edits_graph`` is False: these passes write meta and modules, never graph nodes, so
    :func:`~reconvene_fx.passes.run_passes` need not regenerate the code after them.
    """

    edits_graph = False

    def __call__(self, graph_module: torch.fx.GraphModule) -> PassResult | None:
        start = time.perf_counter()
        result = super().__call__(graph_module)
        logger.info("%s done in %.2fs", type(self).__name__, time.perf_counter() - start)
        return result


def require_meta(gm: torch.fx.GraphModule, key: str, this: str, needed: str) -> None:
    """Raise unless ``gm.meta`` holds ``key`` (written by the pass ``needed``)."""
    if key not in getattr(gm, "meta", {}):
        raise PassOrderError(
            f"{this} needs {needed} to run first (gm.meta has no {key!r}); run the passes "
            "in the order of reconvene_fx.passes.compile_passes(...)"
        )


def require_node_meta(gm: torch.fx.GraphModule, key: str, this: str, needed: str) -> None:
    """Raise unless some node's ``meta`` holds ``key`` (written by the pass ``needed``)."""
    if not any(key in node.meta for node in gm.graph.nodes):
        raise PassOrderError(
            f"{this} needs {needed} to run first (no node has {key!r} in its meta); run the "
            "passes in the order of reconvene_fx.passes.compile_passes(...)"
        )
