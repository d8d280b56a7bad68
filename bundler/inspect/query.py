"""DuckDB over bundles: the views every inspect command reads through, and ``inspect query``.

Bundles are opened as they are (a packed one is unpacked to a temporary folder first) and
each table becomes a DuckDB view over its Parquet file, named after the table:
``SELECT … FROM xdrs``. Over several bundles a view is the ``UNION ALL BY NAME`` of that
table in every bundle, with a leading ``bundle_id`` column saying where each row comes
from. A table of the entity graph that no bundle carries is an empty view with the
graph's columns, so a query over it returns no rows instead of failing.

Nothing here loads a table into Python objects: DuckDB reads the Parquet files, and a
query's result is streamed in Arrow record batches of bounded size.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bundler.bundle import BUNDLE_SUFFIX, MANIFEST, PACKED_SUFFIX, TABLES_DIR, Bundle, open_bundle
from bundler.context import bundle_graph
from bundler.errors import SpecError, UsageError
from bundler.graph import Graph, TableSpec, load_graph
from bundler.keys import key_value
from bundler.manifest import Manifest
from bundler.secure.mask import masked_select, masking
from bundler.store import StorePath, is_remote

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = [
    "FORMATS",
    "BundleSet",
    "duck_type",
    "expand_bundle_paths",
    "graph_of",
    "literal",
    "qident",
    "query",
    "query_table",
]

FORMATS = ("table", "csv", "json")
BATCH_ROWS = 65_536
_DECIMAL = re.compile(r"^decimal\((\d+),(\d+)\)$")
#: What a table name in a manifest may be (as its file name pattern in the manifest schema says).
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIMPLE_TYPES = {
    "int32": "INTEGER",
    "int64": "BIGINT",
    "string": "VARCHAR",
    "date32": "DATE",
    "timestamp[us]": "TIMESTAMP",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
    "float64": "DOUBLE",
    "bool": "BOOLEAN",
    "json": "VARCHAR",
    "binary": "BLOB",
}


# -- small SQL helpers -------------------------------------------------------------------------


def qident(name: str) -> str:
    """A DuckDB identifier, quoted (table and column names come from files we do not trust)."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def duck_type(graph_type: str) -> str:
    """The DuckDB type of a graph column type (``int32`` → ``INTEGER``, ``decimal(16,5)`` → ``DECIMAL(16,5)``)."""
    match = _DECIMAL.match(graph_type)
    if match:
        return f"DECIMAL({match.group(1)},{match.group(2)})"
    try:
        return _SIMPLE_TYPES[graph_type]
    except KeyError:
        raise SpecError(f"unknown column type {graph_type!r} in the entity graph") from None


def empty_select(spec: TableSpec) -> str:
    """A SELECT with the graph's columns of ``spec`` and no rows."""
    cols = ", ".join(f"CAST(NULL AS {duck_type(c.type)}) AS {qident(c.name)}" for c in spec.columns)
    return f"SELECT {cols} WHERE false"


# -- finding bundles ----------------------------------------------------------------------------


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _bundles_in(path: Path) -> list[Path]:
    """A folder that is not itself a bundle but holds bundles stands for those bundles."""
    if path.is_dir() and not (path / MANIFEST).exists() and not (path / TABLES_DIR).exists():
        inside = sorted(
            p
            for p in path.iterdir()
            if not p.name.startswith(".")
            and p.name.endswith((BUNDLE_SUFFIX, PACKED_SUFFIX, PACKED_SUFFIX + ".age"))
        )
        if inside:
            return inside
    return [path]


def expand_bundle_paths(patterns: Iterable[str | Path]) -> list[Path]:
    """Bundle paths from what the user typed: paths, globs (expanded here too, for shells that
    do not), and folders of bundles (each ``*.bundle`` and ``*.bundle.tar.zst`` inside)."""
    found: list[Path] = []
    for pattern in patterns:
        text = str(pattern)
        path = Path(text)
        if is_remote(pattern):  # an object store: checked when it is opened
            candidates: list[Path] = [StorePath(text)]
        elif path.exists():
            candidates = [path]
        elif _has_magic(text):
            candidates = [Path(p) for p in sorted(glob.glob(text))]
            if not candidates:
                raise UsageError(
                    f"no bundle matches {text!r}",
                    hint="check the pattern (quote it to let bundler expand it)",
                )
        else:  # a usage error, as for every command that takes a bundle path (click's exists=True)
            raise UsageError(
                f"bundle {text} does not exist",
                hint="give the path of a .bundle folder or a packed bundle file",
            )
        for candidate in candidates:
            found.extend(_bundles_in(candidate))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UsageError("no bundle given")
    return unique


