"""Signed and encrypted bundles: an exact round trip through a copy, and tampering refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bundler.bundle_pack import pack
from bundler.cli import main
from bundler.export import ExportOptions, export_root
from bundler.graph import graph_for_release
from bundler.secure import Security, using
from tests.export import fixture
from tests.export.fixture import NOW
from tests.load.compare import differences
from tests.load.test_load import counts

OPTIONS = ExportOptions(now=NOW, xdrs="all")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Site A signs (Ed25519), site B decrypts (age); ``other`` is a stranger's signing key."""
    folder = tmp_path_factory.mktemp("keys")
    runner = CliRunner()
    for args in (["a"], ["b", "--age"], ["other"]):
        result = runner.invoke(main, ["keys", "new", *args, "--out", str(folder)])
        assert result.exit_code == 0, result.output
    assert (folder / "a.key").stat().st_mode & 0o077 == 0 and (folder / "b.age").stat().st_mode & 0o077 == 0
    return {n: str(folder / n) for n in ("a.key", "a.pub", "b.age", "b.age.pub", "other.pub")}


def test_encrypted_signed_bundles_copied_and_loaded_are_exact(
    new_db: Any, dialect: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    source = fixture.build(new_db(dialect))
    target = fixture.build_target(new_db(dialect), "r2")
    sealing = Security(sign_key=Path(keys["a.key"]), recipients=(keys["b.age.pub"],))
    (tmp_path / "sealed").mkdir()
    with using(sealing):
        vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "a", options=OPTIONS)
        first = export_root(source, "customer", "acme", tmp_path / "a", options=OPTIONS)
        sealed = [pack(r.path, tmp_path / "sealed") for r in (vendor, first)]
    copied = tmp_path / "site-b"
    shutil.copytree(tmp_path / "sealed", copied)
    assert b"s3cr3t" not in b"".join(p.read_bytes() for p in copied.iterdir())
    result = CliRunner().invoke(
        main,
        ["load", "--target", str(target.url.render_as_string(hide_password=False)), "--json"]
        + ["--identity", keys["b.age"], "--trust", keys["a.pub"]]
        + [str(copied / p.name) for p in sealed],
    )
    assert result.exit_code == 0, result.output
    assert [s["outcome"] for s in json.loads(result.stdout)] == ["loaded", "loaded"]
    again = export_root(
        target, "customer", "acme", tmp_path / "b", options=ExportOptions(now=NOW, xdrs="all", mark=False)
    )
    # --encrypt-to encrypted the sensitive columns of the bundle folder too: read with the key
    assert b"s3cr3t" not in (first.path / "tables" / "accounts.parquet").read_bytes()
    with using(Security(identities=(Path(keys["b.age"]),))):
        assert differences(first.path, target, again.path, graph_for_release("r2")) == []


def _forge(bundle: Path) -> None:
    """Change one value of the vendor's Parquet file and recompute the manifest's checksums,
    as someone who can write to the copy could."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    file = bundle / "tables" / "vendors.parquet"
    table = pq.read_table(file)
    names = table.column("name").to_pylist()
    table = table.set_column(table.schema.get_field_index("name"), "name", pa.array(["evil"] * len(names)))
    pq.write_table(table, file)
    doc = json.loads((bundle / "manifest.json").read_text())
    entry = doc["tables"]["vendors"]
    entry["bytes"] = file.stat().st_size
    entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(doc))


def test_unsigned_forged_wrongly_signed_or_altered_bundles_are_refused(
    new_db: Any, tmp_path: Path, keys: dict[str, str]
) -> None:
    source = fixture.build(new_db("sqlite"))
    target_url = new_db("sqlite")
    target = fixture.build_target(target_url, "r2")
    plain = export_root(source, "vendor", "Carrier Ä", tmp_path / "plain", options=OPTIONS).path
    with using(Security(sign_key=Path(keys["a.key"]), recipients=(keys["b.age.pub"],))):
        signed = export_root(
            source, "vendor", "Carrier Ä", tmp_path / "signed", options=ExportOptions(now=NOW, mark=False)
        ).path
        sealed = pack(signed, tmp_path)
    forged = Path(shutil.copytree(signed, tmp_path / "forged" / signed.name))
    _forge(forged)
    altered = tmp_path / "altered.bundle.tar.zst.age"
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 1
    altered.write_bytes(bytes(data))
    before = counts(target)
    runner = CliRunner()
    trust = ["--trust", keys["a.pub"], "--identity", keys["b.age"]]
    cases = {
        "is not signed": [str(plain), *trust],
        "does not match manifest.json": [str(forged), *trust],
        "not among the trusted keys": [str(signed), "--trust", keys["other.pub"]],
        "cannot be decrypted": [str(altered), *trust],
    }
    for expected, args in cases.items():
        result = runner.invoke(main, ["load", "--target", target_url, *args])
        assert result.exit_code == 4, (expected, result.output)
        assert expected in result.stderr
        verify = runner.invoke(main, ["inspect", "verify", *args])
        assert verify.exit_code == 4 and expected in verify.output, (expected, verify.output)
    assert counts(target) == before
    # without trust configured, the signed bundle loads (and the forged one is still caught by
    # nothing but its signature: that is what signatures are for)
    assert runner.invoke(main, ["load", "--target", target_url, str(signed)]).exit_code == 0
