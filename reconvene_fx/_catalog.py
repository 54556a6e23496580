"""The scorers and strategies by name: the registries behind ``method=`` and ``strategy=``.

The built-in entries are declared here, each once, by where it lives, so the names (and a
line about each) are known without importing torch: the command line's ``--method`` and
``--strategy`` read them for their choices and help. ``reconvene_fx.scoring.SCORERS`` and
``reconvene_fx.strategies.STRATEGIES`` are these objects; ``register_scorer`` and
``register_strategy`` add to them.

Example:
    >>> list(SCORERS)
    ['magnitude', 'random', 'snip', 'grasp', 'synflow']
    >>> list(STRATEGIES)
    ['reconvene', 'uniform', 'global', 'none']
    >>> STRATEGIES.summary("uniform")
    'every coupled channel group loses the same fraction'
"""

from __future__ import annotations

from typing import Any

from ._registry import NamedRegistry

__all__ = ["SCORERS", "STRATEGIES"]

SCORERS: NamedRegistry[Any] = NamedRegistry("scoring method", "methods")
_S = "reconvene_fx.scoring."
SCORERS.declare("magnitude", _S + "magnitude:magnitude", "|w|, needs no data")
SCORERS.declare("random", _S + "random:random_scores", "uniform noise, the usual baseline")
SCORERS.declare("snip", _S + "snip:snip", "connection sensitivity |w * dL/dw|, needs labels")
SCORERS.declare("grasp", _S + "grasp:grasp", "what keeps the gradient flowing, needs labels")
SCORERS.declare("synflow", _S + "synflow:synflow", "iterative synaptic flow, needs no data")

STRATEGIES: NamedRegistry[Any] = NamedRegistry("strategy", "strategies")
_P = "reconvene_fx.strategies."
STRATEGIES.declare(
    "reconvene",
    _P + "reconvene:reconvene",
    "narrow the layers the PaI mask prunes hardest, each towards its mask's density",
)
STRATEGIES.declare(
    "uniform", _P + "baselines:uniform", "every coupled channel group loses the same fraction"
)
STRATEGIES.declare(
    "global",
    _P + "baselines:global_ranking",
    "channels ranked model-wide by score relative to their group's mean",
)
STRATEGIES.declare(
    "none",
    _P + "baselines:unstructured",
    "narrow nothing: masks only, with composite the unstructured PaI model",
)
