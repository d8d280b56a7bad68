"""``inspect verify``, the checks of the data, with DuckDB over the tables found readable.

No NULL in a NOT NULL column, primary keys and natural keys unique (two rows sharing a
natural key would match the same target row), every reference resolvable (to a row in
the bundle, or to a prerequisite or other outside row the manifest declares by natural
key, never both), usage rows inside the declared window, the root row in the bundle and of
the bundle's kind, every owned and usage row belonging to the root
(:mod:`bundler.inspect.verify_root`). Each table is
first screened with one query counting every kind of problem; only the checks that found
something run again in detail, to name the rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from bundler.inspect.query import duck_type, literal, qident
from bundler.inspect.verify_manifest import ReadableTable, Verification
from bundler.inspect.verify_report import SHOWN, first_line
from bundler.inspect.verify_root import Ownership
from bundler.manifest import MANIFEST
from bundler.progress import Progress

if TYPE_CHECKING:
    import duckdb


__all__ = ["check_data"]

#: (from, to, mode) of the declared usage window.
Window = tuple[datetime | None, datetime | None, str]
#: prerequisite table → (the temp table of its declared values, the column they are of)
Declared = dict[str, tuple[str, str]]
#: the screen's label of rows that do not belong to the root (no column is named so)
_OWNER = "(owner)"


def check_data(v: Verification, progress: Progress) -> None:
    """Step 7: every data check, over a DuckDB view of each readable table."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        _DataChecks(v, progress, con).run()
    finally:
        con.close()


