"""A lending library, a schema unrelated to billing: every column type the graph knows,
a root kind named ``member``, no status column, and a usage tree (a loan's lines travel
in the window of their loan). Built per dialect with the types a real schema there uses;
SQLite keeps timestamps as ISO 8601 text with ``T``, ``Z`` and offsets, and decimals as text."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from bundler.db import connect

TYPES = {
    "sqlite": {
        "DEC": "TEXT",
        "BLOB": "BLOB",
        "JSON": "TEXT",
        "TSTZ": "TEXT",
        "TS": "TIMESTAMP",
        "DOUBLE": "REAL",
        "BOOL": "BOOLEAN",
        "AUTO": "INTEGER",
    },
    "postgresql": {
        "DEC": "NUMERIC(38,10)",
        "BLOB": "BYTEA",
        "JSON": "JSON",
        "TSTZ": "TIMESTAMPTZ",
        "TS": "TIMESTAMP",
        "DOUBLE": "DOUBLE PRECISION",
        "BOOL": "BOOLEAN",
        "AUTO": "SERIAL",
    },
    "mysql": {
        "DEC": "DECIMAL(38,10)",
        "BLOB": "LONGBLOB",
        "JSON": "LONGTEXT",
        "TSTZ": "DATETIME(6)",
        "TS": "DATETIME(6)",
        "DOUBLE": "DOUBLE",
        "BOOL": "BOOLEAN",
        "AUTO": "INTEGER AUTO_INCREMENT",
    },
}

DDL = """
CREATE TABLE branches (code VARCHAR(8) PRIMARY KEY, city VARCHAR(64) NOT NULL);
CREATE TABLE titles (title_id {AUTO} PRIMARY KEY, isbn VARCHAR(17) NOT NULL UNIQUE, name VARCHAR(200) NOT NULL,
  price {DEC} NOT NULL, weight_kg {DOUBLE}, cover {BLOB}, meta {JSON}, published DATE);
CREATE TABLE members (member_id {AUTO} PRIMARY KEY, card_no VARCHAR(16) NOT NULL UNIQUE, name VARCHAR(64) NOT NULL,
  branch VARCHAR(8) NOT NULL REFERENCES branches (code), joined_at {TSTZ} NOT NULL, vip {BOOL} NOT NULL,
  deposit {DEC} NOT NULL, rating {DOUBLE}, photo {BLOB}, prefs {JSON});
CREATE TABLE loans (loan_id {AUTO} PRIMARY KEY, member_id INTEGER NOT NULL REFERENCES members (member_id),
  branch VARCHAR(8) NOT NULL REFERENCES branches (code), loaned_at {TSTZ} NOT NULL, fee {DEC});
CREATE TABLE loan_lines (line_id {AUTO} PRIMARY KEY, loan_id INTEGER NOT NULL REFERENCES loans (loan_id),
  title_id INTEGER NOT NULL REFERENCES titles (title_id), returned {BOOL}, due_at {TS});
