"""The Exported mark, shared by export and reverse: the root an operator names, the rows
its transfer marks Exported (with the status each had), and the export record that says
how the transfer ended. A failed transfer gives every marked row its status back."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.context import system_graph
from bundler.db import begin_write
from bundler.errors import RootError
from bundler.graph import Graph, Scope, TableSpec
from bundler.keys import Key, describe
from bundler.sql import Closure, lookup_row, natural_keys, table_clause


@dataclass
class Root:
    kind: str
    spec: TableSpec
    row: dict[str, Any]
    key: Key

    @property
    def pk(self) -> Any:
        return self.row[self.spec.pk[0]]


@dataclass
class Marks:
    """Rows the export marked Exported, with their previous status."""

    by_table: dict[str, dict[Any, str]] = field(default_factory=lambda: defaultdict(dict))

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_table.values())


def find_root(connection: sa.Connection, graph: Graph, kind: str, ident: str | int) -> Root:
    """The row an operator names by id or name, checked to be of the right kind."""
    root = graph.root(kind)
    spec = graph.table(root.table)
    text = str(ident).strip()
    row = lookup_row(connection, spec, root.lookup, ident)
    if row is None:
        raise RootError(
            f"no {kind} {text!r} in the source ({spec.name} has no row with {' or '.join(root.lookup)} = {text!r})",
            hint="check the id or name (bundler inspect and the source's own UI list them)",
        )
    data = row
    for col, allowed in root.where.items():
        if data[col] not in allowed:
            other = next(
                (
                    k
                    for k, r in graph.roots.items()
                    if r.table == spec.name and data[col] in r.where.get(col, ())
                ),
                None,
            )
            hint = f"export it with --{other}" if other else "choose a root of the right kind"
            raise RootError(f"{spec.name} {text!r} is not a {kind} ({col} = {data[col]!r})", hint=hint)
    key = natural_keys(connection, graph, spec.name, spec.pk[0], [data[spec.pk[0]]])[data[spec.pk[0]]]
    return Root(kind, spec, data, key)


def mark_rows(connection: sa.Connection, graph: Graph, root: Root, bundle_id: str) -> Marks:
    """Set every owned row with a status to Exported; remember what it was."""
    if not any(t.status for t in graph.tables.values()):
        return Marks()  # no status column anywhere: the export records guard the root
    closure = Closure(connection, graph, follow_shared=False)
    closure.add(root.spec.name, [root.row])
    closure.run()
    marks = Marks()
    for spec in closure.tables((Scope.OWNED,)):
        status = spec.status
        if status is None:
            continue
        pk_col = spec.pk[0]
        for row in closure.rows[spec.name].values():
            value = row[status.column]
            if value == status.exported or value in status.terminated:
                continue
            marks.by_table[spec.name][row[pk_col]] = value
        if not marks.by_table.get(spec.name):
            continue
        t = table_clause(spec)
        pks = list(marks.by_table[spec.name])
        for start in range(0, len(pks), 1000):
            part = pks[start : start + 1000]
            connection.execute(
                sa.update(t).where(t.c[pk_col].in_(part)).values({status.column: status.exported})
            )
        connection.execute(
            tracking.export_marks_table.insert(),
            [
                {"bundle_id": bundle_id, "table_name": spec.name, "row_pk": str(pk), "previous_status": prev}
                for pk, prev in marks.by_table[spec.name].items()
            ],
        )
    return marks


def lock_unexported(connection: sa.Connection, root: Root) -> None:
    """Lock the root's row and refuse it if another export marked it since it was checked."""
    status = root.spec.status
    t = table_clause(root.spec)
    if status is None:  # no mark to check: the lock serialises the check of the export records
        connection.execute(
            sa.select(t.c[root.spec.pk[0]]).where(t.c[root.spec.pk[0]] == root.pk).with_for_update()
        ).first()
        return
    value = connection.execute(
        sa.select(t.c[status.column]).where(t.c[root.spec.pk[0]] == root.pk).with_for_update()
    ).scalar_one()
    if value == status.exported:
        raise RootError(
            f"{root.kind} {describe(root.key)} was marked Exported by another export just now",
            hint="let that export finish; bundler_exports names it",
        )


