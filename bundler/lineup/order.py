"""The order of roots within a tier: a root whose rows another root references goes first.

An account moved from one customer to another leaves the first customer's CPE and
extensions pointing at it: the first customer needs the second one's rows. The lineup reads
the owned rows of every selected root once, before any is marked (one closure for all of
them, :class:`~bundler.sql.Closure`), tells which root each row belongs to (through the
owner references), and lists the references from one root's rows to another's
(:func:`cross_references`; usage rows too, unless the run carries none). Each root gets a
**level** (:func:`placements`): 0 when it needs no other root of its tier, else one more
than the highest level it needs. Roots that need each other in a cycle form one **unit**
and share a level: one worker claims a unit whole and migrates its roots back to back, so
the last load sets the references the first ones had to leave open
(:mod:`bundler.load.crossroot`). A claim waits until the lower levels of its tier are done
(:mod:`bundler.lineup.queue`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bundler.graph import Graph, Scope
from bundler.sql import Closure, chunks, sorted_values, table_clause

#: a root of the lineup: (kind, source pk as text)
RootId = tuple[str, str]
#: a row of the closure: (table, pk tuple)
_Row = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Placement:
    """Where a root goes within its tier: ``level`` (lower first), and the ``unit`` (an index
    into the roots given to :func:`placements`; None: alone) of the roots it must go with."""

    level: int = 0
    unit: int | None = None


class _Owners:
    """Which selected root each row of the closure belongs to."""

    def __init__(self, closure: Closure, seeds: dict[_Row, RootId]) -> None:
        self.closure = closure
        self.graph = closure.graph
        self.memo: dict[_Row, RootId | None] = dict(seeds)
        self.index: dict[tuple[str, str], dict[Any, tuple[Any, ...]]] = {}

    def row_by(self, table: str, column: str, value: Any) -> tuple[Any, ...] | None:
        """The pk of the closure's row of ``table`` whose ``column`` is ``value``."""
        if (table, column) not in self.index:
            self.index[(table, column)] = {
                row[column]: pk for pk, row in self.closure.rows.get(table, {}).items() if column in row
            }
        return self.index[(table, column)].get(value)

    def root_by(self, table: str, column: str, value: Any) -> RootId | None:
        pk = self.row_by(table, column, value)
        return None if pk is None else self.root((table, pk))

    def root(self, key: _Row) -> RootId | None:
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = None  # an owner cycle (a row that owns itself through others): no root
        table, pk = key
        row = self.closure.rows[table][pk]
        for ref in self.graph.table(table).owner_refs:
            value = row.get(ref.column)
            if value is not None:
                found = self.root_by(ref.table, ref.target_column, value)
                if found is not None:
                    self.memo[key] = found
                    break
        return self.memo[key]


def cross_references(
    connection: sa.Connection, graph: Graph, roots: Sequence[tuple[str, Any, str]], *, usage: bool = True
) -> dict[RootId, set[RootId]]:
    """For each of ``roots`` ((kind, pk, key) as the lineup selects them), the other roots of
    the selection whose owned rows its rows reference (its usage rows too, with ``usage``)."""
    closure = Closure(connection, graph, follow_shared=False)
    seeds: dict[_Row, RootId] = {}
    by_kind: dict[str, list[Any]] = defaultdict(list)
    for kind, pk, _ in roots:
        by_kind[kind].append(pk)
    for kind, pks in by_kind.items():
        spec = graph.table(graph.root(kind).table)
        rows = closure.fetch(spec, spec.pk[0], pks)
        for row in rows:
            seeds[(spec.name, tuple(row[c] for c in spec.pk))] = (kind, str(row[spec.pk[0]]))
        closure.add(spec.name, rows)
    closure.run()
    owners = _Owners(closure, seeds)
    needs: dict[RootId, set[RootId]] = defaultdict(set)

    def note(of: RootId | None, other: RootId | None) -> None:
        if of is not None and other is not None and other != of:
            needs[of].add(other)

    for table, included in closure.rows.items():
        refs = [r for r in graph.table(table).references if not r.owner]
        for pk, row in included.items():
            for ref in refs:
                value = row.get(ref.column)
                if value is not None:
                    note(owners.root((table, pk)), owners.root_by(ref.table, ref.target_column, value))
    if usage:
        for table, by_owner in closure.usage_owners.items():
            _usage_references(connection, graph, table, by_owner, owners, note)
    return dict(needs)


