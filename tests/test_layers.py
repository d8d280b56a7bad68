"""Layered bundles (format 2): shared rows an earlier bundle carried travel as references.

The layered load must leave the target exactly as the full bundle's load does, value by
value, on every database; a bundle loaded before its layer stops with exit 5 naming it;
a shared row that changed in the source since its layer is carried again; a version-1
bundle still loads.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.bundle import open_bundle
from bundler.cli import main
from bundler.errors import ExitCode, PrerequisitesMissing
from bundler.export import ExportOptions, export_root
from bundler.load import load_bundle
from tests.export import fixture
from tests.export.fixture import NOW

OPTIONS = ExportOptions(now=NOW, xdrs="all", mark=False)


def dump(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every billing row of a database, sorted (bundler's own tables left out)."""
    out = {}
    with engine.connect() as conn:
        for name in sorted(sa.inspect(conn).get_table_names()):
            if name.startswith("bundler_"):
                continue
            rows = conn.execute(sa.text(f"SELECT * FROM {name}")).all()
            out[name] = sorted((tuple(r) for r in rows), key=repr)
    return out


@pytest.fixture
def world(new_db: Any, dialect: str, tmp_path: Path) -> dict[str, Any]:
    source = fixture.build(new_db(dialect))
    out = tmp_path / "out"
    vendor = export_root(source, "vendor", "Carrier Ä", out, options=OPTIONS).path
    acme = export_root(source, "customer", "acme", out, options=OPTIONS).path
    return {
        "source": source,
        "out": out,
        "vendor": vendor,
        "acme": acme,
        "new_db": new_db,
        "dialect": dialect,
    }


def _target(world: dict[str, Any], *bundles: Path) -> sa.Engine:
    target = fixture.build_target(world["new_db"](world["dialect"]), "r2")
    for bundle in bundles:
        load_bundle(target, bundle)
    return target


def test_a_layered_bundle_loads_exactly_as_the_full_one(world: dict[str, Any]) -> None:
    source, out, acme = world["source"], world["out"], world["acme"]
    full = export_root(source, "reseller", "reseller-r", out, options=OPTIONS)
    layered = export_root(source, "reseller", "reseller-r", out, options=replace(OPTIONS, after=(acme,)))

    acme_id = open_bundle(acme).bundle_id
    manifest = layered.manifest
    assert manifest.format_version == 2 and acme_id in manifest.depends_on
    by_layer = {t: o for t, o in manifest.prerequisites.items() if o.source_bundles}
    assert "products" in by_layer and by_layer["products"].source_bundles == (acme_id,)
    assert [r.key for r in by_layer["products"].rows] == [{"name": "Business SIP"}]
    # the product acme carried travels as a reference; the one only the reseller uses is carried
    assert layered.manifest.tables["products"].rows == full.manifest.tables["products"].rows - 1
    assert layered.manifest.totals.rows < full.manifest.totals.rows

    with_full = _target(world, world["vendor"], acme, full.path)
    with_layers = _target(world, world["vendor"], acme, layered.path)
    assert dump(with_layers) == dump(with_full)


def test_a_layered_bundle_without_its_layer_stops_naming_it(world: dict[str, Any], tmp_path: Path) -> None:
    acme = world["acme"]
    layered = export_root(
        world["source"], "reseller", "reseller-r", world["out"], options=replace(OPTIONS, after=(acme,))
    )
    target = _target(world, world["vendor"])
    before = dump(target)
    acme_id = open_bundle(acme).bundle_id
    with pytest.raises(PrerequisitesMissing, match=f"depends on bundle {acme_id}") as info:
        load_bundle(target, layered.path)
    assert info.value.exit_code == ExitCode.PREREQUISITES_MISSING
    assert f"load bundle {acme_id} first" in info.value.line()
    assert dump(target) == before


def test_a_shared_row_changed_since_its_layer_is_carried_again(world: dict[str, Any]) -> None:
    source, acme = world["source"], world["acme"]
    with source.begin() as conn:
        conn.execute(
            sa.text("UPDATE products SET description = 'edited mid-run' WHERE name = 'Business SIP'")
        )
    layered = export_root(
        source, "reseller", "reseller-r", world["out"], options=replace(OPTIONS, after=(acme,))
    )
    outside = layered.manifest.prerequisites
    assert "products" not in outside or all(
        r.key != {"name": "Business SIP"} for r in outside["products"].rows
    )
    with open_bundle(layered.path) as bundle:
        names = bundle.read_table("products", columns=["name", "description"]).to_pylist()
    assert {"name": "Business SIP", "description": "edited mid-run"} in names
    target = _target(world, world["vendor"], acme, layered.path)
    with target.connect() as conn:
        loaded = conn.execute(sa.text("SELECT count(*) FROM accounts")).scalar_one()
    assert loaded > 0


