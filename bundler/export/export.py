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

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import manifest_sha256, new_bundle_id
from bundler.bundle_writer import BundleWriter
from bundler.context import system_graph
from bundler.db import begin_write
from bundler.errors import BundlerError, DatabaseError, RootError, UsageError
from bundler.export.collect import TableWriter, collect_root, layers_for, outside_rows
from bundler.export.layers import Layers
from bundler.export.snapshot import Snapshot, open_snapshot
from bundler.export.usage import (
    Late,
    NothingNew,
    UsagePlan,
    ensure_tables,
    has_pending,
    read_late,
    record_usage,
)
from bundler.export.window import UsageWindow, parse_xdrs, resolve_window, zone
from bundler.graph import Graph, Scope
from bundler.keys import Key, describe, key_value
from bundler.manifest import (
    Manifest,
    ManifestDraft,
    Outside,
    RootRef,
    Selection,
    created_at,
    graph_ref,
    source_ref,
)
from bundler.marking import (
    Marks,
    Root,
    close_export_record,
    find_root,
    lock_unexported,
    mark_rows,
    restore_marks,
    running_record,
)
from bundler.progress import NullProgress, Progress
from bundler.recover import crash_point, recover_before_export
from bundler.sql import Closure, table_clause


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
    #: earlier bundles of the same source (``--after``): the shared rows they carried, unchanged
    #: since, travel as references to them (a layered bundle)
    after: tuple[str | Path, ...] = ()
    #: the same, kept in memory by a lineup for its run
    layers: Layers | None = None
    #: False: the manifest is not validated against its schema while the root is marked
    #: (the lineup validates it after the root's downtime, see ``bundler.lineup``)
    validate_manifest: bool = True
    #: a usage export that finds nothing new writes no bundle (raises :class:`NothingNew`)
    skip_empty: bool = False
    #: a plan's copy (with ``mark=False``): nothing is written to the source, not even a
    #: bundler table, and exports that died are left to the run to recover
    plan: bool = False


@dataclass
class ExportResult:
    bundle_id: str
    path: Path
    manifest: Manifest
    seconds: float
    marked_rows: int = 0
    #: ``time.monotonic()`` when the root was marked Exported (the start of its downtime)
    marked_at: float | None = None
    #: sha256 of the manifest as written (a load of this very bundle checks it is unchanged)
    manifest_sha256: str | None = None

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "bundle_id": self.bundle_id,
            "path": str(self.path),
            "kind": m.kind,
            "root": m.root.to_doc() if m.root else None,
            "usage": m.usage.to_doc(),
            "tables": m.table_rows(),
            "rows": m.totals.rows,
            "bytes": m.totals.bytes,
            "prerequisites": {t: len(o.rows) for t, o in m.prerequisites.items()},
            "depends_on": list(m.depends_on),
            "seconds": round(self.seconds, 3),
        }


# -- graph and system --------------------------------------------------------------------------


# -- roots -----------------------------------------------------------------------------------


def _check_root_status(connection: sa.Connection, root: Root, options: ExportOptions) -> str | None:
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
    elif not options.usage_only and options.mark:
        _refuse_claimed(connection, root)
    if not options.usage_only:
        return None
    base = connection.execute(
        sa.select(exports.c.bundle_id)
        .where(exports.c.root_table == root.spec.name, exports.c.root_pk == str(root.pk))
        .where(exports.c.status == "done", exports.c.marked == 1, exports.c.kind == root.kind)
        .order_by(exports.c.started_at.desc())
    ).first()
    if base is None:
        raise RootError(
            f"{root.kind} {name} has no earlier export for --usage-only to carry the usage of",
            hint="export it first (with --xdrs none for a two-phase transfer)",
        )
    if status is not None and root.row[status.column] != status.exported:
        raise RootError(
            f"{root.kind} {name} is no longer Exported since bundle {base.bundle_id}",
            hint="its usage now belongs to the source again; export it anew",
        )
    return str(base.bundle_id)


def _refuse_claimed(connection: sa.Connection, root: Root) -> None:
    """Without a status column, the export records guard the root: a root that a running or
    finished export claimed (and that was not restored since) is refused."""
    exports = tracking.exports_table
    previous = connection.execute(
        sa.select(exports.c.bundle_id, exports.c.status)
        .where(exports.c.root_table == root.spec.name, exports.c.root_pk == str(root.pk))
        .where(exports.c.status.in_(("running", "done")), exports.c.marked == 1)
        .where(exports.c.kind != "usage")
        .order_by(exports.c.started_at.desc())
    ).first()
    if previous is not None:
        state = "is being exported" if previous.status == "running" else "was exported already"
        raise RootError(
            f"{root.kind} {describe(root.key)} {state} by bundle {previous.bundle_id} "
            f"({root.spec.name} has no status column: the export records keep it)",
            hint="load that bundle, or export with --no-mark for a fresh copy",
        )