def graph_of(
    manifest: Manifest | Mapping[str, Any], *, spec: str | Path | None = None, graph: Graph | None = None
) -> Graph:
    """The graph to read a bundle with: ``graph``, else ``--spec``, else the shipped graph of its release.

    ``manifest`` is the typed manifest, or the raw document of one that may not validate
    (``inspect verify`` checks those too). Inspect takes ``--spec`` as given, whatever its
    release: reading a bundle with another graph is what the user asked for.
    """
    if graph is not None:
        return graph
    if spec is not None:
        return load_graph(spec)
    if isinstance(manifest, Manifest):
        return bundle_graph(manifest.graph.release)
    info = manifest.get("graph")
    return bundle_graph(info.get("release") if isinstance(info, dict) else None)


# -- a set of bundles with their views ---------------------------------------------------------------


@dataclass
class BundleSet:
    """Bundles opened together, with an in-memory DuckDB connection holding a view per table.

    Use as a context manager: packed bundles are unpacked to temporary folders, removed on
    exit. ``schema`` puts the views in a DuckDB schema of that name (``a.xdrs``) instead of
    the default one; ``bundle_id_column`` adds the ``bundle_id`` column (by default only
    when there are several bundles).
    """

    paths: Sequence[str | Path]
    spec: str | Path | None = None
    graph: Graph | None = None
    bundle_id_column: bool | None = None
    connection: duckdb.DuckDBPyConnection | None = None
    schema: str | None = None
    #: sensitive columns masked in the views (as ``inspect query`` shows them)
    mask: bool = False
    bundles: list[Bundle] = field(default_factory=list)
    graphs: list[Graph | None] = field(default_factory=list)
    views: dict[str, list[str]] = field(default_factory=dict)
    _stack: ExitStack = field(default_factory=ExitStack)
    _own_connection: bool = False

    def __enter__(self) -> BundleSet:
        import duckdb

        try:
            for path in self.paths:
                bundle = self._stack.enter_context(open_bundle(path))
                bundle.manifest  # noqa: B018  (a bundle without a valid manifest fails here, by name)
                self.bundles.append(bundle)
                try:
                    self.graphs.append(graph_of(bundle.manifest, spec=self.spec, graph=self.graph))
                except SpecError:
                    if self.spec is not None:
                        raise
                    self.graphs.append(None)
            if self.connection is None:
                self.connection = duckdb.connect(":memory:")
                self._own_connection = True
            self._create_views()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_connection and self.connection is not None:
            self.connection.close()
            self.connection = None
        self._stack.close()

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self.connection is None:
            raise RuntimeError("BundleSet is not open")
        return self.connection

    def name(self, table: str) -> str:
        """The qualified, quoted name of a table's view."""
        return f"{qident(self.schema)}.{qident(table)}" if self.schema else qident(table)

    def _create_views(self) -> None:
        with_id = self.bundle_id_column if self.bundle_id_column is not None else len(self.bundles) > 1
        if self.schema:
            self.con.execute(f"CREATE SCHEMA IF NOT EXISTS {qident(self.schema)}")
        sources: dict[str, list[str]] = {}
        for bundle, graph in zip(self.bundles, self.graphs, strict=True):
            for table in sorted(bundle.manifest.tables):
                if not TABLE_NAME.match(table) or not bundle.has_table_file(table):
                    continue
                src = bundle.duckdb_source(table, self.con)
                prefix = f"{literal(bundle.bundle_id)} AS bundle_id, " if with_id else ""
                if self.mask:  # not the columns shown as (encrypted): their values are not there
                    unread = set(bundle.encrypted_columns(table)) if bundle.column_keys is None else set()
                    columns = [c for c in bundle.manifest.tables[table].columns if c not in unread]
                    select = masked_select(table, columns, graph, src, prefix)
                else:
                    select = f"SELECT {prefix}* FROM {src}"
                sources.setdefault(table, []).append(select)
                self.views.setdefault(table, []).append(bundle.bundle_id)
        for table, selects in sources.items():
            self.con.execute(f"CREATE VIEW {self.name(table)} AS " + " UNION ALL BY NAME ".join(selects))
        self._empty_views(with_id, sources)

    def _empty_views(self, with_id: bool, sources: dict[str, list[str]]) -> None:
        """An empty view of each table of the graphs that no bundle carries."""
        for graph in self.graphs:
            for spec in graph.tables.values() if graph is not None else ():
                if spec.name in sources or spec.name in self.views:
                    continue
                empty = empty_select(spec)
                if with_id:
                    empty = f"SELECT CAST(NULL AS VARCHAR) AS bundle_id, * FROM ({empty})"
                self.con.execute(f"CREATE VIEW {self.name(spec.name)} AS {empty}")
                self.views[spec.name] = []


