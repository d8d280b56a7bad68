"""``inspect verify``: clean bundles of every kind verify; each way of breaking one is caught,
with a message naming the file and the problem; every problem is reported, not only the first."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bundler.bundle import open_bundle
from bundler.bundle_pack import pack
from bundler.cli import BundlerGroup
from bundler.errors import BundleInvalid, ExitCode
from bundler.graph import GRAPHS_DIR
from bundler.inspect import VerifyReport, verify_bundle
from bundler.inspect.commands import inspect
from tests.inspect import (
    copy_bundle,
    drop_table,
    edit_manifest,
    export_fixture_bundles,
    read_manifest,
    rewrite_table,
    set_column,
    write_table,
)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_fixture_bundles(tmp_path_factory.mktemp("inspect-verify"))


@pytest.fixture
def customer(bundles: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of the acme customer bundle (with this month's xDRs), to break."""
    return copy_bundle(bundles["customer"], tmp_path)


def cli() -> click.Group:
    """``bundler`` with only ``inspect``, behind the real error boundary."""
    group = BundlerGroup("bundler")
    group.add_command(inspect)
    return group


def texts(report: VerifyReport) -> list[str]:
    return [str(p) for p in report.problems]


def only(report: VerifyReport, *needles: str) -> str:
    """The single problem line that contains every needle (fails listing all problems otherwise)."""
    lines = [t for t in texts(report) if all(n in t for n in needles)]
    assert len(lines) == 1, f"expected one problem with {needles}, got: {texts(report)}"
    return lines[0]


# -- clean bundles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["customer", "customer-nousage", "usage", "vendor", "reseller", "config"])
def test_clean_bundle_of_every_kind_verifies(bundles: dict[str, Path], name: str) -> None:
    report = verify_bundle(bundles[name])
    assert report.problems == []
    assert report.warnings == []
    assert report.ok
    manifest = read_manifest(bundles[name])
    assert report.tables == len(manifest["tables"])
    assert report.rows == manifest["totals"]["rows"]
    assert report.kind == manifest["kind"]


def test_packed_bundle_verifies(bundles: dict[str, Path], tmp_path: Path) -> None:
    packed = pack(bundles["customer"], tmp_path)
    report = verify_bundle(packed)
    assert report.ok, texts(report)
    assert report.bundle == str(packed)
    assert report.rows == read_manifest(bundles["customer"])["totals"]["rows"]


def test_opened_bundle_is_verified_and_left_open(bundles: dict[str, Path], tmp_path: Path) -> None:
    packed = pack(bundles["customer"], tmp_path)
    with open_bundle(packed) as bundle:
        report = verify_bundle(bundle)
        assert report.ok, texts(report)
        assert report.bundle == str(packed)
        assert report.rows == read_manifest(bundles["customer"])["totals"]["rows"]
        assert bundle.path.is_dir()  # still unpacked: the caller goes on reading what was verified
        assert sum(b.num_rows for b in bundle.iter_batches("xdrs")) == 3
    assert not bundle.path.exists()


def test_verify_with_spec_graph(bundles: dict[str, Path]) -> None:
    assert verify_bundle(bundles["vendor"], spec=GRAPHS_DIR / "r1.json").ok


def test_spec_of_another_release_never_replaces_the_bundles_own_graph(bundles: dict[str, Path]) -> None:
    report = verify_bundle(bundles["vendor"], spec=GRAPHS_DIR / "r2.json")  # an r1 bundle
    assert report.ok, texts(report)
    assert any(
        "describes release r2" in w and "verified against that release's graph" in w for w in report.warnings
    )


# -- the broken bundles of the issue -------------------------------------------------------------------


def test_flipped_byte(customer: Path) -> None:
    path = customer / "tables" / "accounts.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_bundle(customer)
    assert texts(report) == [
        "tables/accounts.parquet: sha256 differs from the manifest (the file was altered)"
    ]
    assert report.problems[0].file == "tables/accounts.parquet"
    assert report.problems[0].table == "accounts"


