"""Export: one root (or a selection of configuration) of the source into a bundle.

The order of events, for a customer, reseller or vendor:

1. find the root and refuse it when unknown, terminated or already Exported;
2. mark it Exported (the root and every owned row with a status: a customer and its
   accounts; a reseller and everything under it) and record the export in
   ``bundler_exports``, with each row's previous status, in one committed transaction:
   from here billing and provisioning stop in the source;
3. read everything in one consistent snapshot: the closure from the entity graph, the
   usage rows of the window (streamed), the shared rows they reference, the natural keys
   of the prerequisites; write the Parquet files as the batches come;
4. write the manifest last and rename the bundle into place; record the export as done.

Any failure after step 2 restores the statuses and leaves no bundle behind.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import BundleWriter
from bundler.db import begin_write
from bundler.errors import BundlerError, DatabaseError, RootError, UsageError
from bundler.export.closure import Closure, lookup_row, natural_keys, table_clause
from bundler.export.snapshot import Snapshot, open_snapshot
from bundler.export.window import UsageWindow, parse_xdrs, resolve_window
from bundler.graph import Graph, TableSpec, graph_for_release, load_graph
from bundler.keys import Key, describe, key_value
from bundler.progress import NullProgress, Progress

ROOT_KINDS = ("customer", "reseller", "vendor")


@dataclass(frozen=True)
class ConfigSelection:
    """``--config TABLE[=KEY,…]``: a whole shared table, or the entries named by natural key."""

    table: str
    keys: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ConfigSelection:
        table, _, keys = text.partition("=")
        if not table.strip():
            raise UsageError(
                f"--config {text!r}: name a table", hint="e.g. --config products or --config tariffs=T1,T2"
            )
        return cls(table.strip(), tuple(k.strip() for k in keys.split(",") if k.strip()))


@dataclass(frozen=True)
class ExportOptions:
    xdrs: str = "current"
    usage_only: bool = False
    mark: bool = True
    now: datetime | None = None
    batch_rows: int = 65_536


@dataclass
class ExportResult:
    bundle_id: str
    path: Path
    manifest: dict[str, Any]
    seconds: float
    marked_rows: int = 0

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "bundle_id": self.bundle_id,
            "path": str(self.path),
            "kind": m["kind"],
            "root": m["root"],
            "usage": m["usage"],
            "tables": {t: e["rows"] for t, e in m["tables"].items()},
            "rows": m["totals"]["rows"],
            "bytes": m["totals"]["bytes"],
            "prerequisites": {t: len(e["rows"]) for t, e in m["prerequisites"].items()},
            "depends_on": m["depends_on"],
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Root:
    kind: str
    spec: TableSpec
    row: dict[str, Any]
    key: Key

    @property
    def pk(self) -> Any:
        return self.row[self.spec.pk[0]]


@dataclass
class _Marks:
    """Rows the export marked Exported, with their previous status."""

    by_table: dict[str, dict[Any, str]] = field(default_factory=lambda: defaultdict(dict))

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.by_table.values())


# -- graph and system --------------------------------------------------------------------------


def source_graph(
    connection: sa.Connection, spec_path: str | Path | None
) -> tuple[Graph, tracking.SystemInfo]:
    """The graph to export with, and the identity of the source database."""
    tracking.ensure_tables(connection)
    if spec_path is not None:
        graph = load_graph(spec_path)
        if connection.execute(sa.select(tracking.system_table)).first() is None:
            return graph, tracking.register_system(connection, graph.release)
        system = tracking.read_system(connection)
        return graph, system
    system = tracking.read_system(connection)
    return graph_for_release(system.release), system


# -- roots -----------------------------------------------------------------------------------


def find_root(connection: sa.Connection, graph: Graph, kind: str, ident: str | int) -> _Root:
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
    return _Root(kind, spec, data, key)


def _check_root_status(connection: sa.Connection, root: _Root, options: ExportOptions) -> str | None:
    """Refuse roots in the wrong state; returns the bundle a usage-only export depends on."""
    status = root.spec.status
    name = describe(root.key)
    exports = tracking.exports_table
    if status is not None:
        value = root.row[status.column]
        if value in status.terminated:
            raise RootError(
                f"{root.kind} {name} is terminated in the source ({status.column} = {value!r})",
                hint="a terminated root is not exported",
            )
        if value == status.exported and not options.usage_only and options.mark:
            previous = connection.execute(
                sa.select(exports.c.bundle_id, exports.c.finished_at)
                .where(exports.c.root_table == root.spec.name, exports.c.root_pk == str(root.pk))
                .where(exports.c.status == "done", exports.c.marked == 1)
                .order_by(exports.c.started_at.desc())
            ).first()
            by = f" by bundle {previous.bundle_id}" if previous else ""
            raise RootError(
                f"{root.kind} {name} is already Exported{by}",
                hint="load that bundle, or export with --no-mark for an audit copy",
            )
    if not options.usage_only:
        return None
    earlier = connection.execute(
        sa.select(exports.c.bundle_id, exports.c.marked)
        .where(exports.c.root_table == root.spec.name, exports.c.root_pk == str(root.pk))
        .where(exports.c.status == "done", exports.c.usage_mode == "none", exports.c.kind == root.kind)
        .order_by(exports.c.started_at.desc())
    ).first()
    if earlier is None:
        raise RootError(
            f"{root.kind} {name} has no earlier export without usage for --usage-only to complete",
            hint="export it first with --xdrs none",
        )
    if status is not None and earlier.marked and root.row[status.column] != status.exported:
        raise RootError(
            f"{root.kind} {name} is no longer Exported since bundle {earlier.bundle_id}",
            hint="its usage now belongs to the source again; export it anew",
        )
    return str(earlier.bundle_id)


def _slug(key: Key) -> str:
    text = "-".join(str(v if not isinstance(v, dict) else _slug(v)) for v in key.values())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.-")[:40]
    return slug or "root"


BUNDLE_ID_MAX = 64  # the bookkeeping tables' bundle_id columns


def _new_bundle_id(kind: str, slug: str, now: datetime) -> str:
    """``kind-slug-YYYYmmddTHHMMSS-xxxxxx``, at most 64 characters (the slug is shortened)."""
    room = BUNDLE_ID_MAX - len(kind) - len("-") - len("-YYYYmmddTHHMMSS-xxxxxx")
    slug = slug[:room].rstrip("_.-") or "root"
    return f"{kind}-{slug}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


# -- marking ---------------------------------------------------------------------------------


def _mark(connection: sa.Connection, graph: Graph, root: _Root, bundle_id: str) -> _Marks:
    """Set every owned row with a status to Exported; remember what it was."""
    closure = Closure(connection, graph, follow_shared=False)
    closure.add(root.spec.name, [root.row])
    closure.run()
    marks = _Marks()
    for spec in closure.tables(("owned",)):
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


def _restore(engine: sa.Engine, graph: Graph, bundle_id: str, marks: _Marks, message: str) -> None:
    """Give marked rows back the status they had (where still Exported) and close the record."""
    with begin_write(engine) as connection:
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
        connection.execute(
            sa.update(tracking.exports_table)
            .where(tracking.exports_table.c.bundle_id == bundle_id)
            .values(status="failed", finished_at=tracking.now(), message=message[:2000])
        )


# -- the snapshot read ----------------------------------------------------------------------


class _Writer:
    """Streams tables of the closure into the bundle, restoring marked statuses."""

    def __init__(self, snapshot: Snapshot, writer: BundleWriter, marks: _Marks, progress: Progress) -> None:
        self.snapshot = snapshot
        self.writer = writer
        self.marks = marks
        self.progress = progress
        self.restored: dict[str, dict[str, int]] = {}

    def write(
        self, spec: TableSpec, where: sa.ColumnElement[bool], collect: dict[str, set[Any]] | None = None
    ) -> int:
        import pyarrow.compute as pc

        out = self.writer.table(spec.name, spec.arrow_schema(), spec.scope)
        task = f"export {self.writer.bundle_id}"
        rows = 0
        # usage tables are the big ones: read in key ranges side by side
        for batch in self.snapshot.read(spec, where, split=spec.scope == "usage"):
            batch = self._restore_status(spec, batch)
            if collect is not None:
                for col, values in collect.items():
                    values.update(v for v in pc.unique(batch.column(col)).to_pylist() if v is not None)
            out.write(batch)
            rows += batch.num_rows
            self.progress.advance(task, batch.num_rows)
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
            self.restored[spec.name] = {
                "status_restored": self.restored.get(spec.name, {}).get("status_restored", 0) + restored
            }
        return batch.set_column(
            idx, batch.schema.field(idx), pa.array(values, type=batch.schema.field(idx).type)
        )


def _window_clause(spec: TableSpec, window: UsageWindow) -> list[sa.ColumnElement[bool]]:
    t = table_clause(spec)
    assert spec.time_column is not None
    clauses = []
    if window.start is not None:
        clauses.append(t.c[spec.time_column] >= window.start)
    if window.end is not None:
        clauses.append(t.c[spec.time_column] < window.end)
    return clauses


def _prerequisites(connection: sa.Connection, graph: Graph, closure: Closure) -> dict[str, Any]:
    out: dict[str, Any] = {}
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
        out[table] = {
            "column": column,
            "scope": graph.table(table).scope,
            "rows": [{"value": key_value(v), "key": keys[v]} for v in sorted(values, key=str)],
        }
    return out


# -- export ----------------------------------------------------------------------------------


def export_root(
    engine: sa.Engine,
    kind: str,
    ident: str | int,
    out_dir: str | Path,
    *,
    spec: str | Path | None = None,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export one customer, reseller or vendor into a bundle in ``out_dir``."""
    if kind not in ROOT_KINDS:
        raise UsageError(f"unknown root kind {kind!r}; known: {', '.join(ROOT_KINDS)}")
    options = options or ExportOptions()
    progress = progress or NullProgress()
    started = time.monotonic()
    now = options.now or tracking.now()
    mode, since = parse_xdrs(options.xdrs)
    if options.usage_only and mode == "none":
        raise UsageError(
            "--usage-only with --xdrs none exports nothing", hint="choose current, all or since=DATE"
        )
    with begin_write(engine) as connection:
        graph, system = source_graph(connection, spec)
        root = find_root(connection, graph, kind, ident)
        depends_on = _check_root_status(connection, root, options)
    period = None
    if root.spec.billing_period is not None:
        period = root.spec.billing_period.codes.get(str(root.row[root.spec.billing_period.column]))
    window = resolve_window(mode, since, period, now)
    bundle_kind = "usage" if options.usage_only else kind
    bundle_id = _new_bundle_id(bundle_kind, _slug(root.key), now)
    marking = options.mark and not options.usage_only

    with begin_write(engine) as connection:
        connection.execute(
            tracking.exports_table.insert().values(
                bundle_id=bundle_id,
                kind=bundle_kind,
                root_table=root.spec.name,
                root_pk=str(root.pk),
                root_key=_root_key_text(root.key),
                window_from=window.start,
                window_to=window.end,
                usage_mode=window.mode,
                marked=1 if marking else 0,
                depends_on=depends_on,
                status="running",
                started_at=tracking.now(),
            )
        )
        marks = _mark(connection, graph, root, bundle_id) if marking else _Marks()
    if marks.count:
        progress.note(f"{bundle_id}: marked {marks.count} row(s) Exported in the source")

    writer = BundleWriter(out_dir, bundle_id)
    progress.start(f"export {bundle_id}")
    try:
        with open_snapshot(engine, batch_rows=options.batch_rows) as snapshot:
            body = _read_root(snapshot, graph, root, window, options, writer, marks, progress)
        manifest = {
            "kind": bundle_kind,
            "root": {"table": root.spec.name, "source_pk": key_value(root.pk), "natural_key": root.key},
            "source": {"system_id": system.system_id, "release": system.release, "dialect": system.dialect},
            "graph": {"system": graph.system, "release": graph.release, "sha256": graph.sha256},
            "created_at": now.isoformat(timespec="seconds") + "Z",
            "marked": marking,
            "usage": window.manifest(),
            "prerequisites": body["prerequisites"],
            "depends_on": [depends_on] if depends_on else [],
            "_table_extra": body["restored"],
        }
        path, doc = writer.finish(manifest)
    except BaseException as exc:
        writer.abort()
        if marking:
            _restore(engine, graph, bundle_id, marks, f"{type(exc).__name__}: {exc}")
        else:
            _close_record(engine, bundle_id, "failed", message=f"{type(exc).__name__}: {exc}")
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            raise DatabaseError(
                f"export of {kind} {describe(root.key)} failed: the source database went away ({exc.orig})",
                hint="statuses were restored where the database could be reached; re-run the export",
            ) from exc
        raise
    try:
        _close_record(engine, bundle_id, "done", manifest_sha256=_sha_of(path), rows=doc["totals"]["rows"])
    except BaseException:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        if marking:
            _restore(engine, graph, bundle_id, marks, "could not record the finished export")
        raise
    progress.finish(f"export {bundle_id}")
    return ExportResult(bundle_id, path, doc, time.monotonic() - started, marks.count)


