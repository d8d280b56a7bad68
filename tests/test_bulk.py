"""bundler.bulk: Arrow data into every database, exactly, through each dialect's bulk path."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundler.billing.schema import MONEY, TIMESTAMP, ExactNumeric
from bundler.bulk import ValueRefused, arrow_schema_for, insert_arrow
from bundler.db import connect
from bundler.errors import DatabaseError

TRICKY_TEXT = [
    "",
    None,
    "plain",
    'say "hi"',
    "it's",
    "a,b,c",
    "tab\there",
    "line\nbreak",
    "crlf\r\nend",
    "back\\slash",
    "\\N",
    "\\",
    "NULL",
    "null",
    " leading and trailing ",
    "Müller & Söhne GmbH",
    "東京テレコム",
    "emoji 😀📞",
    "Łódź Net",
    'quote at end"',
    '"',
    '""',
    ",",
    "\\.",
    "'",
]
N = len(TRICKY_TEXT)

DECIMALS = [
    Decimal("-0.00001"),
    Decimal("99999999999.99999"),
    Decimal("-99999999999.99999"),
    Decimal("0.00000"),
    Decimal("1.50000"),
    None,
    Decimal("12345.67891"),
    Decimal("0.10000"),
    Decimal("-42.00000"),
    Decimal("1234567890.12345"),
]

TIMES = [
    dt.datetime(2026, 11, 15, 12, 0, 0, 1),
    dt.datetime(2026, 11, 15, 12, 0, 0),
    dt.datetime(1999, 12, 31, 23, 59, 59, 999999),
    None,
    dt.datetime(2026, 2, 28, 0, 0, 0, 500000),
]

DATES = [dt.date(2026, 11, 15), dt.date(2000, 2, 29), None, dt.date(9999, 12, 31), dt.date(1970, 1, 1)]


def _cycle(values: list[Any], n: int = N) -> list[Any]:
    return [values[i % len(values)] for i in range(n)]


def _metadata() -> tuple[sa.MetaData, sa.Table]:
    md = sa.MetaData()
    table = sa.Table(
        "bulk_probe",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(64)),
        sa.Column("body", sa.Text),
        sa.Column("money", MONEY),
        sa.Column("price", ExactNumeric(12, 5)),
        sa.Column("rate", ExactNumeric(5, 2)),
        sa.Column("plain", sa.Numeric(16, 5)),
        sa.Column("at", TIMESTAMP),
        sa.Column("day", sa.Date),
        sa.Column("big", sa.BigInteger),
        sa.Column("small", sa.Integer, nullable=False, server_default="7"),
        sa.Column("code", sa.String(8), nullable=False, server_default="en"),
    )
    return md, table


def _rows() -> list[dict[str, Any]]:
    rates = [Decimal("0.00"), Decimal("-999.99"), Decimal("999.99"), None, Decimal("12.50")]
    prices = [Decimal("0.00001"), Decimal("9999999.99999"), None, Decimal("-1.00000")]
    bigs = [2**62, -(2**62), None, 0, 1]
    return [
        {
            "id": i + 1,
            "name": TRICKY_TEXT[i],
            "body": TRICKY_TEXT[(i + 3) % N],
            "money": _cycle(DECIMALS)[i],
            "price": _cycle(prices)[i],
            "rate": _cycle(rates)[i],
            "plain": _cycle(DECIMALS)[i],
            "at": _cycle(TIMES)[i],
            "day": _cycle(DATES)[i],
            "big": _cycle(bigs)[i],
            "small": i * 1000,
            "code": "fr",
        }
        for i in range(N)
    ]


def _arrow(rows: list[dict[str, Any]], table: sa.Table) -> pa.Table:
    schema = arrow_schema_for(table)
    return pa.Table.from_pylist(rows, schema=schema)


def _read(engine: sa.Engine, table: sa.Table) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same type; Decimals also with the same exponent (scale)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    return bool(a == b)


def _assert_rows_equal(got: list[dict[str, Any]], want: list[dict[str, Any]], columns: list[str]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for c in columns:
            assert _same(g[c], w[c]), f"row {w['id']} column {c}: got {g[c]!r}, want {w[c]!r}"


@pytest.fixture
def probe(db_url: str) -> Iterator[tuple[sa.Engine, sa.Table]]:
    md, table = _metadata()
    engine = connect(db_url)
    md.create_all(engine)
    yield engine, table
    engine.dispose()


def test_arrow_schema_for_maps_types_exactly() -> None:
    _, table = _metadata()
    schema = arrow_schema_for(table)
    assert schema.field("id").type == pa.int64()
    assert not schema.field("id").nullable
    assert schema.field("name").type == pa.string()
    assert schema.field("name").nullable
    assert schema.field("money").type == pa.decimal128(16, 5)
    assert schema.field("rate").type == pa.decimal128(5, 2)
    assert schema.field("plain").type == pa.decimal128(16, 5)
    assert schema.field("at").type == pa.timestamp("us")
    assert schema.field("day").type == pa.date32()
    assert schema.field("big").type == pa.int64()
    assert not schema.field("small").nullable


def test_round_trip_is_exact(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    engine, table = probe
    rows = _rows()
    with engine.begin() as conn:
        assert insert_arrow(conn, table, _arrow(rows, table)) == N
    got = _read(engine, table)
    exact = [c.name for c in table.columns if c.name != "plain" or dialect != "sqlite"]
    _assert_rows_equal(got, rows, exact)
    if dialect == "sqlite":
        # A plain Numeric is a double on SQLite, also when SQLAlchemy writes it: 16 digits
        # do not survive, 15 do. insert_arrow stores what SQLAlchemy would (checked below).
        by_id = {r["id"]: r for r in got}
        assert by_id[1]["plain"] == Decimal("-0.00001")
        assert by_id[2]["plain"] != Decimal("99999999999.99999")


def test_stores_exactly_what_sqlalchemy_stores(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    """Raw stored values (and SQLite storage classes) equal those of a SQLAlchemy insert."""
    engine, table = probe
    rows = _rows()
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    with engine.connect() as conn:
        via_sqlalchemy = conn.exec_driver_sql(_raw_select(dialect, table)).all()
        conn.execute(table.delete())
        conn.commit()
    with engine.begin() as conn:
        insert_arrow(conn, table, _arrow(rows, table))
    with engine.connect() as conn:
        via_bulk = conn.exec_driver_sql(_raw_select(dialect, table)).all()
    assert via_bulk == via_sqlalchemy


def _raw_select(dialect: str, table: sa.Table) -> str:
    names = [c.name for c in table.columns]
    if dialect == "sqlite":
        cols = ", ".join(f'"{n}", typeof("{n}")' for n in names)
        return f"SELECT {cols} FROM bulk_probe ORDER BY id"
    quote = '"' if dialect == "postgresql" else "`"
    return f"SELECT {', '.join(quote + n + quote for n in names)} FROM bulk_probe ORDER BY id"


def test_batches_subsets_and_defaults(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    engine, table = probe
    schema = arrow_schema_for(table)
    fields = [schema.field(n) for n in ("id", "name", "money")]

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, 2500, 500):
            ids = list(range(start + 1, start + 501))
            yield pa.RecordBatch.from_pylist(
                [{"id": i, "name": f"n{i}" if i % 3 else "", "money": Decimal(i).scaleb(-5)} for i in ids],
                schema=pa.schema(fields),
            )

    with engine.begin() as conn:
        assert insert_arrow(conn, table, batches()) == 2500
        assert insert_arrow(conn, table, iter([])) == 0
    got = _read(engine, table)
    assert len(got) == 2500
    assert got[0]["small"] == 7 and got[0]["code"] == "en"
    assert got[2]["name"] == "" and got[3]["name"] == "n4"
    assert got[-1]["money"] == Decimal("0.02500") and got[-1]["at"] is None


def test_casts_input_types(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    """Columns of other Arrow types are cast safely to the table's types."""
    engine, table = probe
    data = pa.table(
        {
            "id": pa.array([1, 2], pa.int32()),
            "money": pa.array(["1.5", "-0.00001"]),
            "at": pa.array(["2026-01-02 03:04:05.123456", None]).cast(pa.timestamp("us")),
            "day": pa.array([dt.date(2026, 1, 2), None], pa.date64()),
        }
    )
    with engine.begin() as conn:
        insert_arrow(conn, table, data)
    got = _read(engine, table)
    assert _same(got[0]["money"], Decimal("1.50000"))
    assert _same(got[1]["money"], Decimal("-0.00001"))
    assert got[0]["at"] == dt.datetime(2026, 1, 2, 3, 4, 5, 123456)
    assert got[0]["day"] == dt.date(2026, 1, 2)
    too_precise = pa.table({"id": [3], "money": pa.array([Decimal("1.123456")], pa.decimal128(10, 6))})
    with pytest.raises(pa.ArrowInvalid), engine.begin() as conn:
        insert_arrow(conn, table, too_precise)