def test_truncated_parquet_file(customer: Path) -> None:
    path = customer / "tables" / "xdrs.parquet"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    report = verify_bundle(customer)
    line = only(report, "tables/xdrs.parquet")
    assert f"{size // 2} bytes, the manifest says {size}" in line
    assert "truncated" in line


def test_truncated_parquet_file_with_a_matching_manifest(customer: Path) -> None:
    """Someone truncated the file and fixed the checksums: the footer itself is unreadable."""
    from bundler.bundle import sha256_file

    path = customer / "tables" / "xdrs.parquet"
    path.write_bytes(path.read_bytes()[:-100])

    def fix(doc: dict[str, Any]) -> None:
        doc["tables"]["xdrs"].update(bytes=path.stat().st_size, sha256=sha256_file(path))
        doc["totals"]["bytes"] -= 100

    edit_manifest(customer, fix)
    line = only(verify_bundle(customer), "tables/xdrs.parquet")
    assert "not a readable Parquet file" in line


def test_missing_table_file(customer: Path) -> None:
    (customer / "tables" / "invoices.parquet").unlink()
    report = verify_bundle(customer)
    assert "tables/invoices.parquet: listed in the manifest but missing" in texts(report)
    # the xDRs that reference the invoice are not reported as dangling: the table is broken, not absent
    assert len(report.problems) == 1, texts(report)


def test_missing_table_removed_from_the_manifest_too(customer: Path) -> None:
    """A table dropped consistently (file and entry): every reference into it dangles."""
    drop_table(customer, "accounts")
    report = verify_bundle(customer)
    for table, column in [
        ("xdrs", "i_account"),
        ("account_service_features", "i_account"),
        ("did_assignments", "i_account"),
        ("sim_cards", "i_account"),
        ("extensions", "i_account"),
    ]:
        line = only(report, f"tables/{table}.parquet", f"{table}.{column} =")
        assert "accounts (owned) is neither in the bundle nor among its prerequisites" in line
    assert report.problems[0].row is not None


def test_extra_unlisted_file(customer: Path) -> None:
    (customer / "tables" / "extra.parquet").write_bytes(
        (customer / "tables" / "customers.parquet").read_bytes()
    )
    report = verify_bundle(customer)
    assert texts(report) == ["tables/extra.parquet: present in the bundle but not listed in the manifest"]


def test_extra_table_unknown_to_the_graph(customer: Path) -> None:
    write_table(customer, "gizmos", pa.table({"i_gizmo": pa.array([1, 2], pa.int32())}), scope="owned")
    report = verify_bundle(customer)
    line = only(report, "tables/gizmos.parquet")
    assert "table gizmos is not in the entity graph of release r1" in line


def test_prerequisite_table_carried(customer: Path) -> None:
    write_table(
        customer,
        "currencies",
        pa.table(
            {
                "iso_4217": pa.array(["USD"]),
                "name": pa.array(["US Dollar"]),
                "decimal_digits": pa.array([2], pa.int32()),
            }
        ),
        scope="owned",
    )
    line = only(verify_bundle(customer), "tables/currencies.parquet")
    assert "prerequisite in the graph: bundles never carry its rows" in line


@pytest.mark.parametrize(
    ("column", "new_type", "shown"),
    [
        ("balance", pa.float64(), "column balance is double, the graph (r1) says decimal(16,5)"),
        (
            "balance",
            pa.decimal128(18, 5),
            "column balance is decimal128(18, 5), the graph (r1) says decimal(16,5)",
        ),
        (
            "creation_date",
            pa.timestamp("ns"),
            "column creation_date is timestamp[ns], the graph (r1) says timestamp[us]",
        ),
        ("i_customer", pa.int64(), "column i_customer is int64, the graph (r1) says int32"),
    ],
)
def test_wrong_column_type(customer: Path, column: str, new_type: pa.DataType, shown: str) -> None:
    rewrite_table(
        customer,
        "customers",
        lambda t: t.set_column(
            t.schema.get_field_index(column), pa.field(column, new_type), t.column(column).cast(new_type)
        ),
    )
    report = verify_bundle(customer)
    assert texts(report) == [f"tables/customers.parquet: {shown}"]


