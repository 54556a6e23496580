"""The scorer interface and registry: a scorer gives every prunable weight a score."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import torch
import torch.fx

from .._catalog import SCORERS
from .._progress import progress_bar
from ..errors import ArgumentError, ArgumentTypeError, RandomTargetsWarning, ScoringError
from ..layers import LayerRegistry, module_layer
from ..log import logger

__all__ = [
    "SCORERS",
    "Scorer",
    "check_finite",
    "get_scorer",
    "kth_in_band",
    "kth_largest",
    "labelled_batches",
    "prunable_weights",
    "register_scorer",
    "run_scorer",
    "sample_bracket",
]


class Scorer(Protocol):
    """``score(gm, example_inputs, targets, *, seed, density, progress, layers, **options)``.

    Returns ``{param_name: scores}`` (any mapping) for the weights of
    :func:`prunable_weights`. Scores have the shape of the weight; higher means more
    important. ``density`` is the fraction of prunable weights the caller will keep (SynFlow
    uses it for its schedule); ``progress`` asks for a progress bar on stderr; ``layers`` is
    the compile's layer registry (``compile(layers=...)``; None: the built-in one), for
    ``prunable_weights(gm, layers)``. A scorer may
    leave out any keyword it does not use: :func:`run_scorer` passes only those it accepts.
    A scorer with the attribute ``needs_labels = True`` (SNIP, GraSP) is run once per
    labelled batch when ``compile`` gets ``data=`` (see :func:`run_scorer`).
    """

    def __call__(
        self,
        gm: torch.fx.GraphModule,
        example_inputs: tuple[Any, ...],
        targets: torch.Tensor | None,
        *,
        seed: int,
    ) -> Mapping[str, torch.Tensor]: ...


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Register a scorer under ``name`` in :data:`SCORERS` so ``compile(method=name)`` (and
    the command line's ``--method``) finds it.

    Example:
        >>> @register_scorer("ones")
        ... def ones(gm, example_inputs, targets, *, seed):
        ...     return {n: torch.ones_like(w) for n, w in prunable_weights(gm)}
        >>> get_scorer("ones") is ones
        True
        >>> _ = SCORERS.pop("ones")
    """
    return SCORERS.register(name)


def get_scorer(name: str) -> Scorer:
    """The scorer registered as ``name``.

    Raises:
        ArgumentError: naming the closest known method and all of them.
    """
    return SCORERS.lookup(name)  # type: ignore[no-any-return]


def prunable_weights(
    gm: torch.nn.Module, layers: LayerRegistry | None = None
) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """``(qualified_name, weight)`` of every conv/linear-like layer (a weighted layer of
    ``layers``, default the built-in :data:`~reconvene_fx.layers.DEFAULT_LAYERS`), each
    weight once.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        >>> [name for name, _ in prunable_weights(net)]
        ['0.weight']
    """
    seen: set[int] = set()
    for name, module in gm.named_modules():
        layer = module_layer(name, module, layers)
        weight = layer.weight() if layer is not None else None
        if weight is not None and id(weight) not in seen:
            seen.add(id(weight))
            yield (f"{name}.weight" if name else "weight"), weight


