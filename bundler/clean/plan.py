"""The set a clean removes, common to both sides: the scopes' rows merged, what rows outside
the set hold kept, and what is left counted.

The keys of owned and shared rows are held in memory; usage rows never are: they are
selected by SQL, as disjoint parts (owner values, and the loads or exports that cover them).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bundler.clean.model import PK
from bundler.clean.side import Side
from bundler.graph import Reference, Scope
from bundler.sql import chunks, sorted_values, table_clause


@dataclass(frozen=True)
class UsagePart:
    """Usage rows of ``table`` whose ``ref`` (an owner reference) is one of ``values``, transferred
    by one of ``bundles``. The parts of a table cover disjoint rows."""

    table: str
    ref: Reference
    values: frozenset[Any]
    bundles: frozenset[str]


@dataclass(frozen=True)
class Held:
    """Kept because ``count`` rows outside the set have ``table.column`` = ``value``."""

    table: str
    column: str
    value: Any
    count: int


@dataclass(frozen=True)
class Belongs:
    """Kept because it belongs to a kept row."""

    table: str
    pk: PK


class CleanSet:
    """The rows of the named scopes that may go (candidates), and those of them kept."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.conn = side.conn
        self.graph = side.graph
        self.rows: dict[str, dict[PK, dict[str, Any]]] = defaultdict(dict)
        self.cand: dict[str, set[PK]] = defaultdict(set)
        self.kept: dict[str, dict[PK, list[Held | Belongs]]] = defaultdict(dict)
        self.parts: dict[str, list[UsagePart]] = defaultdict(list)
        self._totals: dict[tuple[str, str], dict[Any, int]] = defaultdict(dict)
        self._index: dict[tuple[str, str], dict[Any, list[PK]]] = {}

    def merge(self) -> None:
        """The rows of every scope; the candidates; the usage parts."""
        for scope in self.side.scopes:
            for table, rows in scope.closure.rows.items():
                for pk, row in rows.items():
                    self.rows[table].setdefault(pk, row)
                    if scope.is_candidate(table, pk):
                        self.cand[table].add(pk)
        self._build_parts()

    def _build_parts(self) -> None:
        for spec in self.graph.in_scope(Scope.USAGE):
            for ref in spec.owner_refs:
                owners: dict[Any, set[str]] = defaultdict(set)
                for scope in self.side.scopes:
                    for value in scope.closure.usage_owners.get(spec.name, {}).get(ref, ()):
                        owners[value] |= scope.bundles
                groups: dict[frozenset[str], set[Any]] = defaultdict(set)
                for value, covering in owners.items():
                    groups[frozenset(covering)].add(value)
                for group, values in sorted(groups.items(), key=lambda g: sorted(g[0])):
                    self.parts[spec.name].append(UsagePart(spec.name, ref, frozenset(values), group))

    def inside(self, table: str) -> list[PK]:
        """The candidates of ``table`` that are not kept."""
        kept = self.kept.get(table, {})
        return [pk for pk in self.cand.get(table, ()) if pk not in kept]

    # -- usage rows: selected by SQL, never held in memory -----------------------------------

    def _kept_values(self, table: str, column: str) -> set[Any]:
        rows = self.rows.get(table, {})
        return {rows[pk][column] for pk in self.kept.get(table, {}) if pk in rows}

    def _usage_slices(
        self, table: str, only: dict[str, set[Any]] | None = None
    ) -> Iterator[tuple[sa.ColumnElement[bool], UsagePart]]:
        """Disjoint owner clauses (one chunk of owner values each) over the usage rows of ``table``."""
        t = table_clause(self.graph.tables[table])
        for part in self.parts.get(table, []):
            values = set(part.values) - self._kept_values(part.ref.table, part.ref.target_column)
            if only is not None and part.ref.column in only:
                values &= only[part.ref.column]
            for chunk in chunks(sorted_values(values)):
                yield t.c[part.ref.column].in_(chunk), part

    def usage_clauses(
        self, table: str, only: dict[str, set[Any]] | None = None
    ) -> Iterator[sa.ColumnElement[bool]]:
        """Disjoint clauses that together select the usage rows of ``table`` in the set.

        A usage row that belongs to another usage row (an invoice line of its invoice) is in
        the set when its parent is."""
        spec = self.graph.tables[table]
        parent = self.graph.usage_parent(spec)
        if parent is not None:
            of_parent = table_clause(self.graph.tables[parent.table]).c[parent.target_column]
            column = table_clause(spec).c[parent.column]
            for clause in self.usage_clauses(parent.table):
                yield column.in_(sa.select(of_parent).where(clause))
            return
        for owners, part in self._usage_slices(table, only):
            yield sa.and_(owners, self.side.transferred(spec, part.bundles))

    def usage_bundles(self, table: str) -> list[str]:
        """The bundles whose usage rows of ``table`` are in the set (a usage child: its parent's)."""
        spec = self.graph.tables[table]
        parent = self.graph.usage_parent(spec)
        if parent is not None:
            return self.usage_bundles(parent.table)
        return sorted(set().union(*(p.bundles for p in self.parts.get(table, []))))

    def _usage_count(self, table: str) -> int:
        t = table_clause(self.graph.tables[table])
        return sum(
            int(self.conn.execute(sa.select(sa.func.count()).select_from(t).where(clause)).scalar_one())
            for clause in self.usage_clauses(table)
        )

    # -- what holds the set ------------------------------------------------------------------

    def by(self, table: str, column: str) -> dict[Any, list[PK]]:
        """Candidate rows of ``table`` by their value of ``column``."""
        key = (table, column)
        if key not in self._index:
            index: dict[Any, list[PK]] = defaultdict(list)
            rows = self.rows[table]
            for pk in self.cand.get(table, ()):
                value = rows[pk].get(column)
                if value is not None:
                    index[value].append(pk)
            self._index[key] = index
        return self._index[key]

    def _total(self, table: str, column: str, values: set[Any]) -> dict[Any, int]:
        """How many rows of ``table`` have ``column`` = each value (the database, all rows)."""
        known = self._totals[(table, column)]
        missing = [v for v in values if v not in known]
        if missing:
            t = table_clause(self.graph.tables[table])
            for part in chunks(sorted_values(missing)):
                for value, n in self.conn.execute(
                    sa.select(t.c[column], sa.func.count()).where(t.c[column].in_(part)).group_by(t.c[column])
                ):
                    known[value] = int(n)
            for v in missing:
                known.setdefault(v, 0)
        return known

    def _inside_counts(self, table: str, column: str, values: set[Any]) -> Counter[Any]:
        """How many rows of the set (``table``) have ``column`` = each value."""
        spec = self.graph.tables[table]
        counts: Counter[Any] = Counter()
        if not spec.is_usage:
            kept = self.kept.get(table, {})
            index = self.by(table, column)
            for v in values:
                counts[v] = sum(1 for pk in index.get(v, ()) if pk not in kept)
            return counts
        t = table_clause(spec)
        for clause in self.usage_clauses(table):
            for part in chunks(sorted_values(values)):
                stmt = (
                    sa.select(t.c[column], sa.func.count())
                    .where(clause, t.c[column].in_(part))
                    .group_by(t.c[column])
                )
                for value, n in self.conn.execute(stmt):
                    counts[value] += int(n)
        return counts

    def keep(self, table: str, pk: PK, why: Held | Belongs) -> list[tuple[str, PK]]:
        """Keep a row and, in turn, every row of the set that belongs to it."""
        newly: list[tuple[str, PK]] = []
        queue = [(table, pk, why)]
        while queue:
            t, p, w = queue.pop()
            if p in self.kept[t]:
                self.kept[t][p].append(w)
                continue
            self.kept[t][p] = [w]
            newly.append((t, p))
            row = self.rows[t][p]
            for child, ref in self.graph.owned_children[t]:
                if child.is_usage:
                    continue
                for cpk in self.by(child.name, ref.column).get(row.get(ref.target_column), ()):
                    if cpk not in self.kept[child.name]:
                        queue.append((child.name, cpk, Belongs(t, p)))
        return newly

    def settle(self) -> None:
        """Keep what rows outside the set hold, until nothing changes."""
        while True:
            found: list[tuple[str, PK, Held]] = []
            for table in list(self.cand):
                found.extend(self._held(table))
            if not found:
                return
            for table, pk, why in found:
                self.keep(table, pk, why)

    def _held(self, table: str) -> Iterator[tuple[str, PK, Held]]:
        """The rows of ``table`` in the set that rows outside it reference."""
        members = self.inside(table)
        if not members:
            return
        rows = self.rows[table]
        for referrer, ref in self.graph.referencing[table]:
            by_value: dict[Any, list[PK]] = defaultdict(list)
            for pk in members:
                value = rows[pk].get(ref.target_column)
                if value is not None:
                    by_value[value].append(pk)
            if not by_value:
                continue
            values = set(by_value)
            total = self._total(referrer.name, ref.column, values)
            inside = self._inside_counts(referrer.name, ref.column, values)
            for value, pks in by_value.items():
                outside = total.get(value, 0) - inside.get(value, 0)
                if outside > 0:
                    yield from ((table, pk, Held(referrer.name, ref.column, value, outside)) for pk in pks)

    # -- what goes ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows to remove per table, children first."""
        out: dict[str, int] = {}
        for name in reversed(self.graph.dependency_order):
            spec = self.graph.tables[name]
            n = self._usage_count(name) if spec.is_usage else len(self.inside(name))
            if n:
                out[name] = n
        return out

    def unlinks(self) -> dict[str, int]:
        """How many rows of the set have each cycle-breaking reference set to NULL first."""
        out: dict[str, int] = {}
        for name, ref in self.unlink_refs():
            n = sum(1 for pk in self.inside(name) if self.rows[name][pk].get(ref.column) is not None)
            if n:
                out[f"{name}.{ref.column}"] = n
        return out

    def unlink_refs(self) -> Iterator[tuple[str, Reference]]:
        """References that break cycles, and self-references: set to NULL before the deletes."""
        for name in self.graph.dependency_order:
            spec = self.graph.tables[name]
            if spec.is_usage:
                continue
            for ref in spec.references:
                if ref.nullable and (ref.table == name or (name, ref.column) in self.graph.deferred):
                    yield name, ref
