"""Bundles in an S3-compatible store: moto's server on loopback, reached through pyarrow.fs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bundler.cli import main
from tests.export import fixture
from tests.load.test_load import counts
from tests.secure.test_sealed import keys  # noqa: F401  (the fixture)

BUCKET = "moves"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[dict[str, str]]:
    """An S3-compatible server on a free loopback port, with one bucket; its environment."""
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    pafs.S3FileSystem(
        endpoint_override=f"{host}:{port}",
        scheme="http",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        allow_bucket_creation=True,
    ).create_dir(BUCKET)
    yield env
    server.stop()


@pytest.fixture
def s3(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in s3_server.items():
        monkeypatch.setenv(name, value)
    return s3_server


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
