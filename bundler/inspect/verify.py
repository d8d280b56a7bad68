"""``inspect verify``: everything wrong with a bundle, found offline, all at once.

The checks, in order (a later check is skipped only where an earlier problem makes it
meaningless, e.g. the data of a file whose checksum failed is not read):

1. the bundle opens (a packed file unpacks) and ``manifest.json`` is a JSON object;
2. the manifest against its JSON Schema and the format version (a newer version is refused
   by name, and nothing else is checked: its meaning is unknown);
3. the entity graph: the one of the manifest's release (or ``--spec``); a different graph
   sha256 is a warning, not a problem;
4. every file: listed files exist with their size and sha256, nothing else is in the bundle
   (no unlisted file in ``tables/`` or beside ``manifest.json``), each table's file is
   ``tables/<table>.parquet``;
5. per table, from the Parquet footer only: a readable file, the row count of the
   manifest, the column types of the manifest, and the graph's columns — names, order and
   exact types (decimal precision and scale, timestamp unit); the table exists in the
   graph with the manifest's scope and is of a scope bundles carry;
6. the manifest's own arithmetic and declarations: totals, every prerequisite names a graph
   table, a column of it and the table's scope; the kind agrees with the root (the root
   kind's table; a usage bundle's dependencies) and with the scopes of the tables carried;
7. with DuckDB over the Parquet files: no NULL in a NOT NULL column, primary keys unique,
   every reference resolvable (to a row in the bundle, or to a prerequisite or other
   outside row the manifest declares by natural key, never both), usage rows inside the
   declared window, the root row in the bundle and of the bundle's kind, and every owned
   and usage row belonging to the root through owner references to rows the bundle carries.

Problems are collected, never raised one by one: :func:`verify_bundle` returns a
:class:`VerifyReport`; :meth:`VerifyReport.raise_if_invalid` turns it into a
:class:`~bundler.errors.BundleInvalid` (exit 4) when there is any.

Steps 3 to 6 are in :mod:`bundler.inspect.verify_manifest`, step 7 in
:mod:`bundler.inspect.verify_data`, the kind and ownership checks in
:mod:`bundler.inspect.verify_root`, the report types in :mod:`bundler.inspect.verify_report`.
Every file is read through the :class:`~bundler.bundle.Bundle`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from bundler.bundle import Bundle, open_bundle
from bundler.errors import BundleInvalid
from bundler.graph import Graph
from bundler.inspect.verify_data import check_data
from bundler.inspect.verify_layers import check_layers
from bundler.inspect.verify_manifest import Verification, check_manifest
from bundler.inspect.verify_report import SHOWN, Problem, VerifyReport, split_problem
from bundler.manifest import FORMAT_VERSION, MANIFEST, manifest_problems
from bundler.progress import NullProgress, Progress

__all__ = ["SHOWN", "Problem", "VerifyReport", "verify_bundle", "verify_bundles"]


def verify_bundle(
    bundle_or_path: Bundle | str | Path,
    *,
    graph: Graph | None = None,
    spec: str | Path | None = None,
    progress: Progress | None = None,
    layers: Mapping[str, Bundle] | None = None,
) -> VerifyReport:
    """Verify one bundle (an opened :class:`Bundle`, a folder or a packed file) and return every problem found.

    ``graph`` replaces the shipped graph of the manifest's release; ``spec`` (a graph file)
    is used for a bundle of the release it describes (a foreign schema has no shipped graph),
    never for a bundle of another release. ``layers`` (opened bundles by id, ``--with``):
    the earlier bundles a layered bundle refers to, checked to carry what it names them for.
    A bundle given opened is verified as it is and left open (what is verified is what the
    caller then reads). Never raises for a problem of the bundle; raises
    :class:`~bundler.errors.BundlerError` only when the path does not exist or ``spec``
    cannot be read.
    """
    started = time.monotonic()
    report = VerifyReport(bundle_or_path.name if isinstance(bundle_or_path, Bundle) else str(bundle_or_path))
    spec_graph = None
    if graph is None and spec is not None:
        from bundler.graph import load_graph

        spec_graph = load_graph(spec)
    if isinstance(bundle_or_path, Bundle):
        _verify(bundle_or_path, graph, report, progress or NullProgress(), spec_graph, layers)
    else:
        _verify_path(Path(bundle_or_path), graph, report, progress or NullProgress(), spec_graph, layers)
    report.seconds = time.monotonic() - started
    return report


def verify_bundles(
    paths: list[str | Path] | list[Path],
    *,
    graph: Graph | None = None,
    spec: str | Path | None = None,
    progress: Progress | None = None,
) -> list[VerifyReport]:
    """:func:`verify_bundle` for each path, in order."""
    return [verify_bundle(p, graph=graph, spec=spec, progress=progress) for p in paths]


def _verify_path(
    path: Path,
    graph: Graph | None,
    report: VerifyReport,
    progress: Progress,
    spec_graph: Graph | None,
    layers: Mapping[str, Bundle] | None = None,
) -> None:
    """Open the bundle at ``path`` (a packed one is unpacked), verify it, close it."""
    try:
        bundle = open_bundle(path)
    except BundleInvalid as exc:
        report.problems.extend(split_problem(p, path.name) for p in exc.problems)
        return
    with bundle:
        _verify(bundle, graph, report, progress, spec_graph, layers)


def _verify(
    bundle: Bundle,
    graph: Graph | None,
    report: VerifyReport,
    progress: Progress,
    spec_graph: Graph | None = None,
    layers: Mapping[str, Bundle] | None = None,
) -> None:
    """Every check, in order, into ``report``."""
    v = Verification(bundle, report, graph, spec_graph=spec_graph)
    try:
        v.doc = bundle.doc
    except BundleInvalid as exc:
        report.problems.extend(split_problem(p, MANIFEST) for p in exc.problems)
        return
    report.bundle_id = v.doc.get("bundle_id") if isinstance(v.doc.get("bundle_id"), str) else None
    report.kind = v.doc.get("kind") if isinstance(v.doc.get("kind"), str) else None
    version = v.doc.get("format_version")
    report.problems.extend(split_problem(p, MANIFEST) for p in manifest_problems(v.doc))
    if isinstance(version, int) and version > FORMAT_VERSION:
        return  # a newer format: its meaning is unknown, nothing more can be checked
    check_manifest(v)
    if layers:
        check_layers(bundle, report, layers)
    if v.readable and v.graph is not None:
        check_data(v, progress)