# -- inspect query -----------------------------------------------------------------------------------


def _reader(bs: BundleSet, sql: str, batch_rows: int) -> pa.RecordBatchReader:
    import duckdb
    import pyarrow as pa

    try:
        relation = bs.con.sql(sql)
        if relation is None:  # a statement without a result
            return pa.RecordBatchReader.from_batches(pa.schema([]), [])
        return relation.to_arrow_reader(batch_rows)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        carried = ", ".join(sorted(t for t, ids in bs.views.items() if ids)) or "none"
        raise UsageError(
            f"the query failed: {first}",
            hint=f"the bundles carry: {carried} (the graph's other tables are empty views)",
        ) from None


def query_table(
    paths: Sequence[str | Path],
    sql: str,
    *,
    spec: str | Path | None = None,
    bundle_id_column: bool | None = None,
) -> pa.Table:
    """Run DuckDB ``sql`` over the bundles' tables and return the result as one Arrow table."""
    with BundleSet(paths, spec=spec, bundle_id_column=bundle_id_column) as bs:
        return _reader(bs, sql, BATCH_ROWS).read_all()


def iter_rows(reader: Iterable[pa.RecordBatch], limit: int | None = None) -> Iterator[tuple[Any, ...]]:
    """The first ``limit`` rows of a reader (all when None), converted one batch at a time."""
    left = limit
    for batch in reader:
        if left is not None:
            if left <= 0:
                return
            batch = batch.slice(0, left)
            left -= batch.num_rows
        columns = [col.to_pylist() for col in batch.columns]
        yield from zip(*columns, strict=True)


class _Counted:
    """A reader that counts the rows passing through it, including those never converted."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.reader = reader
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self.reader:
            self.rows += batch.num_rows
            yield batch

    def rest(self) -> int:
        """Count what is left unread; returns the rows of the whole result."""
        for _ in self:
            pass
        return self.rows


def render(value: Any) -> Any:
    """A value as it is shown in CSV and JSON: JSON scalars; decimals, dates and times as exact text."""
    if isinstance(value, float | bool):
        return value
    if isinstance(value, list):
        return [render(v) for v in value]
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    return key_value(value)


@dataclass
class QueryOutput:
    """What ``query`` wrote: the column names, the rows written and the rows in the result."""

    columns: list[str]
    rows_written: int
    rows_total: int


def query(
    paths: Sequence[str | Path],
    sql: str,
    out: TextIO,
    *,
    fmt: str = "csv",
    spec: str | Path | None = None,
    limit: int | None = None,
    bundle_id_column: bool | None = None,
    table_writer: Any = None,
) -> QueryOutput:
    """Run DuckDB ``sql`` over the bundles and stream the result to ``out`` as CSV or JSON.

    ``fmt`` ``csv`` writes a header line and one line per row (NULL is empty); ``json`` an
    array of objects. Decimals, dates and timestamps are written as exact text. ``table``
    hands the column names and rows (up to ``limit``) to ``table_writer(columns, rows)``,
    the CLI's table printer. ``limit`` caps the rows written; the rest are still counted.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown output format {fmt!r}", hint=f"choose one of {', '.join(FORMATS)}")
    with BundleSet(paths, spec=spec, bundle_id_column=bundle_id_column, mask=masking()) as bs:
        raw = _reader(bs, sql, BATCH_ROWS)
        columns = list(raw.schema.names)
        reader = _Counted(raw)
        rows = iter_rows(reader, limit)
        written = 0
        if fmt == "table":
            shown = list(rows)
            if table_writer is not None:
                table_writer(columns, shown)
            return QueryOutput(columns, len(shown), reader.rest())
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if v is None else _csv_value(v) for v in row])
                written += 1
            return QueryOutput(columns, written, reader.rest())
        out.write("[")
        for row in rows:
            out.write("\n  " if written == 0 else ",\n  ")
            out.write(json.dumps(dict(zip(columns, map(render, row), strict=True)), ensure_ascii=False))
            written += 1
        out.write("\n]\n" if written else "]\n")
        return QueryOutput(columns, written, reader.rest())


def _csv_value(value: Any) -> Any:
    shown = render(value)
    return json.dumps(shown, ensure_ascii=False) if isinstance(shown, list | dict) else shown
