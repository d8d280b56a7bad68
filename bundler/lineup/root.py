"""One root of the lineup: exported and loaded at once, and what came of it.

:func:`migrate_root` is what a worker does with a root it claimed (see
:mod:`bundler.lineup.lineup` for the run around it): finish what an earlier run left,
export the root (marking it Exported in the source), load the bundle at once, and record
its downtime and timings in a :class:`RootOutcome`; a failed load gives the root's status
back in the source and keeps its bundle. :mod:`bundler.lineup.together` uses the same
steps for roots that reference each other.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import BUNDLE_SUFFIX
from bundler.context import system_graph
from bundler.errors import BundlerError
from bundler.export import ExportOptions, export_root, restore_export
from bundler.export.layers import Layers
from bundler.graph import Graph
from bundler.keys import describe
from bundler.lineup.queue import retrying
from bundler.lineup.returned import reversed_exports
from bundler.load import TargetCache, load_bundle
from bundler.load.load import LoadResult, Written
from bundler.progress import Progress
from bundler.recover import LEFT, crash_point, crash_progress, recover_root


@dataclass(frozen=True)
class RootOutcome:
    """What came of one root in a run: its state, bundle, downtime and the parts it took."""

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
    #: seconds per part: ``prepare`` (before the mark, outside the downtime), then inside the
    #: downtime ``export`` (mark to bundle written), ``verify`` and the load's steps up to its
    #: ``commit``; ``after`` (statistics, outside the downtime)
    timings: dict[str, float] | None = None
    #: the load's shared rows reused although they differ (per table), and the parts their
    #: target rows lack (per table): what ``migrate`` reports per root
    differing: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lacking: dict[str, int] = field(default_factory=dict)

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
            "timings": None if self.timings is None else {k: round(v, 4) for k, v in self.timings.items()},
            "reused_with_differences": self.differing,
            "lacking_in_target": self.lacking,
        }


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
    #: configuration first: one bundle of the shared configuration, loaded before any root;
    #: then each root's bundle carries its own rows and refers to that layer for the rest
    layered: bool = True
    #: stop claiming roots after this many failures (the roots in flight finish)
    max_failures: int | None = None
    #: an object store (``s3://…``) each bundle is uploaded to once its load committed, then
    #: removed from ``bundles`` (a staging folder); None: the bundles stay in ``bundles``
    store: str | None = None


def to_store(path: Path, options: LineupOptions) -> str | None:
    """Upload a loaded bundle to ``options.store`` (manifest last) and remove its local copy;
    what went wrong, if the upload failed (the local copy is kept then)."""
    if options.store is None:
        return None
    import shutil

    from bundler.store import upload

    try:
        upload(path, options.store)
    except BundlerError as exc:
        return f"loaded, but not uploaded to {options.store} ({exc.line()}; bundle kept: {path})"
    shutil.rmtree(path, ignore_errors=True)
    return None


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
            sa.select(exports.c.bundle_id, exports.c.out_dir)
            .where(exports.c.kind == wanted, exports.c.root_pk == root_pk, exports.c.status == "done")
            .order_by(exports.c.started_at.desc())
        ).first()
    if row is None:
        return None
    folders = ([Path(row.out_dir)] if row.out_dir else []) + [bundles]
    for folder in dict.fromkeys(folders):
        path = folder / f"{row.bundle_id}{BUNDLE_SUFFIX}"
        if path.exists():
            return row.bundle_id, path
    return None


def _recover(source: sa.Engine, graph: Graph, kind: str, root_pk: str, progress: Progress) -> str | None:
    """Finish or restore an export of this root whose process died; why the root cannot go on, if so."""
    items = recover_root(source, graph, graph.root(kind).table, root_pk, progress=progress)
    for item in items:
        if item.action == LEFT:
            return f"export: it is being exported by bundle {item.bundle_id}: {item.message}"
    return None


@dataclass
class _Ready:
    """A root exported (or found exported by an earlier run) and not loaded yet."""

    base: dict[str, Any]
    phase: str
    bundle_id: str
    path: Path
    rows: int
    bytes: int
    marked_at: float
    timings: dict[str, float]
    written: Written | None


def migrate_root(
    source: sa.Engine,
    target: sa.Engine,
    source_system: str,
    row: Any,
    options: LineupOptions,
    progress: Progress,
    cache: TargetCache | None = None,
    graph: Graph | None = None,
    layers: Layers | None = None,
) -> RootOutcome:
    with full_collections_held():
        ready = export_for_load(source, target, source_system, row, options, progress, graph, layers)
        if isinstance(ready, RootOutcome):
            return ready
        try:
            loaded = load_bundle(
                target,
                ready.path,
                decisions=options.decisions,
                spec=options.target_spec,
                progress=crash_progress(progress, "load"),
                cache=cache,
                written=ready.written,
            )
        except BundlerError as exc:
            return load_failed(source, ready, exc, options)
    return loaded_outcome(ready, loaded, options)


#: how many roots of this process hold off Python's full collections, and the threshold
#: they hold off (see :func:`full_collections_held`)
_held = {"count": 0, "full": 0}
_held_lock = threading.Lock()


@contextmanager
def full_collections_held() -> Iterator[None]:
    """Python's full garbage collections held off while a root is down (from before its mark to
    its commit), and let run after it.

    A full collection walks every object of the process: 55 ms here over a lineup's heap, seven
    times in a run of 24 typical customers, and each that fell inside a customer's downtime
    made it a third longer (the p95 of the first phase went 0.13 -> 0.18 s on it). The young
    generations are still collected as usual (cycles made and dropped by the root's own work); a
    full collection that falls due meanwhile runs at the process's next collection after the
    root is up. Roots held at once in threads share one hold."""
    with _held_lock:
        young, middle, full = gc.get_threshold()
        if _held["count"] == 0:
            _held["full"] = full
            gc.set_threshold(young, middle, 1 << 30)
        _held["count"] += 1
    try:
        yield
    finally:
        with _held_lock:
            _held["count"] -= 1
            if _held["count"] == 0:
                young, middle, _ = gc.get_threshold()
                gc.set_threshold(young, middle, _held["full"])


def export_for_load(
    source: sa.Engine,
    target: sa.Engine,
    source_system: str,
    row: Any,
    options: LineupOptions,
    progress: Progress,
    graph: Graph | None = None,
    layers: Layers | None = None,
) -> _Ready | RootOutcome:
    """A claimed root exported and ready to load, or its outcome when it needs no load (the
    target has it) or cannot go (its export failed, or another process is exporting it)."""
    kind, root_pk, phase = row.kind, row.root_pk, row.phase
    base = {"kind": kind, "root_pk": root_pk, "root_key": row.root_key}
    loaded = _already_loaded(target, source_system, kind, root_pk, phase)
    if loaded is not None and not reversed_exports(source, {str(loaded.bundle_id)}):
        return RootOutcome(**base, state="done", bundle_id=loaded.bundle_id, message="already in the target")
    if graph is None:
        with source.connect() as conn:
            graph, _ = system_graph(conn, options.spec)
    refused = _recover(source, graph, kind, root_pk, progress)
    if refused is not None:
        return RootOutcome(**base, state="failed", message=refused)
    started = time.monotonic()
    left = _unloaded_export(source, kind, root_pk, options.bundles, phase)
    timings: dict[str, float] = {}
    if left is not None:
        bundle_id, path = left
        progress.note(f"{kind} {describe_key(row.root_key)}: loading {bundle_id}, exported by an earlier run")
        # marked by the earlier run: its downtime is counted from now
        return _Ready(base, phase, bundle_id, path, 0, 0, started, timings, None)
    export_options = ExportOptions(
        xdrs=options.xdrs,
        usage_only=phase == "usage",
        mark=True,
        now=options.now,
        layers=layers,
        validate_manifest=False,  # after the downtime: see _manifest_problem
    )
    try:
        # a deadlock while marking (MariaDB's 1213 between workers marking side by side)
        # rolled the mark back, and one later in the export gave the statuses back: again
        exported = retrying(
            lambda: export_root(
                source,
                kind,
                root_pk,
                options.bundles,
                spec=options.spec,
                options=export_options,
                progress=progress,
            )
        )
    except BundlerError as exc:
        return RootOutcome(**base, state="failed", message=f"export: {exc.line()}")
    marked_at = exported.marked_at or started
    timings["prepare"] = marked_at - started
    timings["export"] = time.monotonic() - marked_at
    written = Written(exported.manifest_sha256) if exported.manifest_sha256 is not None else None
    crash_point("exported")
    totals = exported.manifest.totals
    return _Ready(
        base, phase, exported.bundle_id, exported.path, totals.rows, totals.bytes, marked_at, timings, written
    )


def load_failed(source: sa.Engine, ready: _Ready, exc: BundlerError, options: LineupOptions) -> RootOutcome:
    """A root whose load failed: its status restored in the source, its bundle kept."""
    reason = f"load: {exc.line()}"
    if ready.phase != "usage":
        try:
            restore_export(source, ready.bundle_id, reason, spec=options.spec)
        except Exception as restore_exc:
            reason += f"; and restoring its status in the source failed: {restore_exc}"
    return RootOutcome(
        **ready.base,
        state="failed",
        bundle_id=ready.bundle_id,
        message=reason + f" (bundle kept: {ready.path})",
    )


def loaded_outcome(ready: _Ready, loaded: LoadResult, options: LineupOptions) -> RootOutcome:
    """A root whose load committed: its downtime, and what the checks after the commit found."""
    ended = loaded.committed_at or time.monotonic()
    timings = {**ready.timings, **loaded.steps}
    problem = _manifest_problem(ready.path) if ready.written is not None else None
    problem = problem or to_store(ready.path, options)  # after the commit: outside the downtime
    timings["after"] = time.monotonic() - ended
    return RootOutcome(
        **ready.base,
        state="done" if problem is None else "failed",
        message=problem,
        bundle_id=ready.bundle_id,
        downtime_s=ended - ready.marked_at,
        rows=ready.rows,
        bytes=ready.bytes,
        timings=timings,
        differing=loaded.reused_with_differences(),
        lacking=loaded.lacking_in_target(),
    )


def _manifest_problem(path: Path) -> str | None:
    """The schema check of a manifest the lineup wrote, run after the root's downtime (it takes
    tens of ms: jsonschema). The manifest is made from typed objects, so a problem is a bug of
    bundler; the root is loaded, but its bundle would not load again: say so, loudly."""
    import json

    from bundler.manifest import MANIFEST, manifest_problems

    problems = manifest_problems(json.loads((path / MANIFEST).read_bytes()))
    if not problems:
        return None
    return (
        f"loaded, but bundle {path.name} has a manifest that does not match its schema "
        f"(a bug of bundler: please report it): {problems[0]}"
    )


def describe_key(key: str | dict[str, Any]) -> str:
    """A root key as the lineup keeps it (JSON text), or as an object, described for a person."""
    import json

    if isinstance(key, dict):
        return describe(key)
    try:
        return describe(json.loads(key))
    except ValueError:
        return key
