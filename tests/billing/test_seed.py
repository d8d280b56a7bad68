"""bundler.billing.seed: a deterministic, complete, realistic synthetic operator."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from bundler.billing import seed as seed_module
from bundler.billing.schema import HUNT_SEQUENCES, build_metadata
from bundler.billing.seed import DEFAULT_NOW, init_db, seed_source, seed_target
from bundler.db import connect
from bundler.progress import RecordingProgress

SMALL: dict[str, Any] = {
    "customers": 5,
    "resellers": 1,
    "sub_resellers": 1,
    "customers_per_reseller": 2,
    "distributors": 1,
    "accounts_per_customer": 2,
    "xdrs_per_account": 6,
    "vendors": 2,
    "destinations": 60,
}


def _dump(engine: sa.Engine, md: sa.MetaData) -> dict[str, list[tuple[Any, ...]]]:
    """Every table, ordered by primary key."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in md.sorted_tables:
            query = sa.select(table).order_by(*table.primary_key.columns)
            out[table.name] = [tuple(row) for row in conn.execute(query)]
    return out


def _key(value: Any) -> Any:
    """A value with its type (and a Decimal's scale), for exact comparison."""
    if isinstance(value, Decimal):
        return ("Decimal", value.as_tuple())
    return (type(value).__name__, value)


