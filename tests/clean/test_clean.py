"""Clean: migrate, clean, and the database is as it was, row for row, on all three databases.

Snapshots hold every billing table row by row (primary key → sha256 of the row's content);
bundler's own bookkeeping tables (``bundler_*``) are left out of them and checked on their
own: the loads a clean forgets are gone from ``bundler_loads`` and ``bundler_ledger``, the
exports it closes are recorded as ``cleaned``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler import tracking
from bundler.clean import CleanRefused, plan_clean, run_clean
from bundler.clean.commands import clean_command
from bundler.errors import RootError, SpecError, UsageError
from bundler.export import (
    ConfigSelection,
    ExportOptions,
    ExportResult,
    export_config,
    export_root,
    restore_export,
)
from bundler.graph import Graph, graph_for_release
from bundler.keys import key_value
from bundler.ledger import entries as ledger_entries
from bundler.load import load_bundle
from bundler.sql import table_clause
from tests.export import fixture
from tests.export.fixture import NOW, ROWS

OPTIONS = ExportOptions(now=NOW, xdrs="all")
Snapshot = dict[str, dict[str, str]]


# -- helpers ---------------------------------------------------------------------------------------


def pk_text(values: tuple[Any, ...]) -> str:
    """A primary key the way the ledger and the export marks write it."""
    return str(values[0]) if len(values) == 1 else json.dumps([key_value(v) for v in values])


def snapshot(engine: sa.Engine, release: str) -> Snapshot:
    """Every billing table: primary key → sha256 of the row's content (bundler_* tables left out)."""
    graph = graph_for_release(release)
    out: Snapshot = {}
    with engine.connect() as conn:
        names = [n for n in sa.inspect(conn).get_table_names() if not n.startswith("bundler_")]
        assert sorted(names) == sorted(graph.tables), "every billing table is in the graph"
        for name in sorted(names):
            spec = graph.table(name)
            rows: dict[str, str] = {}
            for row in conn.execute(sa.select(table_clause(spec))).mappings():
                content = json.dumps(
                    {k: key_value(v) for k, v in row.items()}, sort_keys=True, ensure_ascii=False
                )
                rows[pk_text(tuple(row[c] for c in spec.pk))] = hashlib.sha256(content.encode()).hexdigest()
            out[name] = rows
    return out


def without(snap: Snapshot, gone: set[tuple[str, str]]) -> Snapshot:
    return {t: {pk: h for pk, h in rows.items() if (t, pk) not in gone} for t, rows in snap.items()}


def assert_same(actual: Snapshot, expected: Snapshot) -> None:
    problems = []
    for table in sorted(set(actual) | set(expected)):
        a, e = actual.get(table, {}), expected.get(table, {})
        if a != e:
            extra = sorted(set(a) - set(e))
            missing = sorted(set(e) - set(a))
            changed = sorted(pk for pk in set(a) & set(e) if a[pk] != e[pk])
            problems.append(f"{table}: extra {extra[:5]}, missing {missing[:5]}, changed {changed[:5]}")
    assert not problems, "; ".join(problems)


def dangling(engine: sa.Engine, graph: Graph) -> list[str]:
    """References (declared in the graph) to rows that do not exist."""
    found = []
    with engine.connect() as conn:
        for spec in graph.tables.values():
            t = table_clause(spec)
            for ref in spec.references:
                target = table_clause(graph.table(ref.table)).alias("referenced")
                missing = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(t)
                    .where(t.c[ref.column].is_not(None))
                    .where(~sa.exists().where(target.c[ref.target_column] == t.c[ref.column]))
                ).scalar_one()
                if missing:
                    found.append(f"{spec.name}.{ref.column}: {missing}")
    return found


def ledger(engine: sa.Engine, bundle_id: str) -> set[tuple[str, str, str]]:
    with engine.connect() as conn:
        return {(table, target_pk, action) for table, _, target_pk, action in ledger_entries(conn, bundle_id)}


def loads(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(tracking.loads_table.c.bundle_id)).scalars())


def export_status(engine: sa.Engine, bundle_id: str) -> str:
    exports = tracking.exports_table
    with engine.connect() as conn:
        return str(
            conn.execute(sa.select(exports.c.status).where(exports.c.bundle_id == bundle_id)).scalar_one()
        )


