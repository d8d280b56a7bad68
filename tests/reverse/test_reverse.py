"""Retrop: migrate a customer, use it on the target, carry it back, and check the source exactly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler import tracking
from bundler.billing.schema import build_metadata
from bundler.bundle_pack import pack
from bundler.errors import BundleInvalid, RootError, SpecError, UsageError
from bundler.export import ExportOptions, export_root
from bundler.graph import GRAPHS_DIR, graph_for_release, parse_graph
from bundler.inspect.verify import verify_bundle
from bundler.load import load_bundle
from bundler.manifest import RootRef
from bundler.reverse import reverse_export, reverse_load
from bundler.reverse.commands import reverse
from bundler.reverse.compat import check_compatible
from tests.export import fixture
from tests.export.fixture import NOW, XDRS

OPTIONS = ExportOptions(now=NOW, xdrs="all")
R1 = build_metadata("r1")
R2 = build_metadata("r2")


@dataclass
class World:
    source: sa.Engine
    target: sa.Engine
    export_bundle: str
    out: Path
    new_db: Any
    dialect: str


def migrate(new_db: Any, dialect: str, out: Path) -> World:
    """The source fixture, a fresh r2 target, the vendor and then customer acme migrated."""
    source = fixture.build(new_db(dialect))
    target = fixture.build_target(new_db(dialect), "r2")
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", out, options=OPTIONS).path)
    acme = export_root(source, "customer", "acme", out, options=OPTIONS)
    load_bundle(target, acme.path)
    return World(source, target, acme.bundle_id, out, new_db, dialect)


def scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def rows(engine: sa.Engine, md: sa.MetaData, table: str, key: str) -> dict[Any, dict[str, Any]]:
    """Every row of a table, exactly typed (the schema's own column types), by ``key``."""
    t = md.tables[table]
    with engine.connect() as conn:
        return {r[key]: dict(r) for r in conn.execute(sa.select(t)).mappings()}


def snapshot(engine: sa.Engine) -> dict[str, Any]:
    """What a refused or repeated reverse load must leave as it was."""
    with engine.connect() as conn:
        names = sorted(sa.inspect(conn).get_table_names())
        counts = {n: conn.execute(sa.text(f"SELECT count(*) FROM {n}")).scalar_one() for n in names}
    return {
        "counts": counts,
        "xdrs": rows(engine, R1, "xdrs", "call_id"),
        "customers": rows(engine, R1, "customers", "name"),
        "accounts": rows(engine, R1, "accounts", "id"),
    }


def _xdr(
    call_id: str, account: int, service: int, dest: int | None, when: datetime, amount: str
) -> dict[str, Any]:
    return {
        "i_account": account,
        "i_service": service,
        "i_dest": dest,
        "i_invoice": None,
        "call_id": call_id,
        "cli": "48420000000",
        "cld": "Ünïcode ☎",
        "connect_time": when,
        "disconnect_time": when.replace(second=45, microsecond=123456),
        "bill_time": when.replace(microsecond=0),
        "charged_amount": D(amount),
        "charged_quantity": 45,
        "used_quantity": 44,
        "account_balance": D("1.50000"),
        "country": None,
        "description": f"made on the target ({call_id})",
    }


@dataclass
class Usage:
    """What the customer did on the target, with the ids each side gives the rows involved."""

    new_xdrs: dict[str, dict[str, Any]]
    returned: list[str]  # call ids that end up in the source
    target_account: dict[str, int]


def use_on_target(world: World) -> Usage:
    """New xDRs (some for rows only the target has), new balances, an account terminated."""
    target = world.target
    ids = {
        "acme": scalar(target, "SELECT i_customer FROM customers WHERE name = 'acme'"),
        "acme-1": scalar(target, "SELECT i_account FROM accounts WHERE id = 'acme-1'"),
        "acme-2": scalar(target, "SELECT i_account FROM accounts WHERE id = 'acme-2'"),
        "Voice": scalar(target, "SELECT i_service FROM services WHERE name = 'Voice'"),
        "Data": scalar(target, "SELECT i_service FROM services WHERE name = 'Data'"),
        "44": scalar(target, "SELECT i_dest FROM destinations WHERE destination = '44'"),
        "81": scalar(target, "SELECT i_dest FROM destinations WHERE destination = '81'"),
        "product": scalar(target, "SELECT i_product FROM accounts WHERE id = 'acme-1'"),
    }
    with target.begin() as conn:
        ids["IPTV"] = conn.execute(
            R2.tables["services"].insert().values(name="IPTV", unit="second")
        ).inserted_primary_key[0]
        ids["33"] = conn.execute(
            R2.tables["destinations"].insert().values(destination="33", country="France", description=None)
        ).inserted_primary_key[0]
        ids["acme-3"] = conn.execute(
            R2.tables["accounts"]
            .insert()
            .values(
                id="acme-3",
                i_customer=ids["acme"],
                i_product=ids["product"],
                iso_4217="USD",
                billing_model=-1,
                bill_status="O",
                balance=D("4.00000"),
                opening_balance=D("0.00000"),
                activation_date=date(2026, 11, 15),
                blocked="N",
                lang="en",
            )
        ).inserted_primary_key[0]
        new = [
            _xdr(
                "t-1",
                ids["acme-1"],
                ids["Voice"],
                ids["44"],
                datetime(2026, 11, 16, 9, 0, 0, 500001),
                "0.01111",
            ),
            _xdr("t-2", ids["acme-2"], ids["Data"], None, datetime(2026, 11, 16, 10, 0), "2.00000"),
            _xdr("t-3", ids["acme-1"], ids["IPTV"], None, datetime(2026, 11, 17, 10, 0), "5.00000"),
            _xdr("t-4", ids["acme-1"], ids["Voice"], ids["33"], datetime(2026, 11, 17, 11, 0), "0.20000"),
            _xdr("t-5", ids["acme-3"], ids["Voice"], ids["44"], datetime(2026, 11, 17, 12, 0), "0.30000"),
            _xdr("t-6", ids["acme-1"], ids["Voice"], ids["81"], datetime(2026, 10, 30, 8, 0), "0.40000"),
        ]
        conn.execute(R2.tables["xdrs"].insert(), new)
        customers, accounts = R2.tables["customers"], R2.tables["accounts"]
        conn.execute(sa.update(customers).where(customers.c.name == "acme").values(balance=D("99.87654")))
        conn.execute(sa.update(accounts).where(accounts.c.id == "acme-1").values(balance=D("1.50000")))
        conn.execute(
            sa.update(accounts).where(accounts.c.id == "acme-2").values(balance=D("7.00000"), bill_status="C")
        )
    return Usage(
        {x["call_id"]: x for x in new},
        ["t-1", "t-2", "t-6"],
        {k: v for k, v in ids.items() if k.startswith("acme-")},
    )


# -- the round trip -------------------------------------------------------------------------


def test_round_trip(new_db: Any, dialect: str, tmp_path: Path) -> None:
    world = migrate(new_db, dialect, tmp_path / "out")
    usage = use_on_target(world)
    before = snapshot(world.source)

    exported = reverse_export(world.target, "acme", tmp_path / "back", now=NOW)

    # the customer's usage, sorted
    assert exported.returnable == {
        "xdrs": 4
    }  # t-1, t-2, t-6, and t-3 (its service is matched by name at load)
    assert exported.from_source == {"xdrs": 5}  # the five the load brought
    refused = {(n["table"], json.dumps(n["natural_key"], sort_keys=True)): n for n in exported.not_returned}
    assert set(refused) == {
        ("xdrs", '{"call_id": "t-4"}'),
        ("xdrs", '{"call_id": "t-5"}'),
        ("accounts", '{"id": "acme-3"}'),
    }
    assert (
        "destinations destination='33' was made on the target"
        in refused[("xdrs", '{"call_id": "t-4"}')]["reasons"][0]
    )
    assert (
        "accounts id='acme-3' was made on the target" in refused[("xdrs", '{"call_id": "t-5"}')]["reasons"][0]
    )
    assert "4.00000 stays in the target" in refused[("accounts", '{"id": "acme-3"}')]["reasons"][0]
    assert any("before the current billing period" in w for w in exported.warnings)  # t-6, in October
    by_key = {
        (r["table"], r["natural_key"].get("name") or r["natural_key"].get("id")): r for r in exported.rows
    }
    assert by_key == {
        ("customers", "acme"): {
            "table": "customers",
            "source_pk": 4,
            "natural_key": {"name": "acme"},
            "status": "O",
            "balance": {
                "column": "balance",
                "value": "99.87654",
                "explained": {"returned_usage": "2.00000", "not_returned": {}},  # t-2, on the credit account
            },
        },
        ("accounts", "acme-1"): {
            "table": "accounts",
            "source_pk": 1,
            "natural_key": {"id": "acme-1"},
            "status": "O",
            "balance": {
                "column": "balance",
                "value": "1.50000",
                "explained": {"returned_usage": "5.41111", "not_returned": {"xdrs": "0.20000"}},  # t-4
            },
        },
        ("accounts", "acme-2"): {
            "table": "accounts",
            "source_pk": 2,
            "natural_key": {"id": "acme-2"},
            "status": "C",
            "balance": None,  # a credit account: its usage is the customer's balance
            "held": {"column": "balance", "value": "7.00000"},  # reported by reverse load: changed here
        },
        ("accounts", "acme-closed"): {
            "table": "accounts",
            "source_pk": 7,
            "natural_key": {"id": "acme-closed"},
            "status": "C",
            "balance": None,
            "held": {"column": "balance", "value": "0.00000"},
        },
    }
    # marked Exported in the target (a terminated row stays terminated)
    with world.target.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT id, bill_status FROM accounts")).all())
        assert conn.execute(sa.text("SELECT bill_status FROM customers WHERE name = 'acme'")).scalar() == "E"
    assert statuses == {"acme-1": "E", "acme-2": "C", "acme-closed": "C", "acme-3": "E"}

    # the reverse bundle verifies, with source ids in it
    report = verify_bundle(exported.path)
    assert report.problems == [] and report.kind == "reverse"
    manifest = exported.manifest
    assert manifest.kind == "reverse" and manifest.depends_on == (world.export_bundle,)
    assert manifest.root == RootRef("customers", 4, {"name": "acme"})
    assert manifest.reverse is not None and manifest.reverse["by_key"] == ["services"]
    assert {r.value: r.key for r in manifest.prerequisites["accounts"].rows} == {
        1: {"id": "acme-1"},
        2: {"id": "acme-2"},
    }
    assert {r.value for r in manifest.prerequisites["destinations"].rows} == {1, 3}  # 44 and 81

    loaded = reverse_load(world.source, exported.path)

    assert loaded.outcome == "returned"
    assert loaded.imported == {"xdrs": 3} and loaded.already_in_source == {"xdrs": 0}
    missing = {n["natural_key"].get("call_id") or n["natural_key"].get("id"): n for n in loaded.not_returned}
    assert set(missing) == {"t-3", "t-4", "t-5", "acme-3", "acme-2"}
    assert missing["t-4"]["amount"] == {"column": "charged_amount", "value": "0.20000"}
    assert missing["acme-2"]["amount"] == {"column": "balance", "value": "7.00000"}
    assert "changed on the target to 7.00000 (the source's is 0.00000)" in missing["acme-2"]["reasons"][0]
    assert loaded.dropped == {"xdrs": "5.00000"}  # t-3: counted as returned by the export, not taken
    (reason,) = missing["t-3"]["reasons"]
    assert reason.startswith("i_service = ") and reason.endswith(
        "services name='IPTV' does not exist in the source"
    )
    # the source's xDRs, exactly: the original nine untouched, the three returned with source ids
    after = rows(world.source, R1, "xdrs", "call_id")
    for call_id, row in before["xdrs"].items():
        assert after[call_id] == row
    source_ids = {"acme-1": 1, "acme-2": 2}
    services = {"Voice": 1, "Data": 2}
    dests = {"44": 1, "81": 3}
    target_service = {
        scalar(world.target, "SELECT i_service FROM services WHERE name = :s", s=s): s for s in services
    }
    target_dest = {
        scalar(world.target, "SELECT i_dest FROM destinations WHERE destination = :d", d=d): d for d in dests
    }
    target_account = {v: k for k, v in usage.target_account.items()}
    assert set(after) == set(before["xdrs"]) | set(usage.returned)
    for call_id in usage.returned:
        made = dict(usage.new_xdrs[call_id])
        made["i_account"] = source_ids[target_account[made["i_account"]]]
        made["i_service"] = services[target_service[made["i_service"]]]
        made["i_dest"] = dests[target_dest[made["i_dest"]]] if made["i_dest"] is not None else None
        got = dict(after[call_id])
        assert got.pop("i_xdr") > max(x["i_xdr"] for x in XDRS)
        assert got == made, call_id
    # balances: the customer's and the debit account's are the target's figures; the credit account's stays
    customers = rows(world.source, R1, "customers", "name")
    accounts = rows(world.source, R1, "accounts", "id")
    assert customers["acme"]["balance"] == D("99.87654")
    assert accounts["acme-1"]["balance"] == D("1.50000")
    assert accounts["acme-2"]["balance"] == D("0.00000")
    assert {(b["table"], b["before"], b["after"], b["difference"]) for b in loaded.balances} == {
        ("customers", "12.34567", "99.87654", "87.53087"),
        ("accounts", "3.14159", "1.50000", "-1.64159"),
    }
    # statuses: what they were before the export; the account closed on the target is warned about
    assert customers["acme"]["bill_status"] == "O"
    assert {k: accounts[k]["bill_status"] for k in ("acme-1", "acme-2", "acme-closed")} == {
        "acme-1": "O",
        "acme-2": "S",
        "acme-closed": "C",
    }
    assert [w for w in loaded.warnings if "acme-2" in w and "terminated in the target" in w]
    assert not any("acme-1" in w for w in loaded.warnings)
    # everything else in the source is as it was
    assert {k: v for k, v in customers.items() if k != "acme"} == {
        k: v for k, v in before["customers"].items() if k != "acme"
    }
    assert {k: v for k, v in accounts.items() if not k.startswith("acme")} == {
        k: v for k, v in before["accounts"].items() if not k.startswith("acme")
    }
    # recorded in the source's ledger; the export is reversed
    with world.source.connect() as conn:
        ledger = conn.execute(
            sa.select(tracking.ledger_table).where(tracking.ledger_table.c.bundle_id == exported.bundle_id)
        ).all()
        export = conn.execute(
            sa.select(tracking.exports_table).where(tracking.exports_table.c.bundle_id == world.export_bundle)
        ).one()
    assert len(ledger) == 3 and {r.table_name for r in ledger} == {"xdrs"}
    assert export.status == "reversed" and exported.bundle_id in export.message
    # the report, beside the bundle
    json_report, text_report = loaded.report_paths
    assert json.loads(json_report.read_text())["balance_adjustments"] == loaded.balances
    text = text_report.read_text()
    assert "t-3" in text and "settle that difference by hand" in text and "99.87654" in text

    # a re-run changes nothing
    settled = snapshot(world.source)
    again = reverse_load(world.source, exported.path)
    assert again.outcome == "already-returned" and again.imported == {}
    assert snapshot(world.source) == settled

    # each side is still told apart for a clean without --side: a reverse export recorded by the
    # target and a reverse load recorded by the source do not count
    from bundler.clean import plan_clean
    from bundler.clean.model import CleanRequest
    from bundler.clean.side import choose_side

    assert plan_clean(world.target, entities=[("customer", "acme")]).side == "target"
    with world.source.connect() as conn:
        assert choose_side(conn, CleanRequest(entities=(("customer", "acme"),)))[0] == "source"


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_a_long_customer_name_gets_a_bundle_id_the_bookkeeping_tables_hold(
    new_db: Any, dialect: str, tmp_path: Path
) -> None:
    """The bundle id fits the String(64) bundle_id columns however long the customer's name."""
    world = migrate(new_db, dialect, tmp_path / "out")
    use_on_target(world)
    long_name = "acme, a customer whose name fills the whole column of its table."  # 64, the column's size
    assert len(long_name) == 64
    customers = R2.tables["customers"]
    with world.target.begin() as conn:
        conn.execute(sa.update(customers).where(customers.c.name == "acme").values(name=long_name))

    exported = reverse_export(world.target, long_name, tmp_path / "back", now=NOW)

    assert len(exported.bundle_id) <= 64 and exported.bundle_id.startswith("reverse-acme_a_customer")
    assert exported.manifest.root == RootRef("customers", 4, {"name": long_name})
    assert exported.returnable == {"xdrs": 4} and verify_bundle(exported.path).problems == []
    sql = "SELECT status FROM bundler_exports WHERE bundle_id = :b"
    assert scalar(world.target, sql, b=exported.bundle_id) == "done"

    loaded = reverse_load(world.source, exported.path)

    assert loaded.outcome == "returned" and loaded.imported == {"xdrs": 3}
    assert loaded.root["natural_key"] == {"name": long_name}
    sql = "SELECT outcome FROM bundler_loads WHERE bundle_id = :b"
    assert scalar(world.source, sql, b=exported.bundle_id) == "loaded"
    sql = "SELECT count(*) FROM bundler_ledger WHERE bundle_id = :b"
    assert scalar(world.source, sql, b=exported.bundle_id) == 3
    assert scalar(
        world.source, "SELECT status FROM bundler_exports WHERE bundle_id = :b", b=world.export_bundle
    ) == ("reversed")
    assert scalar(world.source, "SELECT bill_status FROM customers WHERE name = 'acme'") == "O"
    assert reverse_load(world.source, exported.path).outcome == "already-returned"


# -- refusals ---------------------------------------------------------------------------------


@pytest.fixture
def world(new_db: Any, tmp_path: Path) -> World:
    return migrate(new_db, "sqlite", tmp_path / "out")


def test_a_customer_no_load_brought_is_refused(world: World, tmp_path: Path) -> None:
    with world.target.begin() as conn:
        conn.execute(
            R2.tables["customers"]
            .insert()
            .values(
                name="native",
                i_customer_type=1,
                iso_4217="USD",
                i_taxation_method=scalar(world.target, "SELECT i_taxation_method FROM taxation_methods"),
                i_billing_period=4,
                bill_status="O",
                balance=D("0"),
                creation_date=NOW,
            )
        )
    with pytest.raises(
        RootError, match=r"customer name='native' \(i_customer=\d+\) did not arrive by a load"
    ):
        reverse_export(world.target, "native", tmp_path / "back", now=NOW)
    assert scalar(world.target, "SELECT bill_status FROM customers WHERE name = 'native'") == "O"
    assert not (tmp_path / "back").exists() or not list((tmp_path / "back").iterdir())
    with pytest.raises(RootError, match="no customer 'nobody' in the target"):
        reverse_export(world.target, "nobody", tmp_path / "back", now=NOW)
    # a customer that came inside its reseller's bundle is not a customer of its own
    load_bundle(
        world.target, export_root(world.source, "reseller", "reseller-r", tmp_path, options=OPTIONS).path
    )
    with pytest.raises(
        RootError, match=r"arrived inside reseller bundle reseller-.* not as a customer of its own"
    ):
        reverse_export(world.target, "retail-under-r2", tmp_path / "back", now=NOW)
    assert scalar(world.target, "SELECT bill_status FROM customers WHERE name = 'retail-under-r2'") == "O"


def test_a_second_reverse_export_is_refused(world: World, tmp_path: Path) -> None:
    first = reverse_export(world.target, "acme", tmp_path / "back", now=NOW)
    with pytest.raises(
        RootError, match=f"already Exported in the target by reverse bundle {first.bundle_id}"
    ):
        reverse_export(world.target, "acme", tmp_path / "back", now=NOW)


def test_a_bundle_for_another_source_is_refused(world: World, tmp_path: Path) -> None:
    bundle = reverse_export(world.target, "acme", tmp_path / "back", now=NOW).path
    other = fixture.build(world.new_db("sqlite"))
    export_root(
        other, "customer", "acme", tmp_path / "other", options=OPTIONS
    )  # the same customer, Exported there too
    before = snapshot(other)
    with pytest.raises(RootError, match="is not for this source system"):
        reverse_load(other, bundle)
    assert snapshot(other) == before


def test_a_customer_terminated_in_the_source_is_refused(world: World, tmp_path: Path) -> None:
    bundle = reverse_export(world.target, "acme", tmp_path / "back", now=NOW).path
    with world.source.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET bill_status = 'C' WHERE name = 'acme'"))
    before = snapshot(world.source)
    with pytest.raises(RootError, match="terminated in the source .* cannot be restored"):
        reverse_load(world.source, bundle)
    assert snapshot(world.source) == before


def test_only_reverse_bundles_are_taken(world: World, tmp_path: Path) -> None:
    vendor = export_root(world.source, "vendor", "Carrier B", tmp_path / "more", options=OPTIONS).path
    with pytest.raises(UsageError, match="is a 'vendor' bundle, not a reverse bundle"):
        reverse_load(world.source, vendor)


def test_a_tampered_reverse_bundle_is_refused(world: World, tmp_path: Path) -> None:
    use_on_target(world)
    bundle = reverse_export(world.target, "acme", tmp_path / "back", now=NOW).path
    with open(next((bundle / "tables").iterdir()), "ab") as fh:
        fh.write(b"x")
    before = snapshot(world.source)
    with pytest.raises(BundleInvalid):
        reverse_load(world.source, bundle)
    assert snapshot(world.source) == before


def test_usage_tables_that_differ_between_releases_are_refused() -> None:
    doc = json.loads((GRAPHS_DIR / "r1.json").read_text())
    for column in doc["tables"]["xdrs"]["columns"]:
        if column["name"] == "description":
            column["name"] = "descr"
    other = parse_graph(doc)
    reverse_section = {"by_key": [], "rows": []}
    with pytest.raises(SpecError, match="the columns of xdrs differ: descr, description"):
        check_compatible(graph_for_release("r2"), other, ["xdrs"], {}, reverse_section)
    check_compatible(
        graph_for_release("r2"), graph_for_release("r1"), ["xdrs", "vendor_xdrs"], {}, reverse_section
    )


def test_usage_of_a_two_phase_transfer_is_known_and_a_packed_bundle_applies(
    new_db: Any, tmp_path: Path
) -> None:
    source = fixture.build(new_db("sqlite"))
    target = fixture.build_target(new_db("sqlite"), "r2")
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS).path)
    first = export_root(source, "customer", "acme", tmp_path, options=ExportOptions(now=NOW, xdrs="none"))
    usage = export_root(
        source, "customer", "acme", tmp_path, options=ExportOptions(now=NOW, xdrs="all", usage_only=True)
    )
    load_bundle(target, first.path)
    load_bundle(target, usage.path)
    exported = reverse_export(target, "acme", tmp_path / "back", now=NOW)
    assert exported.from_source == {"xdrs": 5} and exported.returnable == {}
    packed = pack(exported.path, tmp_path / "mail")
    loaded = reverse_load(source, packed)
    assert loaded.outcome == "returned" and loaded.report_paths[0].parent == packed.parent
    with source.connect() as conn:
        exports = dict(conn.execute(sa.text("SELECT bundle_id, status FROM bundler_exports")).all())
        assert conn.execute(sa.text("SELECT bill_status FROM customers WHERE name = 'acme'")).scalar() == "O"
    assert exports[first.bundle_id] == "reversed" and exports[usage.bundle_id] == "reversed"


