"""Reading a root in the export's snapshot into its bundle.

The closure of the root (its own rows, the shared rows they reference, the natural keys of
what stays outside) is worked out in the snapshot; usage streams first, in key ranges,
and the shared rows it references join the closure; shared rows an earlier layer carried
unchanged become references. Statuses the export marked are written as they were.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle_writer import BundleWriter
from bundler.errors import BundlerError
from bundler.export.layers import Layers, layered_outside, settle_layers
from bundler.export.snapshot import Snapshot
from bundler.export.usage import (
    Late,
    high_water,
    left_keys,
    outside_exists,
    owner_windows,
    usage_clause,
    without_carried,
)
from bundler.graph import Graph, Scope, TableSpec
from bundler.keys import key_value
from bundler.manifest import Outside, OutsideRow
from bundler.marking import Marks
from bundler.progress import Progress
from bundler.recover import crash_point
from bundler.sql import Closure, natural_keys, table_clause

if TYPE_CHECKING:
    from bundler.export.export import ExportOptions, _Run


class TableWriter:
    """Streams tables of the closure into the bundle, restoring marked statuses."""

    def __init__(self, snapshot: Snapshot, writer: BundleWriter, marks: Marks, progress: Progress) -> None:
        self.snapshot = snapshot
        self.writer = writer
        self.marks = marks
        self.progress = progress
        self.restored: dict[str, int] = {}  # table -> rows whose status was given back

    def write(
        self,
        spec: TableSpec,
        where: sa.ColumnElement[bool],
        collect: dict[str, set[Any]] | None = None,
        *,
        late: Late | None = None,
        keys: list[Any] | None = None,
    ) -> int:
        """Stream the rows of ``where`` into the bundle; ``late``: leave out the keys earlier
        exports carried; ``keys``: collect the keys written."""
        import pyarrow.compute as pc

        out = self.writer.table(spec.name, spec.arrow_schema(), spec.scope, spec.sensitive)
        task = f"export {self.writer.bundle_id}"
        rows = 0
        # usage tables are the big ones: read in key ranges side by side
        for batch in self.snapshot.read(spec, where, split=spec.is_usage):
            batch = without_carried(batch, spec, late)
            if keys is not None:
                keys.append(batch.column(spec.pk[0]))
            batch = self._restore_status(spec, batch)
            if collect is not None:
                for col, values in collect.items():
                    values.update(v for v in pc.unique(batch.column(col)).to_pylist() if v is not None)
            out.write(batch)
            rows += batch.num_rows
            self.progress.advance(task, batch.num_rows)
            if spec.is_usage:
                crash_point("usage")
        out.done()  # each table is written once: its file closes (and is hashed) while the next is read
        return rows

    def _restore_status(self, spec: TableSpec, batch: Any) -> Any:
        import pyarrow as pa

        marks = self.marks.by_table.get(spec.name)
        if not marks or spec.status is None:
            return batch
        col = spec.status.column
        idx = batch.schema.get_field_index(col)
        pks = batch.column(spec.pk[0]).to_pylist()
        values = batch.column(idx).to_pylist()
        restored = 0
        for i, pk in enumerate(pks):
            if pk in marks and values[i] == spec.status.exported:
                values[i] = marks[pk]
                restored += 1
        if restored:
            self.restored[spec.name] = self.restored.get(spec.name, 0) + restored
        return batch.set_column(
            idx, batch.schema.field(idx), pa.array(values, type=batch.schema.field(idx).type)
        )


def outside_rows(connection: sa.Connection, graph: Graph, closure: Closure) -> dict[str, Outside]:
    out: dict[str, Outside] = {}
    for table in sorted(closure.outside):
        columns = closure.outside[table]
        if len(columns) > 1:
            raise BundlerError(
                f"{table} is referenced through several columns ({', '.join(sorted(columns))})"
            )
        ((column, values),) = columns.items()
        keys = natural_keys(connection, graph, table, column, values)
        dangling = sorted((v for v in values if v not in keys), key=str)
        if dangling:
            shown = ", ".join(repr(v) for v in dangling[:5])
            raise BundlerError(
                f"the source references {table}.{column} = {shown}, which does not exist",
                hint="repair the source's integrity first; an export never carries dangling references",
            )
        out[table] = Outside(
            column,
            graph.table(table).scope,
            tuple(OutsideRow(key_value(v), keys[v]) for v in sorted(values, key=str)),
        )
    return out


# -- export ----------------------------------------------------------------------------------


def collect_root(snapshot: Snapshot, run: _Run, writer: BundleWriter) -> dict[str, Any]:
    """Write the root's closure into ``writer``; the outside rows, restored statuses and layers used."""
    connection, graph, root, options = snapshot.connection, run.graph, run.root, run.options
    carried = run.layers.known if run.layers else None
    owned = Closure(connection, graph, follow_shared=not options.usage_only, carried=carried)
    t = table_clause(root.spec)
    fresh = connection.execute(sa.select(t).where(t.c[root.spec.pk[0]] == root.pk)).mappings().one()
    owned.add(root.spec.name, [dict(fresh)])
    owned.run()
    out = TableWriter(snapshot, writer, run.marks, run.progress)
    # usage first: it is streamed, and the shared rows it references join the closure after
    refs = Closure(connection, graph, carried=carried) if options.usage_only else owned
    for spec in graph.tables_in_order((Scope.USAGE,)):
        run.usage.high_water[spec.name] = high_water(connection, spec)  # in the snapshot
    if run.window.carries_usage:
        _stream_usage(out, owned, refs, run)
    layered = _settle_layers(snapshot, refs, run.layers)
    if options.usage_only:
        _write_closure(out, refs, (Scope.SHARED,))
    else:
        _write_closure(out, owned, (Scope.OWNED, Scope.SHARED))
    outside = outside_rows(connection, graph, refs)
    if run.depends_on:  # a usage bundle: its owners are the rows its customer bundle brought
        for table, entry in outside.items():
            if Scope(entry.scope).of_root:
                outside[table] = replace(entry, source_bundles=(run.depends_on,))
    outside.update(layered)
    layer_bundles = [b for o in layered.values() for b in o.source_bundles]
    return {"prerequisites": outside, "restored": out.restored, "layers": layer_bundles}