def test_never_commits(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    engine, table = probe
    with engine.connect() as conn:
        insert_arrow(conn, table, _arrow(_rows(), table))
        assert conn.in_transaction()
        conn.rollback()
    assert _read(engine, table) == []
    with engine.connect() as conn:
        insert_arrow(conn, table, _arrow(_rows(), table))
        conn.commit()
    assert len(_read(engine, table)) == N


def test_rejects_unknown_columns(probe: tuple[sa.Engine, sa.Table]) -> None:
    engine, table = probe
    with pytest.raises(ValueError, match="no column"), engine.begin() as conn:
        insert_arrow(conn, table, pa.table({"id": [1], "nope": ["x"]}))


def test_duplicate_key_fails_loudly(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    """LOAD DATA LOCAL would skip duplicates with a warning; insert_arrow raises instead."""
    engine, table = probe
    data = pa.table({"id": [1, 2, 1], "name": ["a", "b", "c"]})
    with pytest.raises((DatabaseError, sa.exc.IntegrityError, sa.exc.DBAPIError)), engine.begin() as conn:
        insert_arrow(conn, table, data)
    assert _read(engine, table) == []


class _Broken(Exception):
    pass


def test_a_failure_between_batches_stops_the_write(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    """The batches' producer fails after two batches (on PostgreSQL a thread is sending them
    meanwhile): its error comes out as it was, the connection rolls back and is usable, no
    row stays; then the same connection writes again."""
    engine, table = probe

    def failing() -> Iterator[pa.RecordBatch]:
        for start in (1, 501):
            yield pa.RecordBatch.from_pylist([{"id": i, "name": f"n{i}"} for i in range(start, start + 500)])
        raise _Broken("the bundle went away")

    with engine.connect() as conn:
        with pytest.raises(_Broken, match="went away"):
            insert_arrow(conn, table, failing())
        conn.rollback()
        assert insert_arrow(conn, table, pa.table({"id": [7], "name": ["again"]})) == 1
        conn.commit()
    assert [(r["id"], r["name"]) for r in _read(engine, table)] == [(7, "again")]


def test_a_duplicate_in_a_later_batch_fails_loudly(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    """The third of three batches repeats a key of the first (sent, on PostgreSQL, by the
    thread while the next is prepared): the write fails and leaves nothing."""
    engine, table = probe
    batches = pa.table({"id": [*range(1, 3_000), 5], "name": ["x"] * 3_000}).to_batches(max_chunksize=1_000)
    with (
        pytest.raises((DatabaseError, sa.exc.IntegrityError, sa.exc.DBAPIError)),
        engine.begin() as conn,
    ):
        insert_arrow(conn, table, iter(batches))
    assert _read(engine, table) == []


def _batches_with(column: str, bad_row: int, bad: Any, good: Any) -> list[pa.RecordBatch]:
    """Three batches of 1,000 rows; row ``bad_row`` (0-based, over all three) holds ``bad``."""
    values = [bad if i == bad_row else good for i in range(3_000)]
    data = pa.table({"id": list(range(1, 3_001)), column: values})
    return data.to_batches(max_chunksize=1_000)


@pytest.mark.parametrize(
    ("column", "bad", "good"),
    [("code", "x" * 9, "fr"), ("small", 2**31, 1), ("body", "a\x00b", "ab")],
    ids=["too-long", "out-of-range", "nul"],
)
@pytest.mark.parametrize("local_infile", [True, False], ids=["bulk", "insert"])
def test_a_refused_value_is_named_by_column_and_row(
    dialect: str, db_url: str, column: str, bad: Any, good: Any, local_infile: bool
) -> None:
    """The row is counted over every batch given: COPY's line, LOAD DATA's row in its file, or
    (multi-row INSERT) the first value of the column that cannot fit."""
    if not local_infile and dialect != "mysql":
        pytest.skip("only MariaDB has a second bulk path")
    md, table = _metadata()
    engine = connect(db_url) if local_infile else sa.create_engine(db_url)
    try:
        md.create_all(engine)
        batches = _batches_with(column, 2_499, bad, good)
        stored = dialect == "sqlite" or (column == "body" and dialect == "mysql")
        if stored:  # SQLite stores all three, MariaDB stores NUL: exactly
            with engine.begin() as conn:
                insert_arrow(conn, table, batches)
            with engine.connect() as conn:
                got = conn.execute(sa.select(table.c[column]).where(table.c.id == 2_500)).scalar_one()
            assert _same(got, bad)
            return
        with pytest.raises(ValueRefused) as info, engine.begin() as conn:
            insert_arrow(conn, table, batches)
        assert (info.value.table, info.value.column, info.value.row, info.value.value) == (
            "bulk_probe",
            column,
            2_499,
            bad,
        )
        assert info.value.line().startswith(
            f"table bulk_probe, row 2500 of the data written: column {column} = "
        )
        assert _read(engine, table) == []
    finally:
        engine.dispose()


def test_lost_connection_is_recognised(dialect: str, probe: tuple[sa.Engine, sa.Table]) -> None:
    """A session ended during a bulk write raises as Core would: connection_invalidated."""
    if dialect == "sqlite":
        pytest.skip("no server session to end")
    engine, table = probe
    rows = _rows()
    with engine.connect() as conn:
        insert_arrow(conn, table, _arrow(rows[:1], table))
        own = "SELECT pg_backend_pid()" if dialect == "postgresql" else "SELECT CONNECTION_ID()"
        session = int(conn.exec_driver_sql(own).scalar_one())
        with engine.connect() as admin:
            kill = f"SELECT pg_terminate_backend({session})" if dialect == "postgresql" else f"KILL {session}"
            admin.exec_driver_sql(kill)
            admin.commit()
        with pytest.raises(sa.exc.DBAPIError) as info:
            insert_arrow(conn, table, _arrow(rows[1:], table))
        assert info.value.connection_invalidated
        assert conn.invalidated


@pytest.mark.servers
def test_mariadb_without_local_infile(new_db: Any) -> None:
    """Without local_infile the rows go as multi-row INSERTs, exactly all the same."""
    url = new_db("mysql")
    md, table = _metadata()
    engine = sa.create_engine(url)  # PyMySQL default: local_infile off
    try:
        md.create_all(engine)
        rows = _rows() * 90  # more than one INSERT chunk
        for i, row in enumerate(rows):
            rows[i] = {**row, "id": i + 1}
        with engine.begin() as conn:
            assert not conn.connection.driver_connection._local_infile  # type: ignore[union-attr]
            assert insert_arrow(conn, table, _arrow(rows, table)) == len(rows)
        _assert_rows_equal(_read(engine, table), rows, [c.name for c in table.columns])
    finally:
        engine.dispose()


class Shouting(sa.TypeDecorator[str]):
    """A type whose bind processor changes values: the bulk paths must apply it."""

    impl = sa.String(32)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else value.upper()


def test_types_that_change_values_on_bind_are_applied(dialect: str, db_url: str) -> None:
    md = sa.MetaData()
    table = sa.Table(
        "shouting",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("word", Shouting()),
        sa.Column("at", TIMESTAMP),
    )
    engine = connect(db_url)
    try:
        md.create_all(engine)
        data = pa.table(
            {
                "id": [1, 2, 3],
                "word": ["straße", None, "quiet, \\please"],
                "at": pa.array([dt.datetime(2026, 1, 1, 0, 0, 0, 7), None, None], pa.timestamp("us")),
            }
        )
        with engine.begin() as conn:
            assert insert_arrow(conn, table, data) == 3
        with engine.connect() as conn:
            got = conn.execute(sa.select(table).order_by(table.c.id)).all()
        assert [tuple(r) for r in got] == [
            (1, "STRASSE", dt.datetime(2026, 1, 1, 0, 0, 0, 7)),
            (2, None, None),
            (3, "QUIET, \\PLEASE", None),
        ]
    finally:
        engine.dispose()


_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.none(), _text), min_size=1, max_size=30))
def test_any_text_round_trips(
    dialect: str, probe: tuple[sa.Engine, sa.Table], values: list[str | None]
) -> None:
    engine, table = probe
    rows = [{"id": i + 1, "body": v} for i, v in enumerate(values)]
    with engine.begin() as conn:
        conn.execute(table.delete())
        insert_arrow(
            conn,
            table,
            pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.int64()), ("body", pa.string())])),
        )
    got = [(r["id"], r["body"]) for r in _read(engine, table)]
    assert got == [(r["id"], r["body"]) for r in rows]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.one_of(
            st.none(),
            st.decimals(
                min_value=Decimal("-99999999999.99999"), max_value=Decimal("99999999999.99999"), places=5
            ),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_any_money_round_trips(
    dialect: str, probe: tuple[sa.Engine, sa.Table], values: list[Decimal | None]
) -> None:
    engine, table = probe
    rows = [{"id": i + 1, "money": v} for i, v in enumerate(values)]
    with engine.begin() as conn:
        conn.execute(table.delete())
        insert_arrow(
            conn,
            table,
            pa.Table.from_pylist(
                rows, schema=pa.schema([("id", pa.int64()), ("money", pa.decimal128(16, 5))])
            ),
        )
    got = [r["money"] for r in _read(engine, table)]
    want = [None if v is None else v.quantize(Decimal("0.00001")) + 0 for v in values]
    assert [None if g is None else str(g) for g in got] == [None if w is None else str(w) for w in want]
