"""New surrogate ids taken from the target (:class:`bundler.ids.IdAllocator`): each id
once, after the ones the table holds, in as few round trips as the table's size allows."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import sqlalchemy as sa

from bundler.db import connect
from bundler.ids import CONTIGUOUS_FIRST, IdAllocator

BIG = CONTIGUOUS_FIRST + 5


def _table(url: str) -> sa.Engine:
    engine = connect(url)
    md = sa.MetaData()
    sa.Table("things", md, sa.Column("i_thing", sa.BigInteger, primary_key=True, autoincrement=True))
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO things (i_thing) VALUES (7)"))
        if engine.dialect.name == "postgresql":  # the application's own rows took the sequence's values
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('things', 'i_thing'), 7)")
    return engine


def test_ids_come_after_the_tables_in_pieces_taken_ahead(dialect: str, new_db: Any) -> None:
    engine = _table(new_db(dialect))
    try:
        with engine.begin() as conn:
            alloc = IdAllocator(conn)
            alloc.take_ahead("things", "i_thing", BIG)
            statements: list[str] = []

            def seen(*args: Any) -> None:
                statements.append(args[2])

            sa.event.listen(conn, "before_cursor_execute", seen)
            pieces = [alloc.take("things", "i_thing", n) for n in (BIG - 5, 3, 2)]
            sa.event.remove(conn, "before_cursor_execute", seen)
            assert statements == [], "ids taken ahead were taken again"
            ids = [i for piece in pieces for i in piece]
            assert ids == list(range(8, 8 + BIG))
            assert list(alloc.take("things", "i_thing", 2)) == [8 + BIG, 9 + BIG]  # beyond: taken anew
    finally:
        engine.dispose()


@pytest.mark.parametrize("n", [5, BIG], ids=["small", "big"])
def test_ids_of_a_sequence_that_skips_values_are_each_one_taken(new_db: Any, n: int) -> None:
    """Values not in one run (here a sequence counting by 3, as when another session takes some
    between ours): the ids the sequence gave, each once; a big table's first run is left a gap."""
    engine = _table(new_db("postgresql"))
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER SEQUENCE things_i_thing_seq INCREMENT BY 3")
        with engine.begin() as conn:
            ids = list(IdAllocator(conn).take("things", "i_thing", n))
            last = conn.exec_driver_sql("SELECT last_value FROM things_i_thing_seq").scalar_one()
        assert len(ids) == n and ids == sorted(set(ids))
        assert all(b - a == 3 for a, b in itertools.pairwise(ids))
        assert ids[-1] == last
        assert ids[0] == (10 if n < CONTIGUOUS_FIRST else 10 + 3 * n)
    finally:
        engine.dispose()
