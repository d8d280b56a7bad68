"""Timestamps a table keeps as ISO 8601 text (``T``, ``Z``, an offset) are read as exact
instants on every database, by the parallel reads (ADBC) and by the main connection's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.cli import main
from bundler.db import connect
from bundler.export import ExportOptions, export_root
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


# loans of member C-17 (member 10) around the default window, November 2026 in UTC, as ISO text
BOUNDARY = {
    110: ("2026-10-31T23:30:00Z", False),
    111: ("2026-11-01T00:30:00+01:00", False),  # 23:30 UTC on Oct 31: text says in
    112: ("2026-10-31T20:30:00-04:00", True),  # 00:30 UTC on Nov 1: text says out
    113: ("2026-11-01T00:00:00", True),  # no zone: UTC, the first instant of the window
    114: ("2026-10-31 23:59:59.999999", False),
    115: ("2026-11-30T23:30:00-02:00", False),  # 01:30 UTC on Dec 1
    116: ("2026-11-30T23:59:59.5Z", True),
    117: ("2026-12-01T00:00:00Z", False),  # the end is outside
}


def test_usage_window_over_a_text_time_column(new_db: Any, dialect: str, tmp_path: Path) -> None:
    """A usage table whose time column is ISO text on every database: the window compares the
    instants the text names (never the text, never a text with a timestamp, which PostgreSQL
    refuses), in an export and in a migration."""
    from tests.foreign import library
    from tests.foreign.test_library import NOW, _graph, _rows

    source = library.build(new_db(dialect), dialect, text_times=True)
    with source.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO loans (loan_id, member_id, branch, loaned_at) VALUES (:i, 10, 'WAW', :at)"),
            [{"i": i, "at": at} for i, (at, _) in BOUNDARY.items()],
        )
    spec = _graph(source, tmp_path / "library.json")
    inside = {100, 101} | {i for i, (_, yes) in BOUNDARY.items() if yes}
    exported = export_root(
        source, "member", "C-17", tmp_path / "a", spec=spec, options=ExportOptions(now=NOW, mark=False)
    )
    assert {r["loan_id"] for r in _rows(exported.path, "loans")} == inside

    target_url = new_db(dialect)
    library.create_empty(target_url, dialect)
    common = ["--source", str(source.url), "--target", target_url, "--spec", str(spec)]
    # migrate runs at the clock's now: a window from a fixed date, midnight UTC (no zone column)
    since = {i for i, (at, _) in BOUNDARY.items() if i not in (110, 111, 114)} | {100, 101}
    result = CliRunner().invoke(
        main,
        [
            "migrate",
            *common,
            "--root",
            "member=C-17",
            "--bundles",
            str(tmp_path / "b"),
            "--xdrs",
            "since=2026-11-01",
        ],
    )
    assert result.exit_code == 0, result.output
    [bundle] = (tmp_path / "b").glob("member-*.bundle")
    assert {r["loan_id"] for r in _rows(bundle, "loans")} == since
    with sa.create_engine(target_url).connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM loans").scalar() == len(since)
