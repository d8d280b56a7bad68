"""The usage window over a table's time column, whatever type the database keeps it in.

A time column the database keeps as a timestamp is compared with the window's bounds as
they are (naive UTC). One kept as ISO 8601 text (``T`` or a space, ``Z``, an offset, as
:func:`~bundler.export.reader.cast_text` reads it) is compared as the instant it names, a
value without a zone taken as UTC — never as text, where ``2026-11-01T03:00`` sorts after
``2026-11-01 04:00`` and an offset is ignored:

- PostgreSQL: cast to ``timestamptz`` (``Z`` appended to a value without a zone), against
  UTC bounds (``text >= timestamp`` is an error there);
- SQLite: a value with a zone (``Z``, ``±HH:MM``) turned to UTC by ``strftime`` (to the
  millisecond, SQLite's own precision), one without has its ``T`` made a space; compared as
  text with bounds written the same way;
- MariaDB: cast to ``DATETIME(6)``, a value with an offset (``±HH:MM``) moved to UTC by
  ``CONVERT_TZ``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from bundler.graph import TableSpec
from bundler.sql import table_clause

#: (database, table, column) -> whether the database keeps the column as text
_TEXT: dict[tuple[str, str, str], bool] = {}


def is_text(connection: sa.Connection, table: str, column: str) -> bool:
    """Whether the database keeps ``table.column`` as text (looked at once per database)."""
    key = (connection.engine.url.render_as_string(hide_password=True), table, column)
    if key not in _TEXT:
        types = {c["name"]: c["type"] for c in sa.inspect(connection).get_columns(table)}
        _TEXT[key] = isinstance(types.get(column), sa.String)
    return _TEXT[key]


def window_bounds(
    connection: sa.Connection, spec: TableSpec, start: datetime | None, end: datetime | None
) -> list[sa.ColumnElement[bool]]:
    """``start <= time < end`` over ``spec``'s time column (a None bound: none)."""
    assert spec.time_column is not None
    column = table_clause(spec).c[spec.time_column]
    time: sa.ColumnElement[Any] = column
    literal = _naive
    if is_text(connection, spec.name, spec.time_column):
        time, literal = _instant(column, connection.dialect.name)
    out: list[sa.ColumnElement[bool]] = []
    if start is not None:
        out.append(time >= literal(start))
    if end is not None:
        out.append(time < literal(end))
    return out


def _naive(value: datetime) -> Any:
    return value


def _instant(column: sa.ColumnClause[Any], dialect: str) -> tuple[sa.ColumnElement[Any], Any]:
    """The instant an ISO text column names, and how a naive UTC bound compares with it."""
    from bundler.export.reader import _ZONED

    if dialect == "postgresql":
        text = sa.case((column.regexp_match(_ZONED), column), else_=column.concat("Z"))
        return sa.cast(text, sa.DateTime(timezone=True)), lambda v: sa.literal(
            v.replace(tzinfo=UTC), sa.DateTime(timezone=True)
        )
    if dialect == "sqlite":
        zoned = sa.or_(column.like("%Z"), column.like("%z"), column.op("GLOB")("*[+-][0-9][0-9]:[0-9][0-9]"))
        text = sa.case(
            (zoned, sa.func.strftime("%Y-%m-%d %H:%M:%f", column)),
            else_=sa.func.replace(column, "T", " "),
        )
        return text, lambda v: sa.literal(v.isoformat(sep=" "), sa.String())
    if dialect in ("mysql", "mariadb"):
        length = sa.func.char_length(column)

        def as_datetime(text: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
            return sa.cast(sa.func.replace(text, "T", " "), mysql.DATETIME(fsp=6))

        instant = sa.case(
            (column.like("%Z"), as_datetime(sa.func.left(column, length - 1))),
            (
                column.regexp_match("[+-][0-9]{2}:[0-9]{2}$"),
                sa.func.convert_tz(
                    as_datetime(sa.func.left(column, length - 6)), sa.func.right(column, 6), "+00:00"
                ),
            ),
            else_=as_datetime(column),
        )
        return instant, _naive
    return column, _naive
