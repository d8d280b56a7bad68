"""Claiming roots from the lineup: a run claims its own roots only, each once, whether it
selects them by the ranges of positions they hold or by their keys."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from bundler.db import connect
from bundler.lineup import queue as q

TIERS = {"customer": 0}


def _lineup(url: str, runs: dict[str, list[int]]) -> sa.Engine:
    """A lineup where run ``name`` placed customers ``pks``, run by run, in the order given."""
    engine = connect(url)
    for pks in runs.values():
        q.enqueue(engine, "S", [("customer", pk, f"c{pk}") for pk in pks], "full")
    return engine


def _wanted(pks: list[int]) -> set[tuple[str, str]]:
    return {("customer", str(pk)) for pk in pks}


def _claim_all(engine: sa.Engine, wanted: set[tuple[str, str]], selected: Any) -> list[str]:
    claimed = []
    while (row := q.claim(engine, "S", "full", "w", wanted, TIERS, selected)) is not None:
        assert row is not q.WAIT and row is not q.FOREIGN
        claimed.append(row.root_pk)
    return claimed


def test_a_run_claims_its_roots_by_their_positions(dialect: str, new_db: Any) -> None:
    """Two runs' roots interleave in the lineup (ranges 1-3, 6-7 are run A's): each run claims
    its own, in lineup order, each once; a clause of two ranges, not of five keys."""
    engine = _lineup(new_db(dialect), {"a": [1, 2, 3], "b": [4, 5], "a2": [6, 7], "b2": [8]})
    try:
        a, b = _wanted([1, 2, 3, 6, 7]), _wanted([4, 5, 8])
        selected = q.selected_positions(engine, "S", "full", a)
        assert str(selected).count("BETWEEN") == 2
        assert _claim_all(engine, a, selected) == ["1", "2", "3", "6", "7"]
        assert _claim_all(engine, b, q.selected_positions(engine, "S", "full", b)) == ["4", "5", "8"]
        q.enqueue(engine, "S", [("customer", 9, "c9")], "full")  # placed later: outside every range
        assert _claim_all(engine, a, selected) == []
    finally:
        engine.dispose()


def test_a_root_of_another_run_at_one_of_ours_is_not_claimed(dialect: str, new_db: Any) -> None:
    """Two runs placing roots at the same instant may give two roots one position: the clause
    finds the other run's root, which is left pending (FOREIGN); by keys the run goes on."""
    engine = _lineup(new_db(dialect), {"a": [1, 2, 3]})
    try:
        t = q.lineup_table
        a = _wanted([1, 2, 3])
        selected = q.selected_positions(engine, "S", "full", a)  # 1-3
        assert q.claim(engine, "S", "full", "w", a, TIERS, selected).root_pk == "1"
        with engine.begin() as conn:  # run B, placing at the same instant, gave its root position 2 too
            conn.execute(
                t.insert().values(
                    source_system="S",
                    kind="customer",
                    root_pk="9",
                    phase="full",
                    position=2,
                    root_key="c9",
                    state="pending",
                    attempts=0,
                )
            )
            conn.execute(sa.update(t).where(t.c.root_pk == "2").values(state="done"))
        assert q.claim(engine, "S", "full", "w", a, TIERS, selected) is q.FOREIGN
        with engine.connect() as conn:
            assert conn.execute(sa.select(t.c.state).where(t.c.root_pk == "9")).scalar_one() == "pending"
        assert _claim_all(engine, a, q.selection(a)) == ["3"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("runs", [60, 1], ids=["many-ranges", "none-of-ours"])
def test_a_selection_beyond_ranges_is_by_keys(runs: int, new_db: Any) -> None:
    """Roots interleaved in more than MAX_RANGES ranges are selected by their keys; a run none of
    whose roots is in the lineup claims nothing."""
    pks = list(range(1, 2 * runs + 1))
    engine = _lineup(new_db("sqlite"), {f"r{pk}": [pk] for pk in pks})
    try:
        ours = [pk for pk in pks if pk % 2] if runs > 1 else [999]
        selected = q.selected_positions(engine, "S", "full", _wanted(ours))
        assert "BETWEEN" not in str(selected)
        assert _claim_all(engine, _wanted(ours), selected) == ([str(pk) for pk in ours] if runs > 1 else [])
    finally:
        engine.dispose()