def _root_key_text(key: Key) -> str:
    from bundler.keys import key_text

    return key_text(key)[:255]


def _sha_of(path: Path) -> str:
    from bundler.bundle import MANIFEST, sha256_file

    return sha256_file(path / MANIFEST)


def _close_record(engine: sa.Engine, bundle_id: str, status: str, **values: Any) -> None:
    with begin_write(engine) as connection:
        connection.execute(
            sa.update(tracking.exports_table)
            .where(tracking.exports_table.c.bundle_id == bundle_id)
            .values(status=status, finished_at=tracking.now(), **values)
        )


def _read_root(
    snapshot: Snapshot,
    graph: Graph,
    root: _Root,
    window: UsageWindow,
    options: ExportOptions,
    writer: BundleWriter,
    marks: _Marks,
    progress: Progress,
) -> dict[str, Any]:
    connection = snapshot.connection
    owned = Closure(connection, graph, follow_shared=not options.usage_only)
    fresh = (
        connection.execute(
            sa.select(table_clause(root.spec)).where(table_clause(root.spec).c[root.spec.pk[0]] == root.pk)
        )
        .mappings()
        .one()
    )
    owned.add(root.spec.name, [dict(fresh)])
    owned.run()
    out = _Writer(snapshot, writer, marks, progress)
    # usage first: it is streamed, and the shared rows it references join the closure after
    refs = Closure(connection, graph) if options.usage_only else owned
    if window.carries_usage:
        for spec in graph.tables_in_order(("usage",)):
            where = owned.usage_selection(spec)
            if where is None:
                continue
            # the rows that own the usage are in the closure already: no need to collect them
            owners = owned.usage_owners[spec.name]
            wanted = [r for r in spec.references if r not in owners or refs is not owned]
            collect: dict[str, set[Any]] = {r.column: set() for r in wanted}
            out.write(spec, sa.and_(where, *_window_clause(spec, window)), collect)
            for ref in wanted:
                refs.reference(ref.table, ref.target_column, collect[ref.column])
        refs.run()
    if not options.usage_only:
        for spec in owned.tables(("owned", "shared")):
            where = owned.selection(spec)
            if where is not None:
                out.write(spec, where)
    else:
        for spec in refs.tables(("shared",)):
            where = refs.selection(spec)
            if where is not None:
                out.write(spec, where)
    return {"prerequisites": _prerequisites(connection, graph, refs), "restored": out.restored}


