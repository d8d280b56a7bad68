"""The target side: what loads created, by the target's ledger (``bundler_loads``, ``bundler_ledger``).

A named entity covers the load whose ledger says it *created* the entity's row and every load
that depends on it; a bundle, itself and its dependents. The scope is the entity (or what the
loads created) and everything owned by it, then upward the shared rows those loads created
that the scope references. Removed rows take every ledger row naming them along; a load all
of whose created rows are gone is forgotten.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler import tracking
from bundler.clean.model import NOT_A_CLEANER, PK, CleanPlan, CleanRefused, pk_text
from bundler.clean.side import CleanScope, Side
from bundler.errors import BundlerError
from bundler.graph import EntitySpec, Graph, Scope, TableSpec
from bundler.ledger import created_counts, created_counts_where, created_in, forget_gone, forget_ranges
from bundler.ledger import records as ledger_records
from bundler.load.charges import reverse_charges
from bundler.load.crossroot import forget_open, forget_open_gone, forget_open_of
from bundler.sql import Closure, chunks

if TYPE_CHECKING:
    from bundler.clean.plan import CleanSet


class TargetSide(Side):
    name = "target"

    def __init__(self, connection: sa.Connection, graph: Graph) -> None:
        super().__init__(connection, graph)
        # table -> pk text -> the selected load that created the row
        self.created_by: dict[str, dict[str, str]] = defaultdict(dict)

    # -- scopes ------------------------------------------------------------------------------

    def bundle_scope(self, bundle_id: str) -> CleanScope:
        loads = tracking.loads_table
        load = self.conn.execute(sa.select(loads).where(loads.c.bundle_id == bundle_id)).first()
        if load is None:
            raise CleanRefused(
                f"bundle {bundle_id} was never loaded into this target (or was cleaned from it already)",
                hint=NOT_A_CLEANER,
            )
        bundles = self._with_dependents({bundle_id})
        created = self._created(bundles)
        closure = Closure(self.conn, self.graph, follow_shared=False)
        root_pk = self._root_target_pk(load)
        if load.root_table and root_pk and load.root_table in self.graph.tables:
            spec = self.graph.table(load.root_table)
            closure.add(spec.name, closure.fetch(spec, spec.pk[0], [spec.from_text(spec.pk[0], root_pk)]))
        for table, pks in created.items():
            seed = self.graph.tables.get(table)
            if seed is None or len(seed.pk) != 1:
                continue  # composite keys come with the rows they belong to
            closure.add(table, closure.fetch(seed, seed.pk[0], [seed.from_text(seed.pk[0], p) for p in pks]))
        scope = CleanScope(f"bundle {bundle_id}", bundles, closure, created=created)
        self._grow(scope)
        return scope

    def _root_target_pk(self, load: sa.Row[Any] | None) -> str | None:
        """The target key of a load's root; a usage load (which records none) has its root
        bundle's, through what it depends on."""
        loads = tracking.loads_table
        seen: set[str] = set()
        while load is not None and load.root_target_pk is None and load.depends_on not in (None, *seen):
            seen.add(load.depends_on)
            load = self.conn.execute(sa.select(loads).where(loads.c.bundle_id == load.depends_on)).first()
        return load.root_target_pk if load is not None else None

    def entity_scope(self, entity: EntitySpec, row: dict[str, Any]) -> CleanScope:
        spec = self.graph.table(entity.table)
        pk = tuple(row[c] for c in spec.pk)
        records = self._records(spec.name, pk)
        what = self.what(entity, row)
        bundles = self._with_dependents(_creators(records, what))
        closure = Closure(self.conn, self.graph, follow_shared=False)
        closure.add(spec.name, closure.fetch(spec, spec.pk[0], [pk[0]]))
        scope = CleanScope(what, bundles, closure, created=self._created(bundles))
        self._merged(scope, self._rooted_at(bundles, spec.name, pk))
        self._grow(scope)
        return scope

    def _rooted_at(self, bundles: frozenset[str], table: str, pk: PK) -> set[str]:
        """Those of ``bundles`` whose root is the named row (not a sub-customer of a reseller bundle)."""
        loads = tracking.loads_table
        return set(
            self.conn.execute(
                sa.select(loads.c.bundle_id).where(
                    loads.c.bundle_id.in_(sorted(bundles)),
                    loads.c.root_table == table,
                    loads.c.root_target_pk == pk_text(pk),
                )
            ).scalars()
        )

    def _merged(self, scope: CleanScope, bundles: set[str]) -> None:
        """Into the scope: the rows ``bundles`` created under shared rows they reused (what a
        ``merge`` added to the target's row: a tariff's rates), which nothing named reaches."""
        if not bundles or scope.created is None:
            return
        ledger = tracking.ledger_table
        for table, pks in sorted(scope.created.items()):
            spec = self.graph.tables.get(table)
            if spec is None or len(spec.pk) != 1:
                continue
            owners = [r for r in spec.owner_refs if r.table != table and self.graph.tables[r.table].is_shared]
            mine = [p for p in pks if self.created_by[table].get(p) in bundles]
            if not owners or not mine:
                continue
            reused = {
                ref: set(
                    self.conn.execute(
                        sa.select(ledger.c.target_pk).where(
                            ledger.c.bundle_id.in_(sorted(bundles)),
                            ledger.c.table_name == ref.table,
                            ledger.c.action == "reused",
                        )
                    ).scalars()
                )
                for ref in owners
            }
            rows = scope.closure.fetch(spec, spec.pk[0], [spec.from_text(spec.pk[0], p) for p in mine])
            scope.closure.add(
                table,
                [r for r in rows if any(pk_text((r[ref.column],)) in reused[ref] for ref in owners)],
            )

    def _records(self, table: str, pk: PK) -> list[tuple[str, str]]:
        """What the ledger says of a row: (bundle, action) pairs."""
        return ledger_records(self.conn, table, pk_text(pk))

    def _with_dependents(self, bundles: set[str]) -> frozenset[str]:
        loads = tracking.loads_table
        found = set(bundles)
        frontier = set(bundles)
        while frontier:
            more = set(
                self.conn.execute(
                    sa.select(loads.c.bundle_id).where(loads.c.depends_on.in_(sorted(frontier)))
                ).scalars()
            )
            frontier = more - found
            found |= more
        return frozenset(found)

    def _created(self, bundles: frozenset[str]) -> dict[str, set[str]]:
        ledger = tracking.ledger_table
        usage = [t.name for t in self.graph.in_scope(Scope.USAGE)]
        out: dict[str, set[str]] = defaultdict(set)
        stmt = sa.select(ledger.c.bundle_id, ledger.c.table_name, ledger.c.target_pk).where(
            ledger.c.bundle_id.in_(sorted(bundles)), ledger.c.action == "created"
        )
        if usage:
            stmt = stmt.where(ledger.c.table_name.not_in(usage))
        for bundle_id, table, target_pk in self.conn.execute(stmt):
            out[table].add(target_pk)
            self.created_by[table][target_pk] = bundle_id
        return out

    def _grow(self, scope: CleanScope) -> None:
        """Downward from the seeds, then upward to the shared rows the scope's loads created."""
        closure = scope.closure
        closure.run()
        growth = _Growth(self.graph, closure, scope.created or {})
        added = 0
        for ref, values in self.usage_shared(closure, scope.bundles):
            added += growth.bring(ref.table, ref.target_column, values)
        while True:
            if added:
                closure.run()
            added = growth.upward()
            if not added:
                break

    # -- usage rows --------------------------------------------------------------------------

    def transferred(self, spec: TableSpec, bundles: frozenset[str]) -> sa.ColumnElement[bool]:
        """Usage rows of ``spec`` that ``bundles`` created, by the ledger."""
        if len(spec.pk) != 1:
            raise BundlerError(
                f"usage table {spec.name} has a composite key; clean needs a single-column one"
            )
        return created_in(self.conn, spec, bundles)

    # -- describing --------------------------------------------------------------------------

    def status(self, spec: TableSpec, pk: PK, row: dict[str, Any]) -> str:
        created = sorted(b for b, action in self._records(spec.name, pk) if action == "created")
        if not created:
            return "not transferred"
        where = "outside what was named" if created[0] in self.selected() else "not selected"
        return f"transferred by bundle {created[0]}, {where}"

    # -- bookkeeping -------------------------------------------------------------------------

    def closes(self, cleanset: CleanSet, counts: dict[str, int]) -> tuple[list[str], dict[str, int]]:
        """The loads all of whose created rows go, and those that keep some (how many)."""
        bundles = sorted(self.selected())
        remaining = self._created_counts(bundles)
        for table in cleanset.cand:
            for pk in cleanset.inside(table):
                bundle_id = self.created_by[table].get(pk_text(pk))
                if bundle_id is not None:
                    remaining[bundle_id] -= 1
        for spec in self.graph.in_scope(Scope.USAGE):
            if spec.name in counts:
                remaining.subtract(self._usage_created_counts(cleanset, spec, bundles))
        forget = [b for b in bundles if remaining[b] <= 0]
        partly = {b: remaining[b] for b in bundles if remaining[b] > 0}
        return forget, partly

    def _usage_gone(self, bundles: list[str]) -> list[str]:
        """The charged loads of ``bundles`` none of whose usage rows is left (after the deletes)."""
        left: Counter[str] = Counter()
        charged = _charged(self.conn, bundles)
        for spec in self.graph.in_scope(Scope.USAGE) if charged else []:
            left.update(created_counts_where(self.conn, spec, sa.true(), charged))
        return [b for b in charged if not left[b]]

    def _created_counts(self, bundles: list[str]) -> Counter[str]:
        """How many rows each load created, by its ledger."""
        return created_counts(self.conn, bundles)

    def _usage_created_counts(self, cleanset: CleanSet, spec: TableSpec, bundles: list[str]) -> Counter[str]:
        """How many usage rows of the set (``spec``) each load created."""
        counts: Counter[str] = Counter()
        for clause in cleanset.usage_clauses(spec.name):
            counts.update(created_counts_where(self.conn, spec, clause, bundles))
        return counts

    def forget_rows(self, table: str, texts: list[str]) -> int:
        """Every ledger row that names a removed row (created, or reused by any load), and the
        references a load left open from it (a later load must not set them on another row)."""
        ledger = tracking.ledger_table
        return forget_open(self.conn, table, texts) + sum(
            self.conn.execute(
                sa.delete(ledger).where(ledger.c.table_name == table, ledger.c.target_pk.in_(part))
            ).rowcount
            for part in chunks(sorted(texts))
        )

    def forget_usage(self, spec: TableSpec, bundles: list[str]) -> int:
        """The ledger rows of the selected loads whose usage row is gone (the subquery reads the
        usage table, not the ledger: MariaDB refuses a DELETE that reads its own table), and the
        references those loads left open from such rows."""
        return forget_gone(self.conn, spec, bundles) + forget_open_gone(self.conn, spec, bundles)

    def close(self, plan: CleanPlan) -> int:
        """Forget the loads the plan closes: their remaining ledger rows and their record; the
        balance adjustments of their late usage are taken back (and forgotten) first, and so
        are those of a load the clean keeps rows of (a destination others use) once none of
        its usage rows is left."""
        ledger, loads = tracking.ledger_table, tracking.loads_table
        n = reverse_charges(self.conn, self.graph, [*plan.closes, *self._usage_gone(list(plan.partly))])
        for bundle_id in plan.closes:
            left = created_counts(self.conn, [bundle_id])[bundle_id]
            if left:
                raise BundlerError(
                    f"bundle {bundle_id}: {left} created row(s) are still in its ledger after the clean; "
                    "nothing was removed",
                    hint="run the clean again; if it repeats, report it with --debug",
                )
            n += self.conn.execute(sa.delete(ledger).where(ledger.c.bundle_id == bundle_id)).rowcount
            n += forget_ranges(self.conn, bundle_id)
            n += forget_open_of(self.conn, bundle_id)
            n += self.conn.execute(sa.delete(loads).where(loads.c.bundle_id == bundle_id)).rowcount
        return n