# -- the command line ---------------------------------------------------------------------------


def test_cli_round_trip_and_help(new_db: Any, tmp_path: Path) -> None:
    source_url, target_url = new_db("sqlite"), new_db("sqlite")
    source = fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS).path)
    load_bundle(target, export_root(source, "customer", "acme", tmp_path, options=OPTIONS).path)
    runner = CliRunner()
    helped = " ".join(runner.invoke(reverse, ["--help"]).output.split())
    for limit in (
        "usage must be returned before the billing period closes",
        "configuration changed on the target is lost",
        "a customer terminated in the source cannot be restored",
        "an account terminated in the target but alive in the source becomes active again",
    ):
        assert limit in helped
    for sub in ("export", "load"):
        text = runner.invoke(reverse, [sub, "--help"]).output
        assert "Limits of a reverse transfer" in text and "Example:" in text

    out = runner.invoke(
        reverse,
        ["export", "--db", target_url, "--customer", "acme", "--out", str(tmp_path / "back"), "--json"],
    )
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["returnable"] == {} and summary["already_in_source"] == {"xdrs": 5}
    applied = runner.invoke(reverse, ["load", "--db", source_url, summary["path"]])
    assert applied.exit_code == 0, applied.output
    assert "returned to the source" in applied.stdout and "customers name='acme' balance" in applied.stdout
    assert "report: " in applied.stdout
    again = runner.invoke(reverse, ["load", "--db", source_url, summary["path"], "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["outcome"] == "already-returned"


# -- safe both ways ---------------------------------------------------------------------------


def _payment_and_invoice(target: sa.Engine) -> None:
    """A payment and an invoice made on the target: never returned, reported with their amounts."""
    acme = scalar(target, "SELECT i_customer FROM customers WHERE name = 'acme'")
    template = scalar(target, "SELECT min(i_template) FROM templates")
    with target.begin() as conn:
        conn.execute(
            R2.tables["payments"]
            .insert()
            .values(
                i_customer=acme,
                i_payment_method=None,
                iso_4217="USD",
                amount=D("-100.00000"),
                payment_time=datetime(2026, 11, 16, 12, 0),
                transaction_id="pay-on-target",
                notes=None,
            )
        )
        conn.execute(
            R2.tables["invoices"]
            .insert()
            .values(
                i_customer=acme,
                invoice_number="INV-on-target",
                i_template=template,
                iso_4217="USD",
                period_from=date(2026, 11, 1),
                period_to=date(2026, 11, 30),
                issue_date=datetime(2026, 11, 16, 12, 0),
                amount_net=D("10.00000"),
                amount_due=D("12.30000"),
                amount_paid=D("0.00000"),
            )
        )


def business(engine: sa.Engine, md: sa.MetaData = R1) -> dict[str, Any]:
    """The rows a refused or undone reverse transfer must leave exactly as they were."""
    with engine.connect() as conn:
        exports = conn.execute(sa.text("SELECT count(*) FROM bundler_exports")).scalar_one()
    return {
        "customers": rows(engine, md, "customers", "name"),
        "accounts": rows(engine, md, "accounts", "id"),
        "xdrs": rows(engine, md, "xdrs", "call_id"),
        "exports": exports,
    }


def test_retrop_refused_or_undone_leaves_both_sides_as_before(
    new_db: Any, dialect: str, tmp_path: Path
) -> None:
    world = migrate(new_db, dialect, tmp_path / "out")
    use_on_target(world)
    _payment_and_invoice(world.target)
    with world.source.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET bill_status = 'C' WHERE name = 'acme'"))
    source_before, target_before = business(world.source), business(world.target, R2)

    # checked on the source before anything is marked: nothing changes on either side
    with pytest.raises(RootError, match="terminated in the source .* cannot be restored"):
        reverse_export(world.target, "acme", tmp_path / "back", now=NOW, source=world.source)
    assert business(world.target, R2) == target_before and business(world.source) == source_before
    assert not (tmp_path / "back").exists() or not list((tmp_path / "back").glob("*.bundle"))

    # without the source to check: marked, the load refused, and one command lifts the mark
    exported = reverse_export(world.target, "acme", tmp_path / "back", now=NOW)
    made = {
        n["natural_key"].get("transaction_id") or n["natural_key"].get("invoice_number"): n
        for n in exported.not_returned
    }
    assert made["pay-on-target"]["amount"] == {"column": "amount", "value": "-100.00000"}
    assert made["INV-on-target"]["amount"] == {"column": "amount_due", "value": "12.30000"}
    (customer,) = [r for r in exported.rows if r["table"] == "customers"]
    assert customer["balance"]["explained"] == {
        "returned_usage": "2.00000",
        "not_returned": {"invoices": "12.30000", "payments": "-100.00000"},
    }
    assert "payments -100.00000" in "\n".join(exported.lines())
    with pytest.raises(RootError, match="terminated in the source"):
        reverse_load(world.source, exported.path)
    assert business(world.source) == source_before
    assert scalar(world.target, "SELECT bill_status FROM customers WHERE name = 'acme'") == "E"
    out = CliRunner().invoke(
        reverse,
        ["undo", "--db", world.target.url.render_as_string(hide_password=False), "--customer", "acme"],
    )
    assert out.exit_code == 0, out.output
    assert "active in the target again" in out.output
    after = business(world.target, R2)
    assert after["exports"] == target_before["exports"] + 1  # the reverse export, recorded as restored
    assert {k: v for k, v in after.items() if k != "exports"} == {
        k: v for k, v in target_before.items() if k != "exports"
    }
    with pytest.raises(RootError, match="no finished reverse export"):
        from bundler.reverse.undo import reverse_undo

        reverse_undo(world.target, "acme")


def test_a_rehearsed_load_reports_what_the_source_will_not_take(world: World, tmp_path: Path) -> None:
    use_on_target(world)
    exported = reverse_export(world.target, "acme", tmp_path / "back", now=NOW, source=world.source)
    # t-3: IPTV is not in the source; acme-2: its balance (a credit account's) changed on the target
    assert [n["natural_key"] for n in exported.at_load] == [{"call_id": "t-3"}, {"id": "acme-2"}]
    sql = "SELECT count(*) FROM bundler_loads WHERE bundle_id = :b"
    assert scalar(world.source, sql, b=exported.bundle_id) == 0  # rolled back
    assert reverse_load(world.source, exported.path).imported == {"xdrs": 3}


# -- migrated again --------------------------------------------------------------------------


def test_a_returned_customer_migrates_again_exactly(new_db: Any, dialect: str, tmp_path: Path) -> None:
    """Return, then migrate: the stale copy goes (with what was made on the target), the new copy is exact."""
    from bundler.lineup import LineupOptions, RootSelector, run_lineup
    from tests.load.compare import differences

    world = migrate(new_db, dialect, tmp_path / "out")
    use_on_target(world)
    reverse_load(world.source, reverse_export(world.target, "acme", tmp_path / "back", now=NOW).path)
    options = LineupOptions(bundles=tmp_path / "again", xdrs="all", now=NOW, layered=False)

    result = run_lineup(world.source, world.target, [RootSelector("customer", ("acme",))], options)

    (outcome,) = result.outcomes
    assert outcome.state == "done" and outcome.message != "already in the target", outcome
    bundle = tmp_path / "again" / f"{outcome.bundle_id}.bundle"
    again = export_root(
        world.target,
        "customer",
        "acme",
        tmp_path / "check",
        options=ExportOptions(now=NOW, xdrs="all", mark=False),
    )
    assert differences(bundle, world.target, again.path, graph_for_release("r2")) == []
    assert again.manifest.tables["xdrs"].rows == 8  # the five migrated first and the three returned
    with world.target.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customers WHERE name = 'acme'")).scalar() == 1
        accounts = set(conn.execute(sa.text("SELECT id FROM accounts")).scalars())
        calls = set(conn.execute(sa.text("SELECT call_id FROM xdrs")).scalars())
        assert conn.execute(sa.text("SELECT bill_status FROM customers WHERE name = 'acme'")).scalar() == "O"
    assert "acme-3" not in accounts and {"t-3", "t-4", "t-5"}.isdisjoint(calls)  # the stale copy's own rows
    # a second run finds it in the target: nothing to do
    second = run_lineup(world.source, world.target, [RootSelector("customer", ("acme",))], options)
    assert second.outcomes == [] and second.skipped == 1


def test_a_returned_customer_exported_and_loaded_by_hand_comes_back_exactly(
    new_db: Any, dialect: str, tmp_path: Path
) -> None:
    """Without the lineup: a new export marks the source Exported, and its load removes the stale
    copy (in its own transaction) and brings the customer back, exact."""
    from tests.load.compare import differences

    world = migrate(new_db, dialect, tmp_path / "out")
    use_on_target(world)
    reverse_load(world.source, reverse_export(world.target, "acme", tmp_path / "back", now=NOW).path)
    again = export_root(world.source, "customer", "acme", tmp_path / "again", options=OPTIONS)
    assert scalar(world.source, "SELECT bill_status FROM customers WHERE name = 'acme'") == "E"

    loaded = load_bundle(world.target, again.path)

    assert loaded.outcome == "loaded"
    check = export_root(
        world.target,
        "customer",
        "acme",
        tmp_path / "check",
        options=ExportOptions(now=NOW, xdrs="all", mark=False),
    )
    assert differences(again.path, world.target, check.path, graph_for_release("r2")) == []
    assert check.manifest.tables["xdrs"].rows == 8
    with world.target.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customers WHERE name = 'acme'")).scalar() == 1
        assert "acme-3" not in set(conn.execute(sa.text("SELECT id FROM accounts")).scalars())
        assert conn.execute(sa.text("SELECT bill_status FROM customers WHERE name = 'acme'")).scalar() == "O"
    assert load_bundle(world.target, again.path).outcome == "already-loaded"
