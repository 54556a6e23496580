"""PlanPass: choose which channels to keep so the compact model fits the budget."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.fx
from torch.fx.passes.infra.pass_base import PassResult
from torch.utils._pytree import tree_leaves

from ..budget import Budget, as_budget
from ..config import CompileConfig, auto_round_to
from ..costs import LayerCosts
from ..errors import BudgetError, CompilerError
from ..latency import LatencyEstimate, LatencyTable, measure_model
from ..latency.price import time_prices
from ..meta import (
    CHANNELS,
    KEEP,
    PLAN,
    SENSITIVITY_TABLE,
    ChannelInfo,
    LayerSensitivity,
    PinCause,
    PlanSummary,
)
from ..strategies import PlanInputs, RemovalOrder, get_strategy
from ._base import ReconvenePass
from ._ignore import resolve_ignore
from ._keep import write_keep
from ._search import Pins, Search, SearchSettings, _rank_within_group
from .channels import _describe_node, _source_line

__all__ = ["PlanPass"]


class PlanPass(ReconvenePass):
    """Orders channels for removal and finds the fewest removals that meet the budget.

    Requires ChannelGroupPass (channel info) and SensitivityPass (the
    :class:`~reconvene_fx.meta.SensitivityTable`). Channels go in
    *atoms* (coupled sets); a channel's score is the sum, over every conv/linear that
    produces or consumes it, of its score mass in that layer relative to the layer's mean
    channel mass. Atoms that are pinned, belong to an ignored module, or are the best atom
    of their channel space (no tensor may lose all channels) stay.

    A strategy (``config.strategy``, a name in :mod:`reconvene_fx.strategies`) orders the
    other atoms; the built-in ones:

    - ``reconvene``: every coupled group gets a target width such that each conv/linear
      keeps about the share of its weights its PaI mask kept (a layer keeps ``w_in *
      w_out`` of its weights: the targets solve ``log w_in + log w_out = log density``
      over all layers, least squares; ``allocation="sqrt"`` halves the logs). At scale
      ``s`` a group keeps ``min(1, s * t_g)`` of its atoms, its weakest going first; the
      budget sets ``s``. Priced by time (``config.price="latency"``), each target is
      divided by its group's seconds per MAC relative to the median group's
      (:mod:`reconvene_fx.latency.price`), so the groups whose MACs are slow on the
      backend give up more channels. With ``composite=True`` only the *selected* groups
      (every layer producing them is PSE-selected: density below the global density)
      narrow, from their targets on (their layers' dense size matches what their masks
      kept), and the layers left whole keep their PaI masks; only when the budget needs
      it are the other groups narrowed too, and only then those masks re-thresholded.
    - ``uniform``: every group loses the same fraction.
    - ``global``: channels ranked model-wide by score relative to their group's mean.

    No group, nor any input of a concatenation, keeps fewer than ``ceil(min_width * n)``
    of its ``n`` atoms (its strongest ones); within a group, each input of a concatenation
    is ranked on its own, so each loses the same share. A binary search finds the shortest
    prefix of that order whose removal meets every limit, each group's kept width rounded
    up to ``round_to``. Latency limits are searched with
    :class:`~reconvene_fx.latency.LatencyEstimate` (a per-layer table timed on
    ``latency_backend``) and the chosen plan measured whole on that backend, the
    prediction corrected by that measurement up to three times (a user ``latency_fn``:
    a binary search measuring whole candidates). ``none`` narrows nothing (with
    ``composite=True``: the unstructured PaI model).
    With ``composite=True`` the params limit bounds the nonzero parameters: untouched
    conv/linear layers count only their masked-in weights. Writes ``node.meta[KEEP]``
    (a :class:`ChannelKeep`) on every node with channel info and a
    :class:`~reconvene_fx.meta.PlanSummary` to ``gm.meta[PLAN]``.

    Raises:
        BudgetError: when even removing every removable atom does not meet the budget; the
            message gives the smallest reachable fraction and, for the layers that keep the
            most parameters, which node pins which of their sides and why, with the model's
            source line (also as ``BudgetError.pinned_by``).

    Example:
        >>> from reconvene_fx.passes import ShapePass, ChannelGroupPass, SensitivityPass
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(16, 4, 1))
        >>> gm = torch.fx.symbolic_trace(net)
        >>> x = torch.randn(1, 3, 8, 8)
        >>> _ = ShapePass((x,))(gm)
        >>> _ = ChannelGroupPass()(gm)
        >>> _ = SensitivityPass(0.5, example_inputs=(x,))(gm)
        >>> _ = PlanPass(0.5, example_inputs=(x,))(gm)
        >>> relu = [n for n in gm.graph.nodes if n.target == "1"][0]
        >>> relu.meta["reconvene.keep"].index.numel()  # a multiple of 4 for 16 channels
        4
    """

    def __init__(
        self,
        budget: float | Budget,
        *,
        example_inputs: tuple[Any, ...],
        config: CompileConfig | None = None,
    ) -> None:
        super().__init__()
        self.budget = as_budget(budget)
        self.example_inputs = tuple(example_inputs)
        self.config = config or CompileConfig()

    reads = (CHANNELS, SENSITIVITY_TABLE)
    writes = (KEEP, PLAN)

    def call(self, graph_module: torch.fx.GraphModule) -> PassResult:
        table = SENSITIVITY_TABLE.get(graph_module)
        sens = table.layers
        infos = _all_infos(graph_module)
        num_atoms = 1 + max((int(i.atoms.max()) for i in infos.values() if i.size), default=-1)
        pinned = torch.zeros(num_atoms, dtype=torch.bool)
        group = torch.zeros(num_atoms, dtype=torch.long)
        for info in infos.values():
            pinned[info.atoms] |= info.pinned
            group[info.atoms] = info.group
        num_groups = int(group.max()) + 1 if num_atoms else 0
        costs = LayerCosts(graph_module, self.config.layers)
        pins = Pins.of(infos, num_atoms)
        self._pin_ignored(graph_module, costs, pinned, pins)
        scores = _atom_scores(costs, sens, num_atoms)
        protected = _best_atom_per_space(infos, scores, pinned)
        part = _parts(infos, group)
        protected |= _floor(part, scores, pinned, self.config.min_width)
        pins.add(protected, _floor_cause(self.config.min_width))
        removable = (~pinned & ~protected).nonzero().flatten()
        strategy = get_strategy(self.config.strategy)
        layer_groups, layer_density = _layer_groups(costs, sens)
        price = self._price(graph_module, costs, group, removable, scores, part)
        order = strategy(
            PlanInputs(
                removable=removable,
                scores=scores,
                group=group,
                producers=_producers(costs, sens, group),
                composite=self.config.composite,
                sensitivity=sens,
                layer_groups=layer_groups,
                layer_density=layer_density,
                allocation=self.config.allocation,
                part=part,
                price=price,
            )
        )
        settings = SearchSettings(
            budget=self.budget,
            example_inputs=self.example_inputs,
            round_to=self.config.round_to if self.config.round_to is not None else 8,
            round_atoms=_round_atoms(infos, num_groups, self.config.round_to),
            round_auto=self.config.round_to is None,
            composite=self.config.composite,
            # no mask keeps less than min_width x the global density of the weights reading
            # any input: no layer pruned 10x harder than the model (the PaI model's own
            # masks, strategy "none", stay as they are)
            mask_floor=self.config.min_width * table.global_density
            if self.config.strategy != "none"
            else 0.0,
            latency_fn=self.config.latency_fn,
            latency_backend=self.config.latency_backend,
            latency_cache=self.config.latency_cache,
            progress=self.config.progress,
        )
        search, removed = _search(
            order, lambda mode: Search(settings, graph_module, costs, group, sens, mode, pins)
        )
        write_keep(graph_module, removed)
        masks = search.composite_masks(removed) if self.config.composite else {}
        graph_module.meta[PLAN] = PlanSummary(
            strategy=self.config.strategy,
            composite=self.config.composite,
            removed_atoms=int(removed.sum()),
            removable_atoms=int(removable.numel()),
            latency_before=search.latency_before,
            latency_after=search.latency_after,
            masks=masks,
            mask_mode=search.composite.applied if search.composite is not None else "as_is",
            price="macs" if price is None else "latency",
        )
        return PassResult(graph_module, False)

    # -- steps -----------------------------------------------------------------------------
    def _price(
        self,
        graph_module: torch.fx.GraphModule,
        costs: LayerCosts,
        group: torch.Tensor,
        removable: torch.Tensor,
        scores: torch.Tensor,
        part: torch.Tensor,
    ) -> torch.Tensor | None:
        """Per coupled group, the time price of its channels
        (:func:`~reconvene_fx.latency.price.time_prices`), or None where channels cost
        their MACs (``config.price``)."""
        config = self.config
        if config.price == "macs" or removable.numel() == 0:
            return None
        table = LatencyTable(config.latency_backend, config.latency_cache)
        before = measure_model(config.latency_backend, graph_module, self.example_inputs)
        round_to = config.round_to if config.round_to is not None else 8
        estimate = LatencyEstimate(graph_module, costs, table, before, round_to=round_to)
        prices = time_prices(estimate, costs, group, removable, scores, part)
        table.save()
        return prices

    def _pin_ignored(
        self,
        graph_module: torch.fx.GraphModule,
        costs: LayerCosts,
        pinned: torch.Tensor,
        pins: Pins,
    ) -> None:
        layers = {name: cost.module for name, cost in costs.layers.items()}
        modules = dict(graph_module.named_modules())
        calls = {layer.name: node for node, layer in reversed(costs.calls)}
        for name in resolve_ignore(self.config.ignore, layers, modules):
            layer = costs.layers[name]
            node = calls.get(name)
            cause = PinCause(
                node.name if node is not None else name,
                _describe_node(node, graph_module) if node is not None else f"module {name}",
                f"ignore= names it ({name!r})",
                _source_line(node) if node is not None else None,
            )
            for info in (layer.in_info, layer.out_info):
                if info is not None:
                    pinned[info.atoms] = True
                    pins.add(info.atoms, cause)


def _atom_scores(
    costs: LayerCosts, sens: Mapping[str, LayerSensitivity], num_atoms: int
) -> torch.Tensor:
    atom_score = torch.zeros(num_atoms, dtype=torch.float64)
    for name, layer in costs.layers.items():
        lay = sens.get(name)
        if lay is None:
            continue
        if layer.out_info is not None and lay.out_mass.numel() == layer.out_info.size:
            atom_score.index_add_(0, layer.out_info.atoms, _normalized(lay.out_mass))
        if layer.in_info is not None and lay.in_mass.numel() == layer.in_info.size:
            atom_score.index_add_(0, layer.in_info.atoms, _normalized(lay.in_mass))
    return atom_score


def _search(order: RemovalOrder, make: Callable[[str], Search]) -> tuple[Search, torch.Tensor]:
    """Run the search for ``order``. With a preferred prefix (composite plans), in turn:
    the fewest removals within it, the masks as they are; all of it, the masks thinned by
    one factor (no lower than ``THIN_FLOOR`` of what each kept: the layer densities keep
    their ratios and no layer empties); on into the rest of the order (more groups
    narrowed), the masks as they are; only then the masks re-thresholded together (that
    can empty whole layers: a network that no longer trains)."""
    if order.preferred is None:
        search = make("rethreshold" if order.adjust_masks else "as_is")
        return search, search.run(order.atoms, order.start, order.phase_ends)
    head = order.atoms[: order.preferred]
    attempts = [
        ("as_is", head, order.start, ()),
        ("thin", head, head.numel(), ()),
        ("as_is", order.atoms, head.numel(), order.phase_ends),
        ("rethreshold", order.atoms, head.numel(), order.phase_ends),
    ]
    for i, (mode, atoms, start, phase_ends) in enumerate(attempts):
        search = make(mode)
        try:
            return search, search.run(atoms, start, phase_ends)
        except BudgetError:
            if i == len(attempts) - 1:
                raise
    raise CompilerError("unreachable")


def _floor_cause(min_width: float) -> PinCause:
    if min_width <= 0:
        return PinCause("", "", "each tensor keeps at least its best channel")
    return PinCause(
        "",
        "",
        f"the min_width={min_width:g} floor (each coupled group of n channels keeps "
        f"ceil({min_width:g} x n) of them)",
    )


def _layer_groups(
    costs: LayerCosts, sens: Mapping[str, LayerSensitivity]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per scored layer: ``[input group, output group]`` (-1 for none) and its density."""
    rows: list[tuple[int, int]] = []
    density: list[float] = []
    for name, costed in costs.layers.items():
        lay = sens.get(name)
        if lay is None or not costed.layer.weighted:
            continue
        rows.append(tuple(-1 if i is None else i.group for i in (costed.in_info, costed.out_info)))
        density.append(lay.density)
    return (
        torch.tensor(rows, dtype=torch.long).reshape(-1, 2),
        torch.tensor(density, dtype=torch.float64),
    )