def test_columns_renamed_and_reordered(customer: Path) -> None:
    def change(t: pa.Table) -> pa.Table:
        t = t.rename_columns(["fullname" if c == "name" else c for c in t.column_names])
        return t.select([*t.column_names[1:], t.column_names[0]])

    rewrite_table(customer, "customers", change)
    report = verify_bundle(customer)
    assert only(report, "tables/customers.parquet", "missing").endswith(
        "column(s) name of the graph (r1) are missing"
    )
    only(report, "tables/customers.parquet", "column(s) fullname are not in the graph (r1)")
    only(
        report,
        "tables/customers.parquet: columns are not in the order of the graph (r1): "
        "the file has i_customer_type where the graph has i_customer",
    )


def test_duplicate_primary_key(customer: Path) -> None:
    rewrite_table(customer, "customer_sites", lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    report = verify_bundle(customer)
    line = only(report, "tables/customer_sites.parquet")
    assert "primary key (i_customer_site) is not unique: 1 key(s) repeat: i_customer_site=1 (2 rows)" in line
    assert report.problems[0].row == "i_customer_site=1"


def test_duplicate_composite_primary_key(customer: Path) -> None:
    rewrite_table(customer, "hunt_group_members", lambda t: pa.concat_tables([t, t]))
    line = only(verify_bundle(customer), "tables/hunt_group_members.parquet")
    assert "primary key (i_hunt_group, i_extension) is not unique: 2 key(s) repeat" in line
    assert "i_hunt_group=1, i_extension=1 (2 rows)" in line


def test_dangling_reference(customer: Path) -> None:
    rewrite_table(
        customer, "xdrs", lambda t: set_column(t, "i_dest", [999, *t.column("i_dest").to_pylist()[1:]])
    )
    report = verify_bundle(customer)
    line = only(report, "tables/xdrs.parquet")
    assert "1 row(s) reference destinations.i_dest values that do not resolve (in the bundle)" in line
    assert "xdrs.i_dest = 999" in line
    assert "first row i_xdr=1" in line
    assert report.problems[0].row == "i_xdr=1"


def test_reference_to_a_prerequisite_not_declared(customer: Path) -> None:
    """xDR 3 uses service 2 (Data): with it gone from the declared prerequisites, it dangles."""

    def change(doc: dict[str, Any]) -> None:
        rows = doc["prerequisites"]["services"]["rows"]
        doc["prerequisites"]["services"]["rows"] = [r for r in rows if r["value"] != 2]

    edit_manifest(customer, change)
    line = only(verify_bundle(customer), "tables/xdrs.parquet")
    assert (
        "services.i_service values that do not resolve (among its prerequisites): xdrs.i_service = 2" in line
    )
    assert "first row i_xdr=3" in line


def test_reference_to_an_outside_owned_row_resolves_through_the_manifest(bundles: dict[str, Path]) -> None:
    """The usage bundle's xDRs reference accounts of its customer bundle, declared by natural key."""
    manifest = read_manifest(bundles["usage"])
    assert manifest["prerequisites"]["accounts"]["scope"] == "owned"
    assert "accounts" not in manifest["tables"]
    assert verify_bundle(bundles["usage"]).ok


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (
            lambda d: d["tables"]["accounts"].update(rows=4),
            ["tables/accounts.parquet: holds 3 rows, the manifest says 4"],
        ),
        (
            lambda d: d["tables"]["accounts"]["columns"].update(balance="double"),
            [
                "manifest.json: the columns listed for table accounts differ from tables/accounts.parquet: "
                "balance is listed as double, the file has decimal128(16, 5)"
            ],
        ),
        (
            lambda d: d.update(comment="fixed by hand"),
            [
                "manifest.json: does not match its schema at (top): Additional properties are not allowed "
                "('comment' was unexpected)"
            ],
        ),
        (
            lambda d: d["tables"]["accounts"].update(rows="3"),
            [
                "manifest.json: does not match its schema at tables/accounts/rows: '3' is not of type 'integer'"
            ],
        ),
        (
            lambda d: d["tables"]["accounts"].update(scope="shared"),
            ["manifest.json: table accounts is listed as shared, the graph says owned"],
        ),
        (
            lambda d: d["totals"].update(rows=1),
            ["manifest.json: totals say 1 rows"],
        ),
        (
            lambda d: d["root"].update(source_pk=5),
            ["tables/customers.parquet: the root row i_customer=5 is not in the bundle"],
        ),
        (
            lambda d: d["tables"]["accounts"].update(sha256="0" * 64),
            ["tables/accounts.parquet: sha256 differs from the manifest"],
        ),
        (
            lambda d: d["prerequisites"]["services"].update(column="unit"),
            [
                "tables/xdrs.parquet: 3 row(s) reference services.i_service values that do not resolve (services is "
                "not in the bundle, and its prerequisites are declared by unit, not by i_service)"
            ],
        ),
    ],
    ids=[
        "rows",
        "columns",
        "unknown-key",
        "rows-type",
        "scope",
        "totals",
        "root",
        "sha256",
        "prerequisite-column",
    ],
)
def test_manifest_edited_by_hand(customer: Path, edit: Any, needles: list[str]) -> None:
    edit_manifest(customer, edit)
    report = verify_bundle(customer)
    assert not report.ok
    for needle in needles:
        assert any(needle in t for t in texts(report)), (needle, texts(report))


