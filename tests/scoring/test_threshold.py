"""The exact global top-k of ``rate_layers`` against an independent reference.

``rate_layers`` finds the k-th largest score from a sample and selects it among the few
scores inside the sample's bracket, in one read of the scores. The reference here keeps
the ``k`` largest of all the scores concatenated, by ``torch.topk`` order: score first,
then ``|w|``, then position, which is the mask ``break_ties`` completes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn

import reconvene_fx.scoring.threshold as threshold
from reconvene_fx.scoring import kth_largest, prunable_weights, rate_layers
from reconvene_fx.scoring.base import kth_in_band, sample_bracket
from reconvene_fx.scoring.magnitude import LazyScores


def _net(seed: int = 0) -> torch.fx.GraphModule:
    """~300k weights: past the size below which every score is sorted."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 128, 3), nn.ReLU(),
        nn.Conv2d(128, 128, 3, groups=4), nn.Flatten(), nn.Linear(128, 512),
        nn.Linear(512, 10),
    )  # fmt: skip
    return torch.fx.symbolic_trace(net)


def _reference(
    gm: torch.fx.GraphModule, scores: dict[str, torch.Tensor], density: float
) -> dict[str, torch.Tensor]:
    """The k largest scores of all weights together; ties by larger |w|, then position."""
    weights = dict(prunable_weights(gm))
    flat_s = torch.cat([scores[n].flatten() for n in weights]).double()
    flat_w = torch.cat([w.detach().abs().flatten() for w in weights.values()]).double()
    total = flat_s.numel()
    k = total - int((1.0 - density) * total)
    # lexicographic (score desc, |w| desc, position asc): stable sorts, last key first
    order = torch.sort(flat_w, descending=True, stable=True).indices
    order = order[torch.sort(flat_s[order], descending=True, stable=True).indices]
    flat_mask = torch.zeros(total, dtype=torch.bool)
    flat_mask[order[:k]] = True
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = flat_mask[start : start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def _scores(gm: torch.fx.GraphModule, kind: str, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, w in prunable_weights(gm):
        if kind == "random":
            out[name] = torch.rand(w.shape, generator=g)
        elif kind == "tied":  # a few levels, each held by many weights
            out[name] = torch.randint(0, 7, w.shape, generator=g).float()
        else:  # "zeros": SynFlow-like, most scores exactly zero
            s = torch.rand(w.shape, generator=g)
            out[name] = torch.where(torch.rand(w.shape, generator=g) < 0.9, 0.0, s)
    return out


@pytest.mark.parametrize("kind", ["random", "tied", "zeros"])
@pytest.mark.parametrize("density", [0.03, 0.5, 0.97])
def test_the_masks_are_the_k_largest_scores_ties_by_magnitude(kind: str, density: float) -> None:
    gm = _net()
    scores = _scores(gm, kind)
    rated = rate_layers(gm, scores, density)
    expected = _reference(gm, scores, density)
    total = sum(m.numel() for m in expected.values())
    assert sum(lay.kept for lay in rated.values()) == total - int((1.0 - density) * total)
    for name, mask in expected.items():
        lay = rated[name.rpartition(".")[0]]
        assert torch.equal(lay.mask, mask), name
        assert lay.kept == int(mask.sum())  # counted, not recounted: must agree


@pytest.mark.parametrize("kind", ["random", "tied", "zeros"])
@pytest.mark.parametrize("density", [0.03, 0.5])
def test_without_masks_the_counts_and_masses_are_the_same(kind: str, density: float) -> None:
    """keep_masks=False (compile's default outside composite plans) writes no mask and
    rates every layer as the masks would have."""
    gm = _net()
    scores = _scores(gm, kind)
    with_masks = rate_layers(gm, scores, density)
    counted = rate_layers(gm, scores, density, keep_masks=False)
    for name, lay in with_masks.items():
        other = counted[name]
        assert other.mask is None and lay.mask is not None
        assert (other.kept, other.total, other.density) == (lay.kept, lay.total, lay.density)
        assert other.selected == lay.selected, name
        assert torch.equal(other.out_mass, lay.out_mass) and torch.equal(other.in_mass, lay.in_mass)


def test_a_missed_bracket_without_masks_counts_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    gm = _net()
    scores = _scores(gm, "tied")
    expected = _reference(gm, scores, 0.5)
    monkeypatch.setattr(threshold, "sample_bracket", lambda parts, sizes, k: (5.5, 5.9))
    counted = rate_layers(gm, scores, 0.5, keep_masks=False)
    for name, mask in expected.items():
        assert counted[name.rpartition(".")[0]].kept == int(mask.sum()), name


@pytest.mark.parametrize("size", [1000, 1 << 17, (1 << 17) + 3])
def test_the_band_read_eight_flags_at_a_time_finds_every_member(size: int) -> None:
    """Large pieces (a multiple of 8) take the packed path, the others plain ``nonzero``:
    both give every position inside the bracket, in order, with its score."""
    g = torch.Generator().manual_seed(size)
    flat = torch.rand(size, generator=g)
    lo, hi = 0.4, 0.43
    at, values = threshold._band(flat, lo, flat > hi, threshold._Scratch(size))
    expected = ((flat > lo) & (flat <= hi)).nonzero().view(-1)
    assert torch.equal(at, expected) and torch.equal(values, flat[expected])
    assert expected.numel() > 0


def test_lazy_scores_read_in_row_blocks_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Magnitude's scores, in blocks of rows: the same masks as the reference, and every
    block computed once (the old engine read each block twice, and four times for the
    threshold)."""
    monkeypatch.setattr(threshold, "_CHUNK", 1 << 12)  # the 512x128 linear: 16 blocks
    gm = _net()
    weights = dict(prunable_weights(gm))
    reads: list[tuple[str, int, int]] = []

    class Counted(LazyScores):
        def __getitem__(self, name: str) -> torch.Tensor:
            reads.append((name, 0, -1))
            return super().__getitem__(name)

        def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
            reads.append((name, start, stop))
            return super().rows(name, start, stop)

        def rows_into(self, name: str, start: int, stop: int, buffer: torch.Tensor) -> torch.Tensor:
            reads.append((name, start, stop))
            buffers.add(buffer.data_ptr())
            return super().rows_into(name, start, stop, buffer)

    buffers: set[int] = set()
    scores = Counted(weights, torch.abs, out=True)
    rated = rate_layers(gm, scores, 0.4)
    expected = _reference(gm, {n: w.detach().abs() for n, w in weights.items()}, 0.4)
    for name, mask in expected.items():
        assert torch.equal(rated[name.rpartition(".")[0]].mask, mask), name
    assert len(reads) == len(set(reads))  # nothing read twice
    assert sum(1 for r in reads if r[0] == "6.weight") == 16
    assert len(buffers) == 1  # every block computed into the one reused buffer


def test_a_missed_bracket_falls_back_to_the_exact_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bracket that misses the k-th largest (as a sample can) is caught by the count, and
    the answer is still exact."""
    gm = _net()
    scores = _scores(gm, "random")
    monkeypatch.setattr(threshold, "sample_bracket", lambda parts, sizes, k: (0.98, 0.99))
    rated = rate_layers(gm, scores, 0.5)
    for name, mask in _reference(gm, scores, 0.5).items():
        assert torch.equal(rated[name.rpartition(".")[0]].mask, mask), name


def _parts(values: torch.Tensor, cuts: list[int]) -> Iterator[torch.Tensor]:
    start = 0
    for stop in [*cuts, values.numel()]:
        yield values[start:stop]
        start = stop


@pytest.mark.parametrize("ties", [False, True])
def test_kth_largest_of_parts_equals_topk(ties: bool) -> None:
    g = torch.Generator().manual_seed(3)
    n = 200_000
    values = (
        torch.randint(0, 40, (n,), generator=g).float() if ties else torch.randn(n, generator=g)
    )
    parts = list(_parts(values, [1, 70_000, 70_001, 150_000]))
    for k in (1, 17, n // 2, n - 5, n):
        assert kth_largest(parts, k) == float(torch.topk(values, k).values[-1])


def test_the_bracket_holds_the_kth_largest_and_the_count_says_when_not() -> None:
    g = torch.Generator().manual_seed(4)
    values = torch.randn(500_000, generator=g)
    for k in (10, 5000, 250_000, 495_000):
        lo, hi = sample_bracket([values], [values.numel()], k)
        exact = float(torch.topk(values, k).values[-1])
        above = int((values > hi).sum())
        band = values[(values > lo) & (values <= hi)]
        if k == 10:  # beyond the sample's reach: the 10 largest lie above its maximum
            assert exact > hi and kth_in_band(band, above, k) is None
            continue
        assert lo < exact <= hi
        assert band.numel() < 0.05 * values.numel()  # a few percent of the values
        assert kth_in_band(band, above, k) == exact
        assert kth_in_band(band, above, above) is None  # the count shows it above


@pytest.mark.parametrize("keep_masks", [True, False])
def test_channels_last_weights_are_rated_as_contiguous_ones(keep_masks: bool) -> None:
    """Weights held channels-last (another memory order) give the masks and counts of the
    same weights held contiguous, ties broken by magnitude alike."""
    gm = _net()
    scores = _scores(gm, "tied")
    expected = rate_layers(gm, scores, 0.5, keep_masks=keep_masks)
    gm.to(memory_format=torch.channels_last)
    assert not gm.get_submodule("2").weight.is_contiguous()
    lazy = LazyScores(dict(prunable_weights(gm)), torch.abs, out=True)
    for got_scores in (scores, lazy):
        got = rate_layers(gm, got_scores, 0.5, keep_masks=keep_masks)
        plain = {n: got_scores[n].contiguous() for n, _ in prunable_weights(gm)}
        want = rate_layers(gm, plain, 0.5)
        for name, lay in got.items():
            assert lay.kept == want[name].kept, name
            if keep_masks:
                assert torch.equal(lay.mask, want[name].mask), name
    for name, lay in rate_layers(gm, scores, 0.5, keep_masks=keep_masks).items():
        assert lay.kept == expected[name].kept, name
