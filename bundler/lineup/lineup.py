"""The lineup: export a root and load it at once, then the next, N at a time, on many machines.

The lineup lives in the target database (``bundler_lineup``): one row per root and phase.
Workers anywhere claim their next root with a row lock (``SELECT … FOR UPDATE SKIP
LOCKED`` on PostgreSQL and MariaDB; SQLite serialises writers, so a plain transaction
does) and need no coordinator. For each claimed root a worker:

1. finishes what an earlier, interrupted run left (a bundle exported and not loaded is
   loaded; a root the target already holds is done);
2. otherwise exports it (marking it Exported in the source) and loads it at once;
3. records the outcome and the root's **downtime**: from the moment it was marked Exported
   in the source until it was active in the target.

A root whose load fails gets its status restored in the source and keeps its bundle for a
retry; the lineup goes on and the run exits 1 with every failure listed. A stop request
(Ctrl-C) lets the roots in flight finish and claims nothing new.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from bundler import tracking
from bundler.db import begin_write
from bundler.errors import BundlerError, UsageError
from bundler.export import ExportOptions, export_root, restore_export
from bundler.export.closure import table_clause
from bundler.export.export import find_root, source_graph
from bundler.keys import describe, key_text
from bundler.load import load_bundle
from bundler.load.load import TargetCache
from bundler.progress import NullProgress, Progress

TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
KIND_ORDER = {"vendor": 0, "reseller": 1, "customer": 2}

lineup_metadata = sa.MetaData()
lineup_table = sa.Table(
    "bundler_lineup",
    lineup_metadata,
    sa.Column("source_system", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("root_pk", sa.String(255), primary_key=True),
    sa.Column("phase", sa.String(8), primary_key=True),  # full | usage
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("root_key", sa.String(255), nullable=False),
    sa.Column("state", sa.String(12), nullable=False),  # pending | claimed | done | failed
    sa.Column("worker", sa.String(128)),
    sa.Column("claimed_at", TIMESTAMP),
    sa.Column("finished_at", TIMESTAMP),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("bundle_id", sa.String(64)),
    sa.Column("downtime_s", sa.Float),
    sa.Column("rows", sa.BigInteger),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("message", sa.Text),
    sa.Index("ix_bundler_lineup_state", "source_system", "phase", "state", "position"),
)


@dataclass(frozen=True)
class RootOutcome:
    kind: str
    root_pk: str
    root_key: str
    state: str
    bundle_id: str | None = None
    downtime_s: float | None = None
    rows: int = 0
    bytes: int = 0
    message: str | None = None
    worker: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "root_pk": self.root_pk,
            "root": self.root_key,
            "state": self.state,
            "bundle_id": self.bundle_id,
            "downtime_s": None if self.downtime_s is None else round(self.downtime_s, 3),
            "rows": self.rows,
            "bytes": self.bytes,
            "message": self.message,
        }


@dataclass
class LineupResult:
    outcomes: list[RootOutcome] = field(default_factory=list)
    skipped: int = 0
    seconds: float = 0.0
    stopped: bool = False

    @property
    def done(self) -> list[RootOutcome]:
        return [o for o in self.outcomes if o.state == "done"]

    @property
    def failed(self) -> list[RootOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    def downtime(self) -> dict[str, float | None]:
        values = sorted(o.downtime_s for o in self.done if o.downtime_s is not None)
        if not values:
            return {"p50": None, "p95": None, "max": None}
        p95 = values[min(len(values) - 1, max(0, round(0.95 * len(values) + 0.5) - 1))]
        return {"p50": statistics.median(values), "p95": p95, "max": values[-1]}

    def summary(self) -> dict[str, Any]:
        rows = sum(o.rows for o in self.done)
        return {
            "roots": len(self.outcomes),
            "done": len(self.done),
            "failed": len(self.failed),
            "skipped_already_migrated": self.skipped,
            "stopped_early": self.stopped,
            "rows": rows,
            "bytes": sum(o.bytes for o in self.done),
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(rows / self.seconds, 1) if self.seconds else None,
            "downtime_s": {k: None if v is None else round(v, 3) for k, v in self.downtime().items()},
            "failures": [
                {"root": describe_key(o.root_key), "kind": o.kind, "reason": o.message} for o in self.failed
            ],
            "per_root": [o.to_dict() for o in self.outcomes],
        }


@dataclass(frozen=True)
class RootSelector:
    """Which roots to migrate: named ones, or every top-level root of a kind (``--all``)."""

    kind: str
    idents: tuple[str, ...] = ()
    all: bool = False
    where: str | None = None


def ensure_lineup(connection: sa.Connection) -> None:
    tracking.create_tables(connection, lineup_metadata)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


# -- building the lineup -----------------------------------------------------------------------


def select_roots(
    source: sa.Engine, selectors: Sequence[RootSelector], *, spec: str | Path | None = None
) -> list[tuple[str, Any, str]]:
    """(kind, source pk, natural key text) of every root the selectors name, in lineup order."""
    found: list[tuple[str, Any, str]] = []
    with source.connect() as conn:
        graph, _ = source_graph(conn, spec)
        for sel in sorted(selectors, key=lambda s: KIND_ORDER.get(s.kind, 9)):
            root_spec = graph.root(sel.kind)
            table = graph.table(root_spec.table)
            pk = table.pk[0]
            if sel.all:
                t = table_clause(table)
                stmt = sa.select(t.c[pk]).order_by(t.c[pk])
                for col, allowed in root_spec.where.items():
                    stmt = stmt.where(t.c[col].in_(allowed))
                for ref in table.owner_refs:  # top level only: the rest travels with its parent
                    if ref.table == table.name:
                        stmt = stmt.where(t.c[ref.column].is_(None))
                if table.status is not None:
                    stmt = stmt.where(t.c[table.status.column].not_in(table.status.terminated))
                if sel.where:
                    stmt = stmt.where(sa.text(sel.where))
                idents: list[Any] = list(conn.execute(stmt).scalars())
            else:
                idents = list(sel.idents)
            for ident in idents:
                root = find_root(conn, graph, sel.kind, ident)
                found.append((sel.kind, root.pk, key_text(root.key)))
    return found


def enqueue(target: sa.Engine, source_system: str, roots: Sequence[tuple[str, Any, str]], phase: str) -> int:
    """Add the roots the lineup does not have yet; returns how many were added."""
    added = 0
    for attempt in range(3):
        try:
            with begin_write(target) as conn:
                ensure_lineup(conn)
                t = lineup_table
                have = {
                    (r.kind, r.root_pk)
                    for r in conn.execute(
                        sa.select(t.c.kind, t.c.root_pk).where(
                            t.c.source_system == source_system, t.c.phase == phase
                        )
                    )
                }
                start = conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(t.c.position), 0)).where(
                        t.c.source_system == source_system
                    )
                ).scalar_one()
                new = [
                    {
                        "source_system": source_system,
                        "kind": kind,
                        "root_pk": str(pk),
                        "phase": phase,
                        "position": start + i + 1,
                        "root_key": key[:255],
                        "state": "pending",
                        "attempts": 0,
                    }
                    for i, (kind, pk, key) in enumerate(r for r in roots if (r[0], str(r[1])) not in have)
                ]
                if new:
                    conn.execute(t.insert(), new)
                added = len(new)
            return added
        except sa.exc.IntegrityError:
            if attempt == 2:
                raise
            time.sleep(0.1 * (attempt + 1))  # another worker enqueued the same roots: read again
    return added


def _selection(wanted: set[tuple[str, str]]) -> sa.ColumnElement[bool]:
    t = lineup_table
    if len(wanted) > 10_000:  # a bigger selection is the whole lineup in practice
        return sa.true()
    by_kind: dict[str, list[str]] = {}
    for kind, pk in wanted:
        by_kind.setdefault(kind, []).append(pk)
    return sa.or_(*(sa.and_(t.c.kind == k, t.c.root_pk.in_(v)) for k, v in by_kind.items()))


def _retry_failed(target: sa.Engine, source_system: str, phase: str, wanted: set[tuple[str, str]]) -> None:
    """Roots that failed in an earlier run are tried again, once per run."""
    t = lineup_table
    with begin_write(target) as conn:
        conn.execute(
            sa.update(t)
            .where(
                t.c.source_system == source_system,
                t.c.phase == phase,
                t.c.state == "failed",
                _selection(wanted),
            )
            .values(state="pending")
        )


def _claim(
    target: sa.Engine, source_system: str, phase: str, worker: str, wanted: set[tuple[str, str]]
) -> sa.Row[Any] | None:
    """Claim the next pending root of this run's selection (other runs' roots stay for them)."""
    t = lineup_table
    conn_opts: dict[str, Any] = {"sqlite_begin": "immediate"}
    with target.connect().execution_options(**conn_opts) as conn, conn.begin():
        stmt = (
            sa.select(t)
            .where(
                t.c.source_system == source_system,
                t.c.phase == phase,
                t.c.state == "pending",
                _selection(wanted),
            )
            .order_by(t.c.position)
            .limit(1)
        )
        if conn.dialect.name in ("postgresql", "mysql"):
            stmt = stmt.with_for_update(skip_locked=True)
        row = conn.execute(stmt).first()
        if row is None:
            return None
        conn.execute(
            sa.update(t)
            .where(
                t.c.source_system == source_system,
                t.c.kind == row.kind,
                t.c.root_pk == row.root_pk,
                t.c.phase == phase,
            )
            .values(state="claimed", worker=worker, claimed_at=tracking.now(), attempts=row.attempts + 1)
        )
        return row


def _finish(target: sa.Engine, row: sa.Row[Any], outcome: RootOutcome) -> None:
    t = lineup_table
    with begin_write(target) as conn:
        conn.execute(
            sa.update(t)
            .where(t.c.source_system == row.source_system, t.c.kind == row.kind, t.c.root_pk == row.root_pk)
            .where(t.c.phase == row.phase)
            .values(
                state=outcome.state,
                finished_at=tracking.now(),
                bundle_id=outcome.bundle_id,
                downtime_s=outcome.downtime_s,
                rows=outcome.rows,
                bytes=outcome.bytes,
                message=(outcome.message or "")[:4000] or None,
            )
        )


def release_stale_claims(target: sa.Engine, source_system: str, *, stale_after: float) -> int:
    """Claims of workers that died: this host's dead processes at once, others after ``stale_after`` s."""
    t = lineup_table
    host = socket.gethostname()
    released = 0
    with begin_write(target) as conn:
        ensure_lineup(conn)
        rows = conn.execute(
            sa.select(t).where(t.c.source_system == source_system, t.c.state == "claimed")
        ).all()
        for row in rows:
            name, _, rest = (row.worker or "").partition(":")
            pid = int(rest.split(":")[0]) if rest.split(":")[0].isdigit() else -1
            dead = name == host and pid > 0 and pid != os.getpid() and not _alive(pid)
            old = (
                row.claimed_at is not None and (tracking.now() - row.claimed_at).total_seconds() > stale_after
            )
            if dead or old:
                conn.execute(
                    sa.update(t)
                    .where(
                        t.c.source_system == source_system, t.c.kind == row.kind, t.c.root_pk == row.root_pk
                    )
                    .where(t.c.phase == row.phase, t.c.state == "claimed")
                    .values(state="pending", worker=None, message=f"released: worker {row.worker} stopped")
                )
                released += 1
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- migrating one root ------------------------------------------------------------------------


