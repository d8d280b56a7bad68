"""The source side: what was exported, by the source's export records (``bundler_exports``,
``bundler_export_marks``).

A named entity must belong (itself, or through its owners) to a root that is Exported and has
a finished, marking export; its scope is its closure as an export computes it, and the usage
rows of its owned rows inside the usage window of one of the root's exports. A bundle names
an export: a root bundle (its usage bundles included), or a usage bundle alone. Removed rows
take their export marks along; the exports of a removed root are recorded as ``cleaned``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler import tracking
from bundler.clean.model import NOT_A_CLEANER, PK, CleanPlan, CleanRefused, CleanRequest, pk_text
from bundler.clean.side import CleanScope, Side
from bundler.graph import EntitySpec, Graph, Scope, TableSpec
from bundler.sql import Closure, chunks, table_clause

if TYPE_CHECKING:
    from bundler.clean.plan import CleanSet

# export kinds whose root an export marks Exported
_ROOT_EXPORTS = ("customer", "reseller", "vendor")


class SourceSide(Side):
    name = "source"
    untransferred_usage = "not exported: outside the exported usage window"

    def __init__(self, connection: sa.Connection, graph: Graph, target: sa.Engine | None = None) -> None:
        super().__init__(connection, graph)
        # export -> its usage mode and window
        self.windows: dict[str, tuple[str, datetime | None, datetime | None]] = {}
        # exports whose root's usage goes whole, windows or not (the target has the root)
        self.whole: set[str] = set()
        self.request: CleanRequest | None = None
        # the target consulted for which exports it loaded (``--target`` beside the source),
        # and those it was found to have loaded
        self.target = target
        self.loaded: set[str] = set()

    def resolve(self, request: CleanRequest) -> None:
        self.request = request
        super().resolve(request)

    # -- scopes ------------------------------------------------------------------------------

    def bundle_scope(self, bundle_id: str) -> CleanScope:
        exports = tracking.exports_table
        rec = _check_export(
            bundle_id, self.conn.execute(sa.select(exports).where(exports.c.bundle_id == bundle_id)).first()
        )
        spec = self.graph.table(rec.root_table)
        t = table_clause(spec)
        value = spec.from_text(spec.pk[0], rec.root_pk)
        row = self.conn.execute(sa.select(t).where(t.c[spec.pk[0]] == value)).mappings().first()
        if row is None:
            raise CleanRefused(
                f"the root of export {bundle_id} ({spec.name} {rec.root_pk}) is no longer in the source "
                "(cleaned already?)",
                hint=NOT_A_CLEANER,
            )
        pk = (value,)
        everything = self._transfer_exports(spec.name, pk)
        if rec.kind == "usage":
            bundles = {bundle_id: rec}
        else:
            bundles = {b: r for b, r in everything.items() if b == bundle_id or r.depends_on == bundle_id}
        what = f"bundle {bundle_id} ({spec.name} {self.labels(spec.name, [pk])[pk]})"
        _check_exported(spec, dict(row), what, bundles)
        return self._scope(what, bundles, {spec.name: [dict(row)]}, (spec.name, pk), rec.kind != "usage")

    def entity_scope(self, entity: EntitySpec, row: dict[str, Any]) -> CleanScope:
        spec = self.graph.table(entity.table)
        what = self.what(entity, row)
        if spec.scope is not Scope.OWNED:
            raise CleanRefused(
                f"{what} is {spec.scope} configuration: on the source it is removed only together with a "
                "root it was exported with, when nothing else uses it",
                hint="clean that customer, reseller or vendor from the source, or this row from the target",
            )
        found = self.exported_root(spec, row)
        if found is None:
            raise CleanRefused(
                f"{what} was never exported from this source (no finished export of it, or of a root it belongs to)",
                hint=NOT_A_CLEANER,
            )
        rspec, rrow, bundles = found
        rpk = tuple(rrow[c] for c in rspec.pk)
        root_what = (
            what if rspec is spec and rrow is row else f"{rspec.name} {self.labels(rspec.name, [rpk])[rpk]}"
        )
        _check_exported(rspec, rrow, root_what, bundles)
        return self._scope(what, bundles, {spec.name: [row]}, (rspec.name, rpk))

    def _scope(
        self,
        what: str,
        bundles: dict[str, Any],
        seeds: dict[str, list[dict[str, Any]]],
        root: tuple[str, PK],
        candidates: bool = True,
    ) -> CleanScope:
        for bundle_id, rec in bundles.items():
            self.windows[bundle_id] = (rec.usage_mode, rec.window_from, rec.window_to)
        request = self.request
        if candidates and request is not None:
            loaded = set(bundles) & set(request.loaded)
            if not request.all_usage and not loaded and self.target is not None:
                loaded = _loaded_in(self.target, set(bundles))
                self.loaded |= loaded
            if request.all_usage or loaded:
                self.whole |= set(bundles)
        closure = Closure(self.conn, self.graph, follow_shared=candidates)
        for table, rows in seeds.items():
            spec = self.graph.table(table)
            closure.add(table, closure.fetch(spec, spec.pk[0], [r[spec.pk[0]] for r in rows]))
        closure.run()
        scope = CleanScope(what, frozenset(bundles), closure, candidates=candidates, root=root)
        if candidates:  # shared rows only the transferred usage references were in the bundle too
            for ref, values in self.usage_shared(closure, scope.bundles):
                closure.reference(ref.table, ref.target_column, values)
            closure.run()
        return scope

    def _transfer_exports(self, table: str, pk: PK) -> dict[str, Any]:
        """The finished, marking exports of a root, with the usage exports that depend on them."""
        exports = tracking.exports_table
        rows = self.conn.execute(
            sa.select(exports).where(
                exports.c.root_table == table, exports.c.root_pk == pk_text(pk), exports.c.status == "done"
            )
        ).all()
        marked = {r.bundle_id: r for r in rows if r.kind in _ROOT_EXPORTS and r.marked}
        usage = {r.bundle_id: r for r in rows if r.kind == "usage" and r.depends_on in marked}
        return {**marked, **usage}

    def exported_root(
        self, spec: TableSpec, row: dict[str, Any]
    ) -> tuple[TableSpec, dict[str, Any], dict[str, Any]] | None:
        """The row itself or the nearest row it belongs to (owner references, upward) with a
        finished, marking export, and those exports."""
        current: tuple[TableSpec, dict[str, Any]] | None = (spec, row)
        seen: set[tuple[str, PK]] = set()
        while current is not None:
            cspec, crow = current
            pk = tuple(crow[c] for c in cspec.pk)
            if (cspec.name, pk) in seen:
                return None
            seen.add((cspec.name, pk))
            bundles = self._transfer_exports(cspec.name, pk)
            if bundles:
                return cspec, crow, bundles
            current = self._owner_of(cspec, crow)
        return None

    def _owner_of(self, spec: TableSpec, row: dict[str, Any]) -> tuple[TableSpec, dict[str, Any]] | None:
        for ref in spec.owner_refs:
            value = row.get(ref.column)
            if value is None:
                continue
            parent = self.graph.table(ref.table)
            t = table_clause(parent)
            found = self.conn.execute(sa.select(t).where(t.c[ref.target_column] == value)).mappings().first()
            if found is not None:
                return parent, dict(found)
        return None

    # -- usage rows --------------------------------------------------------------------------

    def transferred(self, spec: TableSpec, bundles: frozenset[str]) -> sa.ColumnElement[bool]:
        """Usage rows of ``spec`` inside the usage window of one of ``bundles``."""
        t = table_clause(spec)
        assert spec.time_column is not None
        if bundles & self.whole:
            return sa.true()
        clauses: list[sa.ColumnElement[bool]] = []
        for bundle_id in sorted(bundles):
            mode, start, end = self.windows[bundle_id]
            if mode == "none":
                continue
            bounds: list[sa.ColumnElement[bool]] = []
            if start is not None:
                bounds.append(t.c[spec.time_column] >= start)
            if end is not None:
                bounds.append(t.c[spec.time_column] < end)
            clauses.append(sa.and_(sa.true(), *bounds))
        return sa.or_(*clauses) if clauses else sa.false()

    # -- describing --------------------------------------------------------------------------

    def status(self, spec: TableSpec, pk: PK, row: dict[str, Any]) -> str:
        found = self.exported_root(spec, row)
        if found is None:
            return "not exported"
        first = sorted(found[2])[0]
        where = "outside what was named" if first in self.selected() else "not selected"
        return f"exported by bundle {first}, {where}"

    # -- bookkeeping -------------------------------------------------------------------------

    def closes(self, cleanset: CleanSet, counts: dict[str, int]) -> tuple[list[str], dict[str, int]]:
        """The exports of every named root that goes."""
        done: set[str] = set()
        for scope in self.scopes:
            if scope.root is not None and scope.root[1] in cleanset.inside(scope.root[0]):
                done |= scope.bundles
        return sorted(done), {}

    def forget_rows(self, table: str, texts: list[str]) -> int:
        """The export marks of removed rows (only rows with a status are marked)."""
        if self.graph.tables[table].status is None:
            return 0
        marks = tracking.export_marks_table
        return sum(
            self.conn.execute(
                sa.delete(marks).where(marks.c.table_name == table, marks.c.row_pk.in_(part))
            ).rowcount
            for part in chunks(sorted(texts))
        )

    def forget_usage(self, spec: TableSpec, bundles: list[str]) -> int:
        return 0  # usage rows are not marked

    def close(self, plan: CleanPlan) -> int:
        """Record the exports of the removed roots as cleaned."""
        exports = tracking.exports_table
        n = 0
        for bundle_id in plan.closes:
            n += self.conn.execute(
                sa.update(exports)
                .where(exports.c.bundle_id == bundle_id)
                .values(
                    status="cleaned",
                    message=f"removed from the source by bundler clean on {tracking.now():%Y-%m-%d %H:%M:%S}",
                )
            ).rowcount
        return n


def _loaded_in(target: sa.Engine, bundles: set[str]) -> set[str]:
    """Those of the source's ``bundles`` that ``target`` records as loaded."""
    loads = tracking.loads_table
    with target.connect() as connection:
        if not bundles or not sa.inspect(connection).has_table(loads.name):
            return set()
        return set(
            connection.execute(
                sa.select(loads.c.bundle_id).where(
                    loads.c.bundle_id.in_(sorted(bundles)), loads.c.outcome == "loaded"
                )
            ).scalars()
        )


