"""``inspect verify``: everything wrong with a bundle, found offline, all at once.

The checks, in order (a later check is skipped only where an earlier problem makes it
meaningless, e.g. the data of a file whose checksum failed is not read):

1. the bundle opens (a packed file unpacks) and ``manifest.json`` is a JSON object;
2. the manifest against its JSON Schema and the format version (a newer version is refused
   by name, and nothing else is checked: its meaning is unknown);
3. the entity graph: the one of the manifest's release (or ``--spec``); a different graph
   sha256 is a warning, not a problem;
4. every file: listed files exist with their size and sha256, no file is unlisted, each
   table's file is ``tables/<table>.parquet``;
5. per table, from the Parquet footer only: a readable file, the row count of the
   manifest, the column types of the manifest, and the graph's columns — names, order and
   exact types (decimal precision and scale, timestamp unit); the table exists in the
   graph with the manifest's scope and is of a scope bundles carry;
6. the manifest's own arithmetic and declarations: totals, the root row is in the bundle,
   every prerequisite names a graph table and column;
7. with DuckDB over the Parquet files: no NULL in a NOT NULL column, primary keys unique,
   every reference resolvable (to a row in the bundle, or to a prerequisite or other
   outside row the manifest declares by natural key), usage rows inside the declared window.

Problems are collected, never raised one by one: :func:`verify_bundle` returns a
:class:`VerifyReport`; :meth:`VerifyReport.raise_if_invalid` turns it into a
:class:`~bundler.errors.BundleInvalid` (exit 4) when there is any.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.bundle import (
    FORMAT_VERSION,
    MANIFEST,
    TABLES_DIR,
    Bundle,
    checksum_problems,
    manifest_problems,
    open_bundle,
)
from bundler.errors import BundleInvalid, SpecError
from bundler.graph import COPIED_SCOPES, Graph, TableSpec, arrow_type
from bundler.inspect.query import TABLE_NAME, duck_type, graph_of, literal, parquet_source, qident
from bundler.progress import NullProgress, Progress

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = ["Problem", "VerifyReport", "verify_bundle", "verify_bundles"]

SHOWN = 5  # examples shown per problem (values, rows)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bundle: the file it is in, the table and row where relevant."""

    file: str
    message: str
    table: str | None = None
    row: str | None = None

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "table": self.table,
            "row": self.row,
            "message": self.message,
            "text": str(self),
        }


@dataclass
class VerifyReport:
    """The outcome of verifying one bundle: every problem found, and warnings that are not problems."""

    bundle: str
    bundle_id: str | None = None
    kind: str | None = None
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tables: int = 0
    rows: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line per problem, each starting with the bundle."""
        return [f"{self.bundle}: {p}" for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "bundle_id": self.bundle_id,
            "kind": self.kind,
            "ok": self.ok,
            "problems": [p.to_dict() for p in self.problems],
            "warnings": list(self.warnings),
            "tables": self.tables,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }

    def raise_if_invalid(self) -> None:
        """Raise :class:`BundleInvalid` listing every problem, if there is any."""
        if self.problems:
            raise BundleInvalid(
                self.bundle, [str(p) for p in self.problems], hint="run bundler inspect verify on it"
            )


def _split(text: str, default_file: str) -> Problem:
    """A problem line of :mod:`bundler.bundle` (``file: message`` or ``manifest.json …``) as a Problem."""
    if text.startswith(MANIFEST):
        return Problem(MANIFEST, text[len(MANIFEST) :].lstrip(": ").strip() or text)
    file, sep, message = text.partition(": ")
    if sep and (file.startswith(f"{TABLES_DIR}/") or "/" in file or file.endswith(".parquet")):
        table = Path(file).name.removesuffix(".parquet") if file.endswith(".parquet") else None
        return Problem(file, message, table=table)
    return Problem(default_file, text)


def verify_bundle(
    path: str | Path,
    *,
    graph: Graph | None = None,
    spec: str | Path | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify one bundle (folder or packed file) and return every problem found.

    ``graph`` (or ``spec``, a graph file) replaces the shipped graph of the manifest's release.
    Never raises for a problem of the bundle; raises :class:`~bundler.errors.BundlerError`
    only when ``path`` does not exist or ``spec`` cannot be read.
    """
    started = time.monotonic()
    report = VerifyReport(str(path))
    if graph is None and spec is not None:
        from bundler.graph import load_graph

        graph = load_graph(spec)
    try:
        bundle = open_bundle(path)
    except BundleInvalid as exc:
        report.problems.extend(_split(p, Path(path).name) for p in exc.problems)
        report.seconds = time.monotonic() - started
        return report
    with bundle:
        _Verifier(bundle, graph, report, progress or NullProgress()).run()
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