def test_export_after_through_the_cli_and_verify(world: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    url = world["source"].url.render_as_string(hide_password=False)
    result = runner.invoke(
        main,
        [
            "export",
            "--source",
            url,
            "--reseller",
            "reseller-r",
            "--no-mark",
            "--after",
            str(world["acme"]),
            "--out",
            str(tmp_path / "layered"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    path = json.loads(result.stdout)[0]["path"]
    result = runner.invoke(main, ["inspect", "verify", path])
    assert result.exit_code == 0, result.output


def test_a_version_1_bundle_still_loads(world: dict[str, Any], tmp_path: Path) -> None:
    """A bundle written by format 1 (no ``from``: its usage owners implied by ``depends_on``)."""
    manifest_path = Path(world["acme"]) / "manifest.json"
    doc = json.loads(manifest_path.read_text())
    doc["format_version"] = 1
    for entry in doc["prerequisites"].values():
        entry.pop("from", None)
    manifest_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    assert open_bundle(world["acme"]).manifest.format_version == 2  # upgraded as it is read
    target = _target(world, world["vendor"], world["acme"])
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM xdrs")).scalar_one() > 0


def _two_phase(world: dict[str, Any]) -> tuple[Path, Path]:
    source, out = world["source"], world["out"]
    first = export_root(source, "customer", "bravo", out, options=replace(OPTIONS, xdrs="none", mark=True))
    usage = export_root(
        source, "customer", "bravo", out, options=replace(OPTIONS, usage_only=True, mark=True)
    )
    return first.path, usage.path


def test_a_usage_bundle_finds_its_owners_only_through_its_customer_bundle(world: dict[str, Any]) -> None:
    first, usage = _two_phase(world)
    manifest = open_bundle(usage).manifest
    accounts = manifest.prerequisites["accounts"]
    assert accounts.source_bundles == (open_bundle(first).bundle_id,)
    # forged: the usage bundle claims an account of another customer as one of its owners
    doc = json.loads((usage / "manifest.json").read_text())
    entry = doc["prerequisites"]["accounts"]
    entry["rows"].append({"value": 1, "key": {"id": "acme-1"}})
    (usage / "manifest.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    target = _target(world, world["vendor"], world["acme"], first)
    before = dump(target)
    with pytest.raises(PrerequisitesMissing, match="acme-1"):
        load_bundle(target, usage)
    assert dump(target) == before


def test_a_version_1_usage_bundle_still_finds_its_owners_through_depends_on(world: dict[str, Any]) -> None:
    first, usage = _two_phase(world)
    doc = json.loads((usage / "manifest.json").read_text())
    doc["format_version"] = 1
    for entry in doc["prerequisites"].values():
        entry.pop("from", None)
    (usage / "manifest.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    upgraded = open_bundle(usage).manifest
    assert upgraded.prerequisites["accounts"].source_bundles == (open_bundle(first).bundle_id,)
    target = _target(world, world["vendor"], first, usage)
    with target.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM xdrs")).scalar_one() > 0


def test_verify_with_its_layers_checks_that_they_carry_what_it_names(
    world: dict[str, Any], tmp_path: Path
) -> None:
    acme, vendor = world["acme"], world["vendor"]
    layered = export_root(
        world["source"], "reseller", "reseller-r", world["out"], options=replace(OPTIONS, after=(acme,))
    ).path
    runner = CliRunner()
    alone = runner.invoke(main, ["inspect", "verify", str(layered)])  # its references are declared
    assert alone.exit_code == 0, alone.output
    other = runner.invoke(main, ["inspect", "verify", str(layered), "--with", str(vendor)])
    assert other.exit_code == 0, other.output
    assert "not given with --with: not checked" in other.stderr
    ok = runner.invoke(main, ["inspect", "verify", str(layered), "--with", str(acme)])
    assert ok.exit_code == 0, ok.output
    assert "not checked" not in ok.stderr
    # a layer that does not carry what the bundle names it for: the load would stop at it
    doc = json.loads((layered / "manifest.json").read_text())
    acme_id = open_bundle(acme).bundle_id
    vendor_id = open_bundle(vendor).bundle_id
    for entry in doc["prerequisites"].values():
        if entry.get("from") == [acme_id]:
            entry["from"] = [vendor_id]
    (layered / "manifest.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    wrong = runner.invoke(main, ["inspect", "verify", str(layered), "--with", str(vendor)])
    assert wrong.exit_code == ExitCode.BUNDLE_INVALID, wrong.output
    assert f"are not carried by {vendor_id}" in wrong.stdout