# -- the snapshot read ----------------------------------------------------------------------


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
    """Export one root (of a kind the graph declares: a customer, reseller, vendor) into ``out_dir``."""
    options = options or ExportOptions()
    progress = progress or NullProgress()
    started = time.monotonic()
    now = options.now or tracking.now()
    mode, since = parse_xdrs(options.xdrs)
    if options.usage_only and mode == "none":
        raise UsageError(
            "--usage-only with --xdrs none exports nothing", hint="choose current, all or since=DATE"
        )
    planned = options.plan and not options.mark and not options.usage_only
    with begin_write(engine) as connection:
        graph, system = system_graph(connection, spec, create=not planned)
        if kind not in graph.roots:
            raise UsageError(f"unknown root kind {kind!r}; known: {', '.join(graph.roots)}")
        root = find_root(connection, graph, kind, ident)
    if not planned:
        root = recover_before_export(engine, graph, root, "--source", progress)
    layers = layers_for(system, graph, options)
    with begin_write(engine) as connection:
        depends_on = _check_root_status(connection, root, options)
        late = read_late(connection, graph, root, depends_on) if depends_on else None
    period, time_zone = _own_period(root)
    window = resolve_window(mode, since, period, now, time_zone)
    bundle_kind = "usage" if options.usage_only else kind
    run = _Run(
        engine,
        graph,
        system,
        root,
        new_bundle_id(bundle_kind, root.key, now),
        bundle_kind,
        window,
        options.mark and not options.usage_only,
        depends_on,
        options,
        progress,
        now,
        layers,
        late=late,
    )
    if options.skip_empty and late is not None:
        with engine.connect() as connection:
            if not has_pending(connection, graph, root, run.usage, now):
                raise NothingNew(
                    f"{root.kind} {describe(root.key)}: no usage that its exports have not carried",
                    hint="nothing to load",
                )
    run.begin(out_dir)
    path, doc = run.write(out_dir)
    progress.finish(f"export {run.bundle_id}")
    return ExportResult(
        run.bundle_id,
        path,
        doc,
        time.monotonic() - started,
        run.marks.count,
        marked_at=run.marked_at,
        manifest_sha256=run.manifest_sha256,
    )


def _own_period(root: Root) -> tuple[str | None, str | None]:
    """The root's billing period and time zone, where the graph names them."""
    period = root.spec.billing_period
    if period is None:
        return None, None
    zone_name = root.row.get(period.time_zone) if period.time_zone else None
    if zone_name:
        zone(zone_name, what=f"{root.kind} {describe(root.key)}: {period.time_zone}")
    return period.codes.get(str(root.row[period.column])), zone_name or None


@dataclass
class _Run:
    """One export of a root, from its record to its bundle."""

    engine: sa.Engine
    graph: Graph
    system: tracking.SystemInfo
    root: Root
    bundle_id: str
    bundle_kind: str
    window: UsageWindow
    marking: bool
    depends_on: str | None
    options: ExportOptions
    progress: Progress
    now: datetime
    layers: Layers | None = None
    marks: Marks = field(default_factory=Marks)
    marked_at: float | None = None
    manifest_sha256: str | None = None
    late: Late | None = None
    usage: UsagePlan = field(init=False)

    def __post_init__(self) -> None:
        self.usage = UsagePlan(self.window, late=self.late)

    def begin(self, out_dir: str | Path) -> None:
        """Record the export (who runs it, where its bundle goes) and mark the root, in one transaction."""
        root = self.root
        if not self.recorded:
            return  # an audit copy (--no-mark): the source's data and records stay as they are
        with begin_write(self.engine) as connection:
            # the usage records' tables, which the write records into after the mark: a
            # catalog query that has no place inside the downtime
            ensure_tables(connection)
            if self.marking:
                lock_unexported(connection, root)
                if root.spec.status is None:  # the records are the guard: checked in this transaction
                    _refuse_claimed(connection, root)
            connection.execute(
                tracking.exports_table.insert().values(
                    bundle_id=self.bundle_id,
                    kind=self.bundle_kind,
                    root_table=root.spec.name,
                    root_pk=str(root.pk),
                    root_key=_root_key_text(root.key),
                    window_from=self.window.start,
                    window_to=self.window.end,
                    usage_mode=self.window.mode,
                    marked=1 if self.marking else 0,
                    depends_on=self.depends_on,
                    **running_record(out_dir),
                )
            )
            if self.marking:
                self.marks = mark_rows(connection, self.graph, root, self.bundle_id)
        self.marked_at = time.monotonic()
        if self.marks.count:
            self.progress.note(f"{self.bundle_id}: marked {self.marks.count} row(s) Exported in the source")
        crash_point("marked")

    def write(self, out_dir: str | Path) -> tuple[Path, Manifest]:
        """Read the snapshot into the bundle and record it done; on any failure give back what
        was marked and leave no bundle."""
        writer: BundleWriter | None = None
        try:
            writer = BundleWriter(out_dir, self.bundle_id)
            self.progress.start(f"export {self.bundle_id}")
            with open_snapshot(self.engine, batch_rows=self.options.batch_rows) as snapshot:
                body = collect_root(snapshot, self, writer)
            if self.options.skip_empty and self.late is not None and self.usage.rows == 0:
                raise NothingNew(
                    f"{self.root.kind} {describe(self.root.key)}: no usage that its exports have not carried",
                    hint="nothing to load",
                )
            if self.marking or self.late is not None:  # an audit copy carries nothing anywhere
                with begin_write(self.engine) as connection:  # before done: a finished export has them
                    record_usage(connection, self.bundle_id, self.graph, self.usage)
            path, doc = writer.finish(self._draft(body), validate=self.options.validate_manifest)
            crash_point("renamed")
        except BaseException as exc:
            if writer is not None:
                writer.abort()
            if isinstance(exc, NothingNew):
                close_export_record(self.engine, self.bundle_id, "empty", message=exc.message[:2000])
                raise
            self._undo(f"{type(exc).__name__}: {exc}")
            if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
                raise DatabaseError(
                    f"export of {self.root.kind} {describe(self.root.key)} failed: "
                    f"the source database went away ({exc.orig})",
                    hint="statuses were restored where the database could be reached; re-run the export",
                ) from exc
            raise
        if not self.recorded:
            return path, doc
        try:
            self.manifest_sha256 = manifest_sha256(path)
            close_export_record(
                self.engine,
                self.bundle_id,
                "done",
                manifest_sha256=self.manifest_sha256,
                rows=doc.totals.rows,
            )
        except BaseException:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
            self._undo("could not record the finished export")
            raise
        return path, doc

    def _draft(self, body: dict[str, Any]) -> ManifestDraft:
        root = self.root
        return ManifestDraft(
            kind=self.bundle_kind,
            root=RootRef(root.spec.name, key_value(root.pk), root.key),
            source=source_ref(self.system),
            graph=graph_ref(self.graph),
            created_at=created_at(self.now),
            # a status changed only where the graph has one: no bundle claims a mark that did not happen
            marked=self.marking and (self.root.spec.status is not None or self.marks.count > 0),
            usage=self.window.manifest(
                self.usage.windows, self.usage.warning, self.usage.manifest_late_after()
            ),
            prerequisites=body["prerequisites"],
            depends_on=tuple(
                dict.fromkeys([*([self.depends_on] if self.depends_on else []), *body["layers"]])
            ),
            status_restored=body["restored"],
        )

    @property
    def recorded(self) -> bool:
        """Whether the source records this export in bundler_exports (not an audit copy)."""
        return self.marking or self.options.usage_only

    def _undo(self, message: str) -> None:
        if self.marking:
            restore_marks(self.engine, self.graph, self.bundle_id, self.marks, message)
        elif self.recorded:
            close_export_record(self.engine, self.bundle_id, "failed", message=message[:2000])


