"""``inspect diff``: two bundles table by table — rows added, removed and changed.

Rows are matched by natural key, as the entity graph defines it: a reference column in a
natural key stands for the referenced row's natural key (resolved in the same bundle, or
through the natural keys its manifest declares for prerequisites and outside rows), so a
rate matches by its tariff's and destination's names, not by ids. Matched rows are compared
column by column (every column both sides have, ids included); a row is *changed* when any
differs, and the changed columns are named. DuckDB does the joins over the Parquet files;
only the shown example rows (``limit`` per kind and table) become Python objects.

A table the graph does not know is matched on all its columns (rows are only added or
removed). A natural key that is not unique in a bundle is noted; its rows match
many-to-many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.graph import Graph, TableSpec
from bundler.inspect.query import BundleSet, duck_type, literal, qident, render
from bundler.secure.mask import masking, sensitive_columns, shown

if TYPE_CHECKING:
    import duckdb

__all__ = ["DiffReport", "RowChange", "TableDiff", "diff"]

CHANGES = ("added", "removed", "changed")


@dataclass(frozen=True)
class RowChange:
    """One example row: its natural key, and for a changed row each changed column's (old, new)."""

    change: str
    key: dict[str, Any]
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"change": self.change, "key": self.key}
        if self.change == "changed":
            out["columns"] = {c: {"old": old, "new": new} for c, (old, new) in self.columns.items()}
        return out


@dataclass
class TableDiff:
    """How one table differs between bundle A and bundle B."""

    table: str
    matched_by: list[str]
    rows_a: int = 0
    rows_b: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    changed_columns: dict[str, int] = field(default_factory=dict)
    columns_only_in_a: list[str] = field(default_factory=list)
    columns_only_in_b: list[str] = field(default_factory=list)
    examples: list[RowChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(
            self.added or self.removed or self.changed or self.columns_only_in_a or self.columns_only_in_b
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "matched_by": self.matched_by,
            "rows_a": self.rows_a,
            "rows_b": self.rows_b,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "changed_columns": self.changed_columns,
            "columns_only_in_a": self.columns_only_in_a,
            "columns_only_in_b": self.columns_only_in_b,
            "examples": [e.to_dict() for e in self.examples],
            "notes": self.notes,
        }


@dataclass
class DiffReport:
    """Bundle A against bundle B, table by table (every table either carries)."""

    a: str
    b: str
    a_id: str
    b_id: str
    tables: list[TableDiff] = field(default_factory=list)
    limit: int = 0

    @property
    def identical(self) -> bool:
        return not any(t.differs for t in self.tables)

    def table(self, name: str) -> TableDiff:
        for t in self.tables:
            if t.table == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"path": self.a, "bundle_id": self.a_id},
            "b": {"path": self.b, "bundle_id": self.b_id},
            "identical": self.identical,
            "limit": self.limit,
            "tables": [t.to_dict() for t in self.tables],
        }


def diff(
    a: str | Path,
    b: str | Path,
    *,
    spec: str | Path | None = None,
    limit: int = 20,
) -> DiffReport:
    """Compare bundle ``a`` (the old one) with bundle ``b`` (the new one).

    ``limit`` is the number of example rows kept per table and kind of change (all are counted).
    """
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        with (
            BundleSet([a], spec=spec, bundle_id_column=False, connection=con, schema="side_a") as side_a,
            BundleSet([b], spec=spec, bundle_id_column=False, connection=con, schema="side_b") as side_b,
        ):
            report = DiffReport(
                str(a), str(b), side_a.bundles[0].bundle_id, side_b.bundles[0].bundle_id, limit=limit
            )
            _Differ(con, side_a, side_b, limit, report).run()
            return report
    finally:
        con.close()