def _parts(infos: dict[int, ChannelInfo], group: torch.Tensor) -> torch.Tensor:
    """Per atom, the narrowest channel space holding it, numbered from 0: the inputs of a
    concatenation are parts of its group; a group without one is a single part.

    Example:
        >>> from reconvene_fx.meta import ChannelInfo
        >>> free = torch.zeros(6, dtype=torch.bool)
        >>> concat = ChannelInfo(0, 1, 6, torch.arange(6), free, group=0)
        >>> first = ChannelInfo(1, 1, 2, torch.arange(2), free[:2], group=0)
        >>> second = ChannelInfo(2, 1, 4, torch.arange(2, 6), free[:4], group=0)
        >>> _parts({0: concat, 1: first, 2: second}, torch.zeros(6, dtype=torch.long)).tolist()
        [0, 0, 1, 1, 1, 1]
    """
    first_free = 1 + max(infos, default=-1)
    part = group + first_free  # atoms in no space: one part per group
    for info in sorted(infos.values(), key=lambda i: -i.size):
        if info.size:
            part[info.atoms] = info.space
    return torch.unique(part, return_inverse=True)[1]


def _floor(
    part: torch.Tensor, scores: torch.Tensor, pinned: torch.Tensor, min_width: float
) -> torch.Tensor:
    """The ``ceil(min_width * n)`` best atoms of each part (:func:`_parts`) of ``n`` atoms
    (pinned ones count towards it): no plan narrows a coupled group, nor any input of a
    concatenation, below that."""
    protected = torch.zeros_like(pinned)
    if min_width <= 0 or part.numel() == 0:
        return protected
    floor = torch.ceil(min_width * torch.bincount(part).double() - 1e-9).long()
    # best first, pinned atoms ahead of all others; rank of each atom within its part
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort((~pinned[order]).to(torch.int8), stable=True)]
    rank = torch.empty_like(order)
    rank[order] = _rank_within_group(part[order])
    return (rank < floor[part]) & ~pinned