def _root_key_text(key: Key) -> str:
    from bundler.keys import key_text

    return key_text(key)[:255]


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
        graph, system = system_graph(connection, spec)
    bundle_id = new_bundle_id("config", "-".join(dict.fromkeys(s.table for s in selections)), now)
    writer = BundleWriter(out_dir, bundle_id)
    with begin_write(engine) as connection:
        connection.execute(
            tracking.exports_table.insert().values(
                bundle_id=bundle_id,
                kind="config",
                usage_mode="none",
                marked=0,
                root_key=",".join(s.table for s in selections)[:255],
                **running_record(out_dir),
            )
        )
    try:
        with open_snapshot(engine, batch_rows=batch_rows) as snapshot:
            prerequisites = _read_config(snapshot, graph, selections, writer, progress)
        progress.finish(f"export {bundle_id}")
        path, doc = writer.finish(
            ManifestDraft(
                kind="config",
                root=None,
                selection=tuple(Selection(s.table, s.keys) for s in selections),
                source=source_ref(system),
                graph=graph_ref(graph),
                created_at=created_at(now),
                marked=False,
                usage=UsageWindow("none").manifest(),
                prerequisites=prerequisites,
            )
        )
        crash_point("renamed")
    except BaseException as exc:
        writer.abort()
        close_export_record(engine, bundle_id, "failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    sha = manifest_sha256(path)
    close_export_record(engine, bundle_id, "done", manifest_sha256=sha, rows=doc.totals.rows)
    return ExportResult(bundle_id, path, doc, time.monotonic() - started, manifest_sha256=sha)


def _read_config(
    snapshot: Snapshot,
    graph: Graph,
    selections: Sequence[ConfigSelection],
    writer: BundleWriter,
    progress: Progress,
) -> dict[str, Outside]:
    """Write the selected configuration and what it references; returns the prerequisites."""
    connection = snapshot.connection
    closure = Closure(connection, graph)
    for sel in selections:
        closure.add(sel.table, _select_config(connection, graph, sel))
    closure.run()
    out = TableWriter(snapshot, writer, Marks(), progress)
    for table_spec in closure.tables((Scope.SHARED,)):
        where = closure.selection(table_spec)
        if where is not None:
            out.write(table_spec, where)
    return outside_rows(connection, graph, closure)


def _select_config(connection: sa.Connection, graph: Graph, sel: ConfigSelection) -> list[dict[str, Any]]:
    spec = graph.table(sel.table)
    if not spec.is_shared:
        shared = ", ".join(t.name for t in graph.in_scope(Scope.SHARED))
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