def _stream_usage(out: TableWriter, owned: Closure, refs: Closure, run: _Run) -> None:
    """Stream the usage of the window (each owner's own, in mode current); what it references
    joins ``refs``. Notes a window that selects nothing while the root has usage outside it.

    A usage row that belongs to another usage row (an invoice line of its invoice) travels
    in its parent's window: it is selected by its parent's selection, in the same snapshot.
    """
    plan, graph = run.usage, owned.graph
    groups: dict[str, Any] = {}
    if plan.window.mode in ("current", "since"):
        groups, plan.windows = owner_windows(owned.connection, graph, owned, plan.window, run.now)
    selected: dict[str, sa.ColumnElement[bool]] = {}
    for spec in graph.tables_in_order((Scope.USAGE,)):
        parent = graph.usage_parent(spec)
        owners: Collection[Any]
        if parent is not None:
            if parent.table not in selected:
                continue
            parent_t = table_clause(graph.table(parent.table))
            where: sa.ColumnElement[bool] = (
                table_clause(spec)
                .c[parent.column]
                .in_(sa.select(parent_t.c[parent.target_column]).where(selected[parent.table]))
            )
            owners = {parent}
        else:
            by_owner = owned.usage_owners.get(spec.name)
            if not by_owner:
                continue
            where = usage_clause(owned.connection, spec, by_owner, plan, groups.get(spec.name))
            # the rows that own the usage are in the closure already: no need to collect them
            owners = by_owner
        selected[spec.name] = where
        wanted = [
            r
            for r in spec.references
            if not graph.table(r.table).is_usage and (r not in owners or refs is not owned)
        ]
        collect: dict[str, set[Any]] = {r.column: set() for r in wanted}
        plan.rows += out.write(spec, where, collect, late=plan.late, keys=plan.keys[spec.name])
        for ref in wanted:
            refs.reference(ref.table, ref.target_column, collect[ref.column])
    refs.run()
    if run.marking and plan.window.mode != "none":  # what the root leaves in the source: not late
        for spec in graph.tables_in_order((Scope.USAGE,)):
            hw, by_owner = plan.high_water.get(spec.name), owned.usage_owners.get(spec.name)
            if hw is not None and by_owner and graph.usage_parent(spec) is None:
                plan.left[spec.name] = left_keys(owned.connection, spec, by_owner, hw, plan.keys[spec.name])
    if plan.rows or plan.late is not None or plan.window.mode not in ("current", "since"):
        return
    if any(
        outside_exists(owned.connection, spec, by_ref)
        for spec in graph.tables_in_order((Scope.USAGE,))
        if (by_ref := owned.usage_owners.get(spec.name))
    ):
        plan.warning = (
            f"the usage window ({plan.window.mode}, from {plan.window.start}) selects no usage, "
            "while the root has usage outside it"
        )
        run.progress.note(
            f"{run.bundle_id}: warning: {plan.warning}; choose another window with --xdrs "
            "(all, since=DATE) or carry it later with --usage-only"
        )


def _write_closure(out: TableWriter, closure: Closure, scopes: tuple[Scope, ...]) -> None:
    for spec in closure.tables(scopes):
        where = closure.selection(spec)
        if where is not None:
            out.write(spec, where)


def layers_for(system: tracking.SystemInfo, graph: Graph, options: ExportOptions) -> Layers | None:
    """The layers an export builds on: the lineup's, and the bundles named with ``--after``."""
    if not options.after:
        return options.layers
    from bundler.bundle import open_bundle

    layers = Layers(system.system_id)
    if options.layers is not None:
        layers.carried = {t: dict(rows) for t, rows in options.layers.carried.items()}
        layers.bundles = list(options.layers.bundles)
    for path in options.after:
        with open_bundle(path) as bundle:
            layers.add_bundle(bundle, graph)
    return layers


def _settle_layers(snapshot: Snapshot, closure: Closure, layers: Layers | None) -> dict[str, Outside]:
    """Layered rows that are unchanged since their layer, as outside rows; the changed ones carried."""
    if layers is None or not closure.layered:
        return {}
    read: dict[str, list[dict[str, Any]]] = {}
    settle_layers(closure, layers, lambda spec, where: snapshot.read(spec, where), read)
    # a table the bundle must also name outside for other reasons keeps one way in: carry it
    for table in [t for t in closure.layered if t in closure.outside]:
        closure.carry(table, set(closure.layered[table]))
    return layered_outside(closure, layers, read)