class _Keys:
    """Natural-key views of one side: ``<side>.__nk__<table>`` = the table's columns plus ``__key``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, side: BundleSet) -> None:
        self.con = con
        self.side = side
        self.schema = side.schema or "main"
        self.graph: Graph | None = side.graphs[0]
        self.manifest = side.bundles[0].manifest
        self.built: dict[str, str | None] = {}
        self.kv: dict[tuple[str, str], str] = {}
        self.building: set[str] = set()

    def q(self, name: str) -> str:
        return f"{qident(self.schema)}.{qident(name)}"

    def view(self, table: str) -> str | None:
        """The natural-key view of ``table`` (None: no natural key to match by)."""
        if table in self.built:
            return self.built[table]
        spec = self.graph.tables.get(table) if self.graph is not None else None
        if spec is None or not spec.natural_key or table in self.building:
            return None
        self.building.add(table)
        try:
            joins: list[str] = []
            parts: list[str] = []
            for i, col in enumerate(sorted(spec.natural_key)):
                value = self._render(spec, col, f"t.{qident(col)}")
                ref = spec.ref_by_column.get(col)
                kv = self._kv(ref.table, ref.target_column) if ref is not None else None
                if kv is not None:
                    alias = f"k{i}"
                    joins.append(f"LEFT JOIN {kv} {alias} ON {alias}.v = t.{qident(col)}")
                    value = f"coalesce(json({alias}.k), to_json({value}))"
                parts.append(f"{literal(col)}, {value}")
            name = self.q(f"__nk__{table}")
            self.con.execute(
                f"CREATE VIEW {name} AS SELECT t.*, CAST(json_object({', '.join(parts)}) AS VARCHAR) AS __key "
                f"FROM {self.q(table)} t {' '.join(joins)}"
            )
        finally:
            self.building.discard(table)
        self.built[table] = name
        return name

    def _render(self, spec: TableSpec, col: str, expr: str) -> str:
        """A key value as :func:`bundler.keys.key_value` renders it (decimals, dates, times as text)."""
        ctype = spec.column_map[col].type
        if ctype.startswith("decimal") or ctype == "date32":
            return f"CAST({expr} AS VARCHAR)"
        if ctype.startswith("timestamp"):
            return f"strftime({expr}, '%Y-%m-%d %H:%M:%S.%f')"
        return expr

    def _kv(self, table: str, column: str) -> str | None:
        """``(v, k)``: each value of ``table.column`` with the natural key of its row, in the bundle or declared."""
        if (table, column) in self.kv:
            return self.kv[(table, column)]
        assert self.graph is not None
        spec = self.graph.tables.get(table)
        if spec is None or column not in spec.column_map:
            return None
        selects = []
        inner = self.view(table)
        if inner is not None and table in self.side.views:
            selects.append(f"SELECT {qident(column)} AS v, __key AS k FROM {inner}")
        declared = self._declared(spec, column)
        if declared is not None:
            selects.append(f"SELECT v, k FROM {declared}")
        if not selects:
            return None
        name = self.q(f"__kv__{table}__{column}")
        self.con.execute(
            f"CREATE VIEW {name} AS SELECT v, any_value(k) AS k FROM ({' UNION ALL '.join(selects)}) GROUP BY v"
        )
        self.kv[(table, column)] = name
        return name

    def _declared(self, spec: TableSpec, column: str) -> str | None:
        """A table ``(v, k)`` of the rows of ``spec`` the manifest declares by ``column`` (prerequisites)."""
        import pyarrow as pa

        from bundler.keys import key_text

        entry = self.manifest.prerequisites.get(spec.name)
        if entry is None or entry.column != column:
            return None
        rows = [r for r in entry.rows if r.value is not None]
        src = f"__declared_{self.schema}_{spec.name}"
        self.con.register(
            src,
            pa.table(
                {
                    "raw": pa.array([str(r.value) for r in rows], pa.string()),
                    "k": pa.array([key_text(r.key or {}) for r in rows], pa.string()),
                }
            ),
        )
        declared = self.q(f"__declared__{spec.name}")
        self.con.execute(
            f"CREATE TABLE {declared} AS SELECT TRY_CAST(raw AS {duck_type(spec.column_map[column].type)}) AS v, k "
            f"FROM {qident(src)}"
        )
        self.con.unregister(src)
        return declared


class _Differ:
    def __init__(
        self, con: duckdb.DuckDBPyConnection, a: BundleSet, b: BundleSet, limit: int, report: DiffReport
    ) -> None:
        self.con = con
        self.a, self.b = a, b
        self.keys_a, self.keys_b = _Keys(con, a), _Keys(con, b)
        self.limit = limit
        self.report = report

    def run(self) -> None:
        carried = sorted(set(self.a.views) | set(self.b.views))
        for table in carried:
            in_a = bool(self.a.views.get(table))
            in_b = bool(self.b.views.get(table))
            if not in_a and not in_b:
                continue
            for side, other in ((self.a, self.b), (self.b, self.a)):
                # unknown to this side's graph and absent from it: an empty copy of the other side's
                if table not in side.views:
                    self.con.execute(
                        f"CREATE VIEW {side.name(table)} AS SELECT * FROM {other.name(table)} LIMIT 0"
                    )
                    side.views[table] = []
            self.report.tables.append(self._table(table))

    def _columns(self, side: BundleSet, table: str) -> dict[str, str]:
        return {row[0]: row[1] for row in self.con.execute(f"DESCRIBE {side.name(table)}").fetchall()}

    def _table(self, table: str) -> TableDiff:
        import duckdb

        pair = self._pair(table)
        td = TableDiff(
            table,
            pair.matched_by,
            columns_only_in_a=[c for c in pair.cols_a if c not in pair.cols_b],
            columns_only_in_b=[c for c in pair.cols_b if c not in pair.cols_a],
        )
        if td.columns_only_in_a or td.columns_only_in_b:
            td.notes.append("the two bundles have different columns; only the common ones are compared")
        try:
            self._compare(td, pair)
        except duckdb.Error as exc:
            td.notes.append(f"could not compare: {str(exc).strip().splitlines()[0]}")
        return td

    def _pair(self, table: str) -> _Pair:
        """The two sides of ``table``: matched by natural key, or by all common columns when there is none."""
        cols_a, cols_b = self._columns(self.a, table), self._columns(self.b, table)
        common = [c for c in cols_a if c in cols_b]
        view_a, view_b = self.keys_a.view(table), self.keys_b.view(table)
        graph = self.keys_a.graph or self.keys_b.graph
        spec = graph.tables.get(table) if graph is not None else None
        if view_a is not None and view_b is not None and spec is not None:
            return _Pair(view_a, view_b, cols_a, cols_b, common, list(spec.natural_key))
        struct = ", ".join(f"{literal(c)}, {qident(c)}" for c in common)
        view_a = f"(SELECT *, CAST(json_object({struct}) AS VARCHAR) AS __key FROM {self.a.name(table)})"
        view_b = f"(SELECT *, CAST(json_object({struct}) AS VARCHAR) AS __key FROM {self.b.name(table)})"
        return _Pair(view_a, view_b, cols_a, cols_b, common, list(common))

    def _compare(self, td: TableDiff, pair: _Pair) -> None:
        joined = _joined(pair)
        self._count_rows(td, pair)
        self._count_changes(td, pair, joined)
        if td.added or td.removed or td.changed:
            self._examples(td, pair, joined)

    def _count_rows(self, td: TableDiff, pair: _Pair) -> None:
        """The rows of each side, and a note where a side's key is not unique."""
        for name, view in (("A", pair.view_a), ("B", pair.view_b)):
            row = self.con.execute(f"SELECT count(*), count(DISTINCT __key) FROM {view}").fetchone()
            n, distinct = row if row else (0, 0)
            if name == "A":
                td.rows_a = n
            else:
                td.rows_b = n
            if distinct != n:
                td.notes.append(
                    f"the natural key ({', '.join(td.matched_by)}) is not unique in bundle {name}: "
                    f"{n - distinct} row(s) share a key with another; they match many-to-many"
                )

    def _count_changes(self, td: TableDiff, pair: _Pair, joined: str) -> None:
        """The rows unchanged, added, removed and changed, and how often each column changed."""
        column_counts = [
            f"count(*) FILTER (WHERE change = 'changed' AND "
            f"{_distinct(qident('a.' + c), qident('b.' + c), pair.cast(c))})"
            for c in pair.common
        ]
        counts = self.con.execute(
            "SELECT "
            + ", ".join(
                [f"count(*) FILTER (WHERE change = {literal(ch)})" for ch in ("same", *CHANGES)]
                + (column_counts or ["0"])
            )
            + f" FROM ({joined})"
        ).fetchone()
        assert counts is not None
        td.unchanged, td.added, td.removed, td.changed = (int(x or 0) for x in counts[:4])
        td.changed_columns = {c: int(n) for c, n in zip(pair.common, counts[4:], strict=False) if n}

    def _examples(self, td: TableDiff, pair: _Pair, joined: str) -> None:
        """The first ``limit`` rows of each kind of change, by key."""
        rows = self.con.execute(
            f"SELECT * FROM ({joined}) WHERE change <> 'same' "
            f"QUALIFY row_number() OVER (PARTITION BY change ORDER BY key) <= {int(self.limit)} "
            f"ORDER BY CASE change WHEN 'added' THEN 0 WHEN 'removed' THEN 1 ELSE 2 END, key"
        ).fetchall()
        graph = self.keys_a.graph or self.keys_b.graph
        hidden = sensitive_columns(td.table, graph) if masking() else frozenset()
        for row in rows:
            change, key = row[0], json.loads(row[1])
            columns: dict[str, tuple[Any, Any]] = {}
            if change == "changed":
                for i, c in enumerate(pair.common):
                    old, new = row[2 + 2 * i], row[3 + 2 * i]
                    if old != new or (old is None) != (new is None):
                        columns[c] = (shown(old), shown(new)) if c in hidden else (render(old), render(new))
            td.examples.append(RowChange(change, key, columns))


