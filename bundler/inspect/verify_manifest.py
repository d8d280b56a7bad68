"""``inspect verify``, the checks that read no data: the manifest, the graph, the files, the footers.

They work on the raw manifest document (``Bundle.doc``): a manifest that does not validate
is still checked as far as it can be, so that every problem is reported at once. What
they find readable (:class:`ReadableTable`) is what the data checks of
:mod:`bundler.inspect.verify_data` then read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bundler.bundle import Bundle, checksum_problems
from bundler.errors import SpecError
from bundler.graph import COPIED_SCOPES, Graph, TableSpec, arrow_type
from bundler.inspect.query import TABLE_NAME, graph_of
from bundler.inspect.verify_report import Problem, VerifyReport, first_line, split_problem
from bundler.inspect.verify_root import check_kind
from bundler.manifest import MANIFEST

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ReadableTable", "Verification", "check_manifest", "table_entries"]


@dataclass
class ReadableTable:
    """A table whose file can be read: its graph spec and the columns usable in data checks."""

    name: str
    file: str
    spec: TableSpec | None
    good_columns: set[str]
    rows: int


@dataclass
class Verification:
    """One bundle being verified: what every check reads, and what the checks found so far."""

    bundle: Bundle
    report: VerifyReport
    graph: Graph | None
    doc: dict[str, Any] = field(default_factory=dict)
    readable: dict[str, ReadableTable] = field(default_factory=dict)
    listed: set[str] = field(default_factory=set)
    broken: set[str] = field(default_factory=set)  # tables listed whose data cannot be trusted or read
    spec_graph: Graph | None = None  # ``--spec``: used for a bundle of the release it describes

    def problem(self, file: str, message: str, table: str | None = None, row: str | None = None) -> None:
        self.report.problems.append(Problem(file, message, table, row))

    @property
    def release(self) -> str:
        return self.graph.release if self.graph is not None else "?"


def table_entries(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's table entries that are JSON objects (none when ``tables`` is not one)."""
    tables = doc.get("tables")
    return {name: e for name, e in tables.items() if isinstance(e, dict)} if isinstance(tables, dict) else {}


def check_manifest(v: Verification) -> None:
    """Steps 3 to 6: the graph, the files, every table's footer, the manifest's own arithmetic and
    declarations, and its kind against its root and tables."""
    check_graph(v)
    entries = table_entries(v.doc)
    v.listed = set(entries)
    check_files(v, entries)
    for name in sorted(entries):
        check_footer(v, name, entries[name])
    check_totals(v, entries)
    check_prerequisite_names(v)
    check_kind(v)


# -- the graph and the files ------------------------------------------------------------------------


def _spec_or_own(v: Verification, release: Any, spec_graph: Graph) -> Graph:
    """``--spec`` for a bundle of its release; for another release, the graph of the bundle's
    own release when one is shipped (``--spec`` never replaces it), else ``--spec`` after all."""
    if release in (None, spec_graph.release):
        return spec_graph
    try:
        own = graph_of(v.doc)
    except SpecError:
        return spec_graph  # no graph of its own: checked against --spec, with the warning below
    v.report.warnings.append(
        f"--spec {spec_graph.path} describes release {spec_graph.release}; the bundle was made "
        f"with release {release}, so it is verified against that release's graph"
    )
    return own


def check_graph(v: Verification) -> None:
    """Find the graph to check against (the manifest's release unless given); warn when it differs."""
    info = v.doc.get("graph") if isinstance(v.doc.get("graph"), dict) else {}
    assert isinstance(info, dict)
    if v.graph is None and v.spec_graph is not None:
        v.graph = _spec_or_own(v, info.get("release"), v.spec_graph)
    if v.graph is None:
        try:
            v.graph = graph_of(v.doc)
        except SpecError as exc:
            v.problem(
                MANIFEST,
                f"cannot check tables against the entity graph: {exc.message}; give the graph with --spec PATH",
            )
            return
    elif info.get("release") not in (None, v.graph.release):
        v.report.warnings.append(
            f"verified against the graph of release {v.graph.release} ({v.graph.path}); "
            f"the bundle was made with release {info.get('release')}"
        )
    sha = info.get("sha256")
    if isinstance(sha, str) and v.graph.sha256 and sha != v.graph.sha256:
        v.report.warnings.append(
            f"the bundle was made with a graph of sha256 {sha[:12]}…, verified against {v.graph.path} "
            f"(sha256 {v.graph.sha256[:12]}…)"
        )