def test_newer_format_version_is_refused_by_name(customer: Path) -> None:
    edit_manifest(customer, lambda d: d.update(format_version=3, something_new={"x": 1}))
    report = verify_bundle(customer)
    assert len(report.problems) == 1, texts(report)
    line = texts(report)[0]
    assert line.startswith("manifest.json: ")
    assert "format version 3, newer than this bundler reads (2)" in line


def test_usage_row_outside_the_window(customer: Path) -> None:
    def change(t: pa.Table) -> pa.Table:
        times = t.column("bill_time").to_pylist()
        return set_column(t, "bill_time", [times[0], datetime(2026, 10, 31, 23, 59, 59), *times[2:]])

    rewrite_table(customer, "xdrs", change)
    report = verify_bundle(customer)
    line = only(report, "tables/xdrs.parquet")
    assert (
        "1 row(s) have bill_time outside the usage window [2026-11-01 00:00:00, 2026-12-01 00:00:00)" in line
    )
    assert "first i_xdr=2 (bill_time=2026-10-31 23:59:59)" in line


def test_usage_rows_in_a_bundle_without_usage(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["customer-nousage"], tmp_path)
    source = bundles["customer"] / "tables" / "xdrs.parquet"
    write_table(bundle, "xdrs", pq.read_table(source), scope="usage")
    line = only(verify_bundle(bundle), "tables/xdrs.parquet", "usage window")
    assert "3 row(s) have bill_time outside the usage window none: no usage at all" in line


def test_null_in_a_not_null_column(customer: Path) -> None:
    rewrite_table(
        customer, "accounts", lambda t: set_column(t, "id", [None, *t.column("id").to_pylist()[1:]])
    )
    line = only(verify_bundle(customer), "tables/accounts.parquet")
    assert "1 row(s) have NULL in NOT NULL column id, first i_account=1" in line


def test_every_problem_is_reported_not_only_the_first(customer: Path) -> None:
    path = customer / "tables" / "payments.parquet"
    data = bytearray(path.read_bytes())
    data[40] ^= 0x01
    path.write_bytes(bytes(data))
    rewrite_table(customer, "customer_sites", lambda t: pa.concat_tables([t, t]))
    rewrite_table(customer, "xdrs", lambda t: set_column(t, "i_account", [77, 77, 78]))
    rewrite_table(
        customer,
        "invoices",
        lambda t: set_column(t, "amount_due", [1.5], pa.float64()),
    )
    (customer / "tables" / "stray.parquet").write_bytes(b"PAR1")
    report = verify_bundle(customer)
    files = sorted({p.file for p in report.problems})
    assert files == [
        "tables/customer_sites.parquet",
        "tables/invoices.parquet",
        "tables/payments.parquet",
        "tables/stray.parquet",
        "tables/xdrs.parquet",
    ], texts(report)
    line = only(report, "tables/xdrs.parquet")
    assert "3 row(s) reference accounts.i_account" in line
    assert "xdrs.i_account = 77, 78" in line
    with pytest.raises(BundleInvalid) as caught:
        report.raise_if_invalid()
    assert caught.value.exit_code == ExitCode.BUNDLE_INVALID
    assert len(caught.value.problems) == len(report.problems) == 5


