"""``reverse export``, on the target: find the customer and the load that brought it,
mark it Exported, and write its reverse bundle (see :mod:`bundler.reverse`)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import manifest_sha256, new_bundle_id
from bundler.bundle_writer import BundleWriter
from bundler.context import system_graph
from bundler.db import begin_write, refresh_stale_statistics
from bundler.errors import RootError
from bundler.export.snapshot import open_snapshot
from bundler.export.window import current_period
from bundler.graph import Graph
from bundler.keys import describe, key_text, key_value
from bundler.manifest import (
    Manifest,
    ManifestDraft,
    RootRef,
    UsageRef,
    created_at,
    graph_ref,
    source_ref,
)
from bundler.marking import Marks, Root, close_export_record, mark_rows, restore_marks, running_record
from bundler.progress import NullProgress, Progress
from bundler.recover import crash_point, recover_before_export
from bundler.reverse.common import REVERSE_KIND, ROOT_KIND, Origin
from bundler.reverse.reader import Reader
from bundler.reverse.report import ReverseExportResult
from bundler.sql import lookup_row, natural_keys, table_clause

# -- the customer in the target ----------------------------------------------------------------


def _origin(connection: sa.Connection, root: Root) -> Origin:
    """The load that brought ``root`` as a root of its own (RootError, naming why, if none)."""
    loads = tracking.loads_table
    row = connection.execute(
        sa.select(loads.c.bundle_id, loads.c.source_system, loads.c.root_source_pk)
        .where(loads.c.root_table == root.spec.name, loads.c.root_target_pk == str(root.pk))
        .where(loads.c.kind == root.kind, loads.c.outcome == "loaded")
        .order_by(loads.c.loaded_at.desc())
    ).first()
    if row is None:
        raise _not_loaded(connection, root)
    return Origin(str(row.bundle_id), str(row.source_system), str(row.root_source_pk))


def _not_loaded(connection: sa.Connection, root: Root) -> RootError:
    """Why no load brought ``root`` as a customer of its own: inside another bundle, or none at all."""
    loads, ledger = tracking.loads_table, tracking.ledger_table
    name = f"{root.kind} {describe(root.key)} ({root.spec.pk[0]}={root.pk})"
    within = connection.execute(
        sa.select(loads.c.bundle_id, loads.c.kind)
        .join(ledger, ledger.c.bundle_id == loads.c.bundle_id)
        .where(ledger.c.table_name == root.spec.name, ledger.c.target_pk == str(root.pk))
        .where(ledger.c.action == "created", loads.c.outcome == "loaded")
    ).first()
    if within is not None:
        return RootError(
            f"{name} arrived inside {within.kind} bundle {within.bundle_id}, not as a customer of its own",
            hint="a reverse transfer returns a customer that was exported and loaded as its own root",
        )
    return RootError(
        f"{name} did not arrive by a load: this target's ledger (bundler_loads) names no load of it",
        hint="a reverse transfer returns only a customer that bundler load brought into this target",
    )


def _find_root(connection: sa.Connection, graph: Graph, ident: str | int, kind: str = ROOT_KIND) -> Root:
    """The root (a customer in the billing graphs) named by id or name in the target."""
    root = graph.root(kind)
    spec = graph.table(root.table)
    text = str(ident).strip()
    row = lookup_row(connection, spec, root.lookup, ident)
    if row is None:
        raise RootError(
            f"no {kind} {text!r} in the target ({spec.name} has no row with "
            f"{' or '.join(root.lookup)} = {text!r})",
            hint="name it by its id in the target or by its name",
        )
    data = row
    for col, allowed in root.where.items():
        if data[col] not in allowed:
            raise RootError(f"{spec.name} {text!r} is not a {kind} ({col} = {data[col]!r})")
    pk = data[spec.pk[0]]
    key = natural_keys(connection, graph, spec.name, spec.pk[0], [pk])[pk]
    return Root(kind, spec, data, key)


def _check_target_state(connection: sa.Connection, root: Root) -> None:
    """Refuse a customer already Exported in the target (by a reverse export or otherwise)."""
    status = root.spec.status
    if status is not None and root.row[status.column] != status.exported:
        return
    exports = tracking.exports_table
    earlier = connection.execute(
        sa.select(exports.c.bundle_id)
        .where(exports.c.root_table == root.spec.name, exports.c.root_pk == str(root.pk))
        .where(exports.c.kind == REVERSE_KIND, exports.c.status.in_(("running", "done")))
        .order_by(exports.c.started_at.desc())
    ).first()
    if status is None and earlier is None:
        return  # no status column: the export records are the guard, and none claims it
    if earlier is not None:
        raise RootError(
            f"{root.kind} {describe(root.key)} is already Exported in the target by reverse bundle {earlier.bundle_id}",
            hint="apply that bundle to the source with bundler reverse load, or lift the mark with bundler reverse undo",
        )
    assert status is not None
    raise RootError(
        f"{root.kind} {describe(root.key)} is Exported in the target ({status.column} = {status.exported!r})",
        hint="a reverse transfer starts from a customer active in the target",
    )


def _claim_and_mark(
    connection: sa.Connection, graph: Graph, root: Root, origin: Origin, bundle_id: str, out_dir: str | Path
) -> tuple[Root, Marks]:
    """Check the customer again under a row lock, record the reverse export, mark its rows Exported.

    Two reverse exports of one customer must not both go on.
    """
    t = table_clause(root.spec)
    fresh = (
        connection.execute(sa.select(t).where(t.c[root.spec.pk[0]] == root.pk).with_for_update())
        .mappings()
        .one()
    )
    root = Root(root.kind, root.spec, dict(fresh), root.key)
    _check_target_state(connection, root)
    connection.execute(
        tracking.exports_table.insert().values(
            bundle_id=bundle_id,
            kind=REVERSE_KIND,
            root_table=root.spec.name,
            root_pk=str(root.pk),
            root_key=key_text(root.key)[:255],
            usage_mode="all",
            marked=1,
            depends_on=origin.export_bundle,
            **running_record(out_dir),
        )
    )
    return root, mark_rows(connection, graph, root, bundle_id)


def _period_start(root: Root, now: datetime) -> datetime | None:
    """When the customer's current billing period began (None: the graph does not say)."""
    if root.spec.billing_period is None:
        return None
    period = root.spec.billing_period
    code = period.codes.get(str(root.row[period.column]))
    if code is None:
        return None
    zone = root.row.get(period.time_zone) if period.time_zone else None  # its own time zone
    return current_period(code, now, zone or None)[0]


