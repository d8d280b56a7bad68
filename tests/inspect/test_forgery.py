"""Forged bundles: consistent forgeries (rows added with pyarrow, size and sha256 recomputed in
the manifest) that no checksum catches, found by what verification proves about the rows.

Each forgery is of a real customer bundle of the fixture, as an attacker would make it, and
each is refused twice: ``bundler inspect verify`` exits 4 naming the problem, and
``bundler.load.load_bundle`` raises :class:`BundleInvalid` with the target's row counts
unchanged — a target prepared so that the forgery would otherwise load (the vendor and the
other customer, bravo, are loaded in it; ``test_forged_xdrs_would_load_without_verification``
shows the attack succeeding when verification is skipped).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.cli import BundlerGroup
from bundler.errors import BundleInvalid, ExitCode
from bundler.export import ExportOptions, export_root
from bundler.inspect import verify_bundle
from bundler.inspect.commands import inspect
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW
from tests.inspect import copy_bundle, edit_manifest, read_manifest, write_table

BRAVO = 3  # bravo's account in the source
BRAVO_ACCOUNT = {"value": BRAVO, "key": {"id": "bravo-1"}}
Forgery = Callable[[Path], None]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Honest bundles of the fixture (SQLite source, roots left unmarked)."""
    work = tmp_path_factory.mktemp("forgery")
    source = fixture.build(f"sqlite:///{work / 'source.db'}")
    options = ExportOptions(now=NOW, mark=False)
    try:
        return {
            name: export_root(source, kind, ident, work / "out", options=options).path
            for name, (kind, ident) in {
                "acme": ("customer", "acme"),
                "bravo": ("customer", "bravo"),
                "vendor": ("vendor", "Carrier Ä"),
                "reseller": ("reseller", "reseller-r"),
            }.items()
        }
    finally:
        source.dispose()


@pytest.fixture
def acme(bundles: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of acme's customer bundle, to forge."""
    return copy_bundle(bundles["acme"], tmp_path)


@pytest.fixture(scope="module")
def prepared(
    request: pytest.FixtureRequest, bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], sa.Engine]]:
    """Targets holding the vendor and the other customer, bravo (whose account a forged acme
    bundle aims at), one per dialect, made when first asked for and shared by the module's tests:
    a refused load leaves its target as it was (each test checks so)."""
    from bundler.db import create_database, drop_database
    from tests.conftest import require_server

    made: dict[str, tuple[sa.Engine, str]] = {}

    def get(dialect: str) -> sa.Engine:
        if dialect not in made:
            server = (
                str(tmp_path_factory.mktemp("sqlite"))
                if dialect == "sqlite"
                else require_server(request.config, dialect)
            )
            url = create_database(server, "bt_" + uuid.uuid4().hex[:10])
            engine = fixture.build_target(url, "r2")
            made[dialect] = (engine, url)
            load_bundle(engine, bundles["vendor"])
            load_bundle(engine, bundles["bravo"])
        return made[dialect][0]

    yield get
    for engine, url in made.values():
        engine.dispose()
        drop_database(url)


@pytest.fixture
def target(prepared: Callable[[str], sa.Engine], dialect: str) -> sa.Engine:
    """The prepared target of ``dialect``."""
    return prepared(dialect)


def cli() -> click.Group:
    group = BundlerGroup("bundler")
    group.add_command(inspect)
    return group


def counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {n: conn.execute(sa.text(f"SELECT count(*) FROM {n}")).scalar_one() for n in sorted(names)}


def refused(bundle: Path, target: sa.Engine, *needles: str) -> str:
    """Verify exits 4 with a problem line holding every needle; the load is refused, nothing changes.

    Returns that problem, as the load names it. ``inspect verify`` reads no database: the command runs with the SQLite
    target only (with the others, the load's message is checked).
    """
    if target.dialect.name == "sqlite":
        lines = [line for line in verify_lines(bundle) if all(n in line for n in needles)]
        assert len(lines) == 1, (needles, verify_lines(bundle))
    before = counts(target)
    with pytest.raises(BundleInvalid) as caught:
        load_bundle(target, bundle)
    assert caught.value.exit_code == ExitCode.BUNDLE_INVALID
    matching = [p for p in caught.value.problems if all(n in p for n in needles)]
    assert len(matching) == 1, (needles, caught.value.problems)
    assert counts(target) == before
    return matching[0]