def _usage_references(
    connection: sa.Connection, graph: Graph, table: str, by_owner: Any, owners: _Owners, note: Any
) -> None:
    """References from the usage rows of ``table`` (by owner reference and owner values) to
    owned rows: one DISTINCT read per reference and owner reference."""
    spec = graph.table(table)
    t = table_clause(spec)
    refs = [r for r in spec.references if not r.owner and graph.table(r.table).scope is Scope.OWNED]
    for owner_ref, values in by_owner.items():
        for ref in refs:
            for part in chunks(sorted_values(values)):
                stmt = (
                    sa.select(t.c[owner_ref.column], t.c[ref.column])
                    .where(t.c[owner_ref.column].in_(part), t.c[ref.column].is_not(None))
                    .distinct()
                )
                for owner, value in connection.execute(stmt):
                    note(
                        owners.root_by(owner_ref.table, owner_ref.target_column, owner),
                        owners.root_by(ref.table, ref.target_column, value),
                    )


def placements(
    roots: Sequence[RootId], needs: dict[RootId, set[RootId]], tiers: dict[str, int] | None = None
) -> dict[RootId, Placement]:
    """The level and unit of each root (see the module); only needs within a tier count
    (``tiers``: kind → tier; the tiers order kinds already)."""
    tiers = tiers or {}
    known = set(roots)

    def deps(root: RootId) -> list[RootId]:
        return [
            o
            for o in sorted(needs.get(root, ()))
            if o in known and tiers.get(o[0], 0) == tiers.get(root[0], 0)
        ]

    components = _strongly_connected(list(roots), deps)
    member_of = {root: i for i, comp in enumerate(components) for root in comp}
    levels: dict[int, int] = {}
    for i, comp in enumerate(components):  # dependencies first (Tarjan's order)
        below = {member_of[d] for r in comp for d in deps(r)} - {i}
        levels[i] = 1 + max(levels[j] for j in below) if below else 0
    place: dict[RootId, Placement] = {}
    first = {root: n for n, root in enumerate(roots)}
    for i, comp in enumerate(components):
        unit = min(first[r] for r in comp) if len(comp) > 1 else None
        for root in comp:
            place[root] = Placement(levels[i], unit)
    return place


def _strongly_connected(nodes: list[RootId], deps: Any) -> list[list[RootId]]:
    """Tarjan's strongly connected components, without recursion; each component comes after
    the components it depends on."""
    index: dict[RootId, int] = {}
    low: dict[RootId, int] = {}
    stack: list[RootId] = []
    on_stack: set[RootId] = set()
    found: list[list[RootId]] = []
    place = {node: n for n, node in enumerate(nodes)}
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[RootId, list[RootId]]] = []
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work.append((start, deps(start)))
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, deps(nxt)))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                found.append(sorted(comp, key=place.__getitem__))
    return found


def root_placements(
    connection: sa.Connection,
    graph: Graph,
    roots: Sequence[tuple[str, Any, str]],
    tiers: dict[str, int],
    *,
    usage: bool = True,
) -> dict[RootId, Placement]:
    """The placement of each of ``roots`` in the lineup (:func:`cross_references`, then
    :func:`placements`)."""
    ids = [(kind, str(pk)) for kind, pk, _ in roots]
    if len(ids) < 2:
        return {root: Placement() for root in ids}
    return placements(ids, cross_references(connection, graph, roots, usage=usage), tiers)


__all__ = ["Placement", "RootId", "cross_references", "placements", "root_placements"]
