"""Load: preflight, decisions, idempotence, dry run, two phases, and the CLI's exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler import tracking
from bundler.cli import main
from bundler.errors import BundlerError, DecisionsNeeded, PrerequisitesMissing
from bundler.export import ExportOptions, export_root
from bundler.ledger import entries as ledger_entries
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW, ROWS

OPTIONS = ExportOptions(now=NOW, xdrs="all")


def counts(engine: sa.Engine) -> dict[str, int]:
    """Rows per table: what a refused load must leave as it was."""
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {n: conn.execute(sa.text(f"SELECT count(*) FROM {n}")).scalar_one() for n in sorted(names)}


def overlapping() -> dict[str, list[dict[str, Any]]]:
    """Target configuration with the natural keys of the source's (ids shifted), one differing."""
    product = dict(ROWS["products"][0], description="Für Geschäftskunden (target edition)")
    return {
        "product_groups": ROWS["product_groups"],
        "tariffs": [ROWS["tariffs"][0]],
        "products": [product],
    }


@pytest.fixture
def world(new_db: Any, dialect: str, tmp_path: Path) -> dict[str, Any]:
    source = fixture.build(new_db(dialect))
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "out", options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS)
    return {"source": source, "vendor": vendor.path, "acme": acme.path, "new_db": new_db, "dialect": dialect}


def target_for(world: dict[str, Any], shared: dict[str, list[dict[str, Any]]] | None = None) -> sa.Engine:
    target = fixture.build_target(world["new_db"](world["dialect"]), "r2", shared=shared)
    load_bundle(target, world["vendor"])
    return target


