"""``reverse load``, on the source: check a reverse bundle and apply it in one transaction
(see :mod:`bundler.reverse`)."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import Bundle, open_bundle
from bundler.context import bundle_graph, system_graph
from bundler.db import begin_write
from bundler.errors import BundleInvalid, RootError, UsageError
from bundler.graph import Graph
from bundler.keys import describe
from bundler.manifest import Manifest
from bundler.progress import NullProgress, Progress
from bundler.reverse.apply import Apply
from bundler.reverse.common import REVERSE_KIND, ROOT_KIND, reverse_section, root_of
from bundler.reverse.compat import check_compatible
from bundler.reverse.report import ReverseLoadResult, write_report


def _verified(bundle: Bundle, spec: str | Path | None = None) -> Manifest:
    """The manifest of a reverse bundle that verifies (UsageError for another kind of bundle)."""
    from bundler.inspect.verify import verify_bundle

    kind = bundle.doc.get("kind")
    if kind != REVERSE_KIND:
        raise UsageError(
            f"bundle {bundle.name} is a {kind!r} bundle, not a reverse bundle",
            hint="load it with bundler load; bundler reverse load takes what bundler reverse export wrote",
        )
    report = verify_bundle(bundle, spec=spec)
    if report.problems:
        raise BundleInvalid(
            bundle.name,
            [str(p) for p in report.problems],
            hint="run bundler inspect verify for the full list",
        )
    manifest = bundle.manifest
    reverse_section(manifest, bundle.name)
    return manifest


def _usage_tables(
    bundle: Bundle, manifest: Manifest, theirs: Graph, graph: Graph, system_id: str
) -> list[str]:
    """The bundle's usage tables, once the bundle is known to be for this source and release."""
    rev = reverse_section(manifest, bundle.name)
    if rev["source_system"] != system_id:
        raise RootError(
            f"reverse bundle {bundle.bundle_id} is not for this source system: it returns "
            f"{ROOT_KIND} {describe(root_of(manifest, bundle.name).natural_key)} to system {rev['source_system']}, "
            f"this database is system {system_id}",
            hint="apply it to the source the customer was exported from",
        )
    usage = [t for t in manifest.tables if theirs.table(t).is_usage]
    if len(usage) != len(manifest.tables):
        others = ", ".join(sorted(set(manifest.tables) - set(usage)))
        raise BundleInvalid(bundle.name, [f"a reverse bundle carries usage only; it holds {others}"])
    check_compatible(theirs, graph, usage, manifest.prerequisites, rev)
    return usage


def _applied_before(connection: sa.Connection, bundle: Bundle) -> bool:
    """Whether this source applied the bundle already (BundleInvalid: another with its id)."""
    loads = tracking.loads_table
    done = connection.execute(sa.select(loads).where(loads.c.bundle_id == bundle.bundle_id)).first()
    if done is None:
        return False
    if done.manifest_sha256 != bundle.manifest_sha256:
        raise BundleInvalid(
            bundle.name,
            [f"a different bundle with id {bundle.bundle_id} was applied on {done.loaded_at}"],
            hint="bundle ids are unique: this one was altered or re-made by hand",
        )
    return True


def _apply(apply: Apply, system_id: str, graph: Graph, theirs: Graph, usage: list[str]) -> None:
    """Every step of the load, in order, inside the source's transaction."""
    apply.claim()
    apply.check_export(system_id)
    apply.root_row()
    apply.resolve()
    for table in [t for t in graph.dependency_order if t in usage]:
        apply.usage(table)
    apply.balances()
    apply.statuses(theirs)
    apply.record()


class _Rehearsed(Exception):
    """Raised at the end of a rehearsal, so that its transaction rolls back."""


def reverse_load(
    source_engine: sa.Engine,
    bundle_path: str | Path,
    *,
    spec: str | Path | None = None,
    report_dir: str | Path | None = None,
    progress: Progress | None = None,
    batch_rows: int = 65_536,
    rehearse: bool = False,
) -> ReverseLoadResult:
    """Apply a reverse bundle to the source it returns a customer to, in one transaction.

    Writes the report (``<bundle id>.report.json`` and ``.report.txt``) into
    ``report_dir`` (default: beside the bundle). See :mod:`bundler.reverse` for the steps.
    ``rehearse``: make every check and write, then roll it all back and write no report
    (what ``reverse export --source`` does before it lets the marks in the target stand).
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    with open_bundle(bundle_path) as bundle:
        manifest = _verified(bundle, spec)
        theirs = bundle_graph(manifest.graph.release, spec)
        with begin_write(source_engine) as connection:
            graph, system = system_graph(connection, spec)
        root = root_of(manifest, bundle.name)
        result = ReverseLoadResult(bundle.bundle_id, str(bundle_path), "returned", root.to_doc())
        usage = _usage_tables(bundle, manifest, theirs, graph, system.system_id)
        try:
            with begin_write(source_engine) as connection:
                if _applied_before(connection, bundle):
                    result.outcome = "already-returned"
                    result.seconds = time.monotonic() - started
                    return result
                apply = Apply(connection, bundle, graph, progress, batch_rows, result)
                _apply(apply, system.system_id, graph, theirs, usage)
                if rehearse:
                    raise _Rehearsed
        except _Rehearsed:
            result.outcome = "rehearsed"
            result.seconds = time.monotonic() - started
            return result
        result.not_returned[:0] = reverse_section(manifest, bundle.name)["not_returned"]
        result.report_paths = write_report(
            result, Path(report_dir) if report_dir else Path(bundle.source).parent
        )
    for warning in result.warnings:
        progress.note(f"{result.bundle_id}: {warning}")
    result.seconds = time.monotonic() - started
    return result
