"""Timestamps a table keeps as ISO 8601 text (``T``, ``Z``, an offset) are read as exact
instants on every database, by the parallel reads (ADBC) and by the main connection's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from bundler.db import connect
from bundler.export.snapshot import open_snapshot
from bundler.graph import ColumnSpec, Scope, TableSpec

ROWS = [
    (1, "2008-03-10T00:00:00Z", "2008-03-10T02:00:00+02:00"),
    (2, "2019-07-01 09:30:15.25", "2019-07-01T04:30:15.250000-05:00"),
    (3, "2026-11-03T23:30:00.123456+05:30", "2026-11-03 18:00:00.123456"),
    (4, None, None),
]
SPEC = TableSpec(
    name="stamps",
    pk=("id",),
    pk_kind="natural",
    scope=Scope.OWNED,
    natural_key=(),
    columns=(
        ColumnSpec("id", "int64", False),
        ColumnSpec("at", "timestamp[us]", True),
        ColumnSpec("at_utc", "timestamp[us, tz=UTC]", True),
    ),
    references=(),
)


@pytest.mark.parametrize("streams", [2, 0], ids=["adbc", "main"])
def test_text_timestamps_are_read_as_instants(new_db: Any, dialect: str, streams: int) -> None:
    engine = connect(new_db(dialect))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE stamps (id INTEGER PRIMARY KEY, at TEXT, at_utc TEXT)")
        conn.execute(
            sa.text("INSERT INTO stamps VALUES (:i, :a, :b)"),
            [{"i": i, "a": a, "b": b} for i, a, b in ROWS],
        )
    with open_snapshot(engine, streams=streams, adbc_rows=0) as snapshot:  # ADBC even for a few rows
        rows = [r for batch in snapshot.read(SPEC, sa.true()) for r in batch.to_pylist()]
    engine.dispose()
    same = datetime(2019, 7, 1, 9, 30, 15, 250000)
    assert rows == [
        {"id": 1, "at": datetime(2008, 3, 10), "at_utc": datetime(2008, 3, 10, tzinfo=UTC)},
        {"id": 2, "at": same, "at_utc": same.replace(tzinfo=UTC)},
        {
            "id": 3,
            "at": datetime(2026, 11, 3, 18, 0, 0, 123456),
            "at_utc": datetime(2026, 11, 3, 18, 0, 0, 123456, tzinfo=UTC),
        },
        {"id": 4, "at": None, "at_utc": None},
    ]