# -- the bundle ------------------------------------------------------------------------------


def _draft(
    reader: Reader, root: Root, origin: Origin, system: tracking.SystemInfo, graph: Graph, now: datetime
) -> ManifestDraft:
    """The reverse bundle's manifest, as far as the reader found it."""
    return ManifestDraft(
        kind=REVERSE_KIND,
        root=RootRef(
            root.spec.name, key_value(root.spec.from_text(root.spec.pk[0], origin.root_source_pk)), root.key
        ),
        source=source_ref(system),
        graph=graph_ref(graph),
        created_at=created_at(now),
        marked=root.spec.status is not None,  # no status column: nothing was marked
        usage=UsageRef("all", None, None, None, has_period=True),
        prerequisites=reader.prerequisites(),
        depends_on=(origin.export_bundle,),
        reverse={
            "source_system": origin.source_system,
            "export_bundle": origin.export_bundle,
            "by_key": reader.by_key_tables(),
            "rows": reader.rows,
            "not_returned": reader.not_returned,
        },
    )


def _check_source(source: sa.Engine, root: Root, origin: Origin, spec: str | Path | None) -> None:
    """Refuse, before anything is marked, what ``reverse load`` would refuse on the source:
    another source system, an export it did not make or has reversed already, a customer it
    no longer has, has terminated or has taken back."""
    from bundler.reverse.checks import check_export_record, check_root_row

    with begin_write(source) as connection:
        graph, system = system_graph(connection, spec)
    if system.system_id != origin.source_system:
        raise RootError(
            f"{ROOT_KIND} {describe(root.key)} came from source system {origin.source_system}; "
            f"the database given as its source is system {system.system_id}",
            hint="name the source the customer was exported from",
        )
    ref = RootRef(
        root.spec.name, key_value(root.spec.from_text(root.spec.pk[0], origin.root_source_pk)), root.key
    )
    with source.connect() as connection:
        check_export_record(
            connection, ref, origin.export_bundle, system.system_id, f"of {describe(root.key)}"
        )
        check_root_row(connection, graph, ref)