@dataclass
class LineupOptions:
    bundles: Path
    decisions: str | Path | None = None
    xdrs: str = "current"
    usage_only: bool = False
    spec: str | Path | None = None
    target_spec: str | Path | None = None
    now: Any = None


def _already_loaded(target: sa.Engine, source_system: str, kind: str, root_pk: str, phase: str) -> Any:
    loads = tracking.loads_table
    with target.connect() as conn:
        tracking.ensure_tables(conn)
        wanted = "usage" if phase == "usage" else kind
        return conn.execute(
            sa.select(loads.c.bundle_id)
            .where(
                loads.c.source_system == source_system,
                loads.c.kind == wanted,
                loads.c.root_source_pk == root_pk,
            )
            .order_by(loads.c.loaded_at.desc())
        ).first()


def _unloaded_export(
    source: sa.Engine, kind: str, root_pk: str, bundles: Path, phase: str
) -> tuple[str, Path] | None:
    """An export of this root that finished but whose bundle was never loaded (a crash in between)."""
    exports = tracking.exports_table
    wanted = "usage" if phase == "usage" else kind
    with source.connect() as conn:
        row = conn.execute(
            sa.select(exports.c.bundle_id, exports.c.started_at)
            .where(exports.c.kind == wanted, exports.c.root_pk == root_pk, exports.c.status == "done")
            .order_by(exports.c.started_at.desc())
        ).first()
    if row is None:
        return None
    path = bundles / f"{row.bundle_id}.bundle"
    return (row.bundle_id, path) if path.exists() else None