def export_config(
    engine: sa.Engine,
    selections: Sequence[ConfigSelection],
    out_dir: str | Path,
    *,
    spec: str | Path | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    batch_rows: int = 65_536,
) -> ExportResult:
    """Export generic configuration: whole shared tables or entries named by natural key."""
    if not selections:
        raise UsageError("--config needs at least one TABLE[=KEY,…]")
    progress = progress or NullProgress()
    started = time.monotonic()
    now = now or tracking.now()
    with begin_write(engine) as connection:
        graph, system = source_graph(connection, spec)
    slug = "-".join(dict.fromkeys(s.table for s in selections))[:40]
    bundle_id = _new_bundle_id("config", re.sub(r"[^A-Za-z0-9._-]+", "_", slug), now)
    writer = BundleWriter(out_dir, bundle_id)
    try:
        with open_snapshot(engine, batch_rows=batch_rows) as snapshot:
            connection = snapshot.connection
            closure = Closure(connection, graph)
            for sel in selections:
                closure.add(sel.table, _select_config(connection, graph, sel))
            closure.run()
            out = _Writer(snapshot, writer, _Marks(), progress)
            for table_spec in closure.tables(("shared",)):
                where = closure.selection(table_spec)
                if where is not None:
                    out.write(table_spec, where)
            prerequisites = _prerequisites(connection, graph, closure)
        path, doc = writer.finish(
            {
                "kind": "config",
                "root": None,
                "selection": [{"table": s.table, "keys": list(s.keys)} for s in selections],
                "source": {
                    "system_id": system.system_id,
                    "release": system.release,
                    "dialect": system.dialect,
                },
                "graph": {"system": graph.system, "release": graph.release, "sha256": graph.sha256},
                "created_at": now.isoformat(timespec="seconds") + "Z",
                "marked": False,
                "usage": UsageWindow("none").manifest(),
                "prerequisites": prerequisites,
                "depends_on": [],
            }
        )
    except BaseException:
        writer.abort()
        raise
    with begin_write(engine) as connection:
        connection.execute(
            tracking.exports_table.insert().values(
                bundle_id=bundle_id,
                kind="config",
                usage_mode="none",
                marked=0,
                status="done",
                started_at=now,
                finished_at=tracking.now(),
                manifest_sha256=_sha_of(path),
                rows=doc["totals"]["rows"],
                root_key=",".join(s.table for s in selections)[:255],
            )
        )
    return ExportResult(bundle_id, path, doc, time.monotonic() - started)


