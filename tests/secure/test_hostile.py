"""Hostile bundles: each one refused with exit 4 naming what it broke, within bounded memory."""

from __future__ import annotations

import io
import os
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner

from bundler import bundle as bundle_module
from bundler.bundle import Bundle, open_bundle
from bundler.cli import main
from bundler.errors import BundleInvalid

ROOT = "x.bundle"


class Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as they are read (nothing held in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


Member = tuple[tarfile.TarInfo, int]  # a member and how many zero bytes of data it has


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, **pax: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, 0o644
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    info.pax_headers = pax
    return info, size


def _packed(path: Path, members: list[Member]) -> Path:
    with (
        open(path, "wb") as raw,
        zstandard.ZstdCompressor(level=1).stream_writer(raw, closefd=False) as zw,
        tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for info, size in members:
            tar.addfile(info, Zeros(size) if info.isfile() else None)  # type: ignore[arg-type]
    return path


BIG = 48 << 20  # what the hostile archives declare: far more than the memory the refusal may take

ARCHIVES: dict[str, tuple[Callable[[], list[Member]], str]] = {
    "traversal": (lambda: [_info(f"{ROOT}/../../etc/cron.d/evil", 10)], "not a file a bundle holds"),
    "absolute": (lambda: [_info("/tmp/evil.bundle/manifest.json", 10)], "not a file a bundle holds"),
    "symlink": (lambda: [_info(f"{ROOT}/tables/a.parquet", kind=tarfile.SYMTYPE)], "not a regular file"),
    "device": (lambda: [_info(f"{ROOT}/tables/a.parquet", kind=tarfile.CHRTYPE)], "not a regular file"),
    "two roots": (
        lambda: [_info(f"{ROOT}/tables/a.parquet", 1), _info("y.bundle/tables/b.parquet", 1)],
        "exactly one bundle folder",
    ),
    "bomb": (lambda: [_info(f"{ROOT}/tables/a.parquet", BIG)], "unpacked_bytes limit"),
    "huge manifest": (lambda: [_info(f"{ROOT}/manifest.json", BIG)], "manifest_bytes limit"),
    "huge header": (
        lambda: [_info(f"{ROOT}/tables/a.parquet", 1, comment="x" * (6 << 20))],
        "header_bytes limit",
    ),
    "many files": (lambda: [_info(f"{ROOT}/tables/t{i}.parquet", 1) for i in range(5)], "more than 4 files"),
}


@pytest.mark.parametrize("case", list(ARCHIVES))
def test_hostile_archives_are_refused_within_bounded_memory(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUNDLER_LIMIT_UNPACKED_BYTES", str(8 << 20))
    monkeypatch.setenv("BUNDLER_LIMIT_MANIFEST_BYTES", str(1 << 20))
    monkeypatch.setattr(bundle_module, "MAX_PACKED_MEMBERS", 4)
    build, expected = ARCHIVES[case]
    packed = _packed(tmp_path / "hostile.bundle.tar.zst", build())
    tracemalloc.start()
    try:
        with pytest.raises(BundleInvalid, match=expected):
            open_bundle(packed)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"{case}: {peak} bytes at the peak"
    result = CliRunner().invoke(main, ["unpack", str(packed), "-o", str(tmp_path / "out")])
    assert result.exit_code == 4 and expected in result.stderr, result.output
    assert not any((tmp_path / "out").rglob("*.parquet")) and not Path("/etc/cron.d/evil").exists()


def _folder(tmp_path: Path, rows: int) -> Path:
    folder = tmp_path / ROOT
    (folder / "tables").mkdir(parents=True)
    pq.write_table(pa.table({"a": list(range(rows))}), folder / "tables" / "t.parquet", row_group_size=rows)
    return folder


def test_parquet_sizes_are_checked_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path, 10)
    bundle = Bundle(folder, folder)
    assert bundle.read_table("t").num_rows == 10
    for name, value in (("row_group_rows", 9), ("row_group_bytes", 8), ("parquet_footer_bytes", 16)):
        monkeypatch.setenv(f"BUNDLER_LIMIT_{name.upper()}", str(value))
        with pytest.raises(BundleInvalid, match=f"{name} limit"):
            Bundle(folder, folder).parquet_file("t")
        with pytest.raises(BundleInvalid, match=f"{name} limit"):
            Bundle(folder, folder).duckdb_source("t")
        monkeypatch.delenv(f"BUNDLER_LIMIT_{name.upper()}")


def test_links_and_pipes_in_a_bundle_folder_are_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 1)
    os.symlink("/etc/passwd", folder / "tables" / "u.parquet")
    with pytest.raises(BundleInvalid, match="tables/u.parquet: a symbolic link"):
        open_bundle(folder)
    (folder / "tables" / "u.parquet").unlink()
    os.mkfifo(folder / "manifest.json")
    with pytest.raises(BundleInvalid, match="manifest.json: not a regular file"):
        open_bundle(folder)