def run_scorer(
    method: str | Scorer,
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    density: float = 1.0,
    progress: bool | None = None,
    options: Mapping[str, Any] | None = None,
    data: Any = None,
    max_batches: int | None = 8,
    stats: dict[str, Any] | None = None,
    layers: LayerRegistry | None = None,
) -> dict[str, torch.Tensor]:
    """Run a scorer and check what it returns.

    Keywords the scorer does not accept are not passed (``options`` are, and a scorer that
    rejects one raises ``TypeError`` naming it). Every prunable weight must get a finite
    score of its own shape. A scorer that ``needs_labels`` runs on each batch of ``data``
    (one ``(inputs, targets)`` pair or an iterable of them) and its scores are summed;
    without ``data`` it runs on ``example_inputs`` and ``targets``, and when those are
    None too, a :class:`~reconvene_fx.errors.RandomTargetsWarning` says the labels are
    random. Other scorers ignore ``data``.

    At most ``max_batches`` batches of ``data`` are read (``None``: all of them); how many
    is logged at INFO, saying when ``data`` held more, and written to
    ``stats["batches_read"]`` when a ``stats`` dict is given. With ``progress`` a bar on
    stderr counts the batches. ``layers`` (the compile's layer registry) says which
    weights are prunable; a scorer that takes a ``layers`` keyword gets it.

    Example:
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 2)))
        >>> run_scorer("magnitude", net, ())["0.weight"].shape
        torch.Size([2, 3])
    """
    fn = get_scorer(method) if isinstance(method, str) else method
    label = method if isinstance(method, str) else getattr(fn, "__name__", repr(fn))
    wanted: dict[str, Any] = {
        "seed": seed,
        "density": density,
        "progress": progress,
        "layers": layers,
    }
    accepted = _keywords(fn)
    kwargs = {k: v for k, v in wanted.items() if accepted is None or k in accepted}
    extra = dict(options or {})
    if accepted is not None:
        unknown = sorted(set(extra) - accepted)
        if unknown:
            raise ArgumentTypeError(
                f"scoring method {label!r} takes no option(s) {', '.join(unknown)}; "
                f"it accepts: {', '.join(sorted(accepted - set(wanted))) or 'none'}"
            )
    if not getattr(fn, "needs_labels", False):
        return _checked(label, gm, layers, fn(gm, example_inputs, targets, **kwargs, **extra))
    if data is None:
        if targets is None:
            warnings.warn(
                f"scoring method {label!r} ranks weights by a loss on labels, and none were "
                "given: it scores against random labels. Pass data=(inputs, targets) (or "
                "targets=) to score on the task",
                RandomTargetsWarning,
                stacklevel=2,
            )
        return _checked(label, gm, layers, fn(gm, example_inputs, targets, **kwargs, **extra))
    available = _length(data)
    expected = available if max_batches is None else max_batches
    if available is not None and max_batches is not None:
        expected = min(available, max_batches)
    total: dict[str, torch.Tensor] = {}
    read = 0
    with progress_bar(expected, f"{label} (batches)", enabled=progress) as bar:
        for batch_inputs, batch_targets in labelled_batches(data, max_batches):
            batch = _checked(
                label, gm, layers, fn(gm, batch_inputs, batch_targets, **kwargs, **extra)
            )
            for name, value in batch.items():
                total[name] = total[name] + value if name in total else value.clone()
            read += 1
            bar.update()
    logger.info("%s: %s", label, _describe_read(read, available, max_batches))
    if stats is not None:
        stats["batches_read"] = read
    return total


def _length(data: Any) -> int | None:
    """How many batches ``data`` holds, when it says (one batch: 1; a generator: None)."""
    if _is_batch(data):
        return 1
    try:
        return len(data)
    except TypeError:  # no len(), e.g. a generator or an IterableDataset's DataLoader
        return None


def _describe_read(read: int, available: int | None, max_batches: int | None) -> str:
    """What the log says about the batches scored.

    Example:
        >>> _describe_read(8, 100, 8)
        'scored 8 of 100 batches (max_batches=8)'
        >>> _describe_read(8, None, 8)
        'stopped after 8 batches (max_batches=8)'
        >>> _describe_read(3, 3, 8)
        'scored all 3 batches of data'
    """
    noun = "batch" if read == 1 else "batches"
    if available is not None and available > read:
        return f"scored {read} of {available} batches (max_batches={max_batches})"
    if available is None and max_batches is not None and read >= max_batches:
        return f"stopped after {read} {noun} (max_batches={max_batches})"
    return f"scored all {read} {noun} of data"


def labelled_batches(
    data: Any, max_batches: int | None = None
) -> Iterator[tuple[tuple[Any, ...], torch.Tensor]]:
    """``(inputs, targets)`` of each batch of ``data``: one ``(inputs, targets)`` pair
    (``targets`` a tensor) or an iterable of such pairs, ``inputs`` a tensor or a tuple of
    the model's inputs. Stops after ``max_batches`` batches (``None``: reads them all)
    without drawing another one from ``data``.

    Example:
        >>> x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
        >>> [tuple(i[0].shape) for i, _ in labelled_batches((x, y))]
        [(4, 3)]
        >>> len(list(labelled_batches([(x, y), (x, y)])))
        2
        >>> len(list(labelled_batches([(x, y)] * 5, max_batches=3)))
        3
    """
    if _is_batch(data):
        batches: Any = [data]
    else:
        try:
            batches = iter(data)
        except TypeError:
            raise ArgumentTypeError(_BAD_DATA.format(type(data).__name__)) from None
    count = 0
    for batch in batches:
        if not _is_batch(batch):
            raise ArgumentTypeError(_BAD_DATA.format(f"an item of type {type(batch).__name__}"))
        inputs, targets = batch
        count += 1
        yield (tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), targets
        if max_batches is not None and count >= max_batches:
            return  # before drawing the next batch: a DataLoader would load it
    if count == 0:
        raise ArgumentError("data holds no batch; give at least one (inputs, targets) pair")