def _producers(
    costs: LayerCosts, sens: Mapping[str, LayerSensitivity], group: torch.Tensor
) -> torch.Tensor:
    """Per coupled group, ``(max density, max sensitivity)`` of the scored layers whose
    output channels it holds; ``(-1, -1)`` where there is none."""
    num_groups = int(group.max()) + 1 if group.numel() else 0
    found = torch.full((num_groups, 2), -1.0, dtype=torch.float64)
    for name, costed in costs.layers.items():
        lay = sens.get(name)
        info = costed.out_info
        if lay is None or info is None or not 0 <= info.group < num_groups:
            continue
        row = found[info.group]
        row[0] = max(float(row[0]), lay.density)
        row[1] = max(float(row[1]), lay.sensitivity)
    return found


def _normalized(channel_scores: torch.Tensor) -> torch.Tensor:
    """Scores relative to the layer's mean magnitude, so layers of different fan-in compare
    fairly (GraSP's scores are signed)."""
    scale = channel_scores.abs().mean()
    return channel_scores / scale if float(scale) > 0 else channel_scores


def _all_infos(gm: torch.fx.GraphModule) -> dict[int, ChannelInfo]:
    """The channel info of every channel space, from every node's outputs however deeply
    they nest (a leaf module may return tuples of tuples)."""
    infos: dict[int, ChannelInfo] = {}
    for node in gm.graph.nodes:
        for info in tree_leaves(node.meta.get(CHANNELS)):
            if isinstance(info, ChannelInfo):
                infos.setdefault(info.space, info)
    return infos