def verify_lines(bundle: Path) -> list[str]:
    """The problem lines of ``bundler inspect verify BUNDLE``, which must exit 4."""
    result = CliRunner().invoke(cli(), ["inspect", "verify", str(bundle)])
    assert result.exit_code == ExitCode.BUNDLE_INVALID, result.output
    return result.stdout.splitlines()


# -- forging ------------------------------------------------------------------------------------------


def add_rows(
    bundle: Path, table: str, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    """Append rows made by ``change`` from copies of the table's rows; rewrite the file and its checksums."""
    data = pq.read_table(bundle / "tables" / f"{table}.parquet")
    rows = change(data.to_pylist())
    write_table(bundle, table, pa.concat_tables([data, pa.Table.from_pylist(rows, schema=data.schema)]))


def declare(bundle: Path, table: str, column: str, scope: str, *rows: dict[str, Any]) -> None:
    """Add outside rows to the manifest's prerequisites."""

    def change(doc: dict[str, Any]) -> None:
        entry = doc["prerequisites"].setdefault(table, {"column": column, "scope": scope, "rows": []})
        entry["rows"].extend(rows)

    edit_manifest(bundle, change)


def foreign_xdrs(bundle: Path, account: int = BRAVO) -> None:
    """Two xDRs (new ids) of ``account``, copied from the bundle's own."""

    def change(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        top = max(r["i_xdr"] for r in rows)
        return [
            dict(r, i_xdr=top + n, i_account=account, i_invoice=None, call_id=f"forged-{n}")
            for n, r in enumerate(rows[:2], start=1)
        ]

    add_rows(bundle, "xdrs", change)


def xdrs_of_a_declared_account(bundle: Path) -> None:
    """The attack: bravo's account declared as an outside row, and two xDRs on it."""
    foreign_xdrs(bundle)
    declare(bundle, "accounts", "i_account", "owned", BRAVO_ACCOUNT)


def account_of_a_declared_customer(bundle: Path) -> None:
    """An account carried, owned by bravo declared as an outside row, and two xDRs on it."""

    def change(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(rows[0], i_account=1003, id="bravo-9", i_customer=5)]

    add_rows(bundle, "accounts", change)
    foreign_xdrs(bundle, account=1003)
    declare(bundle, "customers", "i_customer", "owned", {"value": 5, "key": {"name": "bravo"}})


# -- 1. rows that do not belong to the root -------------------------------------------------------------


@pytest.mark.parametrize(
    ("forge", "needles"),
    [
        (
            xdrs_of_a_declared_account,
            [
                "tables/xdrs.parquet: 2 row(s) do not belong to the root customers i_customer=4",
                "i_account=3: accounts i_account=3 is only declared as an outside row, not carried",
            ],
        ),
        (
            account_of_a_declared_customer,
            [
                "tables/accounts.parquet: 1 row(s) do not belong to the root customers i_customer=4: "
                "i_account=1003 (i_customer=5: customers i_customer=5 is only declared as an outside row"
            ],
        ),
    ],
    ids=["xdrs-of-a-declared-account", "account-of-a-declared-customer"],
)
def test_rows_that_do_not_belong_to_the_root(
    acme: Path, target: sa.Engine, forge: Forgery, needles: list[str]
) -> None:
    forge(acme)
    refused(acme, target, *needles)
    report = verify_bundle(acme)
    problem = next(p for p in report.problems if "do not belong" in p.message)
    assert problem.row is not None and problem.table in ("xdrs", "accounts")


def test_owned_rows_of_a_declared_customer_are_named_table_by_table(acme: Path) -> None:
    """The account and the xDRs on it: each table names its own rows and why."""
    account_of_a_declared_customer(acme)
    report = verify_bundle(acme)
    by_table = {p.table: p for p in report.problems}
    assert set(by_table) == {"accounts", "xdrs"}, [str(p) for p in report.problems]
    assert by_table["accounts"].row == "i_account=1003"
    assert "i_customer=5" in by_table["accounts"].message
    assert by_table["xdrs"].row is not None
    assert (
        "i_account=1003: accounts i_account=1003 does not belong to the root either"
        in by_table["xdrs"].message
    )


def test_a_customer_added_to_a_reseller_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    """Sub-customers belong through their parent; bravo (no parent) added with an account does not."""
    reseller = copy_bundle(bundles["reseller"], tmp_path)
    assert verify_bundle(reseller).ok
    add_rows(reseller, "customers", lambda rows: [dict(rows[-1], i_customer=5, name="bravo", i_parent=None)])
    add_rows(reseller, "accounts", lambda rows: [dict(rows[0], i_account=1003, id="bravo-9", i_customer=5)])
    report = verify_bundle(reseller)
    lines = [str(p) for p in report.problems]
    assert lines == [
        "tables/accounts.parquet: 1 row(s) do not belong to the root customers i_customer=1: i_account=1003 "
        "(i_customer=5: customers i_customer=5 does not belong to the root either)",
        "tables/customers.parquet: 1 row(s) do not belong to the root customers i_customer=1: i_customer=5 "
        "(i_parent is NULL: it has no owner)",
    ]


def test_forged_xdrs_would_load_without_verification(
    acme: Path, bundles: dict[str, Path], new_db: Any
) -> None:
    """What the checks prevent: unverified, the forged bundle puts two calls on bravo's account."""
    target = fixture.build_target(new_db("sqlite"), "r2")
    load_bundle(target, bundles["vendor"])
    load_bundle(target, bundles["bravo"])
    xdrs_of_a_declared_account(acme)
    query = sa.text(
        "SELECT count(*) FROM xdrs x JOIN accounts a ON a.i_account = x.i_account WHERE a.id = 'bravo-1'"
    )
    with target.connect() as conn:
        before = conn.execute(query).scalar_one()
    load_bundle(target, acme, verify=False)
    with target.connect() as conn:
        assert conn.execute(query).scalar_one() == before + 2


# -- 2. prerequisites of the wrong kind ---------------------------------------------------------------------


def scope_changed(bundle: Path) -> None:
    """The vendor's DID number acme uses, declared as a prerequisite instead of an owned row."""
    edit_manifest(bundle, lambda d: d["prerequisites"]["did_numbers"].update(scope="prerequisite"))


def attack_declared_as_prerequisite(bundle: Path) -> None:
    """The attack of case 1, bravo's account declared as a prerequisite (matched by natural key)."""
    foreign_xdrs(bundle)
    declare(bundle, "accounts", "i_account", "prerequisite", BRAVO_ACCOUNT)


def carried_row_declared_outside(bundle: Path) -> None:
    """acme's own account 1, also declared outside as bravo's: its xDRs would land on bravo."""
    declare(bundle, "accounts", "i_account", "owned", {"value": 1, "key": {"id": "bravo-1"}})


@pytest.mark.parametrize(
    ("forge", "needles"),
    [
        (scope_changed, ["prerequisites of did_numbers are declared as prerequisite, the graph says owned"]),
        (
            attack_declared_as_prerequisite,
            ["prerequisites of accounts are declared as prerequisite, the graph says owned"],
        ),
        (
            carried_row_declared_outside,
            [
                "prerequisites of accounts declare i_account value(s) 1 as outside rows, but the bundle "
                "carries them in tables/accounts.parquet"
            ],
        ),
    ],
    ids=["scope", "attack-as-prerequisite", "carried-and-declared"],
)
def test_prerequisites_of_the_wrong_kind(
    acme: Path, target: sa.Engine, forge: Forgery, needles: list[str]
) -> None:
    forge(acme)
    line = refused(acme, target, *needles)
    assert line.startswith("manifest.json: ")
    if forge is attack_declared_as_prerequisite:  # and the rows still do not belong
        assert not verify_bundle(acme).ok
        assert any("do not belong to the root" in str(p) for p in verify_bundle(acme).problems)


# -- 3. a kind that does not agree with the root ----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (
            {"kind": "vendor"},
            ["manifest.json: the root of a vendor bundle is a row of vendors, but this one is of customers"],
        ),
        (
            {"kind": "reseller"},
            [
                "tables/customers.parquet: the root row i_customer=4 is not a reseller: its i_customer_type is 1"
            ],
        ),
        (
            {"kind": "usage"},
            [
                "manifest.json: a usage bundle depends on the bundle that carried its root, but depends_on is empty"
            ],
        ),
        (
            {"kind": "usage", "depends_on": ["customer-acme-20261101T000000-aaaaaa"]},
            [
                "manifest.json: a usage bundle carries only usage and shared tables, but this one carries ",
                "accounts (owned)",
            ],
        ),
        (
            {"kind": "reverse", "depends_on": ["customer-acme-20261101T000000-aaaaaa"]},
            [
                "manifest.json: a reverse bundle carries only usage tables, but this one carries ",
                "accounts (owned)",
            ],
        ),
        ({"kind": "config"}, ["manifest.json: a config bundle has no root, but this one names one"]),
    ],
    ids=["vendor", "reseller", "usage", "usage-with-dependency", "reverse", "config"],
)
def test_kind_that_does_not_agree_with_the_root(
    acme: Path, target: sa.Engine, change: dict[str, Any], needles: list[str]
) -> None:
    edit_manifest(acme, lambda d: d.update(change))
    refused(acme, target, *needles)