def _select_config(connection: sa.Connection, graph: Graph, sel: ConfigSelection) -> list[dict[str, Any]]:
    spec = graph.table(sel.table)
    if spec.scope != "shared":
        shared = ", ".join(t.name for t in graph.in_scope("shared"))
        raise UsageError(
            f"--config {sel.table}: it is {spec.scope}, not generic configuration",
            hint=f"choose among: {shared}",
        )
    closure = Closure(connection, graph)
    t = table_clause(spec)
    if not sel.keys:
        pk = spec.pk[0]
        values = [r[0] for r in connection.execute(sa.select(t.c[pk]))]
        return closure.fetch(spec, pk, values)
    if len(spec.natural_key) != 1:
        raise UsageError(
            f"--config {sel.table}=…: its natural key has {len(spec.natural_key)} columns",
            hint=f"export the whole table with --config {sel.table}",
        )
    column = spec.natural_key[0]
    found = connection.execute(sa.select(t.c[spec.pk[0]], t.c[column]).where(t.c[column].in_(sel.keys))).all()
    present = {row[1] for row in found}
    unknown = [k for k in sel.keys if k not in present]
    if unknown:
        raise RootError(
            f"--config {sel.table}: no entry with {column} = {', '.join(repr(k) for k in unknown)}",
            hint=f"list them with: bundler inspect … or SELECT {column} FROM {sel.table}",
        )
    return closure.fetch(spec, spec.pk[0], [row[0] for row in found])


