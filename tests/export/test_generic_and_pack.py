"""The engine is generic (an unrelated schema through --spec), and bundles pack and unpack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from bundler.bundle import open_bundle
from bundler.bundle_pack import pack, unpack
from bundler.cli import main
from bundler.db import connect
from bundler.errors import BundleInvalid
from bundler.export import ExportOptions, export_root
from tests.export import fixture
from tests.export.fixture import NOW

CASES = Path(__file__).parent / "cases"


def _shop(url: str, dialect: str) -> sa.Engine:
    engine = connect(url)
    script = (CASES / "shop.sql").read_text()
    if dialect == "mysql":
        script = script.replace("TIMESTAMP", "DATETIME(6)")
    with engine.begin() as conn:
        for statement in filter(None, (s.strip() for s in script.split(";"))):
            conn.exec_driver_sql(statement)
    return engine


def test_unrelated_schema_through_spec(new_db: Any, dialect: str, tmp_path: Path) -> None:
    engine = _shop(new_db(dialect), dialect)
    spec = CASES / "shop.json"
    result = export_root(
        engine, "customer", "ola@example.pl", tmp_path, spec=spec, options=ExportOptions(now=NOW)
    )
    bundle = open_bundle(result.path)

    def col(table: str, name: str) -> set[Any]:
        return set(pq.read_table(bundle.table_path(table)).column(name).to_pylist())

    assert set(bundle.tables()) == {"shoppers", "baskets", "basket_items", "items", "categories", "clicks"}
    assert col("shoppers", "shopper_id") == {100}
    assert col("baskets", "basket_id") == {1000}
    assert col("basket_items", "item_id") == {10}
    assert col("items", "item_id") == {10, 11}  # 11 only through a click of the window
    assert col("categories", "category_id") == {1, 2}  # 2 through item 10, 1 as 2's parent
    assert col("clicks", "click_id") == {1}
    assert col("shoppers", "state") == {"live"}  # the status it had, although the source now says moved
    assert result.manifest.graph.release == "v7"
    assert result.manifest.to_doc()["prerequisites"]["countries"]["rows"] == [
        {"value": "PL", "key": {"code": "PL"}}
    ]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT state FROM shoppers WHERE shopper_id = 100").scalar() == "moved"


@pytest.fixture
def bundle_path(new_db: Any, tmp_path: Path) -> Path:
    engine = fixture.build(new_db("sqlite"))
    return export_root(engine, "customer", "acme", tmp_path / "out", options=ExportOptions(now=NOW)).path


def test_pack_and_unpack_round_trip(bundle_path: Path, tmp_path: Path) -> None:
    packed = pack(bundle_path, tmp_path / "acme.bundle.tar.zst")
    assert packed.stat().st_size > 0
    restored = unpack(packed, tmp_path / "incoming")
    assert restored.name == bundle_path.name
    for original in sorted(bundle_path.rglob("*")):
        copy = restored / original.relative_to(bundle_path)
        assert copy.exists()
        if original.is_file():
            assert copy.read_bytes() == original.read_bytes()
    with open_bundle(packed) as opened:  # load and inspect take the packed form directly
        assert opened.manifest == open_bundle(bundle_path).manifest


def test_unpack_refuses_a_tampered_file(bundle_path: Path, tmp_path: Path) -> None:
    tampered_dir = tmp_path / "tampered" / bundle_path.name
    shutil.copytree(bundle_path, tampered_dir)
    target = tampered_dir / "tables" / "accounts.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(data)
    with pytest.raises(BundleInvalid, match="refuses|verifies|sha256"):
        pack(tampered_dir, tmp_path / "x.tar.zst")
    # build a packed file around the tampered folder by hand: unpack must catch it
    manifest = json.loads((tampered_dir / "manifest.json").read_text())
    assert manifest["tables"]["accounts"]["sha256"]
    import tarfile

    import zstandard

    evil = tmp_path / "evil.bundle.tar.zst"
    with (
        open(evil, "wb") as raw,
        zstandard.ZstdCompressor().stream_writer(raw) as zw,
        tarfile.open(fileobj=zw, mode="w|") as tar,
    ):
        tar.add(tampered_dir, arcname=tampered_dir.name)
    with pytest.raises(BundleInvalid, match="tables/accounts.parquet: sha256 differs"):
        unpack(evil, tmp_path / "incoming")
    assert not (tmp_path / "incoming" / tampered_dir.name).exists()


def test_unpack_refuses_garbage(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bundle.tar.zst"
    junk.write_bytes(b"not a bundle at all")
    with pytest.raises(BundleInvalid, match="not a readable packed bundle"):
        unpack(junk, tmp_path / "out")


def test_cli_export_pack_unpack(new_db: Any, tmp_path: Path) -> None:
    url = new_db("sqlite")
    fixture.build(url)
    runner = CliRunner()
    out = tmp_path / "bundles"
    result = runner.invoke(
        main, ["export", "--source", url, "--customer", "acme", "--xdrs", "all", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary[0]["tables"]["xdrs"] == 5
    path = summary[0]["path"]
    result = runner.invoke(main, ["pack", path, "-o", str(tmp_path / "acme.tar.zst")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["unpack", str(tmp_path / "acme.tar.zst"), "-o", str(tmp_path / "in")])
    assert result.exit_code == 0, result.output
    # refusals are one line and exit 1
    result = runner.invoke(main, ["export", "--source", url, "--customer", "acme", "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "already Exported by bundle" in result.stderr
    result = runner.invoke(main, ["export", "--source", url, "--out", str(out)])
    assert result.exit_code == 2 and "name what to export" in result.stderr