@dataclass
class _Pair:
    """One table on both sides: the views matched by ``__key``, and each side's columns and types."""

    view_a: str
    view_b: str
    cols_a: dict[str, str]
    cols_b: dict[str, str]
    common: list[str]
    matched_by: list[str]

    def cast(self, column: str) -> bool:
        """Whether ``column`` has different types on the two sides (then it is compared as text)."""
        return self.cols_a[column] != self.cols_b[column]


def _distinct(left: str, right: str, cast: bool) -> str:
    if cast:
        left, right = f"CAST({left} AS VARCHAR)", f"CAST({right} AS VARCHAR)"
    return f"{left} IS DISTINCT FROM {right}"


def _joined(pair: _Pair) -> str:
    """The full join of the two sides on ``__key``: per key its change and both sides' common columns."""
    any_differs = (
        " OR ".join(_distinct(f"a.{qident(c)}", f"b.{qident(c)}", pair.cast(c)) for c in pair.common)
        or "false"
    )
    return (
        f"SELECT CASE WHEN a.__key IS NULL THEN 'added' WHEN b.__key IS NULL THEN 'removed' "
        f"WHEN {any_differs} THEN 'changed' ELSE 'same' END AS change, "
        f"coalesce(a.__key, b.__key) AS key, "
        + ", ".join(
            [f"a.{qident(c)} AS {qident('a.' + c)}, b.{qident(c)} AS {qident('b.' + c)}" for c in pair.common]
            or ["1"]
        )
        + f" FROM {pair.view_a} a FULL JOIN {pair.view_b} b ON a.__key = b.__key"
    )