def export_many(
    engine: sa.Engine,
    kind: str,
    idents: Sequence[str | int],
    out_dir: str | Path,
    *,
    workers: int = 1,
    spec: str | Path | None = None,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
) -> list[ExportResult | BundlerError]:
    """Export several roots, one bundle each, ``workers`` at a time; failures are returned, not raised."""

    def one(ident: str | int) -> ExportResult | BundlerError:
        try:
            return export_root(engine, kind, ident, out_dir, spec=spec, options=options, progress=progress)
        except BundlerError as exc:
            return exc

    if workers <= 1 or len(idents) <= 1:
        return [one(i) for i in idents]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export") as pool:
        return list(pool.map(one, idents))


def restore_export(engine: sa.Engine, bundle_id: str, reason: str, *, spec: str | Path | None = None) -> int:
    """Undo the marking of a finished export whose bundle could not be loaded.

    Every row the export marked gets back the status it had (where it is still Exported);
    the export is recorded as ``restored``. Returns how many rows were marked.
    """
    marks = _Marks()
    with begin_write(engine) as connection:
        graph, _ = source_graph(connection, spec)
        rows = connection.execute(
            sa.select(tracking.export_marks_table).where(tracking.export_marks_table.c.bundle_id == bundle_id)
        ).all()
        for row in rows:
            table = graph.table(row.table_name)
            value: Any = row.row_pk
            if table.column_map[table.pk[0]].type.startswith("int"):
                value = int(value)
            marks.by_table[row.table_name][value] = row.previous_status
    _restore(engine, graph, bundle_id, marks, reason)
    with begin_write(engine) as connection:
        connection.execute(
            sa.update(tracking.exports_table)
            .where(tracking.exports_table.c.bundle_id == bundle_id)
            .values(status="restored")
        )
    return marks.count
