"""The compact usage ledger: the xDRs a load creates recorded as runs of keys
(``bundler_ledger_ranges``), short runs row by row, and every reader exact over both.

One scenario per database: a customer whose xDRs have contiguous and scattered source keys
is loaded in small batches (runs go on across batches); the ledger maps every key exactly
both ways; loading it again says already loaded and changes nothing; a reverse export knows
every loaded xDR came from the source; rows removed under a range cut it to what remains;
a clean removes exactly the load and forgets it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bundler import ledger as ledger_module
from bundler import tracking
from bundler.billing.schema import build_metadata
from bundler.clean import plan_clean, run_clean
from bundler.export import ExportOptions, export_root
from bundler.graph import graph_for_release
from bundler.ledger import created_in, entries, forget_gone, ledger_map
from bundler.load import load_bundle
from bundler.reverse import reverse_export
from bundler.sql import table_clause
from tests.export import fixture
from tests.export.fixture import NOW

OPTIONS = ExportOptions(now=NOW, xdrs="all")
R1 = build_metadata("r1")
R2 = build_metadata("r2")
# acme's xDRs 1-5 (fixture) and these: a run of six, two alone, a pair (too short for a range)
EXTRA = [20, 21, 22, 23, 24, 25, 30, 32, 40, 41]


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one())
            for name in ("xdrs", "accounts", "bundler_ledger", "bundler_ledger_ranges", "bundler_loads")
        }


def _by_call(engine: sa.Engine, md: sa.MetaData) -> dict[str, int]:
    xdrs = md.tables["xdrs"]
    with engine.connect() as conn:
        return {c: i for c, i in conn.execute(sa.select(xdrs.c.call_id, xdrs.c.i_xdr))}


def _source(new_db: Any, dialect: str) -> sa.Engine:
    source = fixture.build(new_db(dialect))
    extra = [fixture._xdr(i, 1, datetime(2026, 11, 1, 0, 0, i), 1) for i in EXTRA]
    with source.begin() as conn:
        conn.execute(R1.tables["xdrs"].insert(), extra)
    return source


def test_usage_recorded_as_runs_is_exact_for_every_reader(
    new_db: Any, dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _source(new_db, dialect)
    target = fixture.build_target(new_db(dialect), "r2")
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS).path)
    before = _counts(target)
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    loaded = load_bundle(target, acme.path, batch_rows=4)  # runs go on across batches
    assert loaded.outcome == "loaded" and loaded.tables["xdrs"].created == 15

    # the runs 1-5 and 20-25 are ranges; 30, 32, 40, 41 are ledger rows
    r = tracking.ledger_ranges_table
    with target.connect() as conn:
        ranges = conn.execute(
            sa.select(r.c.source_first, r.c.source_last).where(r.c.bundle_id == acme.bundle_id)
        ).all()
        ledger = tracking.ledger_table
        single = conn.execute(
            sa.select(ledger.c.source_pk).where(
                ledger.c.bundle_id == acme.bundle_id, ledger.c.table_name == "xdrs"
            )
        ).scalars()
        assert sorted(tuple(x) for x in ranges) == [(1, 5), (20, 25)]
        assert sorted(single, key=int) == ["30", "32", "40", "41"]
        # every key maps exactly, both ways: the call id (unique) tells the source row from the target one
        source_ids = _by_call(source, R1)
        target_ids = _by_call(target, R2)
        expected = {
            str(source_ids[c]): str(target_ids[c])
            for c in source_ids
            if source_ids[c] in {*range(1, 6), *EXTRA}
        }
        written = {e.source_pk: e.target_pk for e in entries(conn, acme.bundle_id) if e.table_name == "xdrs"}
        assert written == expected
        assert ledger_map(conn, "xdrs", [*expected, "6", "26", "31"], bundles=[acme.bundle_id]) == expected
        back = ledger_map(
            conn, "xdrs", [*expected.values(), "0"], by="target", source_system=loaded_system(conn)
        )
        assert back == {t: s for s, t in expected.items()}

    # the clean's condition selects exactly these rows, with the ranges' bounds written out
    # or joined (as for many loads)
    spec = graph_for_release("r2").table("xdrs")
    xdrs = table_clause(spec)  # the clause the clean selects from
    for inline in (ledger_module.INLINE_RANGES, 0):
        monkeypatch.setattr(ledger_module, "INLINE_RANGES", inline)
        with target.connect() as conn:
            chosen = conn.execute(sa.select(xdrs.c.i_xdr).where(created_in(conn, spec, [acme.bundle_id])))
            assert sorted(str(v) for v in chosen.scalars()) == sorted(expected.values())
    monkeypatch.undo()

    # loaded again: already loaded, nothing changes
    after = _counts(target)
    assert (
        after["xdrs"] == before["xdrs"] + 15
        and after["bundler_ledger_ranges"] == before["bundler_ledger_ranges"] + 2
    )
    assert load_bundle(target, acme.path, batch_rows=4).outcome == "already-loaded"
    assert _counts(target) == after

    # a reverse export (the target's ledger by target key): every loaded xDR came from the source
    exported = reverse_export(target, "acme", tmp_path / "back", now=NOW)
    assert exported.from_source.get("xdrs") == 15 and exported.returnable.get("xdrs", 0) == 0

    # rows gone from under the ranges (3 and 25): each range is cut to the runs that remain,
    # 1-2 and 4-5 too short for a range (ledger rows now), 20-24 still one
    gone = {target_ids[f"call-{i}"] for i in (3, 25)}
    with target.begin() as conn:
        conn.execute(R2.tables["xdrs"].delete().where(R2.tables["xdrs"].c.i_xdr.in_(gone)))
        assert forget_gone(conn, spec, [acme.bundle_id]) == 2
    with target.connect() as conn:
        written = {e.source_pk: e.target_pk for e in entries(conn, acme.bundle_id) if e.table_name == "xdrs"}
        assert written == {s: t for s, t in expected.items() if int(t) not in gone}
        ranges = conn.execute(
            sa.select(r.c.source_first, r.c.source_last).where(r.c.bundle_id == acme.bundle_id)
        ).all()
        assert [tuple(x) for x in ranges] == [(20, 24)]

    # the clean removes the rest exactly and forgets the load
    plan = plan_clean(target, entities=[("customer", "acme")], side="target")
    assert plan.tables["xdrs"] == 13 and plan.closes == [acme.bundle_id]
    run_clean(target, plan)
    assert _counts(target) == before


def loaded_system(conn: sa.Connection) -> str:
    return str(conn.execute(sa.select(tracking.loads_table.c.source_system)).scalars().first())