def restore_rows(connection: sa.Connection, graph: Graph, bundle_id: str, marks: Marks) -> None:
    """In ``connection``'s transaction: give marked rows back the status they had (where
    still Exported) and forget the marks of ``bundle_id``."""
    for table, rows in marks.by_table.items():
        spec = graph.table(table)
        assert spec.status is not None
        t = table_clause(spec)
        pk_col = spec.pk[0]
        by_status: dict[str, list[Any]] = defaultdict(list)
        for pk, prev in rows.items():
            by_status[prev].append(pk)
        for prev, pks in by_status.items():
            for start in range(0, len(pks), 1000):
                connection.execute(
                    sa.update(t)
                    .where(t.c[pk_col].in_(pks[start : start + 1000]))
                    .where(t.c[spec.status.column] == spec.status.exported)
                    .values({spec.status.column: prev})
                )
    connection.execute(
        sa.delete(tracking.export_marks_table).where(tracking.export_marks_table.c.bundle_id == bundle_id)
    )


def read_marks(connection: sa.Connection, graph: Graph, bundle_id: str) -> Marks:
    """The rows ``bundle_id`` marked Exported, with their previous status, as recorded."""
    marks = Marks()
    rows = connection.execute(
        sa.select(tracking.export_marks_table).where(tracking.export_marks_table.c.bundle_id == bundle_id)
    ).all()
    for row in rows:
        table = graph.table(row.table_name)
        marks.by_table[row.table_name][table.from_text(table.pk[0], row.row_pk)] = row.previous_status
    return marks


def restore_marks(engine: sa.Engine, graph: Graph, bundle_id: str, marks: Marks, message: str) -> None:
    """Give marked rows back the status they had (where still Exported) and close the record."""
    with begin_write(engine) as connection:
        restore_rows(connection, graph, bundle_id, marks)
        connection.execute(
            sa.update(tracking.exports_table)
            .where(tracking.exports_table.c.bundle_id == bundle_id)
            .values(status="failed", finished_at=tracking.now(), message=message[:2000])
        )


def running_record(out_dir: str | Path | None) -> dict[str, Any]:
    """The columns of a ``running`` export record that say who runs it and where its bundle
    goes: what ``bundler recover`` needs if the process dies."""
    me = tracking.this_process()
    return {
        "status": "running",
        "started_at": tracking.now(),
        "host": me.host[:255],
        "pid": me.pid,
        "process_start": me.start,
        "out_dir": None if out_dir is None else str(Path(out_dir).resolve()),
    }


def close_export_record(engine: sa.Engine, bundle_id: str, status: str, **values: Any) -> None:
    with begin_write(engine) as connection:
        connection.execute(
            sa.update(tracking.exports_table)
            .where(tracking.exports_table.c.bundle_id == bundle_id)
            .values(status=status, finished_at=tracking.now(), **values)
        )


def restore_export(engine: sa.Engine, bundle_id: str, reason: str, *, spec: str | Path | None = None) -> int:
    """Undo the marking of a finished export whose bundle could not be loaded.

    Every row the export marked gets back the status it had (where it is still Exported);
    the export is recorded as ``restored``, in one transaction. Returns how many rows were marked.
    """
    with begin_write(engine) as connection:
        graph, _ = system_graph(connection, spec)
        marks = read_marks(connection, graph, bundle_id)
        restore_rows(connection, graph, bundle_id, marks)
        connection.execute(
            sa.update(tracking.exports_table)
            .where(tracking.exports_table.c.bundle_id == bundle_id)
            .values(status="restored", finished_at=tracking.now(), message=reason[:2000])
        )
    return marks.count