"""

PL = timezone(timedelta(hours=2))
JOINED = [datetime(2008, 3, 10, tzinfo=UTC), datetime(2019, 7, 1, 9, 30, 15, 250000, tzinfo=PL)]
LOANED = [
    datetime(2026, 11, 2, 10, 0, tzinfo=UTC),
    datetime(2026, 11, 3, 23, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-5))),
    datetime(2026, 11, 5, 8, 0, tzinfo=UTC),
]
BIG = Decimal("1234567890123456789012345678.0123456789")  # 38 digits


def _ts(value: datetime, dialect: str, style: int = 0, *, text: bool = False) -> Any:
    """As each database's applications write it: ISO text in SQLite (T, Z or an offset), and
    wherever the column is text (``text``)."""
    if dialect == "sqlite" or text:
        text = value.isoformat()
        return text.replace("+00:00", "Z") if style == 0 else text.replace("T", " ")
    if dialect == "mysql":
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _dec(value: Decimal, dialect: str) -> Any:
    return format(value, "f") if dialect == "sqlite" else value


def build(url: str, dialect: str, *, text_times: bool = False) -> sa.Engine:
    """``text_times``: the zoned timestamps (a member's joining, a loan's time) kept as ISO
    text on every database, as SQLite keeps them."""
    engine = connect(url)
    types = {**TYPES[dialect], "TSTZ": "TEXT"} if text_times else TYPES[dialect]
    with engine.begin() as conn:
        for statement in filter(None, (s.strip() for s in DDL.format(**types).split(";"))):
            conn.exec_driver_sql(statement)

        def insert(table: str, rows: list[dict[str, Any]]) -> None:
            cols = list(rows[0])
            conn.execute(
                sa.text(
                    f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
                ),
                rows,
            )

        insert("branches", [{"code": "WAW", "city": "Warszawa"}, {"code": "KRK", "city": "Kraków"}])
        insert(
            "titles",
            [
                {
                    "title_id": 1,
                    "isbn": "978-0-13-468599-1",
                    "name": "Pan Tadeusz",
                    "price": _dec(Decimal("39.9900000000"), dialect),
                    "weight_kg": 0.1,
                    "cover": b"\x00\xffPNG\x10",
                    "meta": '{"lang": "pl",  "tags": ["epic"]}',
                    "published": date(1834, 6, 28),
                },
                {
                    "title_id": 2,
                    "isbn": "978-83-240-0000-1",
                    "name": "Lalka",
                    "price": _dec(BIG, dialect),
                    "weight_kg": 1 / 3,
                    "cover": None,
                    "meta": None,
                    "published": None,
                },
                {
                    "title_id": 3,
                    "isbn": "978-83-07-00000-2",
                    "name": "Quo vadis",
                    "price": _dec(Decimal("-0.0000000001"), dialect),
                    "weight_kg": 2.5e-300,
                    "cover": b"",
                    "meta": "[]",
                    "published": date(1896, 1, 1),
                },
            ],
        )
        insert(
            "members",
            [
                {
                    "member_id": 10,
                    "card_no": "C-17",
                    "name": "Ola",
                    "branch": "WAW",
                    "joined_at": _ts(JOINED[0], dialect, text=text_times),
                    "vip": True,
                    "deposit": _dec(BIG, dialect),
                    "rating": 4.75,
                    "photo": b"\x01\x02",
                    "prefs": '{"night": true}',
                },
                {
                    "member_id": 11,
                    "card_no": "C-18",
                    "name": "Jan",
                    "branch": "KRK",
                    "joined_at": _ts(JOINED[1], dialect, 1, text=text_times),
                    "vip": False,
                    "deposit": _dec(Decimal("0E-10"), dialect),
                    "rating": None,
                    "photo": None,
                    "prefs": None,
                },
            ],
        )
        insert(
            "loans",
            [
                {
                    "loan_id": 100,
                    "member_id": 10,
                    "branch": "WAW",
                    "loaned_at": _ts(LOANED[0], dialect, text=text_times),
                    "fee": _dec(Decimal("1.5000000000"), dialect),
                },
                {
                    "loan_id": 101,
                    "member_id": 10,
                    "branch": "KRK",
                    "loaned_at": _ts(LOANED[1], dialect, 1, text=text_times),
                    "fee": None,
                },
                {
                    "loan_id": 102,
                    "member_id": 11,
                    "branch": "KRK",
                    "loaned_at": _ts(LOANED[2], dialect, text=text_times),
                    "fee": None,
                },
            ],
        )
        due = datetime(2026, 12, 1, 12, 0, 0, 500)
        insert(
            "loan_lines",
            [
                {"line_id": 1000, "loan_id": 100, "title_id": 1, "returned": True, "due_at": due},
                {"line_id": 1001, "loan_id": 100, "title_id": 2, "returned": None, "due_at": None},
                {"line_id": 1002, "loan_id": 101, "title_id": 1, "returned": False, "due_at": due},
                {"line_id": 1003, "loan_id": 102, "title_id": 3, "returned": False, "due_at": due},
            ],
        )
    return engine


def create_empty(url: str, dialect: str) -> sa.Engine:
    """The same schema without rows but the branches (a target)."""
    engine = connect(url)
    with engine.begin() as conn:
        for statement in filter(None, (s.strip() for s in DDL.format(**TYPES[dialect]).split(";"))):
            conn.exec_driver_sql(statement)
        conn.execute(
            sa.text("INSERT INTO branches (code, city) VALUES ('WAW', 'Warszawa'), ('KRK', 'Kraków')")
        )
    return engine


def edit(doc: dict[str, Any]) -> dict[str, Any]:
    """What the operator decides after ``graph infer``: usage tables and their window, exact
    types SQLite's catalog cannot tell, natural keys, the root kind's place in --all."""
    tables = doc["tables"]
    types = {
        ("titles", "price"): "decimal(38,10)",
        ("titles", "meta"): "json",
        ("members", "deposit"): "decimal(38,10)",
        ("members", "joined_at"): "timestamp[us, tz=UTC]",
        ("members", "prefs"): "json",
        ("members", "vip"): "bool",
        ("loans", "fee"): "decimal(38,10)",
        ("loans", "loaned_at"): "timestamp[us, tz=UTC]",
        ("loan_lines", "returned"): "bool",
    }
    for (table, column), type_ in types.items():
        for col in tables[table]["columns"]:
            if col["name"] == column:
                col["type"] = type_
    tables["loans"].update(scope="usage", time_column="loaned_at", natural_key=["member_id", "loaned_at"])
    tables["loan_lines"].update(scope="usage", natural_key=["loan_id", "title_id"])
    for ref in tables["loan_lines"]["references"]:
        ref["owner"] = ref["column"] == "loan_id"
    for table in tables.values():
        table["doc"] = "reviewed"
    doc["roots"]["member"]["lookup"] = ["member_id", "card_no"]
    return doc