def test_a_config_bundle_carries_only_shared_tables(acme: Path) -> None:
    edit_manifest(acme, lambda d: d.update(kind="config", root=None))
    problems = [str(p) for p in verify_bundle(acme).problems]
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "manifest.json: a config bundle carries only shared tables, but this one carries"
    )
    assert "accounts (owned)" in problems[0] and "xdrs (usage)" in problems[0]


# -- 4. files the manifest does not list --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder", "shown"),
    [("evil.sh", False, "evil.sh"), (".hidden", False, ".hidden"), ("more", True, "more/")],
    ids=["script", "hidden-file", "folder"],
)
def test_files_the_manifest_does_not_list(
    acme: Path, target: sa.Engine, name: str, folder: bool, shown: str
) -> None:
    if folder:
        (acme / name).mkdir()
        (acme / name / "x.parquet").write_bytes(b"x")
    else:
        (acme / name).write_text("#!/bin/sh\nrm -rf /\n", encoding="utf-8")
    line = refused(acme, target, f"{shown}: present in the bundle but not part of it")
    assert line.startswith(f"{shown}: ")
    assert [p.file for p in verify_bundle(acme).problems] == [shown]


# -- 5. a missing bundle path ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["verify"], ["summary"], ["query", "SELECT 1"], ["diff", "OTHER"]],
    ids=["verify", "summary", "query", "diff"],
)
def test_a_missing_path_is_a_usage_error(bundles: dict[str, Path], tmp_path: Path, args: list[str]) -> None:
    """Exit 2 and one line naming the path, as load, pack, unpack and reverse load do."""
    missing = tmp_path / "nope.bundle"
    command, *rest = args
    rest = [str(bundles["acme"]) if a == "OTHER" else a for a in rest]
    result = CliRunner().invoke(cli(), ["inspect", command, str(missing), *rest])
    assert result.exit_code == ExitCode.USAGE, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1, errors
    assert f"bundle {missing} does not exist" in errors[0]


