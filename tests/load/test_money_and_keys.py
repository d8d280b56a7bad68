"""Reuse that cannot change money, keys that match several rows, and the prerequisites the
product names (users, notification templates, a vendor's customer counterpart, write grants)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.billing.schema import build_metadata
from bundler.clean import plan_clean, run_clean
from bundler.cli import main
from bundler.errors import DecisionsNeeded, ExitCode, PrerequisitesMissing
from bundler.export import ExportOptions, export_root
from bundler.lineup import LineupOptions, RootSelector, run_lineup
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW, ROWS
from tests.inspect import copy_bundle
from tests.inspect.test_forgery import add_rows

OPTIONS = ExportOptions(now=NOW, xdrs="all")


def _sidecar(bundle: Path) -> Path:
    return bundle.parent / f"{bundle.name.removesuffix('.bundle')}.decisions.json"


def _asked(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(t, json.dumps(r["key"])): r for t, e in doc["tables"].items() for r in e["rows"]}


def _rates(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT i_tariff, i_dest FROM rates ORDER BY 1, 2"))]


@pytest.fixture
def source(new_db: Any, dialect: str) -> sa.Engine:
    return fixture.build(new_db(dialect))


def _target(new_db: Any, dialect: str, source: sa.Engine, tmp_path: Path, **shared: Any) -> sa.Engine:
    """A target with the fixture's prerequisites and ``shared``, the vendor already loaded."""
    target = fixture.build_target(new_db(dialect), "r2", shared=shared or None)
    reuse = tmp_path / "reuse.json"
    reuse.write_text(json.dumps({"format": "bundler-decisions", "version": 1, "default": "reuse"}))
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "v", options=OPTIONS).path
    load_bundle(target, vendor, decisions=reuse)
    return target


def _without_unique(release: str, table: str, column: str) -> sa.MetaData:
    """The reference schema with ``table.column`` no longer unique (a foreign schema)."""
    md = build_metadata(release)
    t = md.tables[table]
    t.c[column].unique = False
    for constraint in list(t.constraints):
        if isinstance(constraint, sa.UniqueConstraint) and [c.name for c in constraint.columns] == [column]:
            t.constraints.discard(constraint)
    return md


