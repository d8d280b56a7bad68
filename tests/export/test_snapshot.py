"""The export's snapshot reads: parallel key ranges, one snapshot, exact values, fallbacks."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from bundler.billing.schema import build_metadata
from bundler.export.reader import read_arrow
from bundler.export.snapshot import open_snapshot
from bundler.graph import graph_for_release
from bundler.sql import table_clause
from tests.export import fixture

SPEC = graph_for_release("r1").table("xdrs")
EXTRA = 300  # xDRs added to the fixture's nine, spread over the key space with gaps


def _extra_xdrs() -> list[dict[str, Any]]:
    rows = []
    start = datetime(2026, 11, 1)
    for n in range(EXTRA):
        i = 100 + n * 7 + (n % 5) * 3  # uneven gaps between keys
        when = start + timedelta(minutes=17 * n, microseconds=n)
        row = fixture._xdr(i, 1 + n % 2, when, None if n % 4 == 0 else 1 + n % 3)
        row.update(
            charged_amount=Decimal(n) / 1000 + Decimal("0.00001"),
            account_balance=Decimal(f"-{n}.5"),
            cli=None if n % 3 == 0 else f"4420{n:07d}",
            description="€ sent ☎" if n % 10 == 0 else None,
        )
        rows.append(row)
    return rows


@pytest.fixture
def source(new_db: Any, dialect: str) -> sa.Engine:
    engine = fixture.build(new_db(dialect))
    with engine.begin() as conn:
        conn.execute(build_metadata("r1").tables["xdrs"].insert(), _extra_xdrs())
    return engine


def _where() -> sa.ColumnElement[bool]:
    return table_clause(SPEC).c.i_account.in_([1, 2, 3])


def _stmt() -> sa.Select[Any]:
    t = table_clause(SPEC)
    return sa.select(*(t.c[c] for c in SPEC.column_names)).where(_where()).order_by(t.c[SPEC.pk[0]])


def _expected(engine: sa.Engine) -> pa.Table:
    with engine.connect() as conn, conn.begin():
        return pa.Table.from_batches(list(read_arrow(conn, SPEC, _stmt())), schema=SPEC.arrow_schema())


def test_ranges_come_back_whole_in_key_order_with_exact_values(source: sa.Engine, dialect: str) -> None:
    expected = _expected(source)
    assert expected.num_rows == EXTRA + 7  # the fixture's seven xDRs of accounts 1 and 3, and the extra ones
    with open_snapshot(source, batch_rows=16) as snapshot:
        batches = list(snapshot.read(SPEC, _where(), split=True))
        # ADBC on PostgreSQL only: MariaDB has no driver, and SQLite's would bring a second
        # SQLite library into the process (see bundler.export.snapshot)
        assert snapshot.parallel is (dialect == "postgresql")
        assert snapshot.fallbacks == 0
        # several ranges go through ADBC; one small query through the main connection
        ranges = snapshot.adbc_reads
        assert ranges > 10 if dialect == "postgresql" else ranges == 0
        whole = pa.Table.from_batches(list(snapshot.read(SPEC, _where())), schema=SPEC.arrow_schema())
        assert snapshot.adbc_reads == ranges
    assert whole.equals(expected)
    got = pa.Table.from_batches(batches, schema=SPEC.arrow_schema())
    assert len(batches) > 10  # cut into ranges (16 rows each, give or take the gaps)
    assert got.equals(expected)
    pks = got.column("i_xdr").to_pylist()
    assert pks == sorted(pks)


def test_reads_see_the_snapshot_not_later_commits(source: sa.Engine) -> None:
    t = build_metadata("r1").tables["xdrs"]
    expected = _expected(source)
    late = fixture._xdr(99_999, 1, datetime(2026, 11, 20), 1)
    with open_snapshot(source, batch_rows=16) as snapshot:
        with source.begin() as other:  # another session commits after the snapshot was taken
            other.execute(t.insert(), [late])
            other.execute(sa.update(t).where(t.c.i_xdr == 100).values(cli="changed"))
        got = pa.Table.from_batches(
            list(snapshot.read(SPEC, _where(), split=True)), schema=SPEC.arrow_schema()
        )
        count = snapshot.connection.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
    assert got.equals(expected)
    assert count == EXTRA + len(fixture.XDRS)
    with source.connect() as conn:  # and the commit did happen
        assert conn.execute(sa.select(t.c.cli).where(t.c.i_xdr == 100)).scalar_one() == "changed"


def test_sqlite_values_of_mixed_storage_classes_are_read_exactly(new_db: Any) -> None:
    """Columns mixing SQLite storage classes, or NULL for a whole first batch, read exactly."""
    engine = fixture.build(new_db("sqlite"))
    with engine.begin() as conn:
        conn.execute(build_metadata("r1").tables["xdrs"].insert(), _extra_xdrs())
        # an integer in a text column, a double in an exact amount, text after a NULL batch
        conn.exec_driver_sql("UPDATE xdrs SET cld = 4930123 WHERE i_xdr = 110")
        conn.exec_driver_sql("UPDATE xdrs SET charged_amount = 1.25 WHERE i_xdr = 120")
    expected = _expected(engine)
    assert expected.column("cld").to_pylist()[expected.column("i_xdr").to_pylist().index(110)] == "4930123"
    amount = expected.column("charged_amount").to_pylist()[expected.column("i_xdr").to_pylist().index(120)]
    assert amount == Decimal("1.25000")
    with open_snapshot(engine, batch_rows=4) as snapshot:
        ranges = pa.Table.from_batches(
            list(snapshot.read(SPEC, _where(), split=True)), schema=SPEC.arrow_schema()
        )
        # one query in batches of 4: description is NULL in whole batches, then text
        whole = pa.Table.from_batches(list(snapshot.read(SPEC, _where())), schema=SPEC.arrow_schema())
        assert snapshot.fallbacks == 0 and not snapshot.parallel  # the main connection reads SQLite
    assert ranges.equals(expected)
    assert whole.equals(expected)


def test_a_reader_left_early_stops_its_threads(source: sa.Engine) -> None:
    before = threading.active_count()
    with open_snapshot(source, batch_rows=8) as snapshot:
        reader = snapshot.read(SPEC, _where(), split=True)
        first = next(reader)
        reader.close()  # the caller gives up after one batch (an error elsewhere, say)
        assert first.num_rows > 0
        again = pa.Table.from_batches(list(snapshot.read(SPEC, _where())), schema=SPEC.arrow_schema())
    assert again.equals(_expected(source))
    assert threading.active_count() <= before


def test_a_dense_root_walks_its_key_range_and_reads_the_same(new_db: Any, dialect: str) -> None:
    """When most keys of the span match, SQLite is told the condition is likely (a key walk)."""
    engine = fixture.build(new_db(dialect))
    rows = _extra_xdrs()
    for n, row in enumerate(rows):  # consecutive keys, all of account 2
        row.update(i_xdr=50_000 + n, i_account=2)
    with engine.begin() as conn:
        conn.execute(build_metadata("r1").tables["xdrs"].insert(), rows)
    where = table_clause(SPEC).c.i_account == 2
    t = table_clause(SPEC)
    stmt = sa.select(*(t.c[c] for c in SPEC.column_names)).where(where).order_by(t.c.i_xdr)
    with engine.connect() as conn, conn.begin():
        expected = pa.Table.from_batches(list(read_arrow(conn, SPEC, stmt)), schema=SPEC.arrow_schema())
    with open_snapshot(engine, batch_rows=32) as snapshot:
        sql = [str(s.compile(engine)) for s in snapshot._ranges(SPEC, where)[0]]
        got = pa.Table.from_batches(list(snapshot.read(SPEC, where, split=True)), schema=SPEC.arrow_schema())
    assert len(sql) == 10  # 300 rows in ranges of about 32
    assert all(("likely(" in q) is (dialect == "sqlite") for q in sql)
    assert got.num_rows == EXTRA
    assert got.equals(expected)


@pytest.mark.parametrize("url", ["sqlite://", "postgresql+psycopg://", "mysql+pymysql://"])
def test_a_select_compiled_in_parts_is_the_select_compiled_whole(url: str) -> None:
    """The reads' SQL, its SELECT … FROM and ORDER BY compiled once per table, is the SQL of
    the whole statement; a WHERE with a subquery is compiled within the statement."""
    from types import SimpleNamespace

    from bundler.export.reader import literal_sql, select_sql, select_statement

    engine = sa.create_engine(url)  # never connects: only its dialect writes
    conn: Any = SimpleNamespace(engine=engine, dialect=engine.dialect)
    accounts = graph_for_release("r1").table("accounts")
    t, x = table_clause(accounts), table_clause(SPEC)
    wheres = [
        t.c.i_account.in_([3, 1, 2]),
        sa.or_(t.c.i_account.in_([1, 2]), t.c.i_customer.in_([7])),
        sa.and_(t.c.i_account >= 10, t.c.i_account < 20, t.c.id.in_(["a'b", "€"])),
        t.c.i_customer.in_(sa.select(x.c.i_account).where(x.c.call_id == "c1")),  # a subquery: whole
    ]
    for where in wheres:
        for _ in range(2):  # the second time from the parts kept
            assert select_sql(conn, accounts, where) == literal_sql(conn, select_statement(accounts, where))
    # another graph's table of the same name (a later release adds a column): its own parts
    later = graph_for_release("r2").table("accounts")
    assert "lang" in later.column_names and "lang" not in accounts.column_names
    where = table_clause(later).c.i_account.in_([3, 1, 2])
    assert select_sql(conn, later, where) == literal_sql(conn, select_statement(later, where))
    assert select_sql(conn, accounts, wheres[0]) == literal_sql(conn, select_statement(accounts, wheres[0]))
    engine.dispose()
