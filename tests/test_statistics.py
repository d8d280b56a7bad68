"""Issue 20: planner statistics after bulk writes.

A load that wrote many rows into a table refreshes that table's statistics after its
commit; a clean first refreshes the statistics of every table whose statistics are missing
or stale. Without them the planner chooses plans that never end (a clean of a 20k-xDR
customer on SQLite: 287 s instead of 4 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

import bundler.db as db
from bundler.bulk import insert_arrow
from bundler.clean import plan_clean
from bundler.db import analyze, connect, refresh_stale_statistics, stale_tables, written_enough
from bundler.export import ExportOptions, export_root
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW

OPTIONS = ExportOptions(now=NOW, xdrs="all")


def _analyzed(engine: sa.Engine, table: str) -> bool:
    """Whether the database holds planner statistics of ``table`` gathered by an ANALYZE."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            has = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").first()
            return bool(has) and bool(
                conn.exec_driver_sql("SELECT 1 FROM sqlite_stat1 WHERE tbl = ?", (table,)).first()
            )
        if engine.dialect.name == "postgresql":
            return bool(
                conn.execute(
                    sa.text("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = :t"),
                    {"t": table},
                ).scalar_one()
            )
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM mysql.innodb_table_stats "
                    "WHERE database_name = DATABASE() AND table_name = :t"
                ),
                {"t": table},
            ).scalar_one()
        )


def _world(new_db: Any, dialect: str, tmp_path: Path) -> tuple[sa.Engine, Path]:
    source = fixture.build(new_db("sqlite"))
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "out", options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS)
    source.dispose()
    target = fixture.build_target(new_db(dialect), "r2")
    load_bundle(target, vendor.path)
    return target, acme.path


def _fill(engine: sa.Engine, name: str, rows: int) -> sa.Table:
    """A new table ``name`` with ``rows`` rows written in bulk (PostgreSQL: its statistics
    counters flushed at the commit, not up to a second later)."""
    md = sa.MetaData()
    table = sa.Table(
        name,
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("k", sa.Integer, index=True),
    )
    md.create_all(engine)
    with engine.begin() as conn:
        insert_arrow(conn, table, pa.table({"id": range(1, rows + 1), "k": [i % 7 for i in range(rows)]}))
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
    return table


def test_a_load_of_many_rows_refreshes_their_tables_statistics(
    dialect: str, new_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, acme = _world(new_db, dialect, tmp_path)
    assert dialect == "mysql" or not _analyzed(target, "xdrs")  # InnoDB has statistics from the start
    monkeypatch.setattr(db, "ANALYZE_MIN_ROWS", 5)  # the fixture's customer brings 5 xDRs
    result = load_bundle(target, acme)
    assert "xdrs" in result.statistics_refreshed and "bundler_ledger" in result.statistics_refreshed
    assert "accounts" not in result.statistics_refreshed  # 2 rows: fewer than the threshold
    assert _analyzed(target, "xdrs") and _analyzed(target, "bundler_ledger")
    with target.connect() as conn:
        assert stale_tables(conn, ["xdrs", "bundler_ledger"]) == []


def test_a_load_below_the_threshold_leaves_statistics_alone(
    dialect: str, new_db: Any, tmp_path: Path
) -> None:
    target, acme = _world(new_db, dialect, tmp_path)
    result = load_bundle(target, acme)
    assert result.outcome == "loaded" and result.statistics_refreshed == []
    if dialect != "mysql":  # InnoDB keeps statistics of its own
        assert not _analyzed(target, "xdrs")


def test_written_enough_is_many_rows_and_a_tenth_of_the_table(dialect: str, db_url: str) -> None:
    engine = connect(db_url)
    _fill(engine, "probe", 1_000)
    with engine.connect() as conn:
        assert written_enough(conn, {"probe": 999}) == []  # under ANALYZE_MIN_ROWS
    analyze(engine, ["probe"])
    with engine.connect() as conn:
        assert written_enough(conn, {"probe": 10_000}) == ["probe"]
        known = db.estimated_rows(conn, ["probe"])["probe"]
        assert known is not None and known > 0
    engine.dispose()


def test_stale_statistics_are_found_and_refreshed(dialect: str, db_url: str) -> None:
    engine = connect(db_url)
    _fill(engine, "probe", 1_000)
    _fill(engine, "empty", 0)
    with engine.connect() as conn:
        stale = stale_tables(conn, ["probe", "empty"])
    if dialect == "mysql":  # InnoDB recalculates its statistics by itself
        assert stale == []
        assert analyze(engine, ["probe"]) >= 0 and _analyzed(engine, "probe")
        return
    assert stale == ["probe"]
    assert refresh_stale_statistics(engine) == ["probe"]
    assert _analyzed(engine, "probe")
    with engine.connect() as conn:
        assert stale_tables(conn, ["probe", "empty"]) == []
    assert refresh_stale_statistics(engine) == []
    engine.dispose()


def test_a_clean_refreshes_stale_statistics_before_planning(
    dialect: str, new_db: Any, tmp_path: Path
) -> None:
    if dialect == "mysql":
        pytest.skip("InnoDB keeps statistics of its own")
    target, acme = _world(new_db, dialect, tmp_path)
    loaded = load_bundle(target, acme)
    if dialect == "postgresql":  # the loader's statistics counters reach the server at once
        with target.begin() as conn:
            conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
    target.dispose()  # the load's session ends: its counters are flushed
    target = connect(target.url)
    assert not _analyzed(target, "bundler_ledger")
    plan_clean(target, entities=[("customer", str(loaded.root_target_pk))], side="target")
    assert _analyzed(target, "bundler_ledger")
    target.dispose()
