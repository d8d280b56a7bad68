"""``inspect summary``: what bundles hold, from their manifests (and DuckDB for the usage span).

For each bundle: kind, root, source system and release, graph, usage window (declared, and
the span of the usage rows actually carried, read by DuckDB from the Parquet files), per
table rows and bytes, the prerequisites it needs in the target and the bundles it depends
on, and which of those are owned rows of other roots: references a load leaves open (NULL,
recorded in the target) until the load of that root brings the rows. (A bundle that depends
on another, a usage bundle, also needs its own root's owned rows, which the bundle it depends
on brought; the manifest does not say which root owns a row.) Over several bundles, totals:
bundles by kind, rows and bytes, per table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bundler.bundle import Bundle
from bundler.graph import Graph
from bundler.inspect.query import BundleSet, qident
from bundler.keys import describe

__all__ = ["BundleSummary", "OtherRoot", "Summary", "TableSummary", "summarize"]


@dataclass(frozen=True)
class TableSummary:
    """One table of a bundle, as its manifest lists it."""

    name: str
    scope: str
    rows: int
    bytes: int
    encrypted: tuple[str, ...] = ()  # columns encrypted column by column (readable with the key only)

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"scope": self.scope, "rows": self.rows, "bytes": self.bytes}
        if self.encrypted:
            doc["encrypted"] = list(self.encrypted)
        return doc


@dataclass(frozen=True)
class Prerequisite:
    """Rows of one table the bundle needs in the target but does not carry."""

    table: str
    column: str
    scope: str
    rows: int


@dataclass(frozen=True)
class OtherRoot:
    """Rows of another root the bundle references but does not carry: a load before that root's
    leaves the references open until the root's load brings them."""

    table: str
    column: str
    keys: tuple[str, ...]  # each row's natural key, in a few words

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "rows": len(self.keys), "keys": list(self.keys)}


@dataclass
class BundleSummary:
    """What one bundle holds."""

    path: str
    bundle_id: str
    kind: str
    format_version: Any
    root: dict[str, Any] | None
    source: dict[str, Any]
    graph: dict[str, Any]
    created_at: str | None
    marked: bool | None
    usage: dict[str, Any]
    usage_span: dict[str, dict[str, Any]]
    tables: list[TableSummary]
    prerequisites: list[Prerequisite]
    depends_on: list[str]
    selection: list[dict[str, Any]] | None = None
    # owned rows of other roots among the prerequisites (None: the entity graph is unknown);
    # of a bundle that depends on another, its own root's rows too
    other_roots: list[OtherRoot] | None = None

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    @property
    def root_text(self) -> str:
        """``customers name='acme' (source pk 4)``, or what a config bundle selected."""
        if self.root:
            key = self.root.get("natural_key")
            shown = describe(key) if isinstance(key, dict) else str(key)
            return f"{self.root.get('table')} {shown} (source pk {self.root.get('source_pk')})"
        if self.selection:
            return "config: " + ", ".join(
                s.get("table", "?") + (f"={','.join(s['keys'])}" if s.get("keys") else "")
                for s in self.selection
            )
        return "-"

    @property
    def window_text(self) -> str:
        mode = self.usage.get("mode")
        if mode == "none":
            return "none (no usage)"
        if mode == "all":
            return "all (every usage row)"
        start, end = self.usage.get("from"), self.usage.get("to")
        period = f", {self.usage['billing_period']} period" if self.usage.get("billing_period") else ""
        return f"{mode}: [{start or '…'}, {end or '…'}){period}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "bundle_id": self.bundle_id,
            "kind": self.kind,
            "format_version": self.format_version,
            "root": self.root,
            "selection": self.selection,
            "source": self.source,
            "graph": self.graph,
            "created_at": self.created_at,
            "marked": self.marked,
            "usage": self.usage,
            "usage_span": self.usage_span,
            "tables": {t.name: t.to_dict() for t in self.tables},
            "rows": self.rows,
            "bytes": self.bytes,
            "prerequisites": {
                p.table: {"column": p.column, "scope": p.scope, "rows": p.rows} for p in self.prerequisites
            },
            "depends_on": self.depends_on,
            "other_roots": None
            if self.other_roots is None
            else {o.table: o.to_dict() for o in self.other_roots},
        }