# -- 6. manifests the lead's parser refuses ---------------------------------------------------------------------


def test_format_version_must_be_a_whole_number(acme: Path, target: sa.Engine) -> None:
    edit_manifest(acme, lambda d: d.update(format_version=2.0))
    assert read_manifest(acme)["format_version"] == 2.0
    refused(acme, target, "manifest.json: has format_version 2.0: it must be a whole number")


def test_a_manifest_nested_too_deep(acme: Path, target: sa.Engine) -> None:
    text = json.dumps(read_manifest(acme))
    depth = 100_000
    (acme / "manifest.json").write_text(
        text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}", encoding="utf-8"
    )
    refused(acme, target, "manifest.json: nests too deep to be a manifest")


# -- honest bundles --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["acme", "reseller", "vendor"])
def test_honest_bundles_verify_clean(bundles: dict[str, Path], name: str) -> None:
    """The reseller's sub-customers (two levels down) and the vendor's rows all belong to their root."""
    report = verify_bundle(bundles[name])
    assert report.ok, [str(p) for p in report.problems]
    assert report.warnings == []
    if name == "reseller":
        customers = pq.read_table(bundles[name] / "tables" / "customers.parquet").to_pylist()
        assert {c["i_customer"]: c["i_parent"] for c in customers} == {1: None, 2: 1, 3: 2}