def _round_atoms(
    infos: dict[int, ChannelInfo], num_groups: int, round_to: int | None
) -> torch.Tensor:
    """Per coupled group, the atom count its kept atoms are rounded to so that every space
    of the group keeps a multiple of ``round_to`` channels (None: of
    :func:`~reconvene_fx.config.auto_round_to` of the group's narrowest space): an atom spans ``m``
    channels of a space (one position across the ``m`` groups of a grouped conv; ``m = 1``
    elsewhere), so ``round_to / gcd(round_to, m)`` atoms. Before, atoms were rounded to
    ``round_to`` whatever they spanned (4 groups at ``round_to=8``: steps of 32 channels,
    where 8 keep the promise).

    Example:
        >>> from reconvene_fx.meta import ChannelInfo
        >>> free = torch.zeros(26, dtype=torch.bool)
        >>> grouped = ChannelInfo(0, 1, 26, torch.arange(2).repeat(13), free, group=0)
        >>> by_four = ChannelInfo(1, 1, 16, torch.arange(2, 6).repeat(4), free[:16], group=1)
        >>> plain = ChannelInfo(2, 1, 16, torch.arange(6, 22), free[:16], group=2)
        >>> _round_atoms({0: grouped, 1: by_four, 2: plain}, 3, 8).tolist()
        [8, 2, 8]
        >>> by_two = ChannelInfo(3, 1, 16, torch.arange(2, 10).repeat(2), free[:16], group=1)
        >>> _round_atoms({1: by_four, 3: by_two}, 2, 8).tolist()  # 4 atoms: 8 and 16 channels
        [1, 4]
        >>> _round_atoms({0: grouped, 1: by_four, 2: plain}, 3, None).tolist()  # 26 and 16
        [4, 1, 4]

    A concatenation's group holds spaces that cover only part of it (DenseNet's 12-channel
    layer outputs inside a 52-channel concatenation): rounding the group total to 8 would
    not make those outputs multiples of anything, and each step of 8 would cost several
    layers at once, so the default steps follow the narrowest space (the concatenation
    then keeps a multiple of that step):

        >>> concat = ChannelInfo(4, 1, 52, torch.arange(52), free.new_zeros(52), group=0)
        >>> layer = ChannelInfo(5, 1, 12, torch.arange(40, 52), free[:12], group=0)
        >>> _round_atoms({4: concat, 5: layer}, 1, None).tolist()
        [2]
        >>> _round_atoms({4: concat}, 1, None).tolist()  # without the layer's space
        [8]
    """
    narrowest: dict[int, int] = {}
    for info in infos.values():
        if info.size:
            narrowest[info.group] = min(narrowest.get(info.group, info.size), info.size)
    steps = [1] * num_groups
    for info in infos.values():
        if info.size:
            m = info.size // max(int(info.atoms.unique().numel()), 1)
            step = round_to if round_to is not None else auto_round_to(narrowest[info.group])
            steps[info.group] = math.lcm(steps[info.group], step // math.gcd(step, m))
    return torch.tensor(steps, dtype=torch.long)


def _best_atom_per_space(
    infos: dict[int, ChannelInfo], scores: torch.Tensor, pinned: torch.Tensor
) -> torch.Tensor:
    """Each channel space keeps at least its best atom, unless a pinned one stays anyway."""
    protected = torch.zeros_like(pinned)
    for info in infos.values():
        if info.size == 0 or bool(pinned[info.atoms].any()):
            continue
        protected[info.atoms[int(torch.argmax(scores[info.atoms]))]] = True
    return protected