def migrate_root(
    source: sa.Engine,
    target: sa.Engine,
    source_system: str,
    row: Any,
    options: LineupOptions,
    progress: Progress,
    cache: TargetCache | None = None,
) -> RootOutcome:
    kind, root_pk, phase = row.kind, row.root_pk, row.phase
    base = {"kind": kind, "root_pk": root_pk, "root_key": row.root_key}
    loaded = _already_loaded(target, source_system, kind, root_pk, phase)
    if loaded is not None:
        return RootOutcome(**base, state="done", bundle_id=loaded.bundle_id, message="already in the target")
    started = time.monotonic()
    left = _unloaded_export(source, kind, root_pk, options.bundles, phase)
    if left is not None:
        bundle_id, path = left
        rows = bytes_ = 0
    else:
        export_options = ExportOptions(
            xdrs=options.xdrs, usage_only=phase == "usage", mark=True, now=options.now
        )
        try:
            exported = export_root(
                source, kind, root_pk, options.bundles, spec=options.spec, options=export_options
            )
        except BundlerError as exc:
            return RootOutcome(**base, state="failed", message=f"export: {exc.line()}")
        bundle_id, path = exported.bundle_id, exported.path
        rows, bytes_ = exported.manifest["totals"]["rows"], exported.manifest["totals"]["bytes"]
    try:
        load_bundle(
            target,
            path,
            decisions=options.decisions,
            spec=options.target_spec,
            progress=progress,
            cache=cache,
        )
    except BundlerError as exc:
        reason = f"load: {exc.line()}"
        if phase != "usage":
            try:
                restore_export(source, bundle_id, reason, spec=options.spec)
            except Exception as restore_exc:
                reason += f"; and restoring its status in the source failed: {restore_exc}"
        return RootOutcome(
            **base, state="failed", bundle_id=bundle_id, message=reason + f" (bundle kept: {path})"
        )
    downtime = time.monotonic() - started
    return RootOutcome(
        **base, state="done", bundle_id=bundle_id, downtime_s=downtime, rows=rows, bytes=bytes_
    )