@dataclass
class Summary:
    """Several bundles and their totals."""

    bundles: list[BundleSummary] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, Any]:
        tables: dict[str, dict[str, int]] = {}
        for b in self.bundles:
            for t in b.tables:
                entry = tables.setdefault(t.name, {"bundles": 0, "rows": 0, "bytes": 0})
                entry["bundles"] += 1
                entry["rows"] += t.rows
                entry["bytes"] += t.bytes
        return {
            "bundles": len(self.bundles),
            "kinds": dict(sorted(Counter(b.kind for b in self.bundles).items())),
            "rows": sum(b.rows for b in self.bundles),
            "bytes": sum(b.bytes for b in self.bundles),
            "tables": dict(sorted(tables.items())),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"bundles": [b.to_dict() for b in self.bundles], "totals": self.totals}


def summarize(
    paths: Sequence[str | Path], *, spec: str | Path | None = None, graph: Graph | None = None
) -> Summary:
    """Summaries of bundles (folders or packed files), in the order given, with their totals.

    The usage span (first and last value of each usage table's time column) is read by
    DuckDB when the bundle's entity graph is known; everything else comes from the manifest.
    Raises :class:`~bundler.errors.BundleInvalid` for a bundle whose manifest is unreadable or invalid.
    """
    summary = Summary()
    for path in paths:
        with BundleSet([path], spec=spec, graph=graph, bundle_id_column=False) as bs:
            summary.bundles.append(_one(str(path), bs.bundles[0], bs))
    return summary


def _one(path: str, bundle: Bundle, bs: BundleSet) -> BundleSummary:
    m = bundle.manifest
    selection = m.selection
    tables = [
        TableSummary(name, e.scope, e.rows, e.bytes, e.encrypted) for name, e in sorted(m.tables.items())
    ]
    return BundleSummary(
        path=path,
        bundle_id=bundle.bundle_id,
        kind=m.kind,
        format_version=m.format_version,
        root=m.root.to_doc() if m.root is not None else None,
        selection=[s.to_doc() for s in selection] if selection is not None else None,
        source=m.source.to_doc(),
        graph=m.graph.to_doc(),
        created_at=m.created_at,
        marked=m.marked,
        usage=m.usage.to_doc(),
        usage_span=_usage_span(bs, tables),
        tables=tables,
        prerequisites=[
            Prerequisite(name, o.column, o.scope, len(o.rows)) for name, o in sorted(m.prerequisites.items())
        ],
        depends_on=list(m.depends_on),
        other_roots=_other_roots(bundle, bs.graphs[0]),
    )


def _other_roots(bundle: Bundle, graph: Graph | None) -> list[OtherRoot] | None:
    """The prerequisites that are rows of other roots (:meth:`Graph.of_another_root`)."""
    if graph is None:
        return None
    return [
        OtherRoot(name, o.column, tuple(describe(r.key) for r in o.rows))
        for name, o in sorted(bundle.manifest.prerequisites.items())
        if graph.of_another_root(name, o.scope)
    ]


def _usage_span(bs: BundleSet, tables: list[TableSummary]) -> dict[str, dict[str, Any]]:
    import duckdb

    graph = bs.graphs[0]
    if graph is None:
        return {}
    span: dict[str, dict[str, Any]] = {}
    for t in tables:
        spec = graph.tables.get(t.name)
        if spec is None or not spec.is_usage or not spec.time_column or t.name not in bs.views:
            continue
        col = qident(spec.time_column)
        try:
            row = bs.con.execute(f"SELECT min({col}), max({col}) FROM {bs.name(t.name)}").fetchone()
        except duckdb.Error:
            continue  # an unreadable file is verify's business; the summary shows what it can
        if row is not None:
            span[t.name] = {
                "column": spec.time_column,
                "first": None if row[0] is None else str(row[0]),
                "last": None if row[1] is None else str(row[1]),
            }
    return span