def check_files(v: Verification, entries: dict[str, dict[str, Any]]) -> None:
    """Checksums and sizes of the listed files, no unlisted file, every table in its own file."""
    for text in checksum_problems(v.bundle):
        problem = split_problem(text, MANIFEST)
        v.report.problems.append(problem)
        if problem.table is not None:
            v.broken.add(problem.table)
    for name, entry in sorted(entries.items()):
        if not TABLE_NAME.match(name):
            v.problem(MANIFEST, f"table name {name!r} is not a valid table name", table=name)
            v.broken.add(name)
            continue
        expected = v.bundle.table_file(name)
        if entry.get("file") != expected:
            v.problem(
                MANIFEST,
                f"table {name} is listed with file {entry.get('file')!r}, expected {expected!r}",
                table=name,
            )
            v.broken.add(name)


# -- one table, from its footer ---------------------------------------------------------------------


def check_footer(v: Verification, name: str, entry: dict[str, Any]) -> None:
    """Checks that need only the manifest, the graph and the Parquet footer."""
    file = v.bundle.table_file(name)
    spec = v.graph.tables.get(name) if v.graph is not None else None
    _check_scope(v, name, entry.get("scope"), spec)
    if name in v.broken:
        return
    try:
        with v.bundle.parquet_file(name) as pf:
            schema = pf.schema_arrow
            rows = pf.metadata.num_rows
    except Exception as exc:  # any failure to read the footer is the finding
        v.problem(file, f"not a readable Parquet file ({first_line(exc)})", table=name)
        v.broken.add(name)
        return
    v.report.tables += 1
    v.report.rows += rows
    _check_against_entry(v, name, file, entry, schema, rows)
    good = set(schema.names)
    if spec is not None:
        good = _schema_against_graph(v, file, name, schema, spec)
    v.readable[name] = ReadableTable(name, file, spec, good, rows)


def _check_scope(v: Verification, name: str, scope: Any, spec: TableSpec | None) -> None:
    """The table is in the graph, of a scope bundles carry, the one the manifest lists."""
    file = v.bundle.table_file(name)
    if v.graph is not None and spec is None:
        v.problem(
            file,
            f"table {name} is not in the entity graph of release {v.graph.release}; "
            "a load would not know what to do with it",
            table=name,
        )
    elif spec is not None:
        if spec.scope not in COPIED_SCOPES:
            v.problem(
                file, f"table {name} is {spec.scope} in the graph: bundles never carry its rows", table=name
            )
        elif scope != spec.scope:
            v.problem(MANIFEST, f"table {name} is listed as {scope}, the graph says {spec.scope}", table=name)


def _check_against_entry(
    v: Verification, name: str, file: str, entry: dict[str, Any], schema: pa.Schema, rows: int
) -> None:
    """The file's row count and column types are those its manifest entry lists."""
    if isinstance(entry.get("rows"), int) and rows != entry["rows"]:
        v.problem(file, f"holds {rows} rows, the manifest says {entry['rows']}", table=name)
    actual = {f.name: str(f.type) for f in schema}
    listed = entry.get("columns")
    if isinstance(listed, dict) and listed != actual:
        v.problem(
            MANIFEST,
            f"the columns listed for table {name} differ from {file}: " + _column_differences(listed, actual),
            table=name,
        )
    from bundler.secure.columns import encrypted_columns

    said, found = encrypted_columns(entry), v.bundle.encrypted_columns(name)
    if set(said) != set(found):
        v.problem(
            MANIFEST,
            f"table {name}: the manifest lists encrypted columns {sorted(said)}, {file} has {sorted(found)}",
            table=name,
        )