def _check_export(bundle_id: str, rec: Any) -> Any:
    """The export record, refused when it transferred no root: unknown, unfinished,
    configuration, an audit copy."""
    if rec is None:
        raise CleanRefused(f"bundle {bundle_id} was never exported from this source", hint=NOT_A_CLEANER)
    if rec.status != "done":
        raise CleanRefused(
            f"export {bundle_id} is {rec.status}, not done: nothing of it was transferred",
            hint=NOT_A_CLEANER,
        )
    if rec.kind == "config" or not rec.root_table:
        raise CleanRefused(
            f"bundle {bundle_id} carries configuration, which stays in use in the source",
            hint="configuration leaves the source only with the root it was exported with",
        )
    if rec.kind != "usage" and not rec.marked:
        raise CleanRefused(
            f"export {bundle_id} is an audit copy (--no-mark): its root was not moved", hint=NOT_A_CLEANER
        )
    return rec


def _check_exported(spec: TableSpec, row: dict[str, Any], what: str, bundles: Iterable[str]) -> None:
    status = spec.status
    if status is not None and row[status.column] != status.exported:
        raise CleanRefused(
            f"{what} is not Exported in the source ({status.column} = {row[status.column]!r}): "
            f"export {', '.join(sorted(bundles))} was undone or it was reactivated",
            hint="clean removes from the source only what stays exported; " + NOT_A_CLEANER,
        )
