"""What every reconvene_fx pass shares: the meta keys it declares, the checks that follow
from them, and its time in the log."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch.fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import PassOrderError, ReconveneError
from ..log import logger
from ..meta import MetaKey

__all__ = ["ReconvenePass", "writer_name", "writers_of"]

_WRITERS: dict[str, list[str]] = {}  # key -> names of the pass classes that declare it written


class ReconvenePass(PassBase):
    """A ``PassBase`` that declares the meta it reads and writes, and logs its time.

    Class attributes (tuples of :class:`~reconvene_fx.meta.MetaKey`):

    - ``reads``: keys that must be there before it runs; :meth:`requires` raises
      :class:`~reconvene_fx.errors.PassOrderError` naming the pass that writes a missing one.
    - ``uses``: keys it reads when they are there (a pipeline puts their writers first).
    - ``writes``: keys it writes (graph keys always, node keys where they apply);
      :meth:`ensures` checks the graph keys after the run.
    - ``updates``: keys first written by another pass that it brings up to date.

    :func:`~reconvene_fx.passes.check_order` checks a whole pipeline against these before
    anything runs, and :func:`~reconvene_fx.passes.passes_for` picks the passes a key
    needs. It logs ``"<PassName> done in X.XXs"`` at INFO when it finishes.
    ``edits_graph`` is False unless the pass adds, removes or retargets graph nodes, so
    :func:`~reconvene_fx.passes.run_passes` regenerates the code only after those.

    Example:
        >>> from reconvene_fx.passes import PlanPass
        >>> [str(key) for key in PlanPass.reads]
        ['reconvene.channels', 'reconvene.sensitivity_table']
        >>> writer_name(PlanPass.reads[0])
        'ChannelGroupPass'
    """

    reads: ClassVar[tuple[MetaKey[Any], ...]] = ()
    uses: ClassVar[tuple[MetaKey[Any], ...]] = ()
    writes: ClassVar[tuple[MetaKey[Any], ...]] = ()
    updates: ClassVar[tuple[MetaKey[Any], ...]] = ()
    edits_graph: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for key in cls.__dict__.get("writes", ()):
            names = _WRITERS.setdefault(str(key), [])
            if cls.__name__ not in names:
                names.append(cls.__name__)

    def requires(self, graph_module: torch.fx.GraphModule) -> None:
        for key in self.reads:
            if not key.written_in(graph_module):
                where = "gm.meta has" if key.where == "graph" else "no node has"
                raise PassOrderError(
                    f"{type(self).__name__} needs {writer_name(key)} to run first ({where} no "
                    f"{str(key)!r}); run the passes in the order of "
                    "reconvene_fx.passes.compile_passes(...)"
                )

    def ensures(self, graph_module: torch.fx.GraphModule) -> None:
        for key in self.writes:
            if key.where == "graph" and not key.written_in(graph_module):
                raise ReconveneError(
                    f"{type(self).__name__} declares that it writes {key.place} but did not"
                )

    def __call__(self, graph_module: torch.fx.GraphModule) -> PassResult | None:
        start = time.perf_counter()
        result = super().__call__(graph_module)
        logger.info("%s done in %.2fs", type(self).__name__, time.perf_counter() - start)
        return result


def writers_of(key: str) -> list[str]:
    """The names of the pass classes that declare ``key`` in their ``writes``, in the
    order they were defined (reconvene_fx's own first: they are defined on import).

    Example:
        >>> from reconvene_fx.meta import PLAN
        >>> import reconvene_fx.passes
        >>> writers_of(PLAN)[0]
        'PlanPass'
    """
    return list(_WRITERS.get(str(key), ()))


def writer_name(key: str) -> str:
    """The pass to name in an error when ``key`` is missing: its first writer."""
    names = writers_of(key)
    return names[0] if names else f"the pass that writes {str(key)!r}"