# -- the run -------------------------------------------------------------------------------------


def run_lineup(
    source: sa.Engine,
    target: sa.Engine,
    selectors: Sequence[RootSelector],
    options: LineupOptions,
    *,
    workers: int = 1,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    retry_failed: bool = True,
    stale_after: float = 3600.0,
) -> LineupResult:
    """Build (or join) the lineup of the selected roots and migrate them, ``workers`` at a time."""
    if workers < 1:
        raise UsageError("--workers must be at least 1")
    progress = progress or NullProgress()
    stop = stop or threading.Event()
    started = time.monotonic()
    phase = "usage" if options.usage_only else "full"
    with begin_write(source) as conn:
        _, system = source_graph(conn, options.spec)
    roots = select_roots(source, selectors, spec=options.spec)
    wanted = {(kind, str(pk)) for kind, pk, _ in roots}
    enqueue(target, system.system_id, roots, phase)
    release_stale_claims(target, system.system_id, stale_after=stale_after)
    if retry_failed:
        _retry_failed(target, system.system_id, phase, wanted)
    with target.connect() as conn:
        t = lineup_table
        already = conn.execute(
            sa.select(sa.func.count())
            .select_from(t)
            .where(
                t.c.source_system == system.system_id,
                t.c.phase == phase,
                t.c.state == "done",
                _selection(wanted),
            )
        ).scalar_one()
    options.bundles.mkdir(parents=True, exist_ok=True)
    result = LineupResult()
    cache = TargetCache()  # shared by every load of the run
    lock = threading.Lock()
    task = "lineup"
    progress.start(task, total=len(roots))
    in_flight = [0]

    def worker_loop() -> None:
        name = _worker_name()
        while not stop.is_set():
            row = _claim(target, system.system_id, phase, name, wanted)
            if row is None:
                return
            with lock:
                in_flight[0] += 1
            try:
                outcome = migrate_root(source, target, system.system_id, row, options, progress, cache)
            except Exception as exc:
                outcome = RootOutcome(
                    row.kind, row.root_pk, row.root_key, "failed", message=f"{type(exc).__name__}: {exc}"
                )
            _finish(target, row, outcome)
            with lock:
                in_flight[0] -= 1
                result.outcomes.append(outcome)
                done = len(result.done)
                rows = sum(o.rows for o in result.done)
                rate = rows / max(time.monotonic() - started, 1e-9)
            progress.advance(task, 1)
            state = "done" if outcome.state == "done" else f"FAILED: {outcome.message}"
            progress.note(
                f"{row.kind} {describe_key(row.root_key)}: {state} "
                f"[{done} done, {len(result.failed)} failed, {in_flight[0]} in flight, {rate:,.0f} rows/s]"
            )

    if workers == 1:
        worker_loop()
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lineup") as pool:
            for future in [pool.submit(worker_loop) for _ in range(workers)]:
                future.result()
    progress.finish(task)
    result.stopped = stop.is_set()
    result.skipped = already + sum(1 for o in result.outcomes if o.message == "already in the target")
    result.seconds = time.monotonic() - started
    result.outcomes.sort(key=lambda o: (KIND_ORDER.get(o.kind, 9), o.root_key))
    return result


def describe_key(text: str) -> str:
    import json

    try:
        return describe(json.loads(text))
    except ValueError:
        return text


__all__ = [
    "LineupOptions",
    "LineupResult",
    "RootOutcome",
    "RootSelector",
    "enqueue",
    "key_text",
    "lineup_table",
    "migrate_root",
    "run_lineup",
    "select_roots",
]
