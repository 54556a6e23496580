"""Re-initialization of narrowed layers (RLR) at the model's own initialization.

A narrowed layer is redrawn from the model's own initial values: a conv/linear weight and
its bias are a random window of what the model drew for them, at the spread they were
drawn with (:func:`matched_init`); per-channel tensors (norm weights and biases, a
standardized conv's ``gain``) keep their sliced initial values, so a norm the model
initialized to zero (a zero-init residual block) stays at zero. :class:`InitScale` is what
is measured of a layer before it is sliced; each layer handler's ``reinit`` applies it.

The spread is not rescaled to the narrowed fan-in. A fresh layer of the new shape would
have a larger one (by ``sqrt(fan-in before / after)`` under PyTorch's default), which the
accuracy study measured as a loss: on its four MNIST families (every conv followed by a
norm, so the spread sets only how fast a layer learns, and the larger one slows it),
redrawing at the original spread trained more accurate models than rescaling
(``benchmarks/results/accuracy_reinit_spread/``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

__all__ = ["InitScale", "matched_init"]


@dataclass(frozen=True, eq=False)
class InitScale:
    """How a layer's weights were drawn, measured before it was narrowed: the standard
    deviation and mean of its weight and bias, its fan-in (for a re-initialization of your
    own that rescales; :func:`matched_init` does not), and (when measured by :meth:`of`)
    the initial values themselves, whose distribution a redraw follows.

    A scale made by :meth:`of` measures ``weight_std`` when it is first read (a redraw
    from the recorded values never reads it: resnet50's 54 conv weights took ~17 ms).
    :meth:`of` does not copy the values: for float32 tensors they are the module's own
    weight and bias (detached, same shape), which slicing replaces and never writes into,
    so they keep the initial values at no cost in memory; :func:`matched_init` into the
    very tensors they view (re-initializing a module in place) copies them first. Do not
    write into a measured module's tensors otherwise while its scale is in use.

    Example:
        >>> lin = torch.nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = lin.bias.fill_(0.5)
        >>> InitScale.of(lin).bias_mean  # a single bias keeps its value
        0.5
    """

    weight_std: float
    fan_in: int
    bias_mean: float = 0.0
    bias_std: float = 0.0
    weight_values: torch.Tensor | None = None
    bias_values: torch.Tensor | None = None

    @classmethod
    def of(cls, module: nn.Module) -> InitScale | None:
        """The scale of ``module.weight`` (and ``bias``), or None for a module without a
        weight of at least two dims and two entries."""
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2 or weight.numel() < 2:
            return None
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bias = getattr(module, "bias", None)
        with torch.no_grad():
            w = weight.detach().float()  # a view (see the class's docstring)
            b = bias.detach().float() if isinstance(bias, torch.Tensor) and bias.numel() else None
            scale = cls(
                math.nan,
                int(fan_in),
                bias_mean=float(b.mean()) if b is not None else 0.0,
                bias_std=float(b.std()) if b is not None and b.numel() > 1 else 0.0,
                weight_values=w,
                bias_values=b,
            )
        object.__delattr__(scale, "weight_std")  # measured when first read (__getattr__)
        return scale

    def __getattr__(self, name: str) -> float:
        """``weight_std`` of a scale made by :meth:`of`, measured from its values when first
        read (only attributes not set reach here)."""
        values = self.__dict__.get("weight_values")
        if name != "weight_std" or values is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with torch.no_grad():
            std = float(values.std())
        object.__setattr__(self, "weight_std", std)
        return std


def matched_init(module: nn.Module, generator: torch.Generator, before: InitScale) -> None:
    """Redraw a narrowed conv/linear from the model's own initial values.

    The new weight is a random window of the layer's own initial values (consecutive rows
    and columns from random offsets, chosen without looking at the scores): a sample of
    the original distribution, whatever scheme drew it (PyTorch's default uniform, Kaiming
    fan-out normal, truncated normal, ...), at its original spread, not rescaled to the
    new fan-in (see the module's docstring for why). The channels the plan kept were
    chosen by their scores; their redrawn weights owe nothing to those scores. Biases
    alike (zero biases stay zero, constant ones keep their value). Without recorded values
    (an ``InitScale`` built by hand): a normal of the recorded mean and spread. Nothing
    else of the module is touched.

    Example:
        >>> conv = torch.nn.Conv2d(64, 32, 3)
        >>> before = InitScale.of(conv)
        >>> narrow = torch.nn.Conv2d(16, 32, 3)  # a quarter of the fan-in
        >>> matched_init(narrow, torch.Generator().manual_seed(0), before)
        >>> round(float(narrow.weight.detach().std()) / before.weight_std, 1)
        1.0
    """
    weight = module.weight
    with torch.no_grad():
        values = before.weight_values
        # the spread draws only without values: reading it would measure it (InitScale)
        spread = before.weight_std if values is None or values.numel() == 0 else 0.0
        _redraw(weight, values, 0.0, spread, generator)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            _redraw(bias, before.bias_values, before.bias_mean, before.bias_std, generator)


def _redraw(
    t: torch.Tensor,
    values: torch.Tensor | None,
    mean: float,
    std: float,
    generator: torch.Generator,
) -> None:
    """Fill ``t`` from ``values``, or from a normal of ``mean`` and ``std`` when there are
    none.

    When ``t`` fits inside ``values`` (every dim at most as long: a narrowed layer), ``t``
    is a random window of them: along each dim that ``t`` is shorter in, consecutive
    positions from a random offset (:func:`_random_window`); initial values are
    independent draws, so any window chosen without looking at them is a sample of their
    distribution, and one chosen at random owes nothing to the kept channels, which the
    scores chose. Otherwise (a flat or larger ``values``) each entry is picked from the
    values at random, with replacement.
    """
    if values is None or values.numel() == 0:
        if std > 0:
            t.normal_(mean, std, generator=generator)
        else:
            t.fill_(mean)
        return
    if values.untyped_storage().data_ptr() == t.untyped_storage().data_ptr():
        values = values.clone()  # they view the tensor being redrawn (see InitScale)
    if values.dim() == t.dim() and all(a <= b for a, b in zip(t.shape, values.shape, strict=True)):
        _random_window(values, t, generator)
    else:
        picks = torch.randint(values.numel(), (t.numel(),), generator=generator)
        t.copy_(values.reshape(-1)[picks.to(values.device)].view(t.shape))


def _random_window(values: torch.Tensor, out: torch.Tensor, generator: torch.Generator) -> None:
    """Fill ``out`` with a window of ``values``: along each dim where ``out`` is shorter,
    ``out.shape[d]`` consecutive positions from an offset drawn uniformly (one ``randint``
    per such dim, in dim order); the dims ``out`` keeps whole are kept as they are (a
    conv's kernel window stays a window). One strided copy, no gather: a window of
    vgg16's classifier.0 takes ~7 ms where random rows and columns took ~75 ms.

    Example:
        >>> out = torch.empty(2, 4)
        >>> _random_window(torch.arange(12.0).view(3, 4), out, torch.Generator().manual_seed(0))
        >>> out[1] - out[0]  # consecutive whole rows of the values
        tensor([4., 4., 4., 4.])
    """
    window = []
    for n, size in zip(out.shape, values.shape, strict=True):
        start = int(torch.randint(size - n + 1, (), generator=generator)) if n < size else 0
        window.append(slice(start, start + n))
    out.copy_(values[tuple(window)])