class _DataChecks:
    def __init__(self, v: Verification, progress: Progress, con: duckdb.DuckDBPyConnection) -> None:
        self.v = v
        self.progress = progress
        self.con = con
        self.prereq: Declared = {}
        self.window: Window | None = None
        self.late_after: dict[str, Any] = {}
        self.ownership = Ownership(v, con, self.prereq)

    def run(self) -> None:
        for t in self.v.readable.values():
            self.con.execute(
                f"CREATE VIEW {qident(t.name)} AS SELECT * FROM {self.v.bundle.duckdb_source(t.name, self.con)}"
            )
        self._unchecked_columns()
        self.prereq.update(self._prerequisite_tables())
        self.window = self._window()
        self._ownership()
        for t in sorted(self.v.readable.values(), key=lambda t: t.name):
            if t.spec is not None:
                self.progress.start(f"verify {t.name}", t.rows)
                self._table(t)
                self.progress.finish(f"verify {t.name}")

    def _unchecked_columns(self) -> None:
        """Columns encrypted column by column, read without their key: their checks cannot run
        (they show as ``(encrypted)``), which the report says rather than passing them silently."""
        bundle = self.v.bundle
        if bundle.column_keys is not None:
            return
        for name in sorted(self.v.readable):
            hidden = bundle.encrypted_columns(name)
            if hidden:
                self.v.report.warnings.append(
                    f"table {name}: encrypted columns {', '.join(hidden)} not checked without their key"
                    " (--identity FILE or BUNDLER_IDENTITY checks them too)"
                )

    def _table(self, t: ReadableTable) -> None:
        """The checks of one table the screen found worth running (all of them when it failed)."""
        assert t.spec is not None
        suspect = self._screen(t)
        if suspect is None or "rows" in suspect:
            self._guarded(t, "the NOT NULL and window checks", self._table_scan, t)
        if suspect is None or "pk" in suspect:
            self._guarded(t, "the primary key check", self._primary_key, t)
        if suspect is None or "nk" in suspect:
            self._guarded(t, "the natural key check", self._natural_key, t)
        for ref in t.spec.references:
            if suspect is None or ref.column in suspect:
                self._guarded(t, f"the check of {t.name}.{ref.column}", self._reference, t, ref)
        if suspect is None or _OWNER in suspect:
            self._guarded(t, "the check that its rows belong to the root", self.ownership.report, t)

    def _ownership(self) -> None:
        """The root row, and which rows of the owned and usage tables belong to it."""
        import duckdb

        try:
            self.ownership.prepare()
        except duckdb.Error as exc:
            self.v.problem(MANIFEST, f"could not check that the rows belong to the root ({first_line(exc)})")

    def _guarded(self, t: ReadableTable, what: str, fn: Any, *args: Any) -> None:
        import duckdb

        try:
            fn(*args)
        except duckdb.Error as exc:
            self.v.problem(t.file, f"could not be read for {what} ({first_line(exc)})", table=t.name)

    # -- what the manifest declares ---------------------------------------------------------------

    def _prerequisite_tables(self) -> Declared:
        """A temp table of each prerequisite table's declared values, typed: table → (temp table, column)."""
        out: Declared = {}
        prerequisites = self.v.doc.get("prerequisites")
        assert self.v.graph is not None
        for i, (table, entry) in enumerate(
            sorted(prerequisites.items()) if isinstance(prerequisites, dict) else []
        ):
            spec = self.v.graph.tables.get(table)
            if spec is None or not isinstance(entry, dict) or entry.get("column") not in spec.column_map:
                continue
            column = entry["column"]
            name = f"__prerequisite_{i}"
            self._declared_values(name, entry.get("rows"), duck_type(spec.column_map[column].type))
            bad = self.con.execute(
                f"SELECT raw FROM {name} WHERE v IS NULL ORDER BY raw LIMIT {SHOWN}"
            ).fetchall()
            if bad:
                shown = ", ".join(repr(r[0]) for r in bad)
                self.v.problem(
                    MANIFEST,
                    f"prerequisites of {table} list value(s) {shown} that are not "
                    f"{spec.column_map[column].type} like {table}.{column}",
                    table=table,
                )
            self._carried_and_declared(table, name, column)
            out[table] = (name, column)
        return out

    def _carried_and_declared(self, table: str, declared: str, column: str) -> None:
        """No row is both carried and declared outside: a load would not know which one a reference means."""
        t = self.v.readable.get(table)
        if t is None or t.spec is None or not t.spec.is_copied or column not in t.good_columns:
            return  # not carried, or carried though it may not be (reported already)
        both = self.con.execute(
            f"SELECT raw FROM {declared} WHERE v IN (SELECT {qident(column)} FROM {qident(table)}) "
            f"ORDER BY raw LIMIT {SHOWN}"
        ).fetchall()
        if both:
            shown = ", ".join(repr(_as_shown(r[0])) for r in both)
            self.v.problem(
                MANIFEST,
                f"prerequisites of {table} declare {column} value(s) {shown} as outside rows, but the bundle "
                f"carries them in {t.file}: a row is either carried or declared outside",
                table=table,
            )

    def _declared_values(self, name: str, listed: Any, ctype: str) -> None:
        """Temp table ``name`` (``raw``, and ``v`` of type ``ctype``, NULL where it does not cast) of declared rows."""
        import pyarrow as pa

        rows: list[Any] = listed if isinstance(listed, list) else []
        values = [str(r.get("value")) for r in rows if isinstance(r, dict) and r.get("value") is not None]
        self.con.register("__prerequisite_src", pa.table({"raw": pa.array(values, pa.string())}))
        try:
            self.con.execute(
                f"CREATE TEMP TABLE {name} AS SELECT raw, TRY_CAST(raw AS {ctype}) AS v FROM __prerequisite_src"
            )
        finally:
            self.con.unregister("__prerequisite_src")

    def _window(self) -> Window | None:
        """(from, to, mode) of the declared usage window; None when it cannot be read."""
        usage = self.v.doc.get("usage")
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
                self.v.problem(MANIFEST, f"usage.{key} {text!r} is not a timestamp (YYYY-MM-DD HH:MM:SS)")
                return None
        start, end = bounds
        if start is not None and end is not None and start >= end:
            self.v.problem(MANIFEST, f"the usage window is empty: from {start} is not before to {end}")
        start, end = _span(usage.get("windows"), start, end)
        late = usage.get("late_after")
        self.late_after = late if isinstance(late, dict) else {}
        return start, end, str(usage.get("mode"))

    # -- one table ----------------------------------------------------------------------------------

    def _screen(self, t: ReadableTable) -> set[str] | None:
        """One query counting every kind of problem of ``t``; the checks worth running in detail.

        ``"rows"`` (NULLs in NOT NULL columns, rows outside the window), ``"pk"``, and the
        reference columns whose values do not all resolve. None: the screen itself failed,
        so every check runs (and reports what it can). A sound table costs this one query
        instead of one per check (a small bundle verifies in a third of the time).
        """
        import duckdb

        checks, params = self._screen_checks(t)
        if not checks:
            return set()
        sql = f"SELECT {', '.join(expr for _, expr in checks)} FROM {qident(t.name)}"
        try:
            counts = self.con.execute(sql, params).fetchone()
        except duckdb.Error:
            return None
        assert counts is not None
        return {label for (label, _), n in zip(checks, counts, strict=True) if n}

    def _screen_checks(self, t: ReadableTable) -> tuple[list[tuple[str, str]], list[Any]]:
        """(label, count expression) of each check of ``t``, and the parameters of the expressions."""
        assert t.spec is not None
        checks: list[tuple[str, str]] = []
        params: list[Any] = []
        nulls = [f"{qident(c)} IS NULL" for c in _not_null_columns(t)]
        if nulls:
            checks.append(("rows", f"count(*) FILTER (WHERE {' OR '.join(nulls)})"))
        outside = _outside_window(t, self.window, self.late_after.get(t.name))
        if outside is not None:
            checks.append(("rows", f"count(*) FILTER (WHERE {outside[0]})"))
            params = outside[1]
        pk = list(t.spec.pk)
        if pk and all(c in t.good_columns for c in pk):
            key = qident(pk[0]) if len(pk) == 1 else f"({', '.join(qident(c) for c in pk)})"
            checks.append(("pk", f"count(*) - count(DISTINCT {key})"))
        nk = _natural_key(t)
        if nk and all(c in t.good_columns for c in pk):  # rows of other primary keys sharing one
            both = ", ".join(qident(c) for c in dict.fromkeys([*pk, *nk]))
            checks.append(
                (
                    "nk",
                    f"count(DISTINCT row({both})) - count(DISTINCT row({', '.join(qident(c) for c in nk)}))",
                )
            )
        for ref in t.spec.references:
            found = self._resolvable(t, ref)
            if found is not None:
                col = qident(ref.column)
                checks.append(
                    (
                        ref.column,
                        f"count(*) FILTER (WHERE {col} IS NOT NULL AND {col} NOT IN "
                        f"(SELECT v FROM ({found[0]}) WHERE v IS NOT NULL))",
                    )
                )
        belongs = self.ownership.condition(t)
        if belongs is not None:
            checks.append((_OWNER, f"count(*) FILTER (WHERE NOT {belongs})"))
        return checks, params

    def _table_scan(self, t: ReadableTable) -> None:
        """One pass over a table: NULLs in NOT NULL columns, and rows outside the usage window."""
        not_null = _not_null_columns(t)
        parts = [f"count(*) FILTER (WHERE {qident(c)} IS NULL)" for c in not_null]
        outside = _outside_window(t, self.window, self.late_after.get(t.name))
        if outside is not None:
            parts.append(f"count(*) FILTER (WHERE {outside[0]})")
        if not parts:
            return
        counts = self.con.execute(
            f"SELECT {', '.join(parts)} FROM {qident(t.name)}", outside[1] if outside else []
        ).fetchone()
        assert counts is not None
        for col, n in zip(not_null, counts, strict=False):
            if n:
                first = self._first_rows(t, f"{qident(col)} IS NULL", [])
                self._row_problem(t, f"{n} row(s) have NULL in NOT NULL column {col}{first}", first)
        if outside is not None and counts[-1]:
            assert self.window is not None
            window_sql, params, time_col = outside
            start, end, mode = self.window
            declared = "none: no usage at all" if mode == "none" else f"[{start or '…'}, {end or '…'})"
            first = self._first_rows(t, window_sql, params, show=time_col)
            self._row_problem(
                t, f"{counts[-1]} row(s) have {time_col} outside the usage window {declared}{first}", first
            )

    def _row_problem(self, t: ReadableTable, message: str, first: str) -> None:
        """A problem of rows of ``t``, the first of them named by :meth:`_first_rows`'s ``first``."""
        self.v.problem(t.file, message, table=t.name, row=first.removeprefix(", first ") or None)

    def _first_rows(self, t: ReadableTable, where: str, params: list[Any], show: str | None = None) -> str:
        """``, first i_xdr=1 (bill_time=…), i_xdr=2 …`` naming the first rows matching ``where``."""
        assert t.spec is not None
        pk = [c for c in t.spec.pk if c in t.good_columns]
        if not pk:
            return ""
        cols = [*pk, show] if show else pk
        order = ", ".join(qident(c) for c in pk)
        rows = self.con.execute(
            f"SELECT {', '.join(qident(c) for c in cols)} FROM {qident(t.name)} WHERE {where} ORDER BY {order} "
            f"LIMIT {SHOWN}",
            params,
        ).fetchall()
        shown = [
            ", ".join(f"{c}={v}" for c, v in zip(pk, row, strict=False))
            + (f" ({show}={row[-1]})" if show else "")
            for row in rows
        ]
        return ", first " + "; ".join(shown) if shown else ""

    def _primary_key(self, t: ReadableTable) -> None:
        assert t.spec is not None
        pk = list(t.spec.pk)
        if not pk or any(c not in t.good_columns for c in pk):
            return
        cols = ", ".join(qident(c) for c in pk)
        dups = self.con.execute(
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
        self.v.problem(
            t.file,
            f"primary key ({', '.join(pk)}) is not unique: {keys} key(s) repeat: {shown}",
            table=t.name,
            row=first,
        )

    def _natural_key(self, t: ReadableTable) -> None:
        """Rows of different primary keys that share a natural key: each would match the same
        target rows (a repeated row is the primary key check's)."""
        assert t.spec is not None
        nk, pk = _natural_key(t), [c for c in t.spec.pk if c in t.good_columns]
        if not nk or not pk:
            return
        cols = ", ".join(qident(c) for c in nk)
        ids = qident(pk[0]) if len(pk) == 1 else f"row({', '.join(qident(c) for c in pk)})"
        dups = self.con.execute(
            f"SELECT {cols}, list(DISTINCT {ids} ORDER BY {ids}), count(*) OVER () FROM {qident(t.name)} "
            f"GROUP BY ALL HAVING count(DISTINCT {ids}) > 1 ORDER BY {cols} LIMIT {SHOWN}"
        ).fetchall()
        if not dups:
            return
        shown = "; ".join(
            ", ".join(f"{c}={v!r}" for c, v in zip(nk, row[: len(nk)], strict=True))
            + f" ({', '.join(pk)} {', '.join(str(x) for x in row[len(nk)])})"
            for row in dups
        )
        first = ", ".join(f"{c}={v}" for c, v in zip(pk, [dups[0][len(nk)][0]], strict=False))
        self.v.problem(
            t.file,
            f"natural key ({', '.join(nk)}) is shared by several rows, {dups[0][-1]} key(s): {shown}",
            table=t.name,
            row=first,
        )

    # -- references -----------------------------------------------------------------------------------

    def _resolvable(self, t: ReadableTable, ref: Any) -> tuple[str, list[str]] | None:
        """SQL of the values ``ref`` may take (column ``v``) and where they are; None: nothing to check."""
        if ref.column not in t.good_columns:
            return None
        targets: list[str] = []
        where: list[str] = []
        target = self.v.readable.get(ref.table)
        if ref.table in self.v.listed:
            if target is None or ref.target_column not in target.good_columns:
                return None  # the referenced table is broken: already reported, nothing to resolve against
            targets.append(f"SELECT {qident(ref.target_column)} AS v FROM {qident(ref.table)}")
            where.append("in the bundle")
        declared = self.prereq.get(ref.table)
        if declared is not None and declared[1] == ref.target_column:
            targets.append(f"SELECT v FROM {declared[0]} WHERE v IS NOT NULL")
            where.append("among its prerequisites")
        if not targets:
            return f"SELECT {qident(ref.column)} AS v FROM {qident(t.name)} WHERE false", where
        return " UNION ALL ".join(targets), where

    def _reference(self, t: ReadableTable, ref: Any) -> None:
        """Every non-NULL value of ``t.column`` is a row of the referenced table in the bundle or declared outside."""
        assert t.spec is not None and self.v.graph is not None
        found = self._resolvable(t, ref)
        if found is None:
            return
        resolvable, where = found
        col = qident(ref.column)
        pk = [c for c in t.spec.pk if c in t.good_columns]
        row_text = (
            " || ', ' || ".join(f"{literal(c + '=')} || CAST({qident(c)} AS VARCHAR)" for c in pk)
            if pk
            else "''"
        )
        first_order = qident(pk[0]) if pk else col
        rows = self.con.execute(
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
        self.v.problem(
            t.file,
            f"{total} row(s) reference {ref.table}.{ref.target_column} values that do not resolve "
            f"({self._found_in(ref, where)}): {t.name}.{ref.column} = {values}{more}; first row {rows[0][2]}",
            table=t.name,
            row=rows[0][2],
        )

    def _found_in(self, ref: Any, where: list[str]) -> str:
        """Where the values of ``ref`` were looked for, as the problem says it."""
        assert self.v.graph is not None
        if where:
            return " or ".join(where)
        declared = self.prereq.get(ref.table)
        if declared is not None:
            return (
                f"{ref.table} is not in the bundle, and its prerequisites are declared by "
                f"{declared[1]}, not by {ref.target_column}"
            )
        scope = self.v.graph.tables[ref.table].scope if ref.table in self.v.graph.tables else "unknown"
        return f"{ref.table} ({scope}) is neither in the bundle nor among its prerequisites"


def _natural_key(t: ReadableTable) -> list[str]:
    """The natural key's columns, when the table has them all readable (and it is not the pk)."""
    assert t.spec is not None
    nk = list(t.spec.natural_key)
    if not nk or nk == list(t.spec.pk) or any(c not in t.good_columns for c in nk):
        return []
    return nk


def _not_null_columns(t: ReadableTable) -> list[str]:
    """The readable columns of ``t`` that its graph declares NOT NULL."""
    assert t.spec is not None
    return [c.name for c in t.spec.columns if not c.nullable and c.name in t.good_columns]


def _span(
    windows: Any, start: datetime | None, end: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The window bounds widened to every customer's own window (a reseller bundle lists each)."""
    if not isinstance(windows, list):
        return start, end
    for w in windows:
        try:
            low, high = datetime.fromisoformat(str(w["from"])), datetime.fromisoformat(str(w["to"]))
        except (KeyError, TypeError, ValueError):
            continue  # the manifest schema reports it
        start = low if start is None or low < start else start
        end = high if end is None or high > end else end
    return start, end


def _outside_window(
    t: ReadableTable, window: Window | None, late_after: Any = None
) -> tuple[str, list[Any], str] | None:
    """(SQL condition, its parameters, the time column) of ``t``'s rows outside the usage window.

    None when ``t`` is no usage table with a readable time column, or the window bounds nothing.
    Rows with a key above ``late_after`` (late usage: arrived after the root was exported)
    may have any time.
    """
    assert t.spec is not None
    spec = t.spec
    if window is None or not spec.is_usage or spec.time_column not in t.good_columns:
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
    if not conds:
        return None
    condition = " OR ".join(conds)
    pk = spec.pk[0] if len(spec.pk) == 1 else None
    if late_after is not None and pk in t.good_columns and isinstance(late_after, int | str):
        condition = f"({condition}) AND NOT ({qident(pk)} > ?)"
        params.append(late_after)
    return condition, params, time_col


def _as_shown(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text
