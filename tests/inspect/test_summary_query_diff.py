"""``inspect summary``, ``inspect query`` and ``inspect diff`` over exported fixture bundles."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import click
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.bundle_pack import pack
from bundler.cli import BundlerGroup
from bundler.errors import ExitCode, UsageError
from bundler.inspect import diff, expand_bundle_paths, query, query_table, summarize
from bundler.inspect.commands import inspect
from tests.inspect import export_fixture_bundles, read_manifest


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_fixture_bundles(tmp_path_factory.mktemp("inspect-sqd"))


def cli() -> click.Group:
    group = BundlerGroup("bundler")
    group.add_command(inspect)
    return group


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli(), ["inspect", *args])
    return result.exit_code, result.stdout, result.stderr


# -- finding bundles ---------------------------------------------------------------------------------


def test_expand_globs_and_folders(bundles: dict[str, Path]) -> None:
    folder = bundles["customer"].parent
    every = sorted(folder.glob("*.bundle"))
    assert expand_bundle_paths([str(folder / "*.bundle")]) == every
    assert expand_bundle_paths([folder]) == every  # a folder of bundles stands for them
    assert expand_bundle_paths([bundles["vendor"], str(folder / "vendor-*")]) == [bundles["vendor"]]
    with pytest.raises(UsageError, match="no bundle matches"):
        expand_bundle_paths([str(folder / "nothing-*.bundle")])


# -- summary -----------------------------------------------------------------------------------------


def test_summary_of_one_bundle(bundles: dict[str, Path]) -> None:
    (s,) = summarize([bundles["customer"]]).bundles
    manifest = read_manifest(bundles["customer"])
    assert s.kind == "customer"
    assert s.bundle_id == manifest["bundle_id"]
    assert s.root_text == "customers name='acme' (source pk 4)"
    assert s.source["release"] == "r1" and s.source["dialect"] == "sqlite"
    assert s.window_text == "current: [2026-11-01 00:00:00, 2026-12-01 00:00:00), monthly period"
    assert {t.name: (t.rows, t.bytes) for t in s.tables} == {
        name: (e["rows"], e["bytes"]) for name, e in manifest["tables"].items()
    }
    assert s.rows == manifest["totals"]["rows"]
    prerequisites = {p.table: (p.column, p.scope, p.rows) for p in s.prerequisites}
    assert prerequisites["services"] == ("i_service", "prerequisite", 2)
    assert prerequisites["did_numbers"] == ("i_did_number", "owned", 1)
    # the DID belongs to the vendor's batch: another root, whose load completes the reference
    assert [(o.table, o.column, o.keys) for o in s.other_roots or []] == [
        ("did_numbers", "i_did_number", ("number='442071230001'",))
    ]
    assert s.usage_span == {
        "xdrs": {"column": "bill_time", "first": "2026-11-02 10:00:00", "last": "2026-11-14 23:59:00"}
    }
    assert s.depends_on == []


def test_summary_of_several_bundles_with_totals(bundles: dict[str, Path]) -> None:
    paths = [bundles[n] for n in ("customer", "usage", "config", "vendor")]
    result = summarize(paths)
    assert [b.kind for b in result.bundles] == ["customer", "usage", "config", "vendor"]
    usage = result.bundles[1]
    assert usage.depends_on == [read_manifest(bundles["customer-nousage"])["bundle_id"]]
    assert usage.window_text == "all (every usage row)"
    assert result.bundles[2].root_text == "config: products"
    totals = result.totals
    assert totals["bundles"] == 4
    assert totals["kinds"] == {"config": 1, "customer": 1, "usage": 1, "vendor": 1}
    # a usage bundle needs its root's owned rows too (the manifest does not say whose they are)
    assert [o.table for o in usage.other_roots or []] == ["accounts", "invoices"]
    assert result.bundles[2].other_roots == [] and result.bundles[3].other_roots == []
    assert totals["rows"] == sum(read_manifest(p)["totals"]["rows"] for p in paths)
    assert totals["tables"]["xdrs"] == {
        "bundles": 2,
        "rows": 3 + 5,
        "bytes": sum(read_manifest(p)["tables"]["xdrs"]["bytes"] for p in paths[:2]),
    }


def test_summary_of_a_packed_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    packed = pack(bundles["vendor"], tmp_path)
    (s,) = summarize([packed]).bundles
    assert s.path == str(packed)
    assert s.root_text == "vendors name='Carrier Ä' (source pk 1)"
    assert s.usage_span["vendor_xdrs"]["first"] == "2026-11-02 09:01:00"


def test_cli_summary_table_and_json(bundles: dict[str, Path]) -> None:
    folder = bundles["customer"].parent
    code, out, _ = run("summary", str(bundles["customer"]))
    assert code == 0
    for text in ("customers name='acme' (source pk 4)", "xdrs", "usage", "needs in the target", "services"):
        assert text in out
    assert "rows of other roots it references" in out
    assert "did_numbers by i_did_number: 1 row(s): number='442071230001'" in out
    code, out, _ = run("summary", str(bundles["vendor"]))
    assert code == 0 and "other roots" not in out
    code, out, _ = run("summary", str(folder / "*.bundle"))
    assert code == 0
    assert f"totals: {len(list(folder.glob('*.bundle')))} bundles" in out
    assert "customers name='reseller-r' (source pk 1)" in out  # the one-line overview
    assert "needs in the target" not in out  # details only with --full
    code, out, _ = run("summary", "--full", str(folder / "*.bundle"))
    assert code == 0
    assert out.count("needs in the target") == len(list(folder.glob("*.bundle")))
    code, out, _ = run("summary", "--json", str(folder / "*.bundle"))
    assert code == 0
    doc = json.loads(out)
    assert doc["totals"]["bundles"] == len(doc["bundles"]) == len(list(folder.glob("*.bundle")))
    assert {b["kind"] for b in doc["bundles"]} == {"customer", "usage", "config", "vendor", "reseller"}
    customer = next(
        b for b in doc["bundles"] if b["bundle_id"] == read_manifest(bundles["customer"])["bundle_id"]
    )
    assert customer["other_roots"] == {
        "did_numbers": {"column": "i_did_number", "rows": 1, "keys": ["number='442071230001'"]}
    }


# -- query -------------------------------------------------------------------------------------------


def test_query_one_bundle(bundles: dict[str, Path]) -> None:
    table = query_table(
        [bundles["customer"]],
        "SELECT i_account, count(*) AS n, sum(charged_amount) AS s FROM xdrs GROUP BY ALL",
    )
    assert table.column_names == ["i_account", "n", "s"]  # one bundle: no bundle_id column
    assert table.to_pylist() == [{"i_account": 1, "n": 3, "s": Decimal("0.03702")}]


def test_query_several_bundles_has_bundle_id(bundles: dict[str, Path]) -> None:
    paths = [bundles["customer"], bundles["reseller"], bundles["usage"]]
    table = query_table(paths, "SELECT bundle_id, count(*) AS n FROM xdrs GROUP BY ALL ORDER BY n")
    ids = [read_manifest(p)["bundle_id"] for p in paths]
    assert table.to_pylist() == [
        {"bundle_id": ids[1], "n": 2},
        {"bundle_id": ids[0], "n": 3},
        {"bundle_id": ids[2], "n": 5},
    ]
    # a table only some bundles carry holds only their rows
    accounts = query_table(paths, "SELECT DISTINCT bundle_id FROM accounts ORDER BY 1").column("bundle_id")
    assert accounts.to_pylist() == sorted([ids[0], ids[1]])


def test_query_tables_not_carried_are_empty_views(bundles: dict[str, Path]) -> None:
    table = query_table([bundles["customer"]], "SELECT count(*) AS n FROM vendor_xdrs")
    assert table.to_pylist() == [{"n": 0}]


def test_query_packed_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    packed = pack(bundles["customer"], tmp_path)
    assert query_table([packed], "SELECT name FROM customers").to_pylist() == [{"name": "acme"}]


def test_query_streams_csv_and_json(bundles: dict[str, Path]) -> None:
    sql = "SELECT i_xdr, cli, cld, bill_time, charged_amount FROM xdrs ORDER BY i_xdr"
    out = io.StringIO()
    result = query([bundles["customer"]], sql, out, fmt="csv")
    assert result.rows_total == result.rows_written == 3
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["i_xdr", "cli", "cld", "bill_time", "charged_amount"]
    assert rows[1] == ["1", "442070000000", "49300000000", "2026-11-02 10:00:00.000000", "0.01234"]
    assert rows[3][1:3] == ["", ""]  # xDR 3: empty cli, NULL cld
    out = io.StringIO()
    result = query([bundles["customer"]], sql, out, fmt="json", limit=2)
    assert (result.rows_written, result.rows_total) == (2, 3)
    doc = json.loads(out.getvalue())
    assert doc == [
        {"i_xdr": 1, "cli": "442070000000", "cld": "49300000000", "bill_time": "2026-11-02 10:00:00.000000",
         "charged_amount": "0.01234"},
        {"i_xdr": 2, "cli": "442070000000", "cld": "49300000000", "bill_time": "2026-11-03 11:00:00.000000",
         "charged_amount": "0.01234"},
    ]  # fmt: skip


def test_cli_query_formats(bundles: dict[str, Path]) -> None:
    folder = bundles["customer"].parent
    sql = "SELECT bundle_id, count(*) AS n FROM xdrs GROUP BY ALL ORDER BY n"
    code, out, err = run("query", str(folder / "*.bundle"), sql, "--format", "csv")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "bundle_id,n"
    assert [line.split(",")[1] for line in lines[1:]] == ["2", "3", "5"]  # reseller, customer, usage
    assert "3 row(s)" in err
    code, out, _ = run(
        "query", str(bundles["customer"]), "SELECT name, balance FROM customers", "--format", "json"
    )
    assert code == 0
    assert json.loads(out) == [{"name": "acme", "balance": "12.34567"}]
    code, out, _ = run("query", str(bundles["customer"]), "SELECT name, balance, credit_limit FROM customers")
    assert code == 0
    assert "name" in out and "acme" in out and "12.34567" in out
    code, out, err = run("query", str(bundles["customer"]), "SELECT i_xdr FROM xdrs", "--limit", "1")
    assert code == 0
    assert "showing 1 of 3 rows" in err


def test_cli_query_errors(bundles: dict[str, Path]) -> None:
    code, _, err = run("query", str(bundles["customer"]), "SELECT nope FROM xdrs")
    assert code == ExitCode.USAGE
    assert "the query failed" in err and "nope" in err
    code, _, err = run("query", "SELECT 1")
    assert code == ExitCode.USAGE
    assert "give one or more bundles, then the SQL" in err


# -- diff --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """acme exported, then changed in the source (balance, a new account, a site gone), exported again."""
    from bundler.billing.schema import build_metadata
    from bundler.export import ExportOptions, export_root
    from tests.export.fixture import NOW, _account, build

    work = tmp_path_factory.mktemp("inspect-diff")
    engine = build(f"sqlite:///{work / 'source.db'}")
    try:
        options = ExportOptions(mark=False, now=NOW)
        before = export_root(engine, "customer", "acme", work / "before", options=options).path
        md = build_metadata("r1")
        with engine.begin() as conn:
            customers, accounts, sites = (md.tables[n] for n in ("customers", "accounts", "customer_sites"))
            conn.execute(
                sa.update(customers).where(customers.c.i_customer == 4).values(balance=Decimal("99.5"))
            )
            conn.execute(sa.insert(accounts), [_account(8, "acme-3", 4, 1, balance=Decimal("1.00000"))])
            conn.execute(sa.delete(sites).where(sites.c.i_customer_site == 2))
        after = export_root(engine, "customer", "acme", work / "after", options=options).path
    finally:
        engine.dispose()
    return before, after


def test_diff_added_removed_changed(two_exports: tuple[Path, Path]) -> None:
    before, after = two_exports
    report = diff(before, after)
    assert not report.identical
    differing = {t.table: t for t in report.tables if t.differs}
    assert set(differing) == {"customers", "accounts", "customer_sites"}

    customers = differing["customers"]
    assert (customers.added, customers.removed, customers.changed, customers.unchanged) == (0, 0, 1, 0)
    assert customers.changed_columns == {"balance": 1}
    (change,) = customers.examples
    assert change.change == "changed"
    assert change.key == {"name": "acme"}
    assert change.columns == {"balance": ("12.34567", "99.50000")}

    accounts = differing["accounts"]
    assert (accounts.rows_a, accounts.rows_b) == (3, 4)
    assert (accounts.added, accounts.removed, accounts.changed, accounts.unchanged) == (1, 0, 0, 3)
    assert [(e.change, e.key) for e in accounts.examples] == [("added", {"id": "acme-3"})]

    sites = differing["customer_sites"]
    assert (sites.added, sites.removed, sites.changed, sites.unchanged) == (0, 1, 0, 1)
    # a reference in a natural key stands for the referenced row's natural key
    assert [(e.change, e.key) for e in sites.examples] == [
        ("removed", {"i_customer": {"name": "acme"}, "name": "Branch"})
    ]
    assert sites.matched_by == ["i_customer", "name"]


def test_diff_of_a_bundle_with_itself_and_its_packed_copy(
    two_exports: tuple[Path, Path], tmp_path: Path
) -> None:
    before, _ = two_exports
    report = diff(before, pack(before, tmp_path))
    assert report.identical
    assert all(t.unchanged == t.rows_a == t.rows_b for t in report.tables)


def test_diff_matches_nested_natural_keys_across_bundles(bundles: dict[str, Path]) -> None:
    """The config bundle carries both products' rating entries and rates; acme's only those it uses."""
    report = diff(bundles["config"], bundles["customer"])
    rates = report.table("rates")
    assert (rates.removed, rates.unchanged, rates.added, rates.changed) == (1, 2, 0, 0)
    assert rates.examples[0].key == {
        "effective_from": "2026-01-01 00:00:00.000000",
        "i_dest": {"destination": "90"},
        "i_tariff": {"name": "T-Other"},
    }
    entries = report.table("product_rating_entries")
    assert entries.examples[0].key == {
        "access_code": "SIP",
        "i_product": {"name": "Home SIP"},
        "i_service": {"name": "Voice"},  # a prerequisite: its key comes from the manifest
    }
    assert report.table("xdrs").added == 3


def test_diff_limit_counts_everything(two_exports: tuple[Path, Path], bundles: dict[str, Path]) -> None:
    report = diff(bundles["customer-nousage"], bundles["usage"], limit=2)
    xdrs = report.table("xdrs")
    assert xdrs.added == 5
    assert len(xdrs.examples) == 2


def test_cli_diff(two_exports: tuple[Path, Path]) -> None:
    before, after = two_exports
    code, out, err = run("diff", str(before), str(after))
    assert code == 0
    assert "customers" in out and "balance (1)" in out
    assert "~ name='acme': balance '12.34567' → '99.50000'" in out
    assert "+ id='acme-3'" in out
    assert "- i_customer=(name='acme'), name='Branch'" in out
    assert "the bundles differ" in err
    code, out, _ = run("diff", "--json", str(before), str(after))
    assert code == 0
    doc = json.loads(out)
    assert doc["identical"] is False
    customers = next(t for t in doc["tables"] if t["table"] == "customers")
    assert customers["examples"] == [
        {
            "change": "changed",
            "key": {"name": "acme"},
            "columns": {"balance": {"old": "12.34567", "new": "99.50000"}},
        }
    ]
    code, _, err = run("diff", str(before), str(before))
    assert code == 0 and "the same rows" in err