def bundle_rows(result: ExportResult) -> set[tuple[str, str]]:
    """(table, source pk text) of every row a bundle carries."""
    graph = graph_for_release(result.manifest.graph.release)
    out = set()
    for table in result.manifest.tables:
        spec = graph.table(table)
        data = pq.read_table(Path(result.path) / "tables" / f"{table}.parquet", columns=list(spec.pk))
        for row in data.to_pylist():
            out.add((table, pk_text(tuple(row[c] for c in spec.pk))))
    return out


def kept_keys(plan: Any) -> set[tuple[str, str]]:
    return {(k.table, pk_text(tuple(k.pk) if isinstance(k.pk, list) else (k.pk,))) for k in plan.kept}


@pytest.fixture
def source(new_db: Any, dialect: str) -> sa.Engine:
    return fixture.build(new_db(dialect))


@pytest.fixture
def target(new_db: Any, dialect: str) -> sa.Engine:
    return fixture.build_target(new_db(dialect), "r2")


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every plan computed (``bundler.clean.clean._plan_on``), in order."""
    import bundler.clean.clean as module

    made: list[Any] = []
    plan_on = module._plan_on

    def recorded(*args: Any, **kwargs: Any) -> Any:
        plan, cleanset = plan_on(*args, **kwargs)
        made.append(plan)
        return plan, cleanset

    monkeypatch.setattr(module, "_plan_on", recorded)
    return made


# -- target ----------------------------------------------------------------------------------------


def test_target_is_back_to_its_state_before_the_load(
    source: sa.Engine, target: sa.Engine, tmp_path: Path
) -> None:
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    reseller = export_root(source, "reseller", "reseller-r", tmp_path, options=OPTIONS)
    graph = graph_for_release("r2")
    s0 = snapshot(target, "r2")
    load_bundle(target, vendor.path)
    s1 = snapshot(target, "r2")
    load_bundle(target, acme.path)
    assert snapshot(target, "r2") != s1

    plan = plan_clean(target, entities=[("customer", "acme")])
    assert plan.side == "target" and plan.side_reason.startswith("inferred")
    assert [s.bundles for s in plan.selected] == [(acme.bundle_id,)]
    assert plan.kept == []
    assert plan.tables["xdrs"] == 5 and plan.tables["customers"] == 1 and plan.tables["accounts"] == 3
    assert plan.unlink == {"customers.i_default_site": 1}
    assert plan.closes == [acme.bundle_id] and plan.partly == {}
    assert list(plan.tables).index("xdrs") < list(plan.tables).index("accounts")  # children first
    assert snapshot(target, "r2") != s1  # planning writes nothing
    result = run_clean(target, plan)
    assert result.rows == plan.rows and result.closed == [acme.bundle_id]
    assert_same(snapshot(target, "r2"), s1)
    assert ledger(target, acme.bundle_id) == set() and loads(target) == {vendor.bundle_id}
    assert dangling(target, graph) == []

    # the same bundle loads again, then the reseller (sub-customers, self-references) joins it
    assert load_bundle(target, acme.path).outcome == "loaded"
    load_bundle(target, reseller.path)
    plan = plan_clean(
        target, bundles=[vendor.bundle_id], entities=[("customer", "acme"), ("reseller", "reseller-r")]
    )
    assert plan.kept == [] and sorted(plan.closes) == sorted(
        [vendor.bundle_id, acme.bundle_id, reseller.bundle_id]
    )
    assert plan.unlink["customers.i_parent"] == 2
    run_clean(target, plan)
    assert_same(snapshot(target, "r2"), s0)
    assert loads(target) == set()
    with target.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tracking.ledger_table)).scalar_one() == 0


def test_a_shared_row_another_customer_uses_survives(
    source: sa.Engine, target: sa.Engine, tmp_path: Path
) -> None:
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    bravo = export_root(source, "customer", "bravo", tmp_path, options=OPTIONS)
    distri = export_root(source, "customer", "distri", tmp_path, options=OPTIONS)
    load_bundle(target, vendor.path)
    s1 = snapshot(target, "r2")
    load_bundle(target, bravo.path)  # creates product Home SIP, tariff T-Other, destination 90
    load_bundle(target, distri.path)  # reuses them
    s2 = snapshot(target, "r2")
    created = {(t, pk) for t, pk, action in ledger(target, bravo.bundle_id) if action == "created"}

    plan = plan_clean(target, entities=[("customer", "bravo")])
    kept = {(k.table, k.label) for k in plan.kept}
    assert {("products", "'Home SIP'"), ("tariffs", "'T-Other'"), ("destinations", "'90'")} <= kept
    assert {k.table for k in plan.kept} == {
        "products",
        "product_rating_entries",
        "tariffs",
        "rates",
        "destinations",
    }
    home = plan.kept[0]
    assert (home.table, home.label, home.held_from_outside) == ("products", "'Home SIP'", True)
    assert (
        f"still referenced by accounts 'distri-1' (transferred by bundle {distri.bundle_id}, not selected)"
        in (home.reason)
    )
    assert home.line().startswith("kept products 'Home SIP': still referenced by accounts")
    tariff = next(k for k in plan.kept if k.table == "tariffs")
    assert "(kept)" in tariff.reason and not tariff.held_from_outside
    assert plan.closes == [] and plan.partly == {bravo.bundle_id: 5}
    run_clean(target, plan)
    assert_same(snapshot(target, "r2"), without(s2, created - kept_keys(plan)))
    assert dangling(target, graph_for_release("r2")) == []
    assert bravo.bundle_id in loads(target)  # it keeps created rows: its record stays
    assert {(t, pk) for t, pk, a in ledger(target, bravo.bundle_id) if a == "created"} == kept_keys(plan)

    # the other customer goes (it reused the shared rows: they stay), then the rest of the first bundle
    plan = plan_clean(target, entities=[("customer", "distri")])
    assert plan.kept == [] and "products" not in plan.tables and plan.closes == [distri.bundle_id]
    run_clean(target, plan)
    plan = plan_clean(target, bundles=[bravo.bundle_id])
    assert plan.tables == {
        "rates": 1,
        "product_rating_entries": 1,
        "products": 1,
        "tariffs": 1,
        "destinations": 1,
    }
    assert plan.closes == [bravo.bundle_id]
    run_clean(target, plan)
    assert_same(snapshot(target, "r2"), s1)
    assert loads(target) == {vendor.bundle_id}


def test_reused_rows_and_rows_never_transferred_stay(
    source: sa.Engine, new_db: Any, dialect: str, tmp_path: Path
) -> None:
    native = {"tariffs": [ROWS["tariffs"][0]], "access_levels": [ROWS["access_levels"][1]]}
    target = fixture.build_target(new_db(dialect), "r2", shared=native)
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    load_bundle(target, vendor.path)
    s1 = snapshot(target, "r2")
    sidecar = tmp_path / "decisions.json"
    sidecar.write_text(json.dumps({"format": "bundler-decisions", "version": 1, "default": "reuse"}))
    load_bundle(target, acme.path, decisions=sidecar)  # the target's own T-Retail is reused

    with pytest.raises(
        CleanRefused, match=rf"tariff 'T-Retail' .* was not created by a load: bundle {acme.bundle_id} reused"
    ):
        plan_clean(target, entities=[("tariff", "T-Retail")])
    with pytest.raises(
        CleanRefused, match=r"access level 'Unused level' .* was never transferred into this target"
    ):
        plan_clean(target, entities=[("access_level", "Unused level")])
    with pytest.raises(RootError, match=r"no tariff 'T-Other' in the target"):
        plan_clean(target, entities=[("tariff", "T-Other")])
    with pytest.raises(RootError, match=r"customers 'acme' is not a distributor") as wrong:
        plan_clean(target, entities=[("distributor", "acme")])
    assert wrong.value.hint is not None and "--kind customer" in wrong.value.hint
    with pytest.raises(
        SpecError, match=r"no entity kind 'gadget' \(known kinds: access_level, cpe, customer"
    ):
        plan_clean(target, entities=[("gadget", "x")])
    with pytest.raises(CleanRefused, match="bundle nope was never loaded into this target"):
        plan_clean(target, bundles=["nope"])
    with pytest.raises(UsageError, match="name what to clean"):
        plan_clean(target)

    run_clean(target, plan_clean(target, entities=[("customer", "acme")]))
    assert_same(snapshot(target, "r2"), s1)  # the reused tariff and the native access level are untouched

    # the target's own data starts using a row the load created: that row stays, and says why
    load_bundle(target, acme.path, decisions=sidecar)
    with target.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (i_customer, name, i_customer_type, iso_4217, i_acl, i_taxation_method, "
                "i_billing_period, bill_status, balance, creation_date) "
                "SELECT 900, 'native', 1, 'USD', i_acl, 101, 4, 'O', 0, creation_date FROM access_levels, "
                "(SELECT creation_date FROM customers WHERE name = 'acme') c WHERE access_levels.name = 'Customer self-care'"
            )
        )
    s3 = snapshot(target, "r2")
    created = {(t, pk) for t, pk, action in ledger(target, acme.bundle_id) if action == "created"}
    plan = plan_clean(target, entities=[("customer", "acme")])
    assert [k.line() for k in plan.kept] == [
        "kept access_levels 'Customer self-care': still referenced by customers 'native' (not transferred)"
    ]
    assert plan.kept[0].held_from_outside and plan.partly == {acme.bundle_id: 1}
    run_clean(target, plan)
    assert_same(snapshot(target, "r2"), without(s3, created - kept_keys(plan)))


def test_side_is_stated_or_inferred(source: sa.Engine, target: sa.Engine, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="recorded neither exports nor loads"):
        plan_clean(target, entities=[("customer", "acme")])
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    load_bundle(target, vendor.path)
    load_bundle(target, acme.path)
    assert plan_clean(source, entities=[("customer", "acme")]).side == "source"
    with target.begin() as conn:  # a target that also exported: a reverse transfer does not count
        conn.execute(
            tracking.exports_table.insert().values(
                bundle_id="reverse-x",
                kind="reverse",
                usage_mode="none",
                marked=0,
                status="done",
                started_at=NOW,
            )
        )
    assert plan_clean(target, entities=[("customer", "acme")]).side == "target"
    with target.begin() as conn:  # one that exported a customer of its own: the operator says
        conn.execute(
            tracking.exports_table.insert().values(
                bundle_id="customer-x",
                kind="customer",
                usage_mode="none",
                marked=1,
                status="done",
                started_at=NOW,
            )
        )
    with pytest.raises(UsageError, match=r"cannot tell the side: .* 1 export\(s\) and 2 load\(s\)") as exc:
        plan_clean(target, entities=[("customer", "acme")])
    assert "--side source or --side target" in str(exc.value.hint)
    plan = plan_clean(target, bundles=[acme.bundle_id])  # a bundle id names its side
    assert plan.side == "target" and "recorded as a load" in plan.side_reason
    assert plan_clean(target, entities=[("customer", "acme")], side="target").side_reason == "stated"
    with pytest.raises(CleanRefused, match="was never exported from this source"):
        plan_clean(target, entities=[("customer", "acme")], side="source")


def test_entities_of_every_kind_on_the_target(source: sa.Engine, target: sa.Engine, tmp_path: Path) -> None:
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    load_bundle(target, vendor.path)
    load_bundle(target, acme.path)
    before = snapshot(target, "r2")

    plan = plan_clean(target, entities=[("sim_card", "8944000000000000001"), ("cpe", "00:15:65:00:00:01")])
    assert plan.tables == {"cpe_inventory": 1, "sim_cards": 1} and plan.kept == []
    assert plan.closes == [] and acme.bundle_id in plan.partly
    run_clean(target, plan)
    after = snapshot(target, "r2")
    assert len(after["sim_cards"]) == len(before["sim_cards"]) - 1
    assert len(after["cpe_inventory"]) == len(before["cpe_inventory"]) - 1

    # still in use: kept, and what holds each is named
    for kind, ident, holder in [
        (
            "did_number",
            "442071230001",
            f"did_assignments i_did_number=(number='442071230001'), assigned_from='2026-01-01 00:00:00.000000' (transferred by bundle {acme.bundle_id}, not selected)",
        ),
        ("access_level", "Customer self-care", "customers 'acme' (transferred by bundle"),
        ("product", "Business SIP", "accounts 'acme-1' (transferred by bundle"),
        ("tariff", "T-Retail", "product_rating_entries"),
        ("vendor", "Carrier Ä", "still referenced by vendor_did_batches 'A-DIDs' (kept)"),
    ]:
        plan = plan_clean(target, entities=[(kind, ident)])
        assert plan.rows == 0, (kind, plan.tables)
        named = plan.kept[0]  # the named row comes first
        assert named.table == graph_for_release("r2").entity(kind).table, named.line()
        assert holder in named.reason, named.line()
        causes = [k for k in plan.kept if k.held_from_outside]
        assert causes and all("transferred by bundle" in k.reason for k in causes)
    # with the customer gone, the DID number can go (the rest of the vendor bundle stays)
    run_clean(target, plan_clean(target, entities=[("customer", "acme")]))
    plan = plan_clean(target, entities=[("did_number", "442071230001")])
    assert plan.tables == {"did_numbers": 1} and plan.partly == {
        vendor.bundle_id: plan.partly[vendor.bundle_id]
    }
    run_clean(target, plan)
    assert dangling(target, graph_for_release("r2")) == []


# -- source ----------------------------------------------------------------------------------------


def test_source_loses_exactly_what_was_exported(source: sa.Engine, tmp_path: Path) -> None:
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    graph = graph_for_release("r1")
    s = snapshot(source, "r1")

    plan = plan_clean(source, entities=[("customer", "acme")])
    assert plan.side == "source" and plan.side_reason.startswith("inferred")
    assert plan.tables["xdrs"] == 5 and plan.tables["accounts"] == 3 and plan.closes == [acme.bundle_id]
    product = next(k for k in plan.kept if k.table == "products")
    assert product.label == "'Business SIP'" and "accounts 'reseller-own-1' (not exported)" in product.reason
    run_clean(source, plan)
    assert_same(snapshot(source, "r1"), without(s, bundle_rows(acme) - kept_keys(plan)))
    assert dangling(source, graph) == []
    assert export_status(source, acme.bundle_id) == "cleaned"
    marks = tracking.export_marks_table
    with source.connect() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(marks.c.bundle_id == acme.bundle_id)
        ).scalar_one()
    assert left == 0

    s = snapshot(source, "r1")
    plan = plan_clean(source, bundles=[vendor.bundle_id])
    assert plan.closes == [vendor.bundle_id] and plan.tables["vendor_xdrs"] == 2
    run_clean(source, plan)
    assert_same(snapshot(source, "r1"), without(s, bundle_rows(vendor) - kept_keys(plan)))
    assert dangling(source, graph) == []
    with pytest.raises(RootError, match="no customer 'acme' in the source"):
        plan_clean(source, entities=[("customer", "acme")])


def test_source_keeps_usage_that_never_travelled(source: sa.Engine, tmp_path: Path) -> None:
    first = export_root(source, "customer", "bravo", tmp_path, options=ExportOptions(now=NOW, xdrs="none"))
    plan = plan_clean(source, entities=[("customer", "bravo")])
    assert plan.rows == 0 and plan.closes == []
    account = next(k for k in plan.kept if k.table == "accounts")
    assert account.held_from_outside
    assert (
        "still referenced by xdrs 'call-6' (not exported: outside the exported usage window)"
        in account.reason
    )
    assert "belongs to kept customers 'bravo'" in next(k for k in plan.kept if k.table == "payments").reason
    # the usage follows in a second bundle: now everything of bravo travelled
    usage = export_root(
        source, "customer", "bravo", tmp_path, options=ExportOptions(now=NOW, xdrs="all", usage_only=True)
    )
    plan = plan_clean(source, entities=[("customer", "bravo")])
    assert plan.tables["xdrs"] == 2 and plan.tables["customers"] == 1
    assert plan.selected[0].bundles == tuple(sorted([first.bundle_id, usage.bundle_id]))
    # the usage bundle alone: its usage rows only
    alone = plan_clean(source, bundles=[usage.bundle_id])
    assert alone.tables == {"xdrs": 2} and alone.closes == []
    run_clean(source, plan)
    assert dangling(source, graph_for_release("r1")) == []
    assert {export_status(source, b) for b in (first.bundle_id, usage.bundle_id)} == {"cleaned"}


def test_source_refusals(source: sa.Engine, tmp_path: Path) -> None:
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    audit = export_root(source, "customer", "bravo", tmp_path, options=ExportOptions(now=NOW, mark=False))
    with pytest.raises(
        CleanRefused, match=r"customer 'bravo' \(customers 5\) was never exported from this source"
    ):
        plan_clean(source, entities=[("customer", "bravo")])
    # an audit copy (--no-mark) leaves no record in the source: nothing of it to clean
    with pytest.raises(CleanRefused, match=rf"bundle {audit.bundle_id} was never exported from this source"):
        plan_clean(source, bundles=[audit.bundle_id])
    with pytest.raises(CleanRefused, match=r"tariff 'T-Retail' .* is shared configuration"):
        plan_clean(source, entities=[("tariff", "T-Retail")])
    configuration = export_config(source, [ConfigSelection("tariffs")], tmp_path)
    with pytest.raises(CleanRefused, match="carries configuration, which stays in use in the source"):
        plan_clean(source, bundles=[configuration.bundle_id])
    with pytest.raises(CleanRefused, match="was never exported from this source"):
        plan_clean(source, bundles=["nope"])
    # a part of an exported root can go on its own
    plan = plan_clean(source, entities=[("sim_card", "8944000000000000001")])
    assert plan.tables == {"sim_cards": 1} and plan.closes == []
    # a root made active again is not cleaned; nor one whose export was undone
    with source.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET bill_status = 'O' WHERE name = 'acme'"))
    with pytest.raises(CleanRefused, match=r"is not Exported in the source \(bill_status = 'O'\)"):
        plan_clean(source, entities=[("customer", "acme")])
    with source.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET bill_status = 'E' WHERE name = 'acme'"))
    restore_export(source, acme.bundle_id, "not loaded")
    with pytest.raises(CleanRefused, match="never exported"):
        plan_clean(source, entities=[("customer", "acme")])
    with pytest.raises(CleanRefused, match=rf"export {acme.bundle_id} is restored, not done"):
        plan_clean(source, bundles=[acme.bundle_id])


# -- the command -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["sqlite"])
def test_command_dry_run_prompt_json_and_exit_codes(
    source: sa.Engine, target: sa.Engine, tmp_path: Path, dialect: str, plans: list[Any]
) -> None:
    from bundler.cli import BundlerGroup

    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    load_bundle(target, vendor.path)
    s1 = snapshot(target, "r2")
    load_bundle(target, acme.path)
    s2 = snapshot(target, "r2")
    url = target.url.render_as_string(hide_password=False)
    runner = CliRunner()

    dry = runner.invoke(clean_command, ["--db", url, "--customer", "acme", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "side: target (inferred: this database recorded 2 load(s) and no export)" in dry.stdout
    assert "xdrs" in dry.stdout and "dry run: nothing was removed" in dry.stdout
    assert f"bookkeeping: forget load {acme.bundle_id}" in dry.stdout
    assert_same(snapshot(target, "r2"), s2)

    asked = runner.invoke(clean_command, ["--db", url, "--customer", "acme"], input="n\n")
    assert asked.exit_code == 1 and "remove" in asked.stderr and "?" in asked.stderr
    assert_same(snapshot(target, "r2"), s2)

    dry_json = runner.invoke(
        clean_command, ["--db", url, "--kind", "customer", "--id", "acme", "--dry-run", "--json"]
    )
    assert json.loads(dry_json.stdout)["outcome"] == "dry-run"

    yes = runner.invoke(clean_command, ["--db", url, "--customer", "acme"], input="y\n")
    assert yes.exit_code == 0, yes.output
    assert f"forgot load(s): {acme.bundle_id}" in yes.stdout
    assert_same(snapshot(target, "r2"), s1)

    load_bundle(target, acme.path)
    plans.clear()
    done = runner.invoke(clean_command, ["--db", url, "--bundle", acme.bundle_id, "--yes", "--json"])
    assert done.exit_code == 0, done.output
    assert len(plans) == 1  # with --yes the plan is made once, inside the transaction that carries it out
    summary = json.loads(done.stdout)
    assert summary["outcome"] == "cleaned" and summary["side"] == "target"
    assert summary["deleted"]["xdrs"] == 5 and summary["forgot_loads"] == [acme.bundle_id]
    assert_same(snapshot(target, "r2"), s1)

    group = BundlerGroup("bundler")  # as registered in bundler.cli: errors become a line and a code
    group.add_command(clean_command)
    refused = runner.invoke(group, ["clean", "--db", url, "--customer", "acme", "--yes"])
    assert refused.exit_code == 1 and "no customer 'acme' in the target" in refused.stderr
    unknown = runner.invoke(group, ["clean", "--db", url, "--kind", "gadget", "--id", "1"])
    assert unknown.exit_code == 2 and "known kinds: access_level" in unknown.stderr
    unpaired = runner.invoke(group, ["clean", "--db", url, "--kind", "tariff"])
    assert unpaired.exit_code == 2 and "--kind needs --id" in unpaired.stderr
    helped = runner.invoke(clean_command, ["--help"])
    assert "Example:" in helped.output and "--dry-run" in helped.output


# -- finishing the job ------------------------------------------------------------------------------


def test_a_cleaned_customer_loads_again_reusing_what_was_kept(
    source: sa.Engine, target: sa.Engine, tmp_path: Path
) -> None:
    from tests.load.compare import differences

    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    bravo = export_root(source, "customer", "bravo", tmp_path, options=OPTIONS)
    distri = export_root(source, "customer", "distri", tmp_path, options=OPTIONS)
    for bundle in (vendor, bravo, distri):
        load_bundle(target, bundle.path)
    before = {(t, a) for t, _, a in ledger(target, bravo.bundle_id)}
    counted = len(ledger(target, bravo.bundle_id))
    plan = plan_clean(target, entities=[("customer", "bravo")])
    assert plan.kept and "customers" in plan.tables  # the shared rows distri uses stay
    run_clean(target, plan)
    kept = {(t, pk) for t, pk, a in ledger(target, bravo.bundle_id) if a == "created"}
    assert kept == kept_keys(plan)

    again = load_bundle(target, bravo.path)

    assert again.outcome == "loaded"
    assert again.tables["products"].reused == 1 and again.tables["products"].created == 0  # the kept one
    assert {(t, a) for t, _, a in ledger(target, bravo.bundle_id)} == before
    assert len(ledger(target, bravo.bundle_id)) == counted
    assert kept <= {(t, pk) for t, pk, a in ledger(target, bravo.bundle_id) if a == "created"}
    check = export_root(
        target,
        "customer",
        "bravo",
        tmp_path / "check",
        options=ExportOptions(now=NOW, xdrs="all", mark=False),
    )
    assert differences(bravo.path, target, check.path, graph_for_release("r2")) == []
    assert dangling(target, graph_for_release("r2")) == []
    assert load_bundle(target, bravo.path).outcome == "already-loaded"


def test_source_clean_of_a_migrated_root_takes_all_its_usage(
    source: sa.Engine, target: sa.Engine, tmp_path: Path, plans: list[Any]
) -> None:
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    bravo = export_root(source, "customer", "bravo", tmp_path, options=ExportOptions(now=NOW, xdrs="none"))
    s = snapshot(source, "r1")
    # the target does not have it yet: its usage outside the window holds its accounts, and the way out is named
    plan = plan_clean(source, entities=[("customer", "bravo")], target=target)
    assert plan.rows == 0 and plan.kept
    out = CliRunner().invoke(
        clean_command,
        ["--db", source.url.render_as_string(hide_password=False), "--customer", "bravo", "--dry-run"],
    )
    assert (
        out.exit_code == 0
        and "add --target TARGET_URL (where the root is loaded) or --all-usage" in out.output
    )
    load_bundle(target, vendor.path)
    load_bundle(target, bravo.path)
    plans.clear()

    plan = plan_clean(source, entities=[("customer", "bravo")], target=target)

    assert len(plans) == 1 and plan.request.loaded == (bravo.bundle_id,)  # the target asked while planning

    r1 = graph_for_release("r1")
    assert all(r1.table(k.table).is_shared for k in plan.kept)  # only configuration others use stays
    assert plan.tables["xdrs"] == 2 and plan.closes == [bravo.bundle_id]
    result = run_clean(source, plan)
    assert result.deleted["xdrs"] == 2 and result.deleted["customers"] == 1
    after = snapshot(source, "r1")
    owned = {(t, pk) for t, pk in bundle_rows(bravo) if r1.table(t).scope == "owned"}
    assert owned and all(pk not in after[t] for t, pk in owned)  # its whole owned closure is gone
    assert sum(len(v) for v in s.values()) - sum(len(v) for v in after.values()) == result.rows
    assert dangling(source, r1) == []
    assert export_status(source, bravo.bundle_id) == "cleaned"
    # a default export (the current period's usage): acme's October xDRs never travelled and hold
    # its accounts, until the flag says to take them, or the target has the root
    acme = export_root(source, "customer", "acme", tmp_path, options=ExportOptions(now=NOW))
    assert acme.manifest.tables["xdrs"].rows == 3
    held = plan_clean(source, entities=[("customer", "acme")])
    assert held.rows == 0  # the accounts stay, and with them the usage that travelled
    assert any("outside the exported usage window" in k.reason for k in held.kept)
    plan = plan_clean(source, bundles=[acme.bundle_id], all_usage=True)
    assert all(r1.table(k.table).is_shared for k in plan.kept)
    assert plan.tables["xdrs"] == 5 and plan.closes == [acme.bundle_id]
    load_bundle(target, acme.path)
    plan = plan_clean(source, entities=[("customer", "acme")], target=target)
    assert all(r1.table(k.table).is_shared for k in plan.kept)
    assert plan.tables["xdrs"] == 5 and plan.closes == [acme.bundle_id]
    run_clean(source, plan)
    after = snapshot(source, "r1")
    owned = {(t, pk) for t, pk in bundle_rows(acme) if r1.table(t).scope == "owned"}
    assert owned and all(pk not in after[t] for t, pk in owned)
    with source.connect() as conn:  # the older xDRs too: nothing of acme's accounts is left
        assert conn.execute(sa.text("SELECT count(*) FROM xdrs WHERE i_account IN (1, 2)")).scalar() == 0
    assert dangling(source, r1) == []


def open_rows(engine: sa.Engine) -> list[tuple[str, str, str, str]]:
    """Every row of ``bundler_deferred`` (load, table, target pk, column), raw."""
    deferred = tracking.deferred_table
    with engine.connect() as conn:
        return [
            (r.bundle_id, r.table_name, r.target_pk, r.column_name)
            for r in conn.execute(sa.select(deferred).order_by(deferred.c.table_name, deferred.c.target_pk))
        ]


def test_a_clean_forgets_the_open_references_of_what_it_removed(
    source: sa.Engine, target: sa.Engine, tmp_path: Path
) -> None:
    """Bravo's extension is on acme's line: loaded before acme, the reference is left open. A clean
    of bravo that keeps what distri uses removes the extension and its open reference with it; the
    same bundle then loads again, and acme's load completes what is open, exact."""
    from bundler.load.crossroot import open_references
    from tests.load.test_crossroot import cross, exact

    cross(source, [("bravo", "acme")])
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS)
    bundles = {
        n: export_root(source, "customer", n, tmp_path, options=OPTIONS) for n in ("bravo", "distri", "acme")
    }
    for bundle in (vendor, bundles["bravo"], bundles["distri"]):
        load_bundle(target, bundle.path)
    left = open_rows(target)
    assert {(b, t, c) for b, t, _, c in left} == {(bundles["bravo"].bundle_id, "extensions", "i_account")}

    plan = plan_clean(target, entities=[("customer", "bravo")])
    assert plan.kept and "extensions" in plan.tables  # the shared rows distri uses stay
    run_clean(target, plan)

    assert open_rows(target) == []  # what was removed leaves nothing open behind
    again = load_bundle(target, bundles["bravo"].path)
    assert again.outcome == "loaded" and again.tables["products"].reused == 1
    with target.connect() as conn:
        assert [(o.table, o.column) for o in open_references(conn)] == [("extensions", "i_account")]
    load_bundle(target, bundles["acme"].path)
    exact(target, {n: b.path for n, b in bundles.items()}, tmp_path / "check")
    assert open_rows(target) == []


