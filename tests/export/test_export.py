"""Export: closure, windows, statuses, refusals, exactness, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from bundler import tracking
from bundler.billing.schema import build_metadata
from bundler.bundle import open_bundle
from bundler.errors import RootError, UsageError
from bundler.export import ConfigSelection, ExportOptions, export_config, export_many, export_root
from bundler.manifest import manifest_problems
from tests.export import fixture
from tests.export.fixture import NOW


def ids(bundle_path: Path, table: str, column: str | None = None) -> set[Any]:
    bundle = open_bundle(bundle_path)
    entry = bundle.tables().get(table)
    if entry is None:
        return set()
    data = pq.read_table(bundle.path / entry["file"])
    col = column or data.schema.names[0]
    return set(data.column(col).to_pylist())


def prereq_values(bundle_path: Path, table: str) -> set[Any]:
    entry = open_bundle(bundle_path).doc["prerequisites"].get(table)
    return {row["value"] for row in entry["rows"]} if entry else set()


def statuses(engine: sa.Engine, table: str) -> dict[int, str]:
    t = build_metadata("r1").tables[table]
    pk = next(iter(t.primary_key.columns))
    with engine.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(sa.select(pk, t.c.bill_status))}


@pytest.fixture
def source(new_db: Any, dialect: str) -> sa.Engine:
    """The fixture operator on each of SQLite, PostgreSQL and MariaDB."""
    return fixture.build(new_db(dialect))


@pytest.fixture
def sqlite_source(new_db: Any) -> sa.Engine:
    """The fixture operator on SQLite, for what does not depend on the database."""
    return fixture.build(new_db("sqlite"))


def at(now: Any = NOW, **kw: Any) -> ExportOptions:
    return ExportOptions(now=now, **kw)


# -- closure of each kind of root, on every database ---------------------------------------


def test_customer_closure(source: sa.Engine, tmp_path: Path) -> None:
    result = export_root(source, "customer", "acme", tmp_path, options=at())
    path = result.path
    assert ids(path, "customers") == {4}
    assert ids(path, "accounts") == {1, 2, 7}  # the closed account travels too, as it is
    assert ids(path, "customer_sites") == {1, 2}
    assert ids(path, "hunt_group_members", "i_extension") == {1, 2}
    # xDRs of the current monthly period only (2026-11-01 .. 2026-12-01)
    assert ids(path, "xdrs") == {1, 2, 3}
    # shared rows: product 1 → rating entry → tariff 1 → rates 1, 2 → destinations 1, 2;
    # VD counter → group 1 → its set → both groups of the set → destination 4; xDR 2 → destination 3
    assert ids(path, "products") == {1}
    assert ids(path, "tariffs") == {1}
    assert ids(path, "rates") == {1, 2}
    assert ids(path, "destination_groups") == {1, 2}
    assert ids(path, "destinations") == {1, 2, 3, 4}
    assert ids(path, "subscriptions") == {1}
    assert ids(path, "subscription_fees") == {1, 2}
    assert ids(path, "access_levels") == {1}
    assert ids(path, "custom_field_names") == {1}
    # prerequisites travel by natural key; the DID number belongs to a vendor: named, not copied
    assert "did_numbers" not in open_bundle(path).tables()
    assert prereq_values(path, "did_numbers") == {1}
    assert prereq_values(path, "services") == {1, 2}
    assert prereq_values(path, "templates") == {1, 2}
    assert prereq_values(path, "currencies") == {"USD"}
    manifest = open_bundle(path).doc
    dids = manifest["prerequisites"]["did_numbers"]["rows"]
    assert dids == [{"value": 1, "key": {"number": "442071230001"}}]
    assert manifest["root"] == {"table": "customers", "source_pk": 4, "natural_key": {"name": "acme"}}
    assert manifest_problems(manifest) == []
    # statuses: marked Exported in the source, but the bundle keeps what they were
    assert statuses(source, "customers")[4] == "E"
    assert statuses(source, "accounts") == {1: "E", 2: "E", 3: "O", 4: "O", 5: "O", 6: "O", 7: "C"}
    bundle_accounts = pq.read_table(open_bundle(path).table_path("accounts")).to_pylist()
    assert {a["i_account"]: a["bill_status"] for a in bundle_accounts} == {1: "O", 2: "S", 7: "C"}


def test_reseller_closure_takes_the_whole_tree(source: sa.Engine, tmp_path: Path) -> None:
    result = export_root(source, "reseller", "reseller-r", tmp_path, options=at())
    assert ids(result.path, "customers") == {1, 2, 3}
    assert ids(result.path, "accounts") == {4, 5}
    assert ids(result.path, "xdrs") == {8, 9}
    assert statuses(source, "customers") | {} == {
        1: "E",
        2: "E",
        3: "E",
        4: "O",
        5: "O",
        6: "O",
        7: "C",
        8: "E",
    }
    # the sub-reseller was suspended: its status in the bundle is the one it had
    rows = pq.read_table(open_bundle(result.path).table_path("customers")).to_pylist()
    assert {r["i_customer"]: r["bill_status"] for r in rows} == {1: "O", 2: "S", 3: "O"}
    marks = result.manifest.tables["customers"].to_doc()
    assert marks["status_restored"] == 3


def test_customer_under_a_reseller_names_its_parent(sqlite_source: sa.Engine, tmp_path: Path) -> None:
    result = export_root(sqlite_source, "customer", "retail-under-r2", tmp_path, options=at(mark=False))
    assert ids(result.path, "customers") == {3}
    assert result.manifest.to_doc()["prerequisites"]["customers"]["rows"] == [
        {"value": 2, "key": {"name": "sub-reseller-r2"}}
    ]


def test_vendor_closure(source: sa.Engine, tmp_path: Path) -> None:
    result = export_root(source, "vendor", "Carrier Ä", tmp_path, options=at())
    path = result.path
    assert ids(path, "vendors") == {1}
    assert ids(path, "vendor_tariffs") == {1}
    assert ids(path, "vendor_rates") == {1, 2}
    assert ids(path, "connections") == {1}
    assert ids(path, "vendor_did_batches") == {1}
    assert ids(path, "did_numbers") == {1, 2}
    assert ids(path, "vendor_xdrs") == {1}  # v-2 is October, v-3 is the other vendor's
    assert ids(path, "destinations") == {1, 4}
    assert ids(path, "did_groups") == {1}
    assert ids(path, "did_pricing_batches") == {1}
    assert ids(path, "nodes") == {1}
    assert prereq_values(path, "routing_categories") == {1}
    assert statuses(source, "vendors") == {1: "E", 2: "O"}


def test_config_export_whole_tables_and_named_entries(source: sa.Engine, tmp_path: Path) -> None:
    result = export_config(
        source,
        [ConfigSelection.parse("products=Home SIP"), ConfigSelection.parse("custom_field_names")],
        tmp_path,
    )
    path = result.path
    assert result.manifest.kind == "config" and result.manifest.root is None
    assert ids(path, "products") == {2}
    assert ids(path, "tariffs") == {2}
    assert ids(path, "rates") == {3}
    assert ids(path, "destinations") == {5}
    assert ids(path, "custom_field_names") == {1, 2}
    assert "customers" not in open_bundle(path).tables()
    with pytest.raises(RootError, match="no entry with name = 'Nope'"):
        export_config(source, [ConfigSelection.parse("products=Nope")], tmp_path)
    with pytest.raises(UsageError, match="not generic configuration"):
        export_config(source, [ConfigSelection.parse("customers")], tmp_path)


@pytest.mark.parametrize(
    ("xdrs", "expected", "window"),
    [
        ("current", {1, 2, 3}, ("2026-11-01 00:00:00", "2026-12-01 00:00:00")),
        ("all", {1, 2, 3, 4, 5}, (None, None)),
        ("none", set(), (None, None)),
        ("since=2026-10-31", {1, 2, 3, 5}, ("2026-10-31 00:00:00", None)),
    ],
)
def test_usage_windows(
    sqlite_source: sa.Engine, tmp_path: Path, xdrs: str, expected: set[int], window: tuple[Any, Any]
) -> None:
    result = export_root(sqlite_source, "customer", "acme", tmp_path, options=at(xdrs=xdrs, mark=False))
    assert ids(result.path, "xdrs") == expected
    usage = result.manifest.to_doc()["usage"]
    assert (usage["from"], usage["to"]) == window
    if xdrs == "none":
        # destination 3 is referenced only by usage: without usage it does not travel
        assert ids(result.path, "destinations") == {1, 2, 4}


def test_daily_billing_period(sqlite_source: sa.Engine, tmp_path: Path) -> None:
    result = export_root(sqlite_source, "customer", "bravo", tmp_path, options=at())
    assert ids(result.path, "xdrs") == {6}
    assert result.manifest.to_doc()["usage"]["billing_period"] == "daily"


def test_two_phase_transfer(source: sa.Engine, tmp_path: Path) -> None:
    first = export_root(source, "customer", "acme", tmp_path, options=at(xdrs="none"))
    assert "xdrs" not in open_bundle(first.path).tables()
    second = export_root(source, "customer", "acme", tmp_path, options=at(xdrs="current", usage_only=True))
    manifest = second.manifest.to_doc()
    assert manifest["kind"] == "usage"
    assert manifest["depends_on"] == [first.bundle_id]
    assert set(open_bundle(second.path).tables()) == {"xdrs", "destinations"}
    assert ids(second.path, "xdrs") == {1, 2, 3}
    assert ids(second.path, "destinations") == {1, 3}
    # the accounts live in the first bundle: named by natural key, mapped through its ledger at load
    assert prereq_values(second.path, "accounts") == {1}
    assert statuses(source, "customers")[4] == "E"


def test_usage_only_needs_a_first_phase(sqlite_source: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(RootError, match="no earlier export for --usage-only"):
        export_root(sqlite_source, "customer", "bravo", tmp_path, options=at(usage_only=True))


# -- refusals change nothing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "ident", "message"),
    [
        ("customer", "gone", "already Exported"),
        ("customer", "zombie", "terminated in the source"),
        ("customer", "nobody", "no customer 'nobody'"),
        ("customer", "999", "no customer '999'"),
        ("customer", "reseller-r", "not a customer .* export it with --reseller"),
        ("reseller", "acme", "not a reseller .* export it with --customer"),
    ],
)
def test_refused_roots_change_nothing(
    sqlite_source: sa.Engine, tmp_path: Path, kind: str, ident: str, message: str
) -> None:
    before = statuses(sqlite_source, "customers"), statuses(sqlite_source, "accounts")
    with pytest.raises(RootError, match=message):
        export_root(sqlite_source, kind, ident, tmp_path, options=at())
    assert (statuses(sqlite_source, "customers"), statuses(sqlite_source, "accounts")) == before
    assert list(tmp_path.iterdir()) == []


def test_failure_restores_statuses_and_leaves_no_bundle(
    source: sa.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bundler.export import collect as collect_module

    before = statuses(source, "customers"), statuses(source, "accounts")
    real = collect_module.outside_rows

    def boom(*args: Any) -> Any:
        real(*args)
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(collect_module, "outside_rows", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_root(source, "customer", "acme", tmp_path, options=at())
    assert (statuses(source, "customers"), statuses(source, "accounts")) == before
    assert list(tmp_path.iterdir()) == []
    with source.connect() as conn:
        row = conn.execute(sa.select(tracking.exports_table)).one()
        marks = conn.execute(sa.select(sa.func.count()).select_from(tracking.export_marks_table)).scalar()
    assert row.status == "failed" and "disk on fire" in row.message
    assert marks == 0
    # and the export can simply be run again
    monkeypatch.setattr(collect_module, "outside_rows", real)
    assert export_root(source, "customer", "acme", tmp_path, options=at()).path.exists()


def test_no_mark_leaves_statuses(sqlite_source: sa.Engine, tmp_path: Path) -> None:
    before = statuses(sqlite_source, "customers")
    export_root(sqlite_source, "customer", "acme", tmp_path, options=at(mark=False))
    assert statuses(sqlite_source, "customers") == before
    with sqlite_source.connect() as conn:  # an audit copy leaves no record in the source either
        assert conn.execute(sa.select(sa.func.count()).select_from(tracking.exports_table)).scalar_one() == 0


def test_export_is_recorded(source: sa.Engine, tmp_path: Path) -> None:
    result = export_root(source, "customer", "acme", tmp_path, options=at())
    with source.connect() as conn:
        row = conn.execute(sa.select(tracking.exports_table)).one()
        marks = conn.execute(sa.select(tracking.export_marks_table)).all()
    assert row.bundle_id == result.bundle_id and row.status == "done" and row.marked == 1
    assert row.manifest_sha256 == open_bundle(result.path).manifest_sha256
    assert {(m.table_name, m.row_pk, m.previous_status) for m in marks} == {
        ("customers", "4", "O"),
        ("accounts", "1", "O"),
        ("accounts", "2", "S"),
    }


def test_several_roots_in_parallel(sqlite_source: sa.Engine, tmp_path: Path) -> None:
    results = export_many(
        sqlite_source, "customer", ["acme", "bravo", "distri", "zombie"], tmp_path, workers=2, options=at()
    )
    done = [r for r in results if not isinstance(r, Exception)]
    failed = [r for r in results if isinstance(r, Exception)]
    assert len(done) == 3 and len(failed) == 1 and "terminated" in str(failed[0])
    assert len({r.bundle_id for r in done}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(r.path.name for r in done)


# -- exactness ------------------------------------------------------------------------------


def test_every_value_is_exact(source: sa.Engine, tmp_path: Path) -> None:
    """The bundle holds exactly what the source holds, value by value (statuses as they were)."""
    result = export_root(source, "customer", "acme", tmp_path, options=at(xdrs="all", mark=False))
    md = build_metadata("r1")
    bundle = open_bundle(result.path)
    with source.connect() as conn:
        for table, entry in bundle.tables().items():
            data = pq.read_table(bundle.path / entry["file"])
            t = md.tables[table]
            pk = list(t.primary_key.columns)
            got = sorted(data.to_pylist(), key=lambda r: tuple(r[c.name] for c in pk))
            keys = [tuple(r[c.name] for c in pk) for r in got]
            rows = [dict(r._mapping) for r in conn.execute(sa.select(t).order_by(*pk))]
            want = [r for r in rows if tuple(r[c.name] for c in pk) in set(keys)]
            assert got == want, table
            for field in data.schema:
                assert str(field.type) == entry["columns"][field.name]
    customers = pq.read_table(bundle.table_path("customers")).to_pylist()[0]
    assert customers["notes"] == 'línea 1; "quoted", tab\there' and customers["phone"] == ""
    assert str(pq.read_schema(bundle.table_path("customers")).field("balance").type) == "decimal128(16, 5)"


def test_manifest_is_valid_and_written_last(sqlite_source: sa.Engine, tmp_path: Path) -> None:
    result = export_root(sqlite_source, "customer", "acme", tmp_path, options=at())
    manifest_path = result.path / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    assert manifest_problems(doc) == []
    newest_table = max(p.stat().st_mtime_ns for p in (result.path / "tables").iterdir())
    assert manifest_path.stat().st_mtime_ns >= newest_table
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
