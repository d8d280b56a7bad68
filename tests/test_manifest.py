"""The typed manifest: one builder, one reader (bounded, versioned, upgraded step by step)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard

from bundler import manifest as manifest_module
from bundler.bundle import open_bundle
from bundler.bundle_pack import pack, unpack
from bundler.errors import BundleInvalid, ExitCode
from bundler.export import ExportOptions, export_root
from bundler.manifest import FORMAT_VERSION, Manifest, manifest_problems, read_manifest
from tests.export import fixture
from tests.export.fixture import NOW


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bundler.db import create_database

    folder = tmp_path_factory.mktemp("manifest")
    engine = fixture.build(create_database(f"sqlite:///{folder}", "source"))
    options = ExportOptions(now=NOW, xdrs="all", mark=False)
    return export_root(engine, "customer", "acme", folder / "out", options=options).path


def _doc(bundle_path: Path) -> dict[str, Any]:
    return json.loads((bundle_path / "manifest.json").read_text())


def test_typed_manifest_round_trips_the_document_exactly(bundle_path: Path) -> None:
    raw = (bundle_path / "manifest.json").read_bytes()
    typed = read_manifest(raw, "b")
    assert typed.to_json().encode() == raw
    assert typed.root is not None and typed.root.natural_key == {"name": "acme"}
    assert typed.tables["xdrs"].rows == 5
    assert typed.totals.rows == sum(e.rows for e in typed.tables.values())
    assert open_bundle(bundle_path).manifest == typed


@pytest.mark.parametrize("version", [2.0, True, "1", None, 0, FORMAT_VERSION + 1])
def test_format_version_must_be_a_known_whole_number(bundle_path: Path, version: Any) -> None:
    doc = _doc(bundle_path)
    doc["format_version"] = version
    problems = manifest_problems(doc)
    assert len(problems) == 1 and "format" in problems[0]
    with pytest.raises(BundleInvalid) as info:
        read_manifest(json.dumps(doc).encode(), "forged")
    assert info.value.exit_code == ExitCode.BUNDLE_INVALID


def test_an_older_format_is_upgraded_step_by_step(bundle_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _doc(bundle_path)
    older = dict(doc, format_version=0)
    older.pop("depends_on")
    seen: list[int] = []

    def step(d: dict[str, Any]) -> dict[str, Any]:
        seen.append(d["format_version"])
        return dict(d, depends_on=[])

    monkeypatch.setattr(manifest_module, "version_problem", lambda d: None)
    monkeypatch.setitem(manifest_module.UPGRADES, 0, step)
    typed = read_manifest(json.dumps(older).encode(), "old")
    assert seen == [0]
    assert typed.format_version == FORMAT_VERSION and typed.depends_on == ()
    monkeypatch.delitem(manifest_module.UPGRADES, 0)
    with pytest.raises(BundleInvalid, match="no upgrade path"):
        read_manifest(json.dumps(older).encode(), "old")


def test_a_deeply_nested_manifest_is_refused_as_invalid(bundle_path: Path, tmp_path: Path) -> None:
    forged = tmp_path / bundle_path.name
    forged.mkdir()
    (forged / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleInvalid) as info:
        open_bundle(forged).manifest  # noqa: B018
    assert "too deep" in info.value.line()
    doc = _doc(bundle_path)
    node: dict[str, Any] = {}
    doc["root"]["natural_key"] = {"name": node}
    for _ in range(5_000):  # parses, but no manifest nests like that
        node["x"] = {}
        node = node["x"]
    assert manifest_problems(doc)


def _packed(tmp_path: Path, bundle_path: Path, extra: dict[str, bytes]) -> Path:
    out = tmp_path / "forged.bundle.tar.zst"
    with (
        open(out, "wb") as raw,
        zstandard.ZstdCompressor().stream_writer(raw) as zw,
        tarfile.open(fileobj=zw, mode="w|") as tar,
    ):
        tar.add(bundle_path, arcname=bundle_path.name)
        for name, data in extra.items():
            info = tarfile.TarInfo(f"{bundle_path.name}/{name}")
            info.size, info.mode = len(data), 0o755
            import io

            tar.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize("name", ["evil.sh", "tables/notes.txt", "tables/sub/x.parquet"])
def test_unpack_refuses_files_a_bundle_does_not_hold(bundle_path: Path, tmp_path: Path, name: str) -> None:
    forged = _packed(tmp_path, bundle_path, {name: b"#!/bin/sh\necho owned\n"})
    with pytest.raises(BundleInvalid, match="not a file a bundle holds"):
        unpack(forged, tmp_path / "in")
    assert not list((tmp_path / "in").rglob("evil.sh"))
    assert not (tmp_path / "in" / bundle_path.name).exists()


def test_pack_writes_only_what_the_manifest_lists(bundle_path: Path, tmp_path: Path) -> None:
    packed = pack(bundle_path, tmp_path / "ok.bundle.tar.zst")
    with open_bundle(packed) as opened:
        assert isinstance(opened.manifest, Manifest)
        assert opened.manifest == open_bundle(bundle_path).manifest