def _charged(conn: sa.Connection, bundles: list[str]) -> list[str]:
    """The loads of ``bundles`` whose late usage moved balances."""
    from bundler.load.charges import charges_table

    if not bundles or not sa.inspect(conn).has_table(charges_table.name):
        return []
    c = charges_table.c
    return sorted(set(conn.execute(sa.select(c.bundle_id).where(c.bundle_id.in_(bundles))).scalars()))


def _creators(records: list[tuple[str, str]], what: str) -> set[str]:
    """The loads that created the named row, by its ledger records; refused when none did."""
    created = {b for b, action in records if action == "created"}
    if created:
        return created
    if records:
        reused = ", ".join(sorted({b for b, _ in records}))
        raise CleanRefused(
            f"{what} was not created by a load: bundle {reused} reused the target's own row",
            hint="clean never removes a row a load reused; " + NOT_A_CLEANER,
        )
    raise CleanRefused(
        f"{what} was never transferred into this target (the ledger names no such row)",
        hint=NOT_A_CLEANER,
    )


class _Growth:
    """Brings into a target scope's closure the shared rows its loads created, by value."""

    def __init__(self, graph: Graph, closure: Closure, created: dict[str, set[str]]) -> None:
        self.graph = graph
        self.closure = closure
        self.created = created
        self.tried: dict[tuple[str, str], set[Any]] = defaultdict(set)

    def bring(self, table: str, column: str, values: set[Any]) -> int:
        """Rows of ``table`` with ``column`` in ``values`` that the loads created; how many were new."""
        closure = self.closure
        values = {v for v in values if not closure.contains(table, column, v)} - self.tried[(table, column)]
        if not values:
            return 0
        self.tried[(table, column)] |= values
        spec = self.graph.tables[table]
        created = self.created.get(table, ())
        found = closure.fetch(spec, column, values)
        return closure.add(table, [r for r in found if pk_text(tuple(r[c] for c in spec.pk)) in created])

    def upward(self) -> int:
        """One step up: the shared rows that the created rows of the closure reference."""
        added = 0
        for table in list(self.closure.rows):
            spec = self.graph.tables[table]
            mine = self.created.get(table, ())
            created = [r for pk, r in self.closure.rows[table].items() if pk_text(pk) in mine]
            for ref in spec.references:
                if not self.graph.tables[ref.table].is_shared:
                    continue
                added += self.bring(
                    ref.table, ref.target_column, {r.get(ref.column) for r in created} - {None}
                )
        return added
