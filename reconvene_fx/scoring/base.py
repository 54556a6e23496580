"""The scorer interface and registry: a scorer gives every prunable weight a score."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import torch
import torch.fx

__all__ = [
    "SCORERS",
    "Scorer",
    "get_scorer",
    "prunable_weights",
    "register_scorer",
    "run_scorer",
]


class Scorer(Protocol):
    """``score(gm, example_inputs, targets, *, seed, density, progress, **options)``.

    Returns ``{param_name: scores}`` (any mapping) for the weights of
    :func:`prunable_weights`. Scores have the shape of the weight; higher means more
    important. ``density`` is the fraction of prunable weights the caller will keep (SynFlow
    uses it for its schedule); ``progress`` asks for a progress bar on stderr. A scorer may
    leave out any keyword it does not use: :func:`run_scorer` passes only those it accepts.
    """

    def __call__(
        self,
        gm: torch.fx.GraphModule,
        example_inputs: tuple[Any, ...],
        targets: torch.Tensor | None,
        *,
        seed: int,
    ) -> Mapping[str, torch.Tensor]: ...


SCORERS: dict[str, Scorer] = {}

_PRUNABLE = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def register_scorer(name: str) -> Callable[[Scorer], Scorer]:
    """Register a scorer under ``name`` so ``compile(method=name)`` finds it.

    Example:
        >>> @register_scorer("ones")
        ... def ones(gm, example_inputs, targets, *, seed):
        ...     return {n: torch.ones_like(w) for n, w in prunable_weights(gm)}
        >>> get_scorer("ones") is ones
        True
        >>> _ = SCORERS.pop("ones")
    """

    def register(fn: Scorer) -> Scorer:
        SCORERS[name] = fn
        return fn

    return register


def get_scorer(name: str) -> Scorer:
    """The scorer registered as ``name``.

    Raises:
        ValueError: naming the known methods.
    """
    if name not in SCORERS:
        known = ", ".join(sorted(SCORERS))
        raise ValueError(f"unknown scoring method {name!r}; known methods: {known}")
    return SCORERS[name]


def prunable_weights(gm: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Parameter]]:
    """``(qualified_name, weight)`` of every Conv and Linear module, each once.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        >>> [name for name, _ in prunable_weights(net)]
        ['0.weight']
    """
    seen: set[int] = set()
    for name, module in gm.named_modules():
        if isinstance(module, _PRUNABLE) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            yield (f"{name}.weight" if name else "weight"), module.weight


def run_scorer(
    method: str | Scorer,
    gm: torch.fx.GraphModule,
    example_inputs: tuple[Any, ...],
    targets: torch.Tensor | None = None,
    *,
    seed: int = 0,
    density: float = 1.0,
    progress: bool = False,
    options: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Run a scorer and check what it returns.

    Keywords the scorer does not accept are not passed (``options`` are, and a scorer that
    rejects one raises ``TypeError`` naming it). Every prunable weight must get a finite
    score of its own shape.

    Example:
        >>> net = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(3, 2)))
        >>> run_scorer("magnitude", net, ())["0.weight"].shape
        torch.Size([2, 3])
    """
    fn = get_scorer(method) if isinstance(method, str) else method
    label = method if isinstance(method, str) else getattr(fn, "__name__", repr(fn))
    wanted: dict[str, Any] = {"seed": seed, "density": density, "progress": progress}
    accepted = _keywords(fn)
    kwargs = {k: v for k, v in wanted.items() if accepted is None or k in accepted}
    extra = dict(options or {})
    if accepted is not None:
        unknown = sorted(set(extra) - accepted)
        if unknown:
            raise TypeError(
                f"scoring method {label!r} takes no option(s) {', '.join(unknown)}; "
                f"it accepts: {', '.join(sorted(accepted - set(wanted))) or 'none'}"
            )
    scores = fn(gm, example_inputs, targets, **kwargs, **extra)
    return _checked(label, gm, scores)


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
    label: str, gm: torch.fx.GraphModule, scores: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, weight in prunable_weights(gm):
        s = scores.get(name)
        if s is None:
            raise ValueError(f"scoring method {label!r} gave no score for {name!r}")
        s = s.detach()
        if s.shape != weight.shape:
            raise ValueError(
                f"scoring method {label!r} gave {name!r} scores of shape {tuple(s.shape)}; "
                f"the weight has shape {tuple(weight.shape)}"
            )
        if not bool(torch.isfinite(s).all()):
            bad = int((~torch.isfinite(s)).sum())
            raise ValueError(
                f"scoring method {label!r} gave {bad} non-finite score(s) for {name!r} "
                "(overflow or NaN in the model's forward/backward pass?)"
            )
        out[name] = s
    return out


def kth_largest(values: torch.Tensor, k: int) -> float:
    """The ``k``-th largest of a 1-D tensor (``k`` from 1), exactly, in a few linear passes.

    ``torch.kthvalue`` on tens of millions of scores costs ~0.4 s on two cores; SynFlow needs
    a threshold per iteration. A sorted random sample brackets the answer, one pass counts
    what lies above the bracket and the bracket's few members are selected exactly.

    Example:
        >>> kth_largest(torch.tensor([3.0, 1.0, 2.0, 5.0]), 2)
        3.0
    """
    n = values.numel()
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if n <= 1 << 16:
        return float(torch.kthvalue(values, n - k + 1).values)
    generator = torch.Generator().manual_seed(0)
    sample_size = 1 << 14
    sample = values[torch.randint(n, (sample_size,), generator=generator)].sort().values
    q = 1.0 - k / n  # quantile of the answer
    margin = 4.0 * math.sqrt(q * (1.0 - q) / sample_size) + 2.0 / sample_size
    lo = sample[max(0, math.floor((q - margin) * sample_size))]
    hi = sample[min(sample_size - 1, math.ceil((q + margin) * sample_size))]
    # count_nonzero: ~6x faster than bool.sum() on tens of millions of elements
    above = int(torch.count_nonzero(values > hi))
    if above < k and int(torch.count_nonzero(values >= lo)) >= k:
        # the answer lies in [lo, hi]: the rank-th largest there; lo itself may be tied
        # many times over (SynFlow's zeros), so it is counted, not selected
        rank = k - above
        inner = values[(values > lo) & (values <= hi)]
        if rank > inner.numel():
            return float(lo)
        return float(torch.kthvalue(inner, inner.numel() - rank + 1).values)
    return float(torch.kthvalue(values, n - k + 1).values)