def _assert_same_dump(got: dict[str, list[tuple[Any, ...]]], want: dict[str, list[tuple[Any, ...]]]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for g, w in zip(got[name], want[name], strict=True):
            assert [_key(v) for v in g] == [_key(v) for v in w], f"{name}: {g} != {w}"


def _seeded(url: str, release: str = "r1", **kwargs: Any) -> tuple[sa.Engine, dict[str, int]]:
    engine = connect(url)
    counts = seed_source(engine, release=release, **{**SMALL, **kwargs})
    return engine, counts


def test_same_rows_on_every_database(dialect: str, new_db: Any) -> None:
    """Seeded into SQLite and into the dialect under test, every value of every table is equal."""
    md = build_metadata("r1")
    reference, _ = _seeded(new_db("sqlite"))
    other, _ = _seeded(new_db(dialect))
    _assert_same_dump(_dump(other, md), _dump(reference, md))


def test_batching_and_release_do_not_change_values(new_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """xDR batch size does not change the data; r2 holds the same values laid out its way."""
    r1_engine, _ = _seeded(new_db())
    monkeypatch.setattr(seed_module, "XDR_BATCH_ROWS", 7)
    small_batches, _ = _seeded(new_db())
    md1, md2 = build_metadata("r1"), build_metadata("r2")
    _assert_same_dump(_dump(small_batches, md1), _dump(r1_engine, md1))

    r2_engine, _ = _seeded(new_db(), release="r2")
    one, two = _dump(r1_engine, md1), _dump(r2_engine, md2)
    for name in ("rates", "xdrs", "invoices", "did_assignments", "payments", "vendor_xdrs"):
        assert one[name] == two[name], name
    with r1_engine.connect() as c1, r2_engine.connect() as c2:
        old = c1.execute(
            sa.text("SELECT i_customer, companyname, email, address FROM customers ORDER BY 1")
        ).all()
        new = c2.execute(
            sa.text(
                "SELECT c.i_customer, c.company_name, k.email, k.address FROM customers c"
                " JOIN customer_contacts k ON k.i_customer = c.i_customer ORDER BY 1"
            )
        ).all()
        assert old == new
        codes1 = [r[0] for r in c1.execute(sa.text("SELECT hunt_sequence FROM hunt_groups ORDER BY 1"))]
        codes2 = [r[0] for r in c2.execute(sa.text("SELECT hunt_sequence FROM hunt_groups ORDER BY 1"))]
    assert set(codes1) <= set(HUNT_SEQUENCES["r1"])
    assert set(codes2) <= set(HUNT_SEQUENCES["r2"])
    assert len(codes1) == len(codes2) > 0


def test_different_seeds_differ(new_db: Any) -> None:
    md = build_metadata("r1")
    a, _ = _seeded(new_db(), seed=1)
    b, _ = _seeded(new_db(), seed=2)
    da, db = _dump(a, md), _dump(b, md)
    assert da["customers"] != db["customers"]
    assert da["xdrs"] != db["xdrs"]


@pytest.mark.parametrize("release", ["r1", "r2"])
def test_source_is_complete_and_consistent(release: str, new_db: Any) -> None:
    progress = RecordingProgress()
    engine = connect(new_db())
    counts = seed_source(engine, release=release, progress=progress, **SMALL)
    md = build_metadata(release)
    dump = _dump(engine, md)

    # Every table is filled, and the counts returned are the rows written.
    empty = [name for name, rows in dump.items() if not rows]
    assert empty == []
    assert counts == {name: len(rows) for name, rows in dump.items()}
    assert progress.finished() and progress.done("seed xdrs") == counts["xdrs"]

    # Natural keys are unique in every table.
    for table in md.sorted_tables:
        names = table.info["natural_key"]
        index = [c.name for c in table.columns]
        keys = Counter(tuple(row[index.index(n)] for n in names) for row in dump[table.name])
        duplicated = [k for k, n in keys.items() if n > 1]
        assert not duplicated, f"{table.name}: duplicate natural keys {duplicated[:3]}"

    with engine.connect() as conn:

        def q(sql: str) -> list[Any]:
            return list(conn.execute(sa.text(sql)).all())

        # The default-site cycle: each default site belongs to its own customer.
        bad = q(
            "SELECT c.i_customer FROM customers c JOIN customer_sites s ON s.i_customer_site = c.i_default_site"
            " WHERE s.i_customer <> c.i_customer"
        )
        assert bad == []
        assert q("SELECT count(*) FROM customers WHERE i_default_site IS NOT NULL")[0][0] > 0
        dangling = q(
            "SELECT count(*) FROM customers WHERE i_default_site IS NOT NULL"
            " AND i_default_site NOT IN (SELECT i_customer_site FROM customer_sites)"
        )
        assert dangling[0][0] == 0

        # Customer kinds, hierarchy, statuses, billing periods.
        types = dict(q("SELECT i_customer_type, count(*) FROM customers GROUP BY i_customer_type"))
        assert types == {1: 5 + 2 * 2 + 1, 2: 2, 3: 1}  # + the first vendor's customer counterpart
        assert (
            q("SELECT count(*) FROM customers WHERE i_customer_type = 2 AND i_parent IS NOT NULL")[0][0] == 1
        )
        statuses = dict(q("SELECT bill_status, count(*) FROM customers GROUP BY bill_status"))
        assert statuses.get("C") == 2 and statuses.get("O", 0) > 0
        assert {r[0] for r in q("SELECT i_billing_period FROM customers")} <= {1, 2, 3, 4}
        assert (
            q(
                "SELECT count(*) FROM accounts a JOIN customers c ON c.i_customer = a.i_customer WHERE c.i_customer_type = 2"
            )[0][0]
            == 0
        )
        assert {r[0] for r in q("SELECT DISTINCT billing_model FROM accounts")} == {-1, 1}
        assert (
            q(
                "SELECT count(*) FROM accounts a JOIN customers c USING (i_customer) WHERE a.iso_4217 <> c.iso_4217"
            )[0][0]
            == 0
        )
        currencies = {r[0] for r in q("SELECT iso_4217 FROM currencies")}
        assert {"USD", "EUR", "GBP"} <= currencies

        # Every DID is assigned at most once, and to numbers of the vendors.
        assert q("SELECT count(*) - count(DISTINCT i_did_number) FROM did_assignments")[0][0] == 0

        # Hunt group members are extensions of the hunt group's own customer.
        assert (
            q(
                "SELECT count(*) FROM hunt_group_members m JOIN hunt_groups h USING (i_hunt_group)"
                " JOIN extensions e ON e.i_extension = m.i_extension WHERE e.i_customer <> h.i_customer"
            )[0][0]
            == 0
        )

        # xDRs: in the three months before now, with microseconds, some in the open period;
        # closed accounts stopped calling a month ago.
        first, last = q("SELECT min(bill_time), max(bill_time) FROM xdrs")[0]
        closed_last = q(
            "SELECT max(x.bill_time) FROM xdrs x JOIN accounts a ON a.i_account = x.i_account"
            " WHERE a.bill_status = 'C'"
        )[0][0]
    xdr_cols = [c.name for c in md.tables["xdrs"].columns]
    xdrs = [dict(zip(xdr_cols, row, strict=True)) for row in dump["xdrs"]]
    times = [x["bill_time"] for x in xdrs]
    assert all(DEFAULT_NOW - dt.timedelta(days=93) < t < DEFAULT_NOW for t in times)
    assert any(t.microsecond for t in times)
    assert any(t >= dt.datetime(2026, 11, 1) for t in times) and any(
        t < dt.datetime(2026, 9, 1) for t in times
    )
    assert first is not None and last is not None and closed_last is not None
    if isinstance(closed_last, str):  # SQLite without type information on a raw query
        closed_last = dt.datetime.fromisoformat(closed_last)
    assert closed_last < DEFAULT_NOW - dt.timedelta(days=seed_module.CLOSED_QUIET_DAYS)
    assert any(x["i_invoice"] is None for x in xdrs) and any(x["i_invoice"] is not None for x in xdrs)
    assert all(x["charged_amount"].as_tuple().exponent == -5 for x in xdrs)
    assert all(x["disconnect_time"] >= x["connect_time"] for x in xdrs)

    # Variety: non-ASCII text, empty strings and NULLs all occur.
    values = [v for rows in dump.values() for row in rows for v in row]
    texts = [v for v in values if isinstance(v, str)]
    assert any(not t.isascii() for t in texts)
    assert "" in texts
    assert any("\n" in t for t in texts) and any('"' in t for t in texts) and any("\\" in t for t in texts)
    assert None in values
    countries = {row[2] for row in dump["destinations"]}
    assert "Côte d’Ivoire" in countries and "Türkiye" in countries and "日本" in countries
    recordings = dump["call_recordings"]
    assert recordings and all(len(r[-1]) == 64 for r in recordings)


def test_sequences_continue_after_explicit_ids(dialect: str, new_db: Any) -> None:
    """Rows inserted later without an id get the next one (PostgreSQL sequences are reset)."""
    engine, counts = _seeded(new_db(dialect))
    md = build_metadata("r1")
    with engine.begin() as conn:
        later: list[tuple[str, dict[str, Any]]] = [
            ("payment_systems", {"name": "Later"}),
            ("customer_sites", {"i_customer": 1, "name": "Added later"}),
        ]
        for name, values in later:
            inserted = conn.execute(md.tables[name].insert().values(**values)).inserted_primary_key
            assert inserted is not None
            new_id = inserted[0]
            assert new_id == counts[name] + 1, name


def test_target_overlaps_the_source(dialect: str, new_db: Any) -> None:
    source_url = new_db()
    target_url = new_db(dialect)
    source = connect(source_url)
    seed_source(source, **SMALL)
    target = connect(target_url)
    counts = seed_target(target, destinations=SMALL["destinations"], overlap=0.5, differing=0.5)
    md_source, md_target = build_metadata("r1"), build_metadata("r2")
    src, tgt = _dump(source, md_source), _dump(target, md_target)
    assert counts["customers"] == 0 and not tgt["customers"] and not tgt["xdrs"]

    def by_name(
        dump: dict[str, list[tuple[Any, ...]]], md: sa.MetaData, name: str
    ) -> dict[Any, dict[str, Any]]:
        table = md.tables[name]
        cols = [c.name for c in table.columns]
        natural = table.info["natural_key"]
        return {tuple(r[cols.index(n)] for n in natural): dict(zip(cols, r, strict=True)) for r in dump[name]}

    differing = 0
    for table in md_target.sorted_tables:
        scope = table.info["scope"]
        if scope not in ("prerequisite", "shared"):
            continue
        if any("ref" in md_target.tables[table.name].c[n].info for n in table.info["natural_key"]):
            continue  # keys through references: checked below for rates
        s, t = by_name(src, md_source, table.name), by_name(tgt, md_target, table.name)
        common = s.keys() & t.keys()
        pk = next(iter(table.primary_key.columns)).name
        if scope == "prerequisite":
            assert s.keys() == t.keys(), table.name
        else:
            assert common, f"{table.name}: no overlap"
            assert len(common) < len(s) or len(s) == 1, f"{table.name}: everything overlaps"
        for key in common:
            if pk != "iso_4217":
                assert s[key][pk] != t[key][pk], f"{table.name} {key}: same id in source and target"
            content = [c for c in s[key] if c != pk and "ref" not in table.c[c].info]
            if any(s[key][c] != t[key][c] for c in content):
                differing += 1
                assert scope == "shared", f"prerequisite {table.name} {key} differs"
        only = t.keys() - s.keys()
        if table.info["natural_key"] == ["name"] and scope == "shared":
            assert any(str(k[0]).startswith("Target-only") for k in only), table.name
    assert differing > 5

    # Rates: keys through references (tariff name, destination, effective_from).
    with source.connect() as cs, target.connect() as ct:
        sql = (
            "SELECT t.name, d.destination, r.effective_from, r.price_1, r.i_rate FROM rates r"
            " JOIN tariffs t ON t.i_tariff = r.i_tariff JOIN destinations d ON d.i_dest = r.i_dest"
        )
        s_rates = {(r[0], r[1], r[2]): r for r in cs.execute(sa.text(sql))}
        t_rates = {(r[0], r[1], r[2]): r for r in ct.execute(sa.text(sql))}
    common_rates = s_rates.keys() & t_rates.keys()
    assert common_rates and t_rates.keys() <= s_rates.keys()
    assert any(s_rates[k][4] != t_rates[k][4] for k in common_rates)


def test_init_db_creates_each_release(new_db: Any) -> None:
    for release in ("r1", "r2"):
        url = new_db()
        init_db(url, release)
        engine = connect(url)
        names = set(sa.inspect(engine).get_table_names())
        assert names == set(build_metadata(release).tables)
        engine.dispose()