_BAD_DATA = (
    "data must be a batch (inputs, targets), targets a tensor of class indices, or an "
    "iterable of such batches (a DataLoader); got {}"
)


def _is_batch(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and isinstance(value[1], torch.Tensor)
        and isinstance(value[0], (torch.Tensor, tuple, list))
    )


def _keywords(fn: Callable[..., Any]) -> set[str] | None:
    """The keyword names ``fn`` accepts, or None when it takes ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return {p.name for p in params if p.kind in kinds} - {"gm", "example_inputs", "targets"}


def _checked(
    label: str,
    gm: torch.fx.GraphModule,
    layers: LayerRegistry | None,
    scores: Mapping[str, torch.Tensor],
) -> Mapping[str, torch.Tensor]:
    """Every prunable weight has a finite score of its shape. Scores computed on access
    (``lazy`` mappings such as magnitude's) stay lazy, so a large model never holds a
    second copy of all its weights for them: here only their names are checked; their
    values are checked where they are read (:func:`check_finite`)."""
    lazy = bool(getattr(scores, "lazy", False))
    if lazy:
        given = set(scores)
        missing = [name for name, _ in prunable_weights(gm, layers) if name not in given]
        if missing:
            raise ScoringError(f"scoring method {label!r} gave no score for {missing[0]!r}")
        return scores
    out: dict[str, torch.Tensor] = {}
    for name, weight in prunable_weights(gm, layers):
        s = scores.get(name)
        if s is None:
            raise ScoringError(f"scoring method {label!r} gave no score for {name!r}")
        s = s.detach()
        if s.shape != weight.shape:
            raise ScoringError(
                f"scoring method {label!r} gave {name!r} scores of shape {tuple(s.shape)}; "
                f"the weight has shape {tuple(weight.shape)}"
            )
        check_finite(label, name, s)
        out[name] = s
    return out


def check_finite(label: str, name: str, s: torch.Tensor) -> None:
    """Raise ``ValueError`` when the scores ``s`` of ``name`` hold a NaN or an infinity."""
    low, high = torch.aminmax(s) if s.numel() else (torch.zeros(()), torch.zeros(()))
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):  # NaN propagates
        bad = int((~torch.isfinite(s)).sum())
        raise ScoringError(
            f"scoring method {label!r} gave {bad} non-finite score(s) for {name!r} "
            "(overflow or NaN in the model's forward/backward pass?)"
        )


def kth_largest(
    values: torch.Tensor | Sequence[torch.Tensor], k: int, *, sizes: Sequence[int] | None = None
) -> float:
    """The ``k``-th largest (``k`` from 1) of a tensor, or of several taken together, exactly,
    in a few linear passes.

    ``torch.kthvalue`` on tens of millions of scores costs ~0.4 s on two cores, and
    concatenating a model's scores costs a copy of its weights. A sorted random sample
    brackets the answer (:func:`sample_bracket`), one pass over the parts counts what lies
    above the bracket and keeps its few members, which are selected exactly; when the
    count shows the answer outside the bracket, it is found by counting ties or by a full
    sort. ``values`` may be a sequence whose items are computed on access (each is read
    once, twice when ties send the count to a second pass; a sequence with
    ``gather(i, positions)`` computes only the sampled entries for the sample);
    ``sizes`` gives their element counts without reading them.

    Example:
        >>> kth_largest(torch.tensor([3.0, 1.0, 2.0, 5.0]), 2)
        3.0
        >>> kth_largest([torch.tensor([3.0, 1.0]), torch.tensor([2.0, 5.0])], 3)
        2.0
    """
    parts: Sequence[torch.Tensor] = [values] if isinstance(values, torch.Tensor) else values
    if sizes is None:
        sizes = [p.numel() for p in parts]
    n = int(sum(sizes))
    if not 1 <= k <= n:
        raise ArgumentError(f"k must be in [1, {n}], got {k}")
    if n <= _SMALL:
        return _kth_by_sort(parts, n, k)
    lo, hi = sample_bracket(parts, sizes, k)
    # one read of each part: how many lie above the bracket, and those inside it
    above = 0
    inside: list[torch.Tensor] = []
    for p in parts:
        over = p > hi
        above += int(torch.count_nonzero(over))
        inside.append(p[torch.gt(p, lo).logical_xor_(over)].flatten())  # lo < p <= hi
    found = kth_in_band(torch.cat(inside), above, k)
    if found is not None:
        return found
    # else it may be lo itself, tied many times over (SynFlow's zeros): counted, not
    # selected, in a second pass that continuous scores never need
    band = sum(t.numel() for t in inside)
    if above + band < k:
        at_lo = sum(int(torch.count_nonzero(p == lo)) for p in parts)
        if k <= above + band + at_lo:
            return lo
    return _kth_by_sort(parts, n, k)


# at most this many values: the k-th largest by one kthvalue over all of them
_SMALL = 1 << 16
_SAMPLE = 1 << 14


def sample_bracket(
    parts: Sequence[torch.Tensor], sizes: Sequence[int], k: int
) -> tuple[float, float]:
    """``(lo, hi)`` such that the ``k``-th largest of ``parts`` (``sizes`` elements each)
    very likely lies in ``(lo, hi]``: quantiles of a seeded random sample of 16384 values,
    four standard errors either side of the answer's quantile. Only the sampled entries
    are read (``parts.gather(i, positions)`` when the sequence has it, for scores
    computed on access). Whether the answer does lie there is for the caller to check by
    counting (:func:`kth_in_band`).

    Example:
        >>> lo, hi = sample_bracket([torch.arange(100_000.0)], [100_000], 1000)
        >>> lo < 99_000.0 <= hi
        True
    """
    n = int(sum(sizes))
    generator = torch.Generator().manual_seed(0)
    positions = torch.randint(n, (_SAMPLE,), generator=generator).sort().values
    starts = torch.cumsum(torch.tensor([0, *sizes]), 0)
    which = torch.searchsorted(starts, positions, right=True) - 1
    # sorted, the positions fall into the parts in order: split by how many each holds
    counts = torch.bincount(which, minlength=len(sizes)).tolist()
    local = (positions - starts.index_select(0, which)).split(counts)
    gather = getattr(parts, "gather", None)  # lazy parts: compute the sampled entries only
    sample = torch.cat([
        gather(i, at) if gather is not None else parts[i].flatten()[at]
        for i, (at, count) in enumerate(zip(local, counts, strict=True))
        if count
    ])  # fmt: skip
    q = 1.0 - k / n  # quantile of the answer
    margin = 4.0 * math.sqrt(q * (1.0 - q) / _SAMPLE) + 2.0 / _SAMPLE
    # the two order statistics of the sample (two kthvalue calls cost a twentieth of a sort)
    low = max(0, math.floor((q - margin) * _SAMPLE))
    high = min(_SAMPLE - 1, math.ceil((q + margin) * _SAMPLE))
    lo = float(torch.kthvalue(sample, low + 1).values)
    hi = float(torch.kthvalue(sample, high + 1).values)
    return lo, hi


def kth_in_band(band: torch.Tensor, above: int, k: int) -> float | None:
    """The ``k``-th largest of all the values, given ``above`` of them lie above a bracket
    and ``band`` holds every one inside it; None when the count shows the answer outside
    (fewer than ``k`` at or above the bracket's low end, or ``k`` or more above it). The
    band is selected from by :func:`kth_largest`, which brackets a large one again
    (``kthvalue`` over resnet50's band of ~800k values cost ~12 ms on two cores).

    Example:
        >>> kth_in_band(torch.tensor([2.0, 4.0, 3.0]), 5, 7)  # 5 above, then 4, 3
        3.0
        >>> kth_in_band(torch.tensor([2.0, 4.0, 3.0]), 5, 9) is None
        True
    """
    if not above < k <= above + band.numel():
        return None
    # a large band (a few percent of a large model's scores) is bracketed again
    return kth_largest(band.flatten(), k - above)


def _kth_by_sort(parts: Sequence[torch.Tensor], n: int, k: int) -> float:
    flat = torch.cat([p.flatten() for p in parts]) if len(parts) > 1 else parts[0].flatten()
    return float(torch.kthvalue(flat, n - k + 1).values)
