"""The union-find over channel ids agrees with networkx on random tie sets."""

from __future__ import annotations

import itertools

import networkx as nx
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reconvene_fx.coupling import ChannelGraph


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    data=st.data(),
)
def test_atoms_are_the_connected_components_of_the_ties(sizes: list[int], data) -> None:
    g = ChannelGraph()
    spaces = [g.new_space(s) for s in sizes]
    total = sum(sizes)
    pairs = data.draw(st.lists(st.tuples(st.integers(0, total - 1), st.integers(0, total - 1)),
                               max_size=30))  # fmt: skip
    pins = data.draw(st.lists(st.integers(0, total - 1), max_size=3))
    for a, b in pairs:
        g.tie(torch.tensor([a]), torch.tensor([b]))
    g.pin(torch.tensor(pins, dtype=torch.long))
    atoms = g.resolve()

    ref = nx.Graph()
    ref.add_nodes_from(range(total))
    ref.add_edges_from(pairs)
    components = list(nx.connected_components(ref))
    assert atoms.num_atoms == len(components)
    for comp in components:
        ids = torch.tensor(sorted(comp))
        assert atoms.atom_of[ids].unique().numel() == 1
        assert bool(atoms.pinned[atoms.atom_of[ids[0]]]) == any(p in comp for p in pins)
    # spaces joined by a tie share a group
    space_of = torch.repeat_interleave(torch.arange(len(spaces)), torch.tensor(sizes))
    for a, b in pairs:
        assert atoms.group_of_space[space_of[a]] == atoms.group_of_space[space_of[b]]


def test_long_chains_resolve_to_one_atom() -> None:
    g = ChannelGraph()
    spaces = [g.new_space(4) for _ in range(500)]
    for a, b in itertools.pairwise(spaces):
        g.tie(g.ids(b), g.ids(a))
    atoms = g.resolve()
    assert atoms.num_atoms == 4
    assert int(atoms.group_of_space.max()) == 0


def test_each_pinned_atom_keeps_the_first_pin_that_reached_it() -> None:
    g = ChannelGraph()
    a, b, c = g.new_space(3), g.new_space(3), g.new_space(2)
    g.tie(g.ids(a), g.ids(b))
    g.pin(g.ids(b)[:2], reason="no channel rule for torch.cumsum", node="cumsum")
    g.pin(g.ids(a), reason="they reach the model's output", node="output")
    g.pin(g.ids(b)[:1], reason="no channel rule for torch.cumsum", node="cumsum")  # same cause
    atoms = g.resolve()
    assert atoms.causes == (
        ("no channel rule for torch.cumsum", "cumsum"),
        ("they reach the model's output", "output"),
    )
    # channels 0 and 1 were pinned first through b, channel 2 only by the output
    assert atoms.pin_cause[atoms.atom_of[g.ids(a)]].tolist() == [0, 0, 1]
    assert atoms.pin_cause[atoms.atom_of[g.ids(c)]].tolist() == [-1, -1]
    assert torch.equal(atoms.pinned, atoms.pin_cause >= 0)
