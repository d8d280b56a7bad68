"""Sensitive columns encrypted column by column: exact round trips with the key, readable rest without it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from bundler.bundle import Bundle, open_bundle
from bundler.cli import main
from bundler.errors import BundleInvalid, UsageError
from bundler.export import ExportOptions, export_root
from bundler.graph import graph_for_release
from bundler.secure import Security, using
from tests.export import fixture
from tests.export.fixture import NOW
from tests.load.compare import differences
from tests.load.test_load import counts
from tests.secure.test_masked import SECRETS

OPTIONS = ExportOptions(now=NOW, xdrs="all")
ENCRYPTED = {
    "accounts": ["h323_password"],
    "payment_methods": ["number", "name_on_card"],
    "sim_cards": ["pin"],
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Site B's age key pair, and a stranger's."""
    folder = tmp_path_factory.mktemp("keys")
    for name in ("b", "stranger"):
        result = CliRunner().invoke(main, ["keys", "new", name, "--age", "--out", str(folder)])
        assert result.exit_code == 0, result.output
    return {n: str(folder / n) for n in ("b.age", "b.age.pub", "stranger.age")}


def _export(source: Any, out: Path, keys: dict[str, str]) -> list[Path]:
    """The vendor's and acme's bundles, their sensitive columns encrypted to site B (CLI, env var)."""
    url = source.url.render_as_string(hide_password=False)
    paths = []
    for option in (["--vendor", "Carrier Ä"], ["--customer", "acme"]):
        result = CliRunner().invoke(
            main,
            ["export", "--source", url, *option, "--xdrs", "all", "--out", str(out), "--json"],
            env={"BUNDLER_ENCRYPT_COLUMNS_TO": keys["b.age.pub"]},
        )
        assert result.exit_code == 0, result.output
        paths += [Path(r["path"]) for r in json.loads(result.stdout)]
    return paths