def _schema_against_graph(
    v: Verification, file: str, name: str, schema: pa.Schema, spec: TableSpec
) -> set[str]:
    """Names, order and exact types of the file's columns against the graph; returns the good columns."""
    have = list(schema.names)
    want = list(spec.column_names)
    _check_column_names(v, file, name, have, want)
    good: set[str] = set()
    for col in spec.columns:
        if col.name not in have:
            continue
        got = schema.field(col.name).type
        if got != arrow_type(col.type):
            v.problem(
                file, f"column {col.name} is {got}, the graph ({v.release}) says {col.type}", table=name
            )
        else:
            good.add(col.name)
    return good


def _check_column_names(v: Verification, file: str, name: str, have: list[str], want: list[str]) -> None:
    """The file has the graph's columns, no others, in the graph's order."""
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    if missing:
        v.problem(file, f"column(s) {', '.join(missing)} of the graph ({v.release}) are missing", table=name)
    if extra:
        v.problem(file, f"column(s) {', '.join(extra)} are not in the graph ({v.release})", table=name)
    common_have = [c for c in have if c in want]
    common_want = [c for c in want if c in have]
    if common_have != common_want:
        got, expected = next((h, w) for h, w in zip(common_have, common_want, strict=True) if h != w)
        v.problem(
            file,
            f"columns are not in the order of the graph ({v.release}): the file has {got} where the graph "
            f"has {expected}",
            table=name,
        )


def _column_differences(listed: dict[str, Any], actual: dict[str, str]) -> str:
    parts = []
    for col in listed:
        if col not in actual:
            parts.append(f"{col} is listed but not in the file")
        elif listed[col] != actual[col]:
            parts.append(f"{col} is listed as {listed[col]}, the file has {actual[col]}")
    parts.extend(f"{col} is in the file but not listed" for col in actual if col not in listed)
    if not parts and list(listed) != list(actual):
        parts.append("the order differs")
    return "; ".join(parts)


# -- the manifest's own arithmetic and declarations ---------------------------------------------------


def check_totals(v: Verification, entries: dict[str, dict[str, Any]]) -> None:
    """The totals are the sums of the tables' rows and bytes."""
    totals = v.doc.get("totals")
    if not isinstance(totals, dict):
        return
    rows = sum(e["rows"] for e in entries.values() if isinstance(e.get("rows"), int))
    size = sum(e["bytes"] for e in entries.values() if isinstance(e.get("bytes"), int))
    if totals.get("rows") != rows or totals.get("bytes") != size:
        v.problem(
            MANIFEST,
            f"totals say {totals.get('rows')} rows and {totals.get('bytes')} bytes, "
            f"the tables add up to {rows} rows and {size} bytes",
        )


def check_prerequisite_names(v: Verification) -> None:
    """Every prerequisite names a table of the graph, a column of that table, and the table's scope."""
    if v.graph is None:
        return
    prerequisites = v.doc.get("prerequisites")
    for table, entry in sorted(prerequisites.items()) if isinstance(prerequisites, dict) else []:
        spec = v.graph.tables.get(table)
        if spec is None:
            v.problem(
                MANIFEST, f"prerequisites name table {table}, which is not in the entity graph", table=table
            )
        elif not isinstance(entry, dict):
            continue  # the schema check reports it
        elif entry.get("column") not in spec.column_names:
            v.problem(
                MANIFEST,
                f"prerequisites of {table} name column {entry.get('column')!r}, which {table} does not have",
                table=table,
            )
        if spec is not None and isinstance(entry, dict) and entry.get("scope") != spec.scope:
            v.problem(
                MANIFEST,
                f"prerequisites of {table} are declared as {entry.get('scope')}, the graph says {spec.scope}",
                table=table,
            )