def test_missing_prerequisites_are_all_listed_and_nothing_changes(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    acme = export_root(source, "customer", "acme", tmp_path, options=OPTIONS).path
    target = fixture.build_target(new_db("sqlite"), "r2")
    with target.begin() as conn:
        conn.execute(sa.text("DELETE FROM services WHERE name = 'Data'"))
    before = counts(target)
    with pytest.raises(PrerequisitesMissing) as caught:
        load_bundle(target, acme)
    message = caught.value.line()
    assert "the target lacks 2 prerequisite(s)" in message
    assert "did_numbers number='442071230001'" in message and "services name='Data'" in message
    assert caught.value.exit_code == 5
    assert counts(target) == before


def test_open_decisions_write_a_template_then_the_answers_complete_the_load(world: dict[str, Any]) -> None:
    target = target_for(world, overlapping())
    before = counts(target)
    with pytest.raises(DecisionsNeeded) as caught:
        load_bundle(target, world["acme"])
    assert caught.value.exit_code == 3
    assert counts(target) == before
    sidecar = (
        Path(world["acme"]).parent / f"{Path(world['acme']).name.removesuffix('.bundle')}.decisions.json"
    )
    doc = json.loads(sidecar.read_text())
    asked = {(t, row["key"]["name"]): row for t, e in doc["tables"].items() for row in e["rows"]}
    assert set(asked) == {
        ("products", "Business SIP"),
        ("tariffs", "T-Retail"),
        ("product_groups", "SIP trunks"),
    }
    assert asked[("products", "Business SIP")]["differs"] == {
        "description": {"bundle": "Für Geschäftskunden", "target": "Für Geschäftskunden (target edition)"}
    }
    assert asked[("products", "Business SIP")]["target_pk"] == 101
    # answer: a default for the product groups, one row each for the others
    doc["tables"]["product_groups"]["default"] = "reuse"
    for table, entry in doc["tables"].items():
        for row in entry["rows"]:
            row["action"] = {"products": "reuse", "tariffs": "create"}.get(table)
    sidecar.write_text(json.dumps(doc))
    result = load_bundle(target, world["acme"], decisions=sidecar)
    assert result.outcome == "loaded"
    assert result.tables["products"].reused == 1 and result.tables["tariffs"].created == 1
    assert result.tables["tariffs"].renamed == 1
    assert (
        result.tables["products"]
        .differing[0]["differs"]["description"]["target"]
        .endswith("(target edition)")
    )
    with target.connect() as conn:
        accounts = conn.execute(sa.text("SELECT DISTINCT i_product FROM accounts")).scalars().all()
        tariffs = sorted(conn.execute(sa.text("SELECT name FROM tariffs")).scalars())
    assert accounts == [101]  # the target's own product, reused
    assert tariffs[0] == "T-Retail" and tariffs[1].startswith("T-Retail (from ")
    # the rating entry belongs to the reused product: the target's version stands
    assert result.tables["product_rating_entries"].skipped == 1


def test_abort_decision_stops_before_writing(world: dict[str, Any], tmp_path: Path) -> None:
    target = target_for(world, overlapping())
    sidecar = tmp_path / "decisions.json"
    sidecar.write_text(
        json.dumps(
            {
                "format": "bundler-decisions",
                "version": 1,
                "default": "reuse",
                "tables": {"tariffs": {"default": "abort"}},
            }
        )
    )
    before = counts(target)
    with pytest.raises(
        BundlerError, match=r"tariffs name='T-Retail' matches target row 101 and the decisions say abort"
    ):
        load_bundle(target, world["acme"], decisions=sidecar)
    assert counts(target) == before


def test_loading_twice_changes_nothing(world: dict[str, Any]) -> None:
    target = target_for(world)
    assert load_bundle(target, world["acme"]).outcome == "loaded"
    after = counts(target)
    again = load_bundle(target, world["acme"])
    assert again.outcome == "already-loaded"
    assert counts(target) == after


def test_a_bundle_this_process_wrote_is_read_without_the_hostile_file_walks(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lineup's own bundle (checksums checked against the manifest it wrote) is read without
    the footer and page walks; it loads the same rows as a bundle read the careful way."""
    from bundler.bundle import open_bundle
    from bundler.load.load import Written
    from bundler.secure import limits

    with open_bundle(world["acme"]) as bundle:
        written = Written(bundle.manifest_sha256)
    careful = target_for(world)
    load_bundle(careful, world["acme"])
    target = target_for(world)

    def walked(*args: Any) -> None:
        raise AssertionError(f"a file of a bundle this process wrote was walked: {args[1]}")

    monkeypatch.setattr(limits, "check_parquet", walked)
    assert load_bundle(target, world["acme"], written=written).outcome == "loaded"
    assert counts(target) == counts(careful)
    with pytest.raises(BundlerError, match="was walked"):  # any other bundle is walked
        load_bundle(target_for(world), world["acme"])


def test_dry_run_plans_and_writes_nothing(world: dict[str, Any]) -> None:
    target = target_for(world)
    before = counts(target)
    result = load_bundle(target, world["acme"], dry_run=True)
    assert result.outcome == "dry-run"
    assert result.tables["xdrs"].created == 5 and result.tables["accounts"].created == 3
    assert result.tables["destinations"].reused == 2  # brought by the vendor bundle from the same source
    assert counts(target) == before


def test_ledger_names_every_row(world: dict[str, Any]) -> None:
    target = target_for(world)
    result = load_bundle(target, world["acme"])
    with target.connect() as conn:
        ledger = list(ledger_entries(conn, result.bundle_id))  # runs of usage keys written out
        load = conn.execute(
            sa.select(tracking.loads_table).where(tracking.loads_table.c.bundle_id == result.bundle_id)
        ).one()
        customer = conn.execute(
            sa.text("SELECT i_customer, bill_status FROM customers WHERE name = 'acme'")
        ).one()
    assert len(ledger) == result.created + result.reused
    assert {r.action for r in ledger} == {"created", "reused"}
    assert load.rows_created == result.created and load.root_target_pk == str(customer.i_customer)
    assert customer.bill_status == "O"
    by_table: dict[str, int] = {}
    for r in ledger:
        by_table[r.table_name] = by_table.get(r.table_name, 0) + 1
    assert by_table["xdrs"] == 5 and by_table["customer_contacts"] == 1


def test_default_site_cycle_is_rewired(world: dict[str, Any]) -> None:
    target = target_for(world)
    load_bundle(target, world["acme"])
    with target.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT s.name, s.i_customer = c.i_customer FROM customers c "
                "JOIN customer_sites s ON s.i_customer_site = c.i_default_site WHERE c.name = 'acme'"
            )
        ).one()
    assert row[0] == "HQ" and bool(row[1])


def test_two_phase_transfer(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    target = fixture.build_target(new_db("sqlite"), "r2")
    load_bundle(target, export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS).path)
    first = export_root(source, "customer", "acme", tmp_path, options=ExportOptions(now=NOW, xdrs="none"))
    usage = export_root(
        source, "customer", "acme", tmp_path, options=ExportOptions(now=NOW, xdrs="all", usage_only=True)
    )
    with pytest.raises(BundlerError, match="depends on bundle .* which this target has not loaded"):
        load_bundle(target, usage.path)
    load_bundle(target, first.path)
    result = load_bundle(target, usage.path)
    assert result.tables["xdrs"].created == 5
    with target.connect() as conn:
        linked = conn.execute(
            sa.text(
                "SELECT count(*) FROM xdrs x JOIN accounts a ON a.i_account = x.i_account WHERE a.id = 'acme-1'"
            )
        ).scalar()
    assert linked == 5


def test_interactive_answers_are_saved_so_a_rerun_asks_nothing(world: dict[str, Any], tmp_path: Path) -> None:
    asked: list[str] = []

    def asker(question: Any, row: dict[str, Any], match: dict[str, Any]) -> tuple[str, bool]:
        asked.append(question.table)
        assert row["name"] == match["name"]
        return "reuse", True

    sidecar = tmp_path / "answers.json"
    first = target_for(world, overlapping())
    load_bundle(first, world["acme"], decisions=sidecar, asker=asker)
    assert sorted(asked) == ["product_groups", "products", "tariffs"]
    doc = json.loads(sidecar.read_text())
    assert {t: e["default"] for t, e in doc["tables"].items()} == {
        "product_groups": "reuse",
        "products": "reuse",
        "tariffs": "reuse",
    }
    asked.clear()
    second = target_for(world, overlapping())
    load_bundle(second, world["acme"], decisions=sidecar, asker=asker)
    assert asked == []


def test_cli_exit_codes(new_db: Any, tmp_path: Path) -> None:
    source = fixture.build(new_db("sqlite"))
    acme = str(export_root(source, "customer", "acme", tmp_path, options=OPTIONS).path)
    target_url = new_db("sqlite")
    fixture.build_target(target_url, "r2")
    runner = CliRunner()
    missing = runner.invoke(main, ["load", "--target", target_url, acme])
    assert missing.exit_code == 5, missing.output
    assert "did_numbers number='442071230001'" in missing.stderr
    vendor = str(export_root(source, "vendor", "Carrier Ä", tmp_path, options=OPTIONS).path)
    ok = runner.invoke(main, ["load", "--target", target_url, vendor, acme, "--json"])
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout)
    assert [s["outcome"] for s in summary] == ["loaded", "loaded"]
    again = runner.invoke(main, ["load", "--target", target_url, acme])
    assert again.exit_code == 0 and "already loaded; nothing changed" in again.stdout


def test_a_run_cache_reflects_the_targets_tables_at_once_as_one_by_one(
    dialect: str, engine: sa.Engine
) -> None:
    """The lineup warms its cache before the first root: the tables it reflects in one go are
    those reflecting one table at a time finds; names the target lacks are left out."""
    from bundler.load.cache import TargetCache, reflect

    meta = sa.MetaData()
    sa.Table("plans", meta, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(40)))
    sa.Table(
        "lines",
        meta,
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("plan_id", sa.Integer, sa.ForeignKey("plans.id"), nullable=False),
        sa.Column("amount", sa.Numeric(18, 6)),
    )
    meta.create_all(engine)
    cache = TargetCache()
    with engine.connect() as conn:
        assert cache.warm(conn, ["plans", "lines", "not_there"]) == 2
        assert cache.warm(conn, ["plans", "lines"]) == 0  # known already: nothing asked again
        for name in ("plans", "lines"):
            warmed, alone = cache.table(conn, name), reflect(conn, name)
            assert [(c.name, str(c.type), c.nullable, c.primary_key) for c in warmed.columns] == [
                (c.name, str(c.type), c.nullable, c.primary_key) for c in alone.columns
            ]


def test_a_run_cache_knows_what_earlier_loads_brought_and_never_trusts_it_blindly(
    world: dict[str, Any],
) -> None:
    from bundler.load.load import TargetCache

    target = fixture.build_target(world["new_db"](world["dialect"]), "r2")
    cache = TargetCache()
    load_bundle(target, world["vendor"], cache=cache)
    with target.connect() as conn:
        system = conn.execute(sa.select(tracking.loads_table.c.source_system)).scalars().first()
        ledger = tracking.ledger_table
        brought = {
            source_pk: target_pk
            for source_pk, target_pk in conn.execute(
                sa.select(ledger.c.source_pk, ledger.c.target_pk).where(ledger.c.table_name == "destinations")
            )
        }
    assert brought and cache.known(system, "destinations", brought) == brought  # what the ledger says
    # wrong entries (target rows gone, say): the load reads the ledger again, as without a cache
    cache.remember(system, "destinations", {src: str(987_654 + i) for i, src in enumerate(brought)})
    result = load_bundle(target, world["acme"], cache=cache)
    plan = result.tables["destinations"]
    assert (plan.reused, plan.created) == (2, 2)  # as without a cache: two the vendor brought, two new
    with target.connect() as conn:
        reused = dict(
            conn.execute(
                sa.select(ledger.c.source_pk, ledger.c.target_pk).where(
                    ledger.c.bundle_id == result.bundle_id,
                    ledger.c.table_name == "destinations",
                    ledger.c.action == "reused",
                )
            ).all()
        )
    assert len(reused) == 2 and all(brought[src] == target_pk for src, target_pk in reused.items())
    assert cache.known(system, "destinations", reused) == reused  # mended after the commit


def test_a_packed_bundle_is_opened_once_and_verified_with_the_graph_of_its_own_release(
    new_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An r1 bundle loaded with --spec of r2: unpacked once, verified against r1, written to r2."""
    import bundler.bundle_pack
    import bundler.inspect.verify
    from bundler.graph import GRAPHS_DIR

    source = fixture.build(new_db("sqlite"))
    vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "out", options=OPTIONS)
    acme = export_root(source, "customer", "acme", tmp_path / "out", options=OPTIONS)
    assert acme.manifest.graph.release == "r1"
    packed = bundler.bundle_pack.pack(acme.path, tmp_path / "acme.bundle.tar.zst")
    target = fixture.build_target(new_db("sqlite"), "r2")
    r2 = GRAPHS_DIR / "r2.json"
    load_bundle(target, vendor.path, spec=r2)

    extracted: list[Path] = []
    verified: list[str | None] = []
    extract, verify = bundler.bundle_pack.extract, bundler.inspect.verify.verify_bundle

    def counting_extract(packed: Path, dest: Path) -> Path:
        extracted.append(packed)
        return extract(packed, dest)

    def recording_verify(bundle: Any, **kwargs: Any) -> Any:
        verified.append(kwargs["graph"].release if kwargs.get("graph") is not None else None)
        return verify(bundle, **kwargs)

    monkeypatch.setattr(bundler.bundle_pack, "extract", counting_extract)
    monkeypatch.setattr(bundler.inspect.verify, "verify_bundle", recording_verify)
    result = load_bundle(target, packed, spec=r2)
    assert result.outcome == "loaded"
    assert result.tables["customers"].created == 1 and result.tables["customer_contacts"].created == 1
    assert extracted == [packed]
    assert verified == ["r1"]