def _raw(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_columns_encrypted_copied_and_loaded_are_exact(
    new_db: Any, dialect: str, tmp_path: Path, keys: dict[str, str]
) -> None:
    source = fixture.build(new_db(dialect))
    target_url = new_db(dialect)
    target = fixture.build_target(target_url, "r2")
    vendor, acme = _export(source, tmp_path / "a", keys)
    doc = json.loads((acme / "manifest.json").read_text())
    assert {t: e["encrypted"] for t, e in doc["tables"].items() if "encrypted" in e} == ENCRYPTED
    assert not any(
        "encrypted" in e for e in json.loads((vendor / "manifest.json").read_text())["tables"].values()
    )
    copied = Path(shutil.copytree(tmp_path / "a", tmp_path / "site-b"))
    raw = _raw(copied)
    assert not [s for s in SECRETS[:3] if s.encode() in raw]
    bundles = [str(copied / vendor.name), str(copied / acme.name)]
    runner = CliRunner()
    before = counts(target)
    load = ["load", "--target", target_url, "--json"]
    refused = runner.invoke(main, [*load, *bundles])
    assert refused.exit_code == 2, refused.output
    assert "has encrypted columns (accounts, payment_methods, sim_cards)" in refused.stderr
    assert "--identity" in refused.stderr
    assert counts(target)["customers"] == before["customers"]  # acme refused (the vendor loaded)
    stranger = runner.invoke(main, [*load, "--identity", keys["stranger.age"], bundles[1]])
    assert stranger.exit_code == 4 and "not wrapped for the given identity" in stranger.stderr, (
        stranger.output
    )
    assert counts(target)["customers"] == before["customers"]
    result = runner.invoke(main, [*load, "--identity", keys["b.age"], *bundles])
    assert result.exit_code == 0, result.output
    again = export_root(
        target, "customer", "acme", tmp_path / "b", options=ExportOptions(now=NOW, xdrs="all", mark=False)
    )
    with using(Security(identities=(Path(keys["b.age"]),))):  # the comparison reads the bundle's values
        assert differences(acme, target, again.path, graph_for_release("r2")) == []
    with target.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT name_on_card FROM payment_methods")).scalar_one() == "ZOË ÅSTRÖM"


def test_an_auditor_without_the_key_reads_everything_else(
    new_db: Any, tmp_path: Path, keys: dict[str, str]
) -> None:
    source = fixture.build(new_db("sqlite"))
    _, acme = _export(source, tmp_path / "a", keys)
    runner = CliRunner()
    verify = runner.invoke(main, ["inspect", "verify", str(acme)])
    assert verify.exit_code == 0, verify.output
    assert "table sim_cards: encrypted columns pin not checked without their key" in verify.output
    summary = runner.invoke(main, ["inspect", "summary", str(acme)])
    assert summary.exit_code == 0 and "encrypted columns" in summary.stdout, summary.output
    assert "number, name_on_card" in summary.stdout
    every = "SELECT * FROM accounts, payment_methods, sim_cards"
    outputs = []
    for args in (
        ["inspect", "summary", str(acme), "--json"],
        ["inspect", "query", str(acme), every, "--format", "json", "--show-sensitive"],
        ["inspect", "query", str(acme), every, "--show-sensitive"],
        ["inspect", "diff", str(acme), str(acme), "--show-sensitive"],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (args, result.output)
        assert not [s for s in SECRETS[:4] if s in result.output], (args, result.output)
        outputs.append(result.stdout)
    rows = json.loads(outputs[1])
    assert rows and all(r["pin"] == r["number"] == r["h323_password"] == "(encrypted)" for r in rows)
    assert {r["token"] for r in rows} == {"tok_acme"} and len(rows) == 3  # 3 accounts, one card, one SIM
    tables = json.loads(outputs[0])["bundles"][0]["tables"]
    assert {t: e["encrypted"] for t, e in tables.items() if "encrypted" in e} == ENCRYPTED
    with open_bundle(acme) as bundle:
        assert bundle.read_table("payment_methods", columns=["token"]).column(0).to_pylist() == ["tok_acme"]
        with pytest.raises(UsageError, match="payment_methods.number, name_on_card encrypted"):
            list(bundle.iter_batches("payment_methods"))
    identity = ["--identity", keys["b.age"]]
    shown = runner.invoke(
        main,
        ["inspect", "query", str(acme), "SELECT pin FROM sim_cards", "--show-sensitive", *identity],
    )
    assert shown.exit_code == 0 and "1234" in shown.stdout, shown.output
    masked = runner.invoke(
        main, ["inspect", "query", str(acme), "SELECT pin FROM sim_cards", "--identity", keys["b.age"]]
    )
    assert masked.exit_code == 0 and "1234" not in masked.stdout and "********" in masked.stdout
    keyed = runner.invoke(main, ["inspect", "verify", str(acme), "--identity", keys["b.age"]])
    assert keyed.exit_code == 0 and "not checked" not in keyed.output, keyed.output


def test_encrypt_to_encrypts_the_sensitive_columns_too(
    new_db: Any, tmp_path: Path, keys: dict[str, str]
) -> None:
    source = fixture.build(new_db("sqlite"))
    with using(Security(recipients=(keys["b.age.pub"],))):
        acme = export_root(source, "customer", "acme", tmp_path / "a", options=OPTIONS).path
    with using(Security(identities=(Path(keys["b.age"]),))), open_bundle(acme) as bundle:
        assert bundle.encrypted_columns("sim_cards") == ("pin",)
        assert bundle.read_table("sim_cards", columns=["pin"]).column(0).to_pylist() == ["1234"]


def _foreign(tmp_path: Path, rows: int = 3) -> Path:
    """A bundle folder whose table has a column encrypted by someone else's key client."""
    import base64

    import pyarrow.parquet.encryption as pe

    class Kms(pe.KmsClient):  # type: ignore[misc]
        def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
            return base64.b64encode(key_bytes).decode()

        def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
            return base64.b64decode(wrapped_key)

    folder = tmp_path / "x.bundle"
    (folder / "tables").mkdir(parents=True)
    table = pa.table({"a": list(range(rows)), "pin": [f"{i:04}" for i in range(rows)]})
    config = pe.EncryptionConfiguration(footer_key="f", column_keys={"c": ["pin"]}, plaintext_footer=True)
    properties = pe.CryptoFactory(lambda _c: Kms()).file_encryption_properties(
        pe.KmsConnectionConfig(), config
    )
    pq.write_table(
        table, folder / "tables" / "t.parquet", encryption_properties=properties, row_group_size=rows
    )
    return folder


def test_a_file_with_encrypted_columns_is_read_without_a_crash(
    tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow aborts the process when it reads an encrypted column's metadata without keys: the
    footer is read by hand, the plain columns are read, the encrypted ones refused by name."""
    folder = _foreign(tmp_path)
    bundle = Bundle(folder, folder)
    assert bundle.encrypted_columns("t") == ("pin",)
    with bundle.parquet_file("t") as pf:
        assert pf.schema_arrow.names == ["a", "pin"] and pf.metadata.num_rows == 3
    assert bundle.read_table("t", columns=["a"]).column(0).to_pylist() == [0, 1, 2]
    for read in (lambda: bundle.read_table("t"), lambda: list(bundle.iter_batches("t"))):
        with pytest.raises(UsageError, match=r"t.pin encrypted: reading them needs their key"):
            read()
    assert "'(encrypted)' AS \"pin\"" in bundle.duckdb_source("t")
    with (
        using(Security(identities=(Path(keys["b.age"]),))),
        pytest.raises(BundleInvalid, match="not wrapped for the given identity"),
    ):
        Bundle(folder, folder).read_table("t")
    for name, value in (("row_group_rows", 2), ("column_chunk_bytes", 8)):  # the sizes, from the footer
        monkeypatch.setenv(f"BUNDLER_LIMIT_{name.upper()}", str(value))
        with pytest.raises(BundleInvalid, match=f"{name} limit"):
            Bundle(folder, folder).parquet_file("t")
        monkeypatch.delenv(f"BUNDLER_LIMIT_{name.upper()}")


def _ranges(file: Path, keys: dict[str, str]) -> list[tuple[int, int]]:
    """The byte ranges of a file's encrypted column chunks, and of its (plain, signed) footer."""
    from bundler.secure.columns import ColumnDecryption

    size = file.stat().st_size
    footer = int.from_bytes(file.read_bytes()[-8:-4], "little")
    ranges = [(size - 8 - footer, size - 8)]
    properties = ColumnDecryption(str(file), [Path(keys["b.age"])]).properties()
    meta = pq.ParquetFile(file, decryption_properties=properties).metadata
    for i in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            col = meta.row_group(i).column(c)
            if col.path_in_schema in ("number", "name_on_card"):
                start = col.dictionary_page_offset or col.data_page_offset
                ranges.append((start, start + col.total_compressed_size))
    return ranges


@pytest.mark.slow
def test_altered_encrypted_bytes_are_refused(new_db: Any, tmp_path: Path, keys: dict[str, str]) -> None:
    """Bytes of an encrypted column or of the footer changed (checksums recomputed, as by someone
    who can write to an unsigned copy): the load refuses with exit 4, the target unchanged."""
    import hashlib
    import random

    source = fixture.build(new_db("sqlite"))
    target_url = new_db("sqlite")
    target = fixture.build_target(target_url, "r2")
    with using(Security(column_recipients=(keys["b.age.pub"],))):
        vendor = export_root(source, "vendor", "Carrier Ä", tmp_path / "a", options=OPTIONS).path
        acme = export_root(source, "customer", "acme", tmp_path / "a", options=OPTIONS).path
    runner = CliRunner()
    load = ["load", "--target", target_url, "--identity", keys["b.age"]]
    assert runner.invoke(main, [*load, str(vendor)]).exit_code == 0
    before = counts(target)
    ranges = _ranges(acme / "tables" / "payment_methods.parquet", keys)
    rng = random.Random(19)
    for case in range(16):
        copy = Path(shutil.copytree(acme, tmp_path / f"t{case}" / acme.name))
        file = copy / "tables" / "payment_methods.parquet"
        data = bytearray(file.read_bytes())
        start, end = rng.choice(ranges)
        at = rng.randrange(start, end)
        data[at] ^= 1 << rng.randrange(8)
        file.write_bytes(bytes(data))
        doc = json.loads((copy / "manifest.json").read_text())
        doc["tables"]["payment_methods"]["sha256"] = hashlib.sha256(data).hexdigest()
        (copy / "manifest.json").write_text(json.dumps(doc))
        result = runner.invoke(main, [*load, str(copy)])
        assert result.exit_code == 4, (case, start, end, at, result.output)
        assert "payment_methods.parquet" in result.stderr, (case, at, result.output)
        assert counts(target) == before
    assert runner.invoke(main, [*load, str(acme)]).exit_code == 0  # the untouched bundle loads


def test_the_footer_read_by_hand_says_what_pyarrow_says(tmp_path: Path) -> None:
    from bundler.secure.footer import FooterError, footer_bytes, row_groups

    n = 5000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "name": pa.array([f"név {i % 97}" if i % 5 else None for i in range(n)]),
            "amount": pa.array([i / 7 for i in range(n)], pa.float64()),
            "flag": pa.array([i % 3 == 0 for i in range(n)]),
            "day": pa.array([i % 365 for i in range(n)], pa.date32()),
        }
    )
    file = tmp_path / "t.parquet"
    pq.write_table(table, file, row_group_size=1200, compression="zstd", write_statistics=True)
    meta = pq.read_metadata(file)
    with open(file, "rb") as fh:
        data = footer_bytes(fh, file.stat().st_size)
    groups = list(row_groups(data, 1000))
    assert len(groups) == meta.num_row_groups == 5
    for i, rg in enumerate(groups):
        want = meta.row_group(i)
        assert (rg.num_rows, rg.total_byte_size, rg.num_columns) == (
            want.num_rows,
            want.total_byte_size,
            want.num_columns,
        )
        for c, chunk in enumerate(rg.columns):
            col = want.column(c)
            assert (chunk.path_in_schema, chunk.total_uncompressed_size, chunk.total_compressed_size) == (
                col.path_in_schema,
                col.total_uncompressed_size,
                col.total_compressed_size,
            )
            assert not chunk.encrypted
    for bad, why in (
        (data[: len(data) // 2], "ends in the middle"),
        (b"\x19\xfc\xff\xff\xff\x0f", "a list of"),
    ):
        with pytest.raises(FooterError, match=why):
            list(row_groups(bad, 1000))


def test_a_footer_that_hides_its_encryption_is_not_a_crash(tmp_path: Path, keys: dict[str, str]) -> None:
    """The footer's encryption algorithm renamed to an unknown field: pyarrow then takes the file
    for a plain one and aborted the process on its encrypted column chunks; the footer read by
    hand still finds them."""
    from bundler.secure.footer import _Reader, footer_bytes

    folder = _foreign(tmp_path)
    file = folder / "tables" / "t.parquet"
    raw = bytearray(file.read_bytes())
    with open(file, "rb") as fh:
        data = footer_bytes(fh, len(raw))
    reader = _Reader(data, 1000)
    fields = reader.fields()
    while True:
        at = reader.pos
        fid, kind = next(fields)
        if fid == 8:  # encryption_algorithm
            break
        reader.skip(kind)
    start = len(raw) - 8 - len(data)
    delta = raw[start + at] >> 4
    assert 0 < delta <= 8
    raw[start + at] = ((delta + 7) << 4) | kind  # now field 15, which no reader knows
    file.write_bytes(bytes(raw))
    bundle = Bundle(folder, folder)
    assert bundle.encrypted_columns("t") == ("pin",)
    with pytest.raises(UsageError, match="t.pin encrypted"):
        bundle.read_table("t")
    assert bundle.read_table("t", columns=["a"]).num_rows == 3
    with using(Security(identities=(Path(keys["b.age"]),))), pytest.raises(BundleInvalid, match="t.parquet"):
        Bundle(folder, folder).read_table("t")
