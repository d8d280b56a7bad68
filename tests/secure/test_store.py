"""Bundles in an S3-compatible store: moto's server on loopback, reached through pyarrow.fs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bundler.cli import main
from tests.export import fixture
from tests.load.test_load import counts
from tests.secure.conftest import BUCKET
from tests.secure.test_sealed import keys  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow  # end to end: left out of make test-fast


def test_bundles_exported_to_a_store_are_verified_and_loaded_from_it(
    s3: dict[str, str],
    new_db: Any,
    tmp_path: Path,
    keys: dict[str, str],  # noqa: F811
) -> None:
    from bundler.store import s3_filesystem

    source_url = new_db("sqlite")
    fixture.build(source_url)
    target_url = new_db("sqlite")
    target = fixture.build_target(target_url, "r2")
    runner = CliRunner()
    out = f"s3://{BUCKET}/site-a"
    export = ["export", "--source", source_url, "--xdrs", "all", "--sign-with", keys["a.key"], "--json"]
    exported = [
        json.loads(runner.invoke(main, [*export, f"--{kind}", name, "--out", out]).stdout)[0]["path"]
        for kind, name in (("vendor", "Carrier Ä"), ("customer", "acme"))
    ]
    assert all(p.startswith(f"{out}/") and p.endswith(".bundle") for p in exported)
    verified = runner.invoke(main, ["inspect", "verify", *exported, "--trust", keys["a.pub"]])
    assert verified.exit_code == 0, verified.output
    # a table file replaced in the store: refused as it is read, the target unchanged
    fs = s3_filesystem()
    vendor_key = exported[0].removeprefix("s3://")
    with fs.open_input_stream(f"{vendor_key}/manifest.json") as fh:
        table = sorted(json.loads(fh.read())["tables"])[0]
    with fs.open_output_stream(f"{vendor_key}/tables/{table}.parquet") as fh:
        fh.write(b"PAR1 not the file the manifest lists")
    before = counts(target)
    refused = runner.invoke(main, ["load", "--target", target_url, exported[0], "--trust", keys["a.pub"]])
    assert refused.exit_code == 4 and f"tables/{table}.parquet" in refused.stderr, refused.output
    assert counts(target) == before
    # the vendor again, this time encrypted to site B; then the customer, signed
    again = runner.invoke(
        main,
        [*export, "--vendor", "Carrier Ä", "--no-mark", "--encrypt-to", keys["b.age.pub"], "--out", out],
    )
    sealed = json.loads(again.stdout)[0]["path"]
    assert sealed.endswith(".bundle.tar.zst.age"), again.output
    trust = ["--trust", keys["a.pub"], "--identity", keys["b.age"]]
    loaded = runner.invoke(main, ["load", "--target", target_url, sealed, exported[1], *trust, "--json"])
    assert loaded.exit_code == 0, loaded.output
    assert [r["outcome"] for r in json.loads(loaded.stdout)] == ["loaded", "loaded"]
    assert counts(target)["customers"] == before["customers"] + 1
    unpacked = runner.invoke(main, ["unpack", sealed, "-o", str(tmp_path / "in"), *trust])
    assert unpacked.exit_code == 0 and (Path(unpacked.stdout.strip()) / "manifest.sig").is_file()


def test_migrate_keeps_its_bundles_report_and_log_in_a_store(s3: dict[str, str], new_db: Any) -> None:
    import shutil

    import sqlalchemy as sa

    from bundler.store import s3_filesystem

    source_url, target_url = new_db("sqlite"), new_db("sqlite")
    fixture.build(source_url)
    target = fixture.build_target(target_url, "r2")
    with target.begin() as conn:  # acme's load fails: its bundle is kept for the retry
        conn.execute(sa.text("DELETE FROM services WHERE name = 'Data'"))
    before = counts(target)
    store = f"s3://{BUCKET}/lineup"
    args = ["migrate", "--source", source_url, "--target", target_url, "--bundles", store, "--json"]
    args += ["--vendor", "Carrier Ä", "--customer", "acme", "--xdrs", "all"]
    runner = CliRunner()
    failed = runner.invoke(main, args)
    assert failed.exit_code == 1, failed.output
    summary = json.loads(failed.stdout)
    kept = Path(summary["kept"])
    acme = summary["failures"][0]["reason"]
    assert [p.name for p in kept.glob("*.bundle")] == [f"{summary['per_root'][1]['bundle_id']}.bundle"], acme
    assert summary["bundles"] == store
    assert all(summary["report"][k].startswith(f"{store}/migrate-") for k in ("html", "json", "log"))
    with target.begin() as conn:
        conn.execute(sa.text("INSERT INTO services (i_service, name, unit) VALUES (102, 'Data', 'byte')"))
    shutil.rmtree(kept)
    ok = runner.invoke(main, args)  # the retry exports acme again, loads it, uploads it
    assert ok.exit_code == 0, ok.output
    retried = json.loads(ok.stdout)
    assert "kept" not in retried
    assert counts(target)["customers"] == before["customers"] + 1
    fs = s3_filesystem()
    with fs.open_input_stream(retried["report"]["log"].removeprefix("s3://")) as fh:
        assert b"acme" in fh.read()
    # each bundle whole in the store, verifiable from there
    loaded = [r for r in summary["per_root"] + retried["per_root"] if r["state"] == "done"]
    assert [r["kind"] for r in loaded] == ["vendor", "customer"]
    for root in loaded:
        url = f"{store}/{root['bundle_id']}.bundle"
        assert fs.get_file_info(f"{url.removeprefix('s3://')}/manifest.json").size > 0
        verified = runner.invoke(main, ["inspect", "verify", url])
        assert verified.exit_code == 0, verified.output