def test_graph_checksum_differs_is_a_warning(customer: Path) -> None:
    edit_manifest(customer, lambda d: d["graph"].update(sha256="0" * 64))
    report = verify_bundle(customer)
    assert report.ok, texts(report)
    assert len(report.warnings) == 1
    assert "graph of sha256 000000000000" in report.warnings[0]


def test_unknown_release(customer: Path) -> None:
    edit_manifest(customer, lambda d: d["graph"].update(release="r99"))
    report = verify_bundle(customer)
    line = only(report, "manifest.json", "entity graph")
    assert "no entity graph for release 'r99'" in line
    assert "--spec" in line
    # with the graph given, the rest verifies
    assert verify_bundle(customer, spec=GRAPHS_DIR / "r1.json").ok


def test_missing_manifest(customer: Path) -> None:
    (customer / "manifest.json").unlink()
    report = verify_bundle(customer)
    assert texts(report) == [
        "manifest.json: is missing: the bundle is incomplete (an export that did not finish?)"
    ]


def test_manifest_not_json(customer: Path) -> None:
    (customer / "manifest.json").write_text("{not json", encoding="utf-8")
    line = only(verify_bundle(customer), "manifest.json")
    assert "is not valid JSON" in line


def test_corrupt_packed_file(bundles: dict[str, Path], tmp_path: Path) -> None:
    packed = pack(bundles["vendor"], tmp_path)
    data = packed.read_bytes()
    packed.write_bytes(data[: len(data) // 2])
    report = verify_bundle(packed)
    assert not report.ok
    assert report.problems[0].file == packed.name
    assert "not a readable packed bundle" in str(report.problems[0])


def test_decimal_values_of_another_scale_are_caught(customer: Path) -> None:
    rewrite_table(
        customer,
        "payments",
        lambda t: set_column(t, "amount", [Decimal("50.00")], pa.decimal128(16, 2)),
    )
    only(verify_bundle(customer), "tables/payments.parquet", "column amount is decimal128(16, 2)")


# -- the command -----------------------------------------------------------------------------------------


def test_cli_verify_ok(bundles: dict[str, Path]) -> None:
    folder = bundles["customer"].parent
    result = CliRunner().invoke(cli(), ["inspect", "verify", str(folder / "*.bundle")])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("ok: ") == len(list(folder.glob("*.bundle")))
    assert "no problems" in result.stderr


def test_cli_verify_prints_every_problem_and_exits_4(bundles: dict[str, Path], customer: Path) -> None:
    rewrite_table(customer, "customer_sites", lambda t: pa.concat_tables([t, t]))
    (customer / "tables" / "stray.parquet").write_bytes(b"x")
    result = CliRunner().invoke(cli(), ["inspect", "verify", str(bundles["vendor"]), str(customer)])
    assert result.exit_code == ExitCode.BUNDLE_INVALID, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"ok: {bundles['vendor']}")
    assert f"{customer}: tables/stray.parquet: present in the bundle but not listed in the manifest" in lines
    assert any(
        line.startswith(
            f"{customer}: tables/customer_sites.parquet: primary key (i_customer_site) is not unique"
        )
        for line in lines
    )
    assert "1 of 2 bundle(s) invalid, 2 problem(s)" in result.stderr


def test_cli_verify_json(customer: Path) -> None:
    edit_manifest(customer, lambda d: d.update(format_version=4))
    result = CliRunner().invoke(cli(), ["inspect", "verify", "--json", str(customer)])
    assert result.exit_code == ExitCode.BUNDLE_INVALID
    (doc,) = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["problems"][0]["file"] == "manifest.json"
    assert "format version 4, newer than this bundler reads (2)" in doc["problems"][0]["text"]


def test_cli_help_has_examples() -> None:
    runner = CliRunner()
    for command in ("summary", "verify", "query", "diff"):
        result = runner.invoke(cli(), ["inspect", command, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output