def test_a_target_clean_reaches_usage_rows_by_their_target_key(
    source: sa.Engine, target: sa.Engine, tmp_path: Path, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clean selects usage rows through the ledger's runs of target keys (written out, or joined
    by an index as for many loads), never by casting each usage key to text against the ledger
    (issue 16: more than 6 minutes for 1M xDRs on PostgreSQL)."""
    from bundler import ledger as ledger_module
    from bundler.clean.model import CleanRequest
    from bundler.clean.plan import CleanSet
    from bundler.clean.target import TargetSide

    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS).path)
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS)
    load_bundle(target, acme.path)
    graph = graph_for_release("r2")
    xdrs = table_clause(graph.table("xdrs"))
    with target.connect() as conn:
        indexes = {
            name: {tuple(i["column_names"]) for i in sa.inspect(conn).get_indexes(name)}
            for name in ("bundler_ledger", "bundler_ledger_ranges")
        }
        assert ("table_name", "target_pk") in indexes["bundler_ledger"]
        assert ("table_name", "target_first") in indexes["bundler_ledger_ranges"]
        chosen: dict[int, list[int]] = {}
        for inline in (ledger_module.INLINE_RANGES, 0):
            monkeypatch.setattr(ledger_module, "INLINE_RANGES", inline)
            side = TargetSide(conn, graph)
            side.resolve(CleanRequest(entities=(("customer", "acme"),)))
            cleanset = CleanSet(side)
            cleanset.merge()
            clauses = list(cleanset.usage_clauses("xdrs"))
            sql = " ".join(
                str(c.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})) for c in clauses
            )
            assert "CAST(xdrs.i_xdr" not in sql.replace('"', "").replace("`", "")
            assert ("bundler_ledger_ranges" in sql) == (inline == 0), sql
            chosen[inline] = sorted(
                v for c in clauses for v in conn.execute(sa.select(xdrs.c.i_xdr).where(c)).scalars()
            )
            if dialect == "postgresql" and inline == 0:  # the runs are reached by an index, not read whole
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                query = sa.select(xdrs.c.i_xdr).where(*clauses)
                compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
                plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {compiled}").scalars())
                # by an index (on tables this small the planner may pick either of its two)
                scans = [
                    line for line in plan.splitlines() if "Scan" in line and "bundler_ledger_ranges" in line
                ]
                assert scans and not any("Seq Scan" in line for line in scans), plan
    assert chosen[0] == chosen[ledger_module.INLINE_RANGES] and len(chosen[0]) == 5
