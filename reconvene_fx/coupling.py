"""Channel spaces, the couplings between their indices, and their resolution into atoms.

A *space* is the channel dimension of one or more tensor values (pass-through ops share the
space of their input). Each channel of each space has a global integer id. Rules *tie* ids
(those channels must be pruned together) and *pin* ids (those channels may never be pruned),
saying why and which node pins them, so that a refusal can name them.
:meth:`ChannelGraph.resolve` turns the ties into *atoms* (sets of ids pruned as one) with a
vectorised union-find, and the spaces into *groups* (connected components of the coarse
space graph, computed with networkx).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import networkx as nx
import torch

__all__ = ["Atoms", "ChannelGraph"]


@dataclass(frozen=True, eq=False)
class Atoms:
    """The resolved coupling.

    Attributes:
        atom_of: int64 ``[num_ids]``, atom id of each channel id, in ``range(num_atoms)``.
        pinned: bool ``[num_atoms]``.
        group_of_space: int64 ``[num_spaces]``.
        bases: int64 ``[num_spaces + 1]``, first id of each space (and the total at the end).
        pin_cause: int64 ``[num_atoms]``, index into ``causes`` of the first pin (in the
            order the pins were made) that reached the atom; -1 for atoms not pinned.
        causes: ``(reason, node)`` of each distinct pin, as given to
            :meth:`ChannelGraph.pin`.
    """

    atom_of: torch.Tensor
    pinned: torch.Tensor
    group_of_space: torch.Tensor
    bases: torch.Tensor
    pin_cause: torch.Tensor | None = None
    causes: tuple[tuple[str, Hashable], ...] = ()

    @property
    def num_atoms(self) -> int:
        return int(self.pinned.numel())

    def space_ids(self, space: int) -> slice:
        return slice(int(self.bases[space]), int(self.bases[space + 1]))


class ChannelGraph:
    """Collects channel spaces, ties and pins while rules run over a graph.

    Example:
        >>> g = ChannelGraph()
        >>> a, b = g.new_space(4), g.new_space(4)
        >>> g.tie(g.ids(a), g.ids(b))
        >>> g.pin(g.ids(b)[:1], reason="reaches the output", node="out")
        >>> atoms = g.resolve()
        >>> atoms.num_atoms, int(atoms.pinned.sum())
        (4, 1)
        >>> atoms.causes[int(atoms.pin_cause[atoms.atom_of[g.ids(a)[0]]])]
        ('reaches the output', 'out')
    """

    def __init__(self) -> None:
        self._sizes: list[int] = []
        self._total = 0
        self._bases: list[int] = []
        self._ties: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._pins: list[torch.Tensor] = []
        self._pin_causes: list[int] = []  # per entry of _pins, its index into _causes
        self._causes: dict[tuple[str, Hashable], int] = {}
        # (ids a, ids b, reason, node): pinned at resolve unless a and b keep equal counts
        self._same_counts: list[tuple[torch.Tensor, torch.Tensor, str, Hashable]] = []

    @property
    def num_spaces(self) -> int:
        return len(self._sizes)

    def size(self, space: int) -> int:
        return self._sizes[space]

    def new_space(self, size: int) -> int:
        """Allocate ``size`` fresh channel ids as a new space and return its id."""
        self._bases.append(self._total)
        self._sizes.append(int(size))
        self._total += int(size)
        return len(self._sizes) - 1

    def ids(self, space: int) -> torch.Tensor:
        """Global ids of the channels of ``space``, in channel order."""
        base = self._bases[space]
        return torch.arange(base, base + self._sizes[space])

    def space_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The space each global id belongs to."""
        bases = torch.tensor(self._bases)
        return torch.searchsorted(bases, ids.contiguous(), right=True) - 1

    def tie(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Require ids ``a[i]`` and ``b[i]`` to be pruned together (shapes broadcast)."""
        a, b = torch.broadcast_tensors(a.reshape(-1) if a.dim() else a, b.reshape(-1))
        if a.numel() == 0:
            return
        self._ties.append((a.reshape(-1).long(), b.reshape(-1).long()))

    def pin(self, ids: torch.Tensor, reason: str = "", node: Hashable = None) -> None:
        """Forbid pruning the given ids (and everything tied to them).

        ``reason`` says why and ``node`` (ChannelGroupPass gives the ``torch.fx.Node``)
        which op pins them; the first pin that reaches an atom is the one
        :attr:`Atoms.pin_cause` keeps.
        """
        if ids.numel():
            self._pins.append(ids.reshape(-1).long())
            self._pin_causes.append(self._causes.setdefault((reason, node), len(self._causes)))

    def pin_unless_same_count(
        self, a: torch.Tensor, b: torch.Tensor, reason: str = "", node: Hashable = None
    ) -> None:
        """Pin ids ``a`` and ``b`` unless the ties make every plan keep as many channels of
        ``a`` as of ``b`` (each atom holds as many of ``a`` as of ``b``), which is checked
        once all ties are known (:meth:`resolve`).

        A size read off one tensor that shapes another (``q.view(n, -1, h, k.shape[-1] // h)``)
        stays right after pruning exactly when their kept counts stay equal.

        Example:
            >>> g = ChannelGraph()
            >>> a, b, c, d = (g.new_space(4) for _ in range(4))
            >>> g.tie(g.ids(a), g.ids(b))
            >>> g.pin_unless_same_count(g.ids(a), g.ids(b), "a's size shapes b")
            >>> g.pin_unless_same_count(g.ids(c), g.ids(d), "c's size shapes d")
            >>> atoms = g.resolve()
            >>> [bool(atoms.pinned[atoms.atom_of[g.ids(s)]].all()) for s in (a, b, c, d)]
            [False, False, True, True]
        """
        self._same_counts.append((a.reshape(-1).long(), b.reshape(-1).long(), reason, node))

    def _pin_unequal_counts(self, atom_of: torch.Tensor, num_atoms: int) -> None:
        for a, b, reason, node in self._same_counts:
            count_a = torch.bincount(atom_of[torch.unique(a)], minlength=num_atoms)
            count_b = torch.bincount(atom_of[torch.unique(b)], minlength=num_atoms)
            if not torch.equal(count_a, count_b):
                self.pin(a, reason, node)
                self.pin(b, reason, node)
        self._same_counts = []

    def resolve(self) -> Atoms:
        """Union-find over all ties; returns the atoms, their pins and the groups."""
        n = self._total
        parent = torch.arange(n)
        if self._ties:
            u = torch.cat([a for a, _ in self._ties])
            v = torch.cat([b for _, b in self._ties])
            parent = _connected_labels(parent, u, v)
        roots, atom_of = torch.unique(parent, return_inverse=True)
        num_atoms = int(roots.numel())
        self._pin_unequal_counts(atom_of, num_atoms)
        # the earliest pin reaching each atom: pins are numbered in the order they were made
        order = torch.full((num_atoms,), len(self._pins), dtype=torch.long)
        if self._pins:
            made = torch.repeat_interleave(
                torch.arange(len(self._pins)), torch.tensor([p.numel() for p in self._pins])
            )
            order.scatter_reduce_(0, atom_of[torch.cat(self._pins)], made, "amin")
        pinned = order < len(self._pins)
        pin_cause = torch.full((num_atoms,), -1, dtype=torch.long)
        pin_cause[pinned] = torch.tensor(self._pin_causes, dtype=torch.long)[order[pinned]]

        space_of_id = torch.repeat_interleave(
            torch.arange(self.num_spaces), torch.tensor(self._sizes, dtype=torch.long)
        )
        group_of_space = self._groups(atom_of, space_of_id)
        bases = torch.tensor([*self._bases, n], dtype=torch.long)
        causes = tuple(self._causes)  # dicts keep insertion order: index i is cause i
        return Atoms(atom_of, pinned, group_of_space, bases, pin_cause, causes)

    def _groups(self, atom_of: torch.Tensor, space_of_id: torch.Tensor) -> torch.Tensor:
        """Connected components of the coarse graph whose nodes are spaces and whose edges
        join spaces that share an atom."""
        spaces = self.num_spaces
        pairs = torch.unique(atom_of * spaces + space_of_id)  # sorted by atom
        atom, space = pairs // spaces, pairs % spaces
        same_atom = atom[1:] == atom[:-1]
        # distinct edges as one int64 key each (a 1-D unique: ~30x faster than dim=0)
        keys = torch.unique(space[:-1][same_atom] * spaces + space[1:][same_atom])
        coarse = nx.Graph()
        coarse.add_nodes_from(range(spaces))
        coarse.add_edges_from(torch.stack([keys // spaces, keys % spaces], 1).tolist())
        group_of_space = torch.empty(spaces, dtype=torch.long)
        for gid, members in enumerate(sorted(nx.connected_components(coarse), key=min)):
            group_of_space[list(members)] = gid
        return group_of_space


def _connected_labels(parent: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Label every id with the smallest id of its connected component (hook + jump)."""
    while True:
        pu, pv = parent[u], parent[v]
        if torch.equal(pu, pv):
            return parent
        low = torch.minimum(pu, pv)
        parent = parent.scatter_reduce(0, pu, low, "amin")
        parent = parent.scatter_reduce(0, pv, low, "amin")
        while True:
            jumped = parent[parent]
            if torch.equal(jumped, parent):
                break
            parent = jumped