@dataclass
class _Table:
    """A table whose file can be read: its graph spec and the columns usable in data checks."""

    name: str
    file: str
    path: Path
    spec: TableSpec | None
    good_columns: set[str]
    rows: int


class _Verifier:
    def __init__(self, bundle: Bundle, graph: Graph | None, report: VerifyReport, progress: Progress) -> None:
        self.bundle = bundle
        self.report = report
        self.progress = progress
        self.graph = graph
        self.doc: dict[str, Any] = {}
        self.readable: dict[str, _Table] = {}
        self.listed: set[str] = set()
        self.broken: set[str] = set()  # tables listed whose data cannot be trusted or read

    def problem(self, file: str, message: str, table: str | None = None, row: str | None = None) -> None:
        self.report.problems.append(Problem(file, message, table, row))

    # -- steps --------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.doc = self.bundle.manifest
        except BundleInvalid as exc:
            self.report.problems.extend(_split(p, MANIFEST) for p in exc.problems)
            return
        self.report.bundle_id = (
            self.doc.get("bundle_id") if isinstance(self.doc.get("bundle_id"), str) else None
        )
        self.report.kind = self.doc.get("kind") if isinstance(self.doc.get("kind"), str) else None
        version = self.doc.get("format_version")
        schema_problems = manifest_problems(self.doc)
        self.report.problems.extend(_split(p, MANIFEST) for p in schema_problems)
        if isinstance(version, int) and version > FORMAT_VERSION:
            return  # a newer format: its meaning is unknown, nothing more can be checked
        self._graph()
        tables = self.doc.get("tables")
        entries = (
            {name: e for name, e in tables.items() if isinstance(e, dict)} if isinstance(tables, dict) else {}
        )
        self.listed = set(entries)
        self._files(entries)
        for name in sorted(entries):
            self._footer(name, entries[name])
        self._manifest_consistency(entries)
        if self.readable and self.graph is not None:
            self._data()

    def _graph(self) -> None:
        info = self.doc.get("graph") if isinstance(self.doc.get("graph"), dict) else {}
        assert isinstance(info, dict)
        if self.graph is None:
            try:
                self.graph = graph_of(self.doc)
            except SpecError as exc:
                self.problem(
                    MANIFEST,
                    f"cannot check tables against the entity graph: {exc.message}; "
                    "give the graph with --spec PATH",
                )
                return
        elif info.get("release") not in (None, self.graph.release):
            self.report.warnings.append(
                f"verified against the graph of release {self.graph.release} ({self.graph.path}); "
                f"the bundle was made with release {info.get('release')}"
            )
        sha = info.get("sha256")
        if isinstance(sha, str) and self.graph.sha256 and sha != self.graph.sha256:
            self.report.warnings.append(
                f"the bundle was made with a graph of sha256 {sha[:12]}…, verified against {self.graph.path} "
                f"(sha256 {self.graph.sha256[:12]}…)"
            )

    def _files(self, entries: dict[str, dict[str, Any]]) -> None:
        for text in checksum_problems(self.bundle):
            problem = _split(text, MANIFEST)
            self.report.problems.append(problem)
            if problem.table is not None:
                self.broken.add(problem.table)
        for name, entry in sorted(entries.items()):
            if not TABLE_NAME.match(name):
                self.problem(MANIFEST, f"table name {name!r} is not a valid table name", table=name)
                self.broken.add(name)
                continue
            expected = f"{TABLES_DIR}/{name}.parquet"
            if entry.get("file") != expected:
                self.problem(
                    MANIFEST,
                    f"table {name} is listed with file {entry.get('file')!r}, expected {expected!r}",
                    table=name,
                )
                self.broken.add(name)

    def _footer(self, name: str, entry: dict[str, Any]) -> None:
        """Checks that need only the manifest, the graph and the Parquet footer."""
        import pyarrow.parquet as pq

        file = f"{TABLES_DIR}/{name}.parquet"
        spec = self.graph.tables.get(name) if self.graph is not None else None
        scope = entry.get("scope")
        if self.graph is not None and spec is None:
            self.problem(
                file,
                f"table {name} is not in the entity graph of release {self.graph.release}; "
                "a load would not know what to do with it",
                table=name,
            )
        elif spec is not None:
            if spec.scope not in COPIED_SCOPES:
                self.problem(
                    file,
                    f"table {name} is {spec.scope} in the graph: bundles never carry its rows",
                    table=name,
                )
            elif scope != spec.scope:
                self.problem(
                    MANIFEST, f"table {name} is listed as {scope}, the graph says {spec.scope}", table=name
                )
        if name in self.broken:
            return
        path = self.bundle.table_path(name)
        try:
            with pq.ParquetFile(path) as pf:
                schema = pf.schema_arrow
                rows = pf.metadata.num_rows
        except Exception as exc:  # any failure to read the footer is the finding
            self.problem(file, f"not a readable Parquet file ({_first_line(exc)})", table=name)
            self.broken.add(name)
            return
        self.report.tables += 1
        self.report.rows += rows
        if isinstance(entry.get("rows"), int) and rows != entry["rows"]:
            self.problem(file, f"holds {rows} rows, the manifest says {entry['rows']}", table=name)
        actual = {f.name: str(f.type) for f in schema}
        listed = entry.get("columns")
        if isinstance(listed, dict) and listed != actual:
            self.problem(
                MANIFEST,
                f"the columns listed for table {name} differ from {file}: "
                + _column_differences(listed, actual),
                table=name,
            )
        good = set(schema.names)
        if spec is not None:
            good = self._schema_against_graph(file, name, schema, spec)
        self.readable[name] = _Table(name, file, path, spec, good, rows)

    def _schema_against_graph(self, file: str, name: str, schema: pa.Schema, spec: TableSpec) -> set[str]:
        """Names, order and exact types of the file's columns against the graph; returns the good columns."""
        release = self.graph.release if self.graph is not None else "?"
        have = list(schema.names)
        want = list(spec.column_names)
        good: set[str] = set()
        missing = [c for c in want if c not in have]
        extra = [c for c in have if c not in want]
        if missing:
            self.problem(
                file, f"column(s) {', '.join(missing)} of the graph ({release}) are missing", table=name
            )
        if extra:
            self.problem(file, f"column(s) {', '.join(extra)} are not in the graph ({release})", table=name)
        common_have = [c for c in have if c in want]
        common_want = [c for c in want if c in have]
        if common_have != common_want:
            got, expected = next((h, w) for h, w in zip(common_have, common_want, strict=True) if h != w)
            self.problem(
                file,
                f"columns are not in the order of the graph ({release}): the file has {got} where the graph "
                f"has {expected}",
                table=name,
            )
        for col in spec.columns:
            if col.name not in have:
                continue
            got = schema.field(col.name).type
            if got != arrow_type(col.type):
                self.problem(
                    file, f"column {col.name} is {got}, the graph ({release}) says {col.type}", table=name
                )
            else:
                good.add(col.name)
        return good

    def _manifest_consistency(self, entries: dict[str, dict[str, Any]]) -> None:
        totals = self.doc.get("totals")
        if isinstance(totals, dict):
            rows = sum(e["rows"] for e in entries.values() if isinstance(e.get("rows"), int))
            size = sum(e["bytes"] for e in entries.values() if isinstance(e.get("bytes"), int))
            if totals.get("rows") != rows or totals.get("bytes") != size:
                self.problem(
                    MANIFEST,
                    f"totals say {totals.get('rows')} rows and {totals.get('bytes')} bytes, "
                    f"the tables add up to {rows} rows and {size} bytes",
                )
        if self.graph is None:
            return
        prerequisites = self.doc.get("prerequisites")
        for table, entry in sorted(prerequisites.items()) if isinstance(prerequisites, dict) else []:
            spec = self.graph.tables.get(table)
            if spec is None:
                self.problem(
                    MANIFEST,
                    f"prerequisites name table {table}, which is not in the entity graph",
                    table=table,
                )
            elif isinstance(entry, dict) and entry.get("column") not in spec.column_names:
                self.problem(
                    MANIFEST,
                    f"prerequisites of {table} name column {entry.get('column')!r}, "
                    f"which {table} does not have",
                    table=table,
                )

    # -- data checks (DuckDB) -----------------------------------------------------------------------

    def _data(self) -> None:
        import duckdb

        con = duckdb.connect(":memory:")
        try:
            for t in self.readable.values():
                con.execute(f"CREATE VIEW {qident(t.name)} AS SELECT * FROM {parquet_source(t.path)}")
            prereq = self._prerequisite_tables(con)
            window = self._window()
            self._root(con)
            for t in sorted(self.readable.values(), key=lambda t: t.name):
                if t.spec is None:
                    continue
                self.progress.start(f"verify {t.name}", t.rows)
                suspect = self._screen(con, t, window, prereq)
                if suspect is None or "rows" in suspect:
                    self._guarded(t, "the NOT NULL and window checks", self._table_scan, con, t, window)
                if suspect is None or "pk" in suspect:
                    self._guarded(t, "the primary key check", self._primary_key, con, t)
                for ref in t.spec.references:
                    if suspect is None or ref.column in suspect:
                        self._guarded(
                            t, f"the check of {t.name}.{ref.column}", self._reference, con, t, ref, prereq
                        )
                self.progress.finish(f"verify {t.name}")
        finally:
            con.close()

    def _guarded(self, t: _Table, what: str, fn: Any, *args: Any) -> None:
        import duckdb

        try:
            fn(*args)
        except duckdb.Error as exc:
            self.problem(t.file, f"could not be read for {what} ({_first_line(exc)})", table=t.name)

    def _prerequisite_tables(self, con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
        """A temp table of each prerequisite table's declared values, typed: table → (temp table, column)."""
        import pyarrow as pa

        out: dict[str, tuple[str, str]] = {}
        prerequisites = self.doc.get("prerequisites")
        assert self.graph is not None
        for i, (table, entry) in enumerate(
            sorted(prerequisites.items()) if isinstance(prerequisites, dict) else []
        ):
            spec = self.graph.tables.get(table)
            if spec is None or not isinstance(entry, dict) or entry.get("column") not in spec.column_map:
                continue
            column = entry["column"]
            listed = entry.get("rows")
            rows: list[Any] = listed if isinstance(listed, list) else []
            values = [str(r.get("value")) for r in rows if isinstance(r, dict) and r.get("value") is not None]
            name = f"__prerequisite_{i}"
            con.register("__prerequisite_src", pa.table({"raw": pa.array(values, pa.string())}))
            try:
                ctype = duck_type(spec.column_map[column].type)
                con.execute(
                    f"CREATE TEMP TABLE {name} AS SELECT raw, TRY_CAST(raw AS {ctype}) AS v FROM __prerequisite_src"
                )
            finally:
                con.unregister("__prerequisite_src")
            bad = con.execute(f"SELECT raw FROM {name} WHERE v IS NULL ORDER BY raw LIMIT {SHOWN}").fetchall()
            if bad:
                shown = ", ".join(repr(r[0]) for r in bad)
                self.problem(
                    MANIFEST,
                    f"prerequisites of {table} list value(s) {shown} that are not "
                    f"{spec.column_map[column].type} like {table}.{column}",
                    table=table,
                )
            out[table] = (name, column)
        return out

    def _window(self) -> tuple[datetime | None, datetime | None, str] | None:
        """(from, to, mode) of the declared usage window; None when it cannot be read."""
        usage = self.doc.get("usage")
        if not isinstance(usage, dict):
            return None
        bounds: list[datetime | None] = []
        for key in ("from", "to"):
            text = usage.get(key)
            if text is None:
                bounds.append(None)
                continue
            try:
                bounds.append(datetime.fromisoformat(str(text)))
            except ValueError:
                self.problem(MANIFEST, f"usage.{key} {text!r} is not a timestamp (YYYY-MM-DD HH:MM:SS)")
                return None
        start, end = bounds
        if start is not None and end is not None and start >= end:
            self.problem(MANIFEST, f"the usage window is empty: from {start} is not before to {end}")
        return start, end, str(usage.get("mode"))

    def _root(self, con: duckdb.DuckDBPyConnection) -> None:
        root = self.doc.get("root")
        kind = self.doc.get("kind")
        if not isinstance(root, dict) or self.graph is None:
            if kind in ("customer", "reseller", "vendor") and root is None:
                self.problem(MANIFEST, f"a {kind} bundle needs a root")
            return
        table = root.get("table")
        spec = self.graph.tables.get(table) if isinstance(table, str) else None
        if spec is None:
            self.problem(MANIFEST, f"the root table {table!r} is not in the entity graph")
            return
        if kind not in ("customer", "reseller", "vendor"):
            return  # usage and reverse bundles carry the root's usage, not the root itself
        file = f"{TABLES_DIR}/{spec.name}.parquet"
        if spec.name not in self.listed:
            self.problem(file, f"the root's table {spec.name} is not in the bundle", table=spec.name)
            return
        t = self.readable.get(spec.name)
        if t is None or len(spec.pk) != 1 or spec.pk[0] not in t.good_columns:
            return
        pk = spec.pk[0]
        found = con.execute(
            f"SELECT count(*) FROM {qident(spec.name)} WHERE CAST({qident(pk)} AS VARCHAR) = ?",
            [str(root.get("source_pk"))],
        ).fetchone()
        if not found or not found[0]:
            self.problem(
                file,
                f"the root row {pk}={root.get('source_pk')} is not in the bundle",
                table=spec.name,
                row=f"{pk}={root.get('source_pk')}",
            )

    def _table_scan(
        self,
        con: duckdb.DuckDBPyConnection,
        t: _Table,
        window: tuple[datetime | None, datetime | None, str] | None,
    ) -> None:
        """One pass over a table: NULLs in NOT NULL columns, and rows outside the usage window."""
        not_null = _not_null_columns(t)
        parts = [f"count(*) FILTER (WHERE {qident(c)} IS NULL)" for c in not_null]
        outside = _outside_window(t, window)
        if outside is not None:
            parts.append(f"count(*) FILTER (WHERE {outside[0]})")
        if not parts:
            return
        counts = con.execute(
            f"SELECT {', '.join(parts)} FROM {qident(t.name)}", outside[1] if outside else []
        ).fetchone()
        assert counts is not None
        for col, n in zip(not_null, counts, strict=False):
            if n:
                first = self._first_rows(con, t, f"{qident(col)} IS NULL", [])
                self.problem(
                    t.file,
                    f"{n} row(s) have NULL in NOT NULL column {col}{first}",
                    table=t.name,
                    row=first.removeprefix(", first ") or None,
                )
        if outside is not None and counts[-1]:
            assert window is not None
            window_sql, params, time_col = outside
            start, end, mode = window
            declared = "none: no usage at all" if mode == "none" else f"[{start or '…'}, {end or '…'})"
            first = self._first_rows(con, t, window_sql, params, show=time_col)
            self.problem(
                t.file,
                f"{counts[-1]} row(s) have {time_col} outside the usage window {declared}{first}",
                table=t.name,
                row=first.removeprefix(", first ") or None,
            )

    def _first_rows(
        self,
        con: duckdb.DuckDBPyConnection,
        t: _Table,
        where: str,
        params: list[Any],
        show: str | None = None,
    ) -> str:
        """``, first i_xdr=1 (bill_time=…), i_xdr=2 …`` naming the first rows matching ``where``."""
        assert t.spec is not None
        pk = [c for c in t.spec.pk if c in t.good_columns]
        if not pk:
            return ""
        cols = [*pk, show] if show else pk
        order = ", ".join(qident(c) for c in pk)
        rows = con.execute(
            f"SELECT {', '.join(qident(c) for c in cols)} FROM {qident(t.name)} WHERE {where} ORDER BY {order} "
            f"LIMIT {SHOWN}",
            params,
        ).fetchall()
        shown = []
        for row in rows:
            text = ", ".join(f"{c}={v}" for c, v in zip(pk, row, strict=False))
            if show:
                text += f" ({show}={row[-1]})"
            shown.append(text)
        return ", first " + "; ".join(shown) if shown else ""

    def _primary_key(self, con: duckdb.DuckDBPyConnection, t: _Table) -> None:
        assert t.spec is not None
        pk = list(t.spec.pk)
        if not pk or any(c not in t.good_columns for c in pk):
            return
        cols = ", ".join(qident(c) for c in pk)
        dups = con.execute(
            f"SELECT {cols}, n, count(*) OVER () AS keys FROM "
            f"(SELECT {cols}, count(*) AS n FROM {qident(t.name)} GROUP BY ALL HAVING count(*) > 1) "
            f"ORDER BY {cols} LIMIT {SHOWN}"
        ).fetchall()
        if not dups:
            return
        keys = dups[0][-1]
        shown = "; ".join(
            ", ".join(f"{c}={v}" for c, v in zip(pk, row[: len(pk)], strict=True)) + f" ({row[len(pk)]} rows)"
            for row in dups
        )
        first = ", ".join(f"{c}={v}" for c, v in zip(pk, dups[0][: len(pk)], strict=True))
        self.problem(
            t.file,
            f"primary key ({', '.join(pk)}) is not unique: {keys} key(s) repeat: {shown}",
            table=t.name,
            row=first,
        )

    def _screen(
        self,
        con: duckdb.DuckDBPyConnection,
        t: _Table,
        window: tuple[datetime | None, datetime | None, str] | None,
        prereq: dict[str, tuple[str, str]],
    ) -> set[str] | None:
        """One query counting every kind of problem of ``t``; the checks worth running in detail.

        ``"rows"`` (NULLs in NOT NULL columns, rows outside the window), ``"pk"``, and the
        reference columns whose values do not all resolve. None: the screen itself failed,
        so every check runs (and reports what it can). A sound table costs this one query
        instead of one per check (a small bundle verifies in a third of the time).
        """
        import duckdb

        assert t.spec is not None
        spec = t.spec
        checks: list[tuple[str, str]] = []
        params: list[Any] = []
        nulls = [f"{qident(c)} IS NULL" for c in _not_null_columns(t)]
        if nulls:
            checks.append(("rows", f"count(*) FILTER (WHERE {' OR '.join(nulls)})"))
        outside = _outside_window(t, window)
        if outside is not None:
            checks.append(("rows", f"count(*) FILTER (WHERE {outside[0]})"))
            params = outside[1]
        pk = list(spec.pk)
        if pk and all(c in t.good_columns for c in pk):
            key = qident(pk[0]) if len(pk) == 1 else f"({', '.join(qident(c) for c in pk)})"
            checks.append(("pk", f"count(*) - count(DISTINCT {key})"))
        for ref in spec.references:
            found = self._resolvable(t, ref, prereq)
            if found is None:
                continue
            col = qident(ref.column)
            checks.append(
                (
                    ref.column,
                    f"count(*) FILTER (WHERE {col} IS NOT NULL AND {col} NOT IN "
                    f"(SELECT v FROM ({found[0]}) WHERE v IS NOT NULL))",
                )
            )
        if not checks:
            return set()
        sql = f"SELECT {', '.join(expr for _, expr in checks)} FROM {qident(t.name)}"
        try:
            counts = con.execute(sql, params).fetchone()
        except duckdb.Error:
            return None
        assert counts is not None
        return {label for (label, _), n in zip(checks, counts, strict=True) if n}

    def _resolvable(
        self, t: _Table, ref: Any, prereq: dict[str, tuple[str, str]]
    ) -> tuple[str, list[str]] | None:
        """SQL of the values ``ref`` may take (column ``v``) and where they are; None: nothing to check."""
        if ref.column not in t.good_columns:
            return None
        targets: list[str] = []
        where: list[str] = []
        target = self.readable.get(ref.table)
        if ref.table in self.listed:
            if target is None or ref.target_column not in target.good_columns:
                return None  # the referenced table is broken: already reported, nothing to resolve against
            targets.append(f"SELECT {qident(ref.target_column)} AS v FROM {qident(ref.table)}")
            where.append("in the bundle")
        declared = prereq.get(ref.table)
        if declared is not None and declared[1] == ref.target_column:
            targets.append(f"SELECT v FROM {declared[0]} WHERE v IS NOT NULL")
            where.append("among its prerequisites")
        if not targets:
            return f"SELECT {qident(ref.column)} AS v FROM {qident(t.name)} WHERE false", where
        return " UNION ALL ".join(targets), where

    def _reference(
        self, con: duckdb.DuckDBPyConnection, t: _Table, ref: Any, prereq: dict[str, tuple[str, str]]
    ) -> None:
        """Every non-NULL value of ``t.column`` is a row of the referenced table in the bundle or declared outside."""
        assert t.spec is not None and self.graph is not None
        found = self._resolvable(t, ref, prereq)
        if found is None:
            return
        resolvable, where = found
        target_name = ref.table
        declared = prereq.get(target_name)
        col = qident(ref.column)
        pk = [c for c in t.spec.pk if c in t.good_columns]
        row_text = (
            " || ', ' || ".join(f"{literal(c + '=')} || CAST({qident(c)} AS VARCHAR)" for c in pk)
            if pk
            else "''"
        )
        first_order = qident(pk[0]) if pk else col
        rows = con.execute(
            f"WITH targets AS ({resolvable}), "
            f"bad AS (SELECT s.{col} AS v, {row_text} AS row_text, {first_order} AS ord FROM {qident(t.name)} s "
            f"ANTI JOIN targets ON s.{col} = targets.v WHERE s.{col} IS NOT NULL) "
            f"SELECT CAST(v AS VARCHAR), count(*) AS n, arg_min(row_text, ord) AS first_row, "
            f"count(*) OVER () AS distinct_values, sum(count(*)) OVER () AS total "
            f"FROM bad GROUP BY v ORDER BY min(ord) LIMIT {SHOWN}"
        ).fetchall()
        if not rows:
            return
        distinct, total = rows[0][3], int(rows[0][4])
        values = ", ".join(repr(_as_shown(r[0])) for r in rows)
        more = f" and {distinct - len(rows)} more" if distinct > len(rows) else ""
        scope = self.graph.tables[target_name].scope if target_name in self.graph.tables else "unknown"
        if where:
            found_in = " or ".join(where)
        elif declared is not None:
            found_in = (
                f"{target_name} is not in the bundle, and its prerequisites are declared by "
                f"{declared[1]}, not by {ref.target_column}"
            )
        else:
            found_in = f"{target_name} ({scope}) is neither in the bundle nor among its prerequisites"
        self.problem(
            t.file,
            f"{total} row(s) reference {target_name}.{ref.target_column} values that do not resolve "
            f"({found_in}): {t.name}.{ref.column} = {values}{more}; first row {rows[0][2]}",
            table=t.name,
            row=rows[0][2],
        )


def _not_null_columns(t: _Table) -> list[str]:
    """The readable columns of ``t`` that its graph declares NOT NULL."""
    assert t.spec is not None
    return [c.name for c in t.spec.columns if not c.nullable and c.name in t.good_columns]


def _outside_window(
    t: _Table, window: tuple[datetime | None, datetime | None, str] | None
) -> tuple[str, list[Any], str] | None:
    """(SQL condition, its parameters, the time column) of ``t``'s rows outside the usage window.

    None when ``t`` is no usage table with a readable time column, or the window bounds nothing.
    """
    assert t.spec is not None
    spec = t.spec
    if window is None or spec.scope != "usage" or spec.time_column not in t.good_columns:
        return None
    time_col = spec.time_column
    start, end, mode = window
    conds = ["true"] if mode == "none" else []
    params: list[Any] = []
    if start is not None:
        conds.append(f"{qident(time_col)} < ?")
        params.append(start)
    if end is not None:
        conds.append(f"{qident(time_col)} >= ?")
        params.append(end)
    return (" OR ".join(conds), params, time_col) if conds else None


def _as_shown(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