def _rehearse(
    source: sa.Engine, path: Path, spec: str | Path | None, batch_rows: int
) -> list[dict[str, Any]]:
    """Apply the bundle to the source and roll it back: what the source would not take."""
    from bundler.reverse.load import reverse_load

    return reverse_load(source, path, spec=spec, batch_rows=batch_rows, rehearse=True).not_returned


def _finish(
    target_engine: sa.Engine, graph: Graph, bundle_id: str, marks: Marks, path: Path, manifest: Manifest
) -> None:
    """Record the reverse export as done; if that fails, remove the bundle and restore the marks."""
    try:
        close_export_record(
            target_engine, bundle_id, "done", manifest_sha256=manifest_sha256(path), rows=manifest.totals.rows
        )
    except BaseException:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        restore_marks(target_engine, graph, bundle_id, marks, "could not record the finished reverse export")
        raise


def reverse_export(
    target_engine: sa.Engine,
    customer: str | int,
    out_dir: str | Path,
    *,
    spec: str | Path | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    batch_rows: int = 65_536,
    kind: str = ROOT_KIND,
    source: sa.Engine | None = None,
) -> ReverseExportResult:
    """Write the reverse bundle of a customer (or a root of ``kind``) that a load brought into this target.

    Marks the customer Exported in the target. See :mod:`bundler.reverse` for what the
    bundle holds and how each usage row is sorted. With ``source`` (the source the
    customer returns to), everything ``reverse load`` checks is checked first: the
    customer and its export there before anything is marked, and the finished bundle by
    a rehearsed load that is rolled back; a refusal removes the bundle and gives the
    marked rows their status back.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    now = now or tracking.now()
    with begin_write(target_engine) as connection:
        graph, system = system_graph(connection, spec)
    with begin_write(target_engine) as connection:
        root = _find_root(connection, graph, customer, kind)
        origin = _origin(connection, root)
    root = recover_before_export(target_engine, graph, root, "--target", progress)
    with begin_write(target_engine) as connection:
        _check_target_state(connection, root)
    if source is not None:
        _check_source(source, root, origin, spec)
    # a freshly loaded target may have no planner statistics: the reads below would not end
    refreshed = refresh_stale_statistics(target_engine)
    if refreshed:
        progress.note(f"refreshed planner statistics of {len(refreshed)} table(s) in the target")
    bundle_id = new_bundle_id(REVERSE_KIND, root.key, now)
    with begin_write(target_engine) as connection:
        root, marks = _claim_and_mark(connection, graph, root, origin, bundle_id, out_dir)
    if marks.count:
        progress.note(f"{bundle_id}: marked {marks.count} row(s) Exported in the target")
    crash_point("marked")
    period_start = _period_start(root, now)
    writer: BundleWriter | None = None
    try:
        writer = BundleWriter(out_dir, bundle_id)
        with open_snapshot(target_engine, batch_rows=batch_rows) as snapshot:
            reader = Reader(snapshot, graph, root, origin, writer, marks, progress, batch_rows, period_start)
            reader.run()
        crash_point("read")
        path, manifest = writer.finish(_draft(reader, root, origin, system, graph, now))
        crash_point("renamed")
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        restore_marks(target_engine, graph, bundle_id, marks, f"{type(exc).__name__}: {exc}")
        raise
    at_load: list[dict[str, Any]] = []
    if source is not None:
        try:
            at_load = _rehearse(source, path, spec, batch_rows)
        except BaseException as exc:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
            restore_marks(target_engine, graph, bundle_id, marks, f"refused by the source: {exc}")
            raise
    _finish(target_engine, graph, bundle_id, marks, path, manifest)
    for warning in reader.warnings:
        progress.note(f"{bundle_id}: {warning}")
    return ReverseExportResult(
        bundle_id=bundle_id,
        path=path,
        manifest=manifest,
        returnable=reader.returnable,
        from_source=reader.from_source,
        not_returned=reader.not_returned,
        rows=reader.rows,
        warnings=reader.warnings,
        marked_rows=marks.count,
        seconds=time.monotonic() - started,
        at_load=at_load,
    )