def test_currency_mismatch_and_ambiguous_key_are_questions_and_merge_adds_exactly_the_missing_rates(
    source: sa.Engine, new_db: Any, dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = fixture.build_metadata  # a target whose access level names are not unique
    loose = _without_unique("r2", "access_levels", "name")
    monkeypatch.setattr(fixture, "build_metadata", lambda r: loose if r == "r2" else original(r))
    level = ROWS["access_levels"][0]
    twin = dict(level, i_acl=40, description="the same name, another level")
    target = _target(
        new_db,
        dialect,
        source,
        tmp_path,
        access_levels=[level, twin],
        product_groups=ROWS["product_groups"],
        destinations=ROWS["destinations"],
        tariffs=[ROWS["tariffs"][0]],
        products=[dict(ROWS["products"][0], iso_4217="EUR")],  # the same product, in another currency
        rates=[ROWS["rates"][0]],  # the target's tariff lacks the source's second rate
    )
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    sidecar = tmp_path / "decisions.json"
    doc: dict[str, Any] = {
        "format": "bundler-decisions",
        "version": 1,
        "default": "reuse",
        "tables": {"products": {"default": "reuse"}, "tariffs": {"default": "merge"}},
    }
    sidecar.write_text(json.dumps(doc))
    before = _rates(target)
    # neither the global nor the table default reuses a product in another currency, nor
    # picks one of two access levels of the same name
    with pytest.raises(DecisionsNeeded) as caught:
        load_bundle(target, acme, decisions=sidecar)
    assert caught.value.exit_code == ExitCode.DECISIONS_NEEDED
    doc = json.loads(sidecar.read_text())
    asked = _asked(doc)
    product_key = ("products", json.dumps({"name": "Business SIP"}))
    level_key = ("access_levels", json.dumps({"name": level["name"]}))
    assert set(asked) == {product_key, level_key}
    assert asked[product_key]["binding"] == {"iso_4217": {"source": "USD", "target": "EUR"}}
    assert asked[product_key]["action"] is None and _rates(target) == before
    candidates = asked[level_key]["candidates"]
    assert asked[level_key]["target_pk"] is None and [c["target_pk"] for c in candidates] == [101, 140]
    assert candidates[1]["differs"]["description"]["target"] == "the same name, another level"
    # per-key answers do; reuse of an ambiguous key without naming a candidate stays open
    doc["tables"]["products"]["rows"][0]["action"] = "reuse"
    doc["tables"]["access_levels"]["rows"][0]["action"] = "reuse"
    sidecar.write_text(json.dumps(doc))
    with pytest.raises(DecisionsNeeded):
        load_bundle(target, acme, decisions=sidecar)
    doc = json.loads(sidecar.read_text())
    still = _asked(doc)  # the access level is asked again; the product's answer is kept
    assert still[level_key]["candidates"] == candidates and still[level_key]["target_pk"] is None
    assert still[level_key]["action"] == "reuse" and still[product_key]["action"] == "reuse"
    doc["tables"]["access_levels"]["rows"][0]["target_pk"] = 140
    sidecar.write_text(json.dumps(doc))
    result = load_bundle(target, acme, decisions=sidecar)
    assert result.outcome == "loaded"
    summary = result.summary()
    assert summary["reused_with_differences"]["products"][0]["binding"] == ["iso_4217"]
    assert summary["tables"]["tariffs"]["merged"] == 1
    assert summary["tables"]["rates"] == {"created": 1, "reused": 1, "skipped": 0, "renamed": 0, "merged": 0}
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT i_acl FROM customers WHERE name = 'acme'")).scalar_one() == 140
    # the source's second rate was added to the target's tariff (ids shifted by 100)
    shift = fixture.ID_SHIFT
    assert _rates(target) == sorted([*before, (1 + shift, 2 + shift)])
    # cleaning the bundle removes exactly what the merge added, and the target's rows stay
    run_clean(target, plan_clean(target, bundles=[result.bundle_id]))
    assert _rates(target) == before
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT iso_4217 FROM products")).scalars().all() == ["EUR"]


def test_verify_reports_bundle_rows_that_share_a_natural_key(tmp_path: Path, new_db: Any) -> None:
    source = fixture.build(new_db("sqlite"))
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    forged = copy_bundle(Path(acme), tmp_path / "forged")
    add_rows(forged, "access_levels", lambda rows: [dict(rows[0], i_acl=77)])
    result = CliRunner().invoke(main, ["inspect", "verify", str(forged)])
    assert result.exit_code == ExitCode.BUNDLE_INVALID, result.output
    assert "natural key (name) is shared by several rows" in result.output
    assert "i_acl 1, 77" in result.output


def test_missing_users_templates_and_vendor_counterpart_are_all_listed(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    with source.begin() as conn:  # the vendor exchanges traffic both ways: it is customer 'distri' too
        conn.execute(sa.text("UPDATE vendors SET i_customer = 6 WHERE name = 'Carrier Ä'"))
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "out", options=OPTIONS).path
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    target_url = new_db("sqlite")
    target = fixture.build_target(target_url, "r2")
    with target.begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE login = 'jdoe'"))
        conn.execute(sa.text("DELETE FROM notification_templates"))
    with pytest.raises(PrerequisitesMissing) as caught:
        load_bundle(target, vendor)
    assert caught.value.exit_code == ExitCode.PREREQUISITES_MISSING
    assert "customers name='distri'" in caught.value.line()
    result = CliRunner().invoke(main, ["load", "--target", target_url, str(acme)])
    assert result.exit_code == ExitCode.PREREQUISITES_MISSING
    for needle in ("users login='jdoe'", "notification_templates name='Low balance'", "did_numbers number="):
        assert needle in result.output, result.output


# -- write grants ------------------------------------------------------------------------------------


@pytest.fixture
def restricted(dialect: str, new_db: Any) -> Iterator[tuple[str, sa.Engine]]:
    """A target database and a user of it who may only read (dropped after)."""
    from bundler.db import connect

    url = new_db(dialect)
    fixture.build_target(url, "r2")
    admin = connect(url)
    user, password = "bt_ro_" + uuid.uuid4().hex[:8], "pw" + uuid.uuid4().hex[:8]
    database = sa.make_url(url).database
    with admin.begin() as conn:
        if dialect == "postgresql":
            conn.exec_driver_sql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
            conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}")
        else:
            conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
            conn.execute(sa.text(f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'"))
    as_user = sa.make_url(url).set(username=user, password=password)
    engine = connect(as_user.render_as_string(hide_password=False))
    try:
        yield as_user.render_as_string(hide_password=False), engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            if dialect == "postgresql":
                conn.exec_driver_sql(f"DROP OWNED BY {user}")
                conn.exec_driver_sql(f"DROP ROLE {user}")
            else:
                conn.execute(sa.text(f"DROP USER '{user}'@'%'"))
        admin.dispose()


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"], indirect=True)
def test_a_user_without_write_grants_is_refused_before_anything_is_marked(
    restricted: tuple[str, sa.Engine], new_db: Any, dialect: str, tmp_path: Path
) -> None:
    _, target = restricted
    source = fixture.build(new_db("sqlite"))
    with pytest.raises(PrerequisitesMissing) as caught:
        run_lineup(source, target, [RootSelector("customer", ("acme",))], LineupOptions(tmp_path / "b"))
    message = caught.value.line()
    assert "may not write" in message and "customers (INSERT, UPDATE)" in message
    assert "bundler_ledger" in message
    with source.connect() as conn:  # nothing marked Exported, nothing exported
        assert (
            conn.execute(sa.text("SELECT bill_status FROM customers WHERE name = 'acme'")).scalar_one() == "O"
        )
        assert conn.execute(sa.text("SELECT count(*) FROM bundler_exports")).scalar_one() == 0
    assert not list((tmp_path / "b").glob("*"))


def test_migrate_reports_the_reused_rows_that_differ(
    new_db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bundler.lineup.commands import print_summary

    source = fixture.build(new_db("sqlite"))
    product = dict(ROWS["products"][0], description="target edition")
    target = fixture.build_target(
        new_db("sqlite"), "r2", shared={"product_groups": ROWS["product_groups"], "products": [product]}
    )
    sidecar = tmp_path / "reuse.json"
    sidecar.write_text(json.dumps({"format": "bundler-decisions", "version": 1, "default": "reuse"}))
    selectors = [RootSelector("vendor", ("Carrier Ä",)), RootSelector("customer", ("acme",))]
    result = run_lineup(source, target, selectors, LineupOptions(tmp_path / "b", decisions=sidecar))
    summary = result.summary()
    assert summary["done"] == 2 and summary["reused_with_binding_differences"] == 0
    differing = summary["configuration"]["reused_with_differences"]["products"]
    assert differing == [
        {
            "key": {"name": "Business SIP"},
            "differs": {"description": {"bundle": "Für Geschäftskunden", "target": "target edition"}},
        }
    ]
    # the product's rating entry is not carried: the target's product lacks it
    assert summary["configuration"]["lacking_in_target"] == {"product_rating_entries": 1}
    assert summary["lacking_in_target"] == 1
    print_summary(summary)
    out = capsys.readouterr().out
    assert "configuration: products name='Business SIP' differs in description" in out
    assert "configuration: 1 product_rating_entries row(s) not carried" in out


def test_a_prerequisite_several_target_rows_have_is_a_question_too(
    new_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = fixture.build(new_db("sqlite"))
    original = fixture.build_metadata
    loose = _without_unique("r2", "users", "login")
    monkeypatch.setattr(fixture, "build_metadata", lambda r: loose if r == "r2" else original(r))
    target = _target(new_db, "sqlite", source, tmp_path)
    with target.begin() as conn:  # a second 'jdoe' (the first is i_user 102)
        conn.execute(
            sa.text("INSERT INTO users (i_user, login, role, name) VALUES (150, 'jdoe', 'staff', 'J. Doe')")
        )
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    sidecar = tmp_path / "decisions.json"
    sidecar.write_text(json.dumps({"format": "bundler-decisions", "version": 1, "default": "reuse"}))
    with pytest.raises(DecisionsNeeded):
        load_bundle(target, acme, decisions=sidecar)
    doc = json.loads(sidecar.read_text())
    row = doc["tables"]["users"]["rows"][0]
    assert row["key"] == {"login": "jdoe"}
    assert row["candidates"] == [
        {"target_pk": 102, "differs": {"name": "Jane Doe"}},
        {"target_pk": 150, "differs": {"name": "J. Doe"}},
    ]
    row.update(action="reuse", target_pk=150)
    sidecar.write_text(json.dumps(doc))
    assert load_bundle(target, acme, decisions=sidecar).outcome == "loaded"
    with target.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT i_manager FROM customers WHERE name = 'acme'")).scalar_one() == 150
        )


def test_clean_customer_removes_what_a_merge_added(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    shared = {t: ROWS[t] for t in ("access_levels", "product_groups", "destinations", "products")}
    target = _target(
        new_db, "sqlite", source, tmp_path, **shared, tariffs=[ROWS["tariffs"][0]], rates=[ROWS["rates"][0]]
    )
    sidecar = tmp_path / "decisions.json"
    doc = {
        "format": "bundler-decisions",
        "version": 1,
        "default": "reuse",
        "tables": {"tariffs": {"default": "merge"}},
    }
    sidecar.write_text(json.dumps(doc))
    before = _rates(target)
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS).path
    assert load_bundle(target, acme, decisions=sidecar).summary()["tables"]["tariffs"]["merged"] == 1
    assert len(_rates(target)) == len(before) + 1
    run_clean(target, plan_clean(target, entities=[("customer", "acme")]))
    assert _rates(target) == before
