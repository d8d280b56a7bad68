"""One pass of late usage over every migrated root, and passes until stopped.

A root is *migrated* when the export that marked it Exported in the source (its latest
finished, marking export) is loaded in the target, and it is still Exported. For each such
root a pass:

1. loads every usage bundle of it that an earlier pass exported but did not load (a crash
   between the two): the source counts an export's keys as carried once it is done, so
   that bundle must reach the target; one whose folder is gone is recorded ``lost`` in the
   source, and its rows are carried again by the next export;
2. exports its usage that no export of it carried (:func:`bundler.export.export_root`
   with ``usage_only``: the rows that arrived since, whatever their timestamps) and loads
   it at once; the load applies each late row's charge to the balances in its transaction.

Each step is idempotent: a pass killed anywhere (SIGKILL) loses and doubles nothing, and
the next pass finishes what it left. A pass with nothing new writes no bundle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import BUNDLE_SUFFIX
from bundler.context import system_graph
from bundler.errors import BundlerError
from bundler.export import ExportOptions, export_root
from bundler.export.usage import NothingNew
from bundler.graph import Graph
from bundler.keys import describe
from bundler.load import load_bundle
from bundler.marking import close_export_record, find_root
from bundler.progress import NullProgress, Progress
from bundler.recover import crash_point, crash_progress


@dataclass
class RootUsage:
    """What a pass did for one root."""

    kind: str
    root_pk: str
    root_key: str
    state: str  # carried | nothing | failed
    bundles: list[str] = field(default_factory=list)
    rows: int = 0  # usage rows carried
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "root_pk": self.root_pk,
            "root": self.root_key,
            "state": self.state,
            "bundles": self.bundles,
            "rows": self.rows,
            "message": self.message,
        }


@dataclass
class CatchUpResult:
    started_at: datetime
    roots: list[RootUsage] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[RootUsage]:
        return [r for r in self.roots if r.state == "failed"]

    def summary(self) -> dict[str, Any]:
        carried = [r for r in self.roots if r.state == "carried"]
        return {
            "started_at": self.started_at.isoformat(sep=" "),
            "roots": len(self.roots),
            "carried": len(carried),
            "failed": len(self.failed),
            "bundles": sum(len(r.bundles) for r in self.roots),
            "rows": sum(r.rows for r in self.roots),
            "seconds": round(self.seconds, 3),
            "per_root": [r.to_dict() for r in self.roots if r.state != "nothing"],
        }

    def line(self) -> str:
        s = self.summary()
        return (
            f"usage pass {self.started_at:%Y-%m-%d %H:%M:%S}: {s['roots']} migrated root(s), "
            f"{s['carried']} with new usage ({s['rows']:,} usage row(s) in {s['bundles']} bundle(s)), "
            f"{s['failed']} failed; {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class CatchUpOptions:
    bundles: Path
    decisions: str | Path | None = None
    xdrs: str = "current"
    spec: str | Path | None = None
    target_spec: str | Path | None = None
    now: datetime | None = None


def migrated_roots(
    source: sa.Engine, target: sa.Engine, graph: Graph, system_id: str
) -> list[tuple[str, str, str, str]]:
    """(kind, root pk, root key, marking bundle) of every root whose marking export the target loaded."""
    loads, exports = tracking.loads_table, tracking.exports_table
    with target.connect() as conn:
        tracking.ensure_tables(conn)
        loaded = {
            row.bundle_id: row
            for row in conn.execute(
                sa.select(loads.c.bundle_id, loads.c.kind, loads.c.root_source_pk, loads.c.root_key).where(
                    loads.c.source_system == system_id,
                    loads.c.kind.in_(list(graph.roots)),
                    loads.c.outcome == "loaded",
                )
            )
        }
    found: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    with source.connect() as conn:
        for row in loaded.values():
            base = conn.execute(
                sa.select(exports.c.bundle_id)
                .where(exports.c.kind == row.kind, exports.c.root_pk == row.root_source_pk)
                .where(exports.c.status == "done", exports.c.marked == 1)
                .order_by(exports.c.started_at.desc())
            ).first()
            if base is not None and base.bundle_id in loaded:
                found[(row.kind, row.root_source_pk)] = (
                    row.kind,
                    row.root_source_pk,
                    _shown(row.root_key or ""),
                    base.bundle_id,
                )
    return sorted(found.values())


def _shown(root_key: str) -> str:
    """A root's natural key (the ledger's JSON text) as people read it."""
    import json

    try:
        return describe(json.loads(root_key))
    except ValueError:
        return root_key


def _leftovers(source: sa.Engine, target: sa.Engine, root_pk: str, base: str) -> list[tuple[str, str | None]]:
    """Usage exports of the root since ``base``, done in the source, that the target has not loaded."""
    exports, loads = tracking.exports_table, tracking.loads_table
    with source.connect() as conn:
        started = conn.execute(
            sa.select(exports.c.started_at).where(exports.c.bundle_id == base)
        ).scalar_one()
        done = conn.execute(
            sa.select(exports.c.bundle_id, exports.c.out_dir)
            .where(exports.c.kind == "usage", exports.c.root_pk == root_pk, exports.c.status == "done")
            .where(exports.c.depends_on == base, exports.c.started_at >= started)
            .order_by(exports.c.started_at)
        ).all()
    if not done:
        return []
    with target.connect() as conn:
        loaded = set(
            conn.execute(
                sa.select(loads.c.bundle_id).where(loads.c.bundle_id.in_([r.bundle_id for r in done]))
            ).scalars()
        )
    return [(r.bundle_id, r.out_dir) for r in done if r.bundle_id not in loaded]


def _catch_up_root(
    source: sa.Engine,
    target: sa.Engine,
    graph: Graph,
    root: tuple[str, str, str, str],
    options: CatchUpOptions,
    progress: Progress,
) -> RootUsage:
    kind, root_pk, root_key, base = root
    result = RootUsage(kind, root_pk, root_key, "nothing")
    try:
        with source.connect() as conn:
            found = find_root(conn, graph, kind, root_pk)
        status = found.spec.status
        if status is not None and found.row[status.column] != status.exported:
            result.message = "no longer Exported in the source (returned): its usage stays there"
            return result
        for bundle_id, out_dir in _leftovers(source, target, root_pk, base):
            folders = ([Path(out_dir)] if out_dir else []) + [options.bundles]
            path = next(
                (
                    f / f"{bundle_id}{BUNDLE_SUFFIX}"
                    for f in folders
                    if (f / f"{bundle_id}{BUNDLE_SUFFIX}").exists()
                ),
                None,
            )
            if path is None:
                close_export_record(
                    source, bundle_id, "lost", message="never loaded and its bundle is gone: carried again"
                )
                progress.note(
                    f"{kind} {root_key}: usage bundle {bundle_id} was never loaded and is gone; carrying its rows again"
                )
                continue
            progress.note(f"{kind} {root_key}: loading usage bundle {bundle_id}, exported by an earlier pass")
            loaded = load_bundle(
                target, path, decisions=options.decisions, spec=options.target_spec, progress=progress
            )
            result.state = "carried"
            result.rows += sum(p.created for p in loaded.tables.values() if p.scope == "usage")
            result.bundles.append(bundle_id)
        export_options = ExportOptions(xdrs=options.xdrs, usage_only=True, now=options.now, skip_empty=True)
        try:
            exported = export_root(
                source,
                kind,
                root_pk,
                options.bundles,
                spec=options.spec,
                options=export_options,
                progress=progress,
            )
        except NothingNew:
            return result
        crash_point("usage-exported")
        load_bundle(
            target,
            exported.path,
            decisions=options.decisions,
            spec=options.target_spec,
            progress=crash_progress(progress, "usage-load"),
        )
        result.state = "carried"
        result.bundles.append(exported.bundle_id)
        result.rows += sum(e.rows for e in exported.manifest.tables.values() if e.scope == "usage")
    except BundlerError as exc:
        result.state, result.message = "failed", exc.line()
    return result


def catch_up(
    source: sa.Engine,
    target: sa.Engine,
    options: CatchUpOptions,
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> CatchUpResult:
    """One pass: every migrated root's usage that the target lacks, exported and loaded."""
    progress = progress or NullProgress()
    started = time.monotonic()
    result = CatchUpResult(tracking.now())
    with source.connect() as conn:
        graph, system = system_graph(conn, options.spec)
    options.bundles.mkdir(parents=True, exist_ok=True)
    for root in migrated_roots(source, target, graph, system.system_id):
        if stop is not None and stop.is_set():
            break
        outcome = _catch_up_root(source, target, graph, root, options, progress)
        if outcome.state == "failed":
            progress.note(f"{root[0]} {root[2]}: FAILED: {outcome.message}")
        result.roots.append(outcome)
    result.seconds = time.monotonic() - started
    return result


def follow(
    every: float,
    one_pass: Callable[[], CatchUpResult],
    *,
    stop: threading.Event,
    on_pass: Callable[[CatchUpResult], None] | None = None,
    max_passes: int | None = None,
) -> int:
    """Run ``one_pass`` every ``every`` seconds (start to start) until ``stop`` is set; the passes run."""
    passes = 0
    while not stop.is_set() and (max_passes is None or passes < max_passes):
        started = time.monotonic()
        report = one_pass()
        passes += 1
        if on_pass is not None:
            on_pass(report)
        if stop.wait(max(0.0, every - (time.monotonic() - started))):
            break
    return passes
