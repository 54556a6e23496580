"""``data=``: SNIP and GraSP score on labelled batches; random labels warn."""

from __future__ import annotations

import warnings

import pytest
import torch
from models import build

import reconvene_fx as rfx
from reconvene_fx.scoring import run_scorer

G = torch.Generator().manual_seed(0)
X1, X2 = torch.randn(4, 3, 16, 16, generator=G), torch.randn(4, 3, 16, 16, generator=G)
Y1, Y2 = torch.randint(10, (4,), generator=G), torch.randint(10, (4,), generator=G)


@pytest.fixture
def gm() -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(build("residual"))


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_one_batch_scores_as_its_targets(gm, method: str) -> None:
    given = run_scorer(method, gm, (X1,), Y1)
    from_data = run_scorer(method, gm, (X2,), None, data=(X1, Y1))  # example inputs unused
    assert given.keys() == from_data.keys()
    assert all(torch.allclose(given[k], from_data[k]) for k in given)


def test_batches_are_summed(gm) -> None:
    one, two = (
        run_scorer("snip", gm, (), Y1, data=(X1, Y1)),
        run_scorer("snip", gm, (), None, data=[(X2, Y2)]),
    )
    both = run_scorer("snip", gm, (), None, data=iter([(X1, Y1), [(X2,), Y2]]))
    assert all(torch.allclose(both[k], one[k] + two[k]) for k in both)


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (X1, TypeError, r"data must be a batch \(inputs, targets\)"),
        ([(X1, Y1), (X1,)], TypeError, "an item of type tuple"),
        ([], ValueError, "data holds no batch"),
        ((X1, [1, 2, 3, 4]), TypeError, "data must be a batch"),
    ],
)
def test_bad_data_is_refused_clearly(gm, data, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        run_scorer("snip", gm, (X1,), None, data=data)


def test_compile_uses_data_and_refuses_it_beside_targets() -> None:
    model = build("residual")
    a = rfx.compile(model, 0.4, (X2,), method="snip", data=(X1, Y1), reinit=False)
    b = rfx.compile(model, 0.4, (X1,), method="snip", targets=Y1, reinit=False)
    ra, rb = rfx.report(a), rfx.report(b)
    assert all(torch.equal(ra.layers[n].out_idx, rb.layers[n].out_idx) for n in ra.layers)
    with pytest.raises(ValueError, match="not both"):
        rfx.compile(model, 0.4, (X1,), method="snip", data=(X1, Y1), targets=Y1)


def test_random_labels_warn_and_real_ones_do_not(gm) -> None:
    with pytest.warns(rfx.RandomTargetsWarning, match="random labels.*data=\\(inputs, targets\\)"):
        run_scorer("snip", gm, (X1,), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", rfx.RandomTargetsWarning)
        run_scorer("snip", gm, (X1,), Y1)
        run_scorer("grasp", gm, (), None, data=(X1, Y1))
        run_scorer("magnitude", gm, (X1,), None)  # needs no labels


def test_analyze_takes_data_too() -> None:
    model = build("residual")
    from_data = rfx.analyze(model, 0.3, (X2,), method="snip", data=[(X1, Y1)])
    from_targets = rfx.analyze(model, 0.3, (X1,), method="snip", targets=Y1)
    assert all(
        torch.equal(from_data.layers[n].mask, from_targets.layers[n].mask)
        for n in from_targets.layers
    )


class _Counting:
    """20 labelled batches of a DataLoader; counts the batches drawn from it."""

    def __init__(self, n: int = 20, *, sized: bool = True) -> None:
        dataset = torch.utils.data.TensorDataset(
            torch.randn(2 * n, 3, 16, 16, generator=torch.Generator().manual_seed(1)),
            torch.randint(10, (2 * n,), generator=torch.Generator().manual_seed(2)),
        )
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=2)
        self.sized = sized
        self.drawn = 0

    def __iter__(self):
        for batch in self.loader:
            self.drawn += 1
            yield batch

    def __len__(self) -> int:
        if not self.sized:
            raise TypeError("no len()")
        return len(self.loader)


def test_max_batches_limits_what_is_read_and_none_reads_all(gm) -> None:
    limited, everything = _Counting(), _Counting()
    assert len(everything.loader) == 20
    first3 = run_scorer("snip", gm, (), None, data=list(limited.loader)[:3], max_batches=None)
    stats: dict = {}
    three = run_scorer("snip", gm, (), None, data=limited, max_batches=3, stats=stats)
    assert limited.drawn == 3 and stats == {"batches_read": 3}
    assert all(torch.allclose(three[k], first3[k]) for k in three)
    run_scorer("snip", gm, (), None, data=everything, max_batches=None, stats=stats)
    assert everything.drawn == 20 and stats == {"batches_read": 20}
    default = _Counting()
    run_scorer("snip", gm, (), None, data=default)
    assert default.drawn == 8  # the default limit


def test_compile_reports_and_logs_the_batches_read(caplog, tmp_path) -> None:
    data = _Counting()
    with caplog.at_level("INFO", logger="reconvene_fx"):
        gm = rfx.compile(build("residual"), 0.4, (X1,), method="snip", data=data, max_batches=3)
    assert data.drawn == 3
    assert "snip: scored 3 of 20 batches (max_batches=3)" in caplog.text
    rep = rfx.report(gm)
    assert rep.scoring_batches == 3 and rep.to_dict()["scoring_batches"] == 3
    assert "scored by snip on 3 batches of data" in rep.format_table()
    assert rfx.report(rfx.load(rfx.save(gm, tmp_path / "m.pt"))).scoring_batches == 3
    plain = rfx.compile(build("residual"), 0.4, (X1,), method="snip", targets=Y1)
    assert rfx.report(plain).scoring_batches is None
    assert "batches of data" not in rfx.report(plain).format_table()


def test_a_file_saved_before_scoring_batches_still_loads(tmp_path) -> None:
    gm = rfx.compile(build("residual"), 0.4, (X1,), method="snip", data=(X1, Y1))
    assert rfx.report(gm).scoring_batches == 1
    path = rfx.save(gm, tmp_path / "m.pt")
    state = torch.load(path, weights_only=True)
    del state["report"]["scoring_batches"]
    torch.save(state, path)
    assert rfx.report(rfx.load(path)).scoring_batches is None


def test_analyze_limits_batches_and_says_when_data_has_no_length(caplog) -> None:
    data = _Counting(sized=False)
    with caplog.at_level("INFO", logger="reconvene_fx"):
        table = rfx.analyze(build("residual"), 0.3, (X1,), method="grasp", data=data,
                            max_batches=2)  # fmt: skip
    assert data.drawn == 2 and table.batches_read == 2
    assert "grasp: stopped after 2 batches (max_batches=2)" in caplog.text
    assert "method grasp on 2 batches of data" in table.format_table()
    caplog.clear()
    with caplog.at_level("INFO", logger="reconvene_fx"):
        rfx.analyze(build("residual"), 0.3, (X1,), method="snip", data=[(X1, Y1), (X2, Y2)])
    assert "snip: scored all 2 batches of data" in caplog.text


def test_progress_bar_counts_the_batches(gm, capsys) -> None:
    run_scorer("snip", gm, (), None, data=_Counting(), max_batches=4, progress=True)
    err = capsys.readouterr().err
    assert "[reconvene_fx] snip (batches)" in err and "4/4" in err


@pytest.mark.parametrize(
    ("bad", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_bad_max_batches_is_refused(bad, error: type) -> None:
    with pytest.raises(error, match="max_batches must be"):
        rfx.CompileConfig(max_batches=bad)
    with pytest.raises(error, match="max_batches must be"):
        rfx.compile(build("residual"), 0.4, (X1,), method="snip", data=(X1, Y1), max_batches=bad)
