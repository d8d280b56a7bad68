"""Hostile bundles: each one refused with exit 4 naming what it broke, within bounded memory."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from click.testing import CliRunner

from bundler import bundle_pack
from bundler.bundle import Bundle, open_bundle
from bundler.cli import main
from bundler.errors import BundleInvalid
from bundler.export import ExportOptions, export_root
from tests.export import fixture
from tests.export.fixture import NOW

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
    monkeypatch.setattr(bundle_pack, "MAX_PACKED_MEMBERS", 4)
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


def _varint(value: int, width: int = 0) -> bytes:
    """``value`` as a Thrift varint, padded to ``width`` bytes with continuation bytes (legal)."""
    out = bytearray()
    while value >= 0x80 or len(out) + 1 < width:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _claim_page_size(file: Path, claim: int | None, stored: int | None = None) -> None:
    """Make the first page of ``file`` claim ``claim`` bytes uncompressed and ``stored`` bytes
    compressed (None: its true sizes), everything else kept:
    the page header keeps its length (its CRC dropped, the varints padded), so every offset
    and size in the footer stays true. The file must be written with page checksums."""
    col = pq.read_metadata(file).row_group(0).column(0)
    data = bytearray(file.read_bytes())
    at = pos = col.data_page_offset
    values = []
    for _ in range(4):  # type, uncompressed size, compressed size, crc: i32 fields 1..4
        assert data[pos] == 0x15, "an i32 field of the page header"
        pos += 1
        raw = shift = 0
        while True:
            raw |= (data[pos] & 0x7F) << shift
            shift += 7
            pos += 1
            if not data[pos - 1] & 0x80:
                break
        values.append(raw)
    assert data[pos] == 0x1C, "the data page header follows the crc"
    size = values[1] if claim is None else 2 * claim  # zigzag
    room = pos - at - 3 - len(_varint(values[0]))  # for the two sizes
    width = min(5, room - len(_varint(size)))
    sizes = (
        _varint(size, room - width) + b"\x15" + _varint(values[2] if stored is None else 2 * stored, width)
    )
    assert len(sizes) == room + 1 and room - width <= 5, "two i32 varints in the room of the old fields"
    data[at : pos + 1] = b"\x15" + _varint(values[0]) + b"\x15" + sizes + b"\x2c"  # field 5 after 3
    file.write_bytes(bytes(data))


def _hostile_page(file: Path, claim: int | None, stored: int | None = None) -> None:
    pq.write_table(
        pa.table({"a": list(range(40))}),
        file,
        compression="zstd",
        use_dictionary=False,
        write_page_checksum=True,
        write_statistics=False,
    )
    _claim_page_size(file, claim, stored)


def test_a_page_claiming_a_huge_size_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 1)
    file = folder / "tables" / "t.parquet"
    _hostile_page(file, None)  # its true size: the crafted file is a good one
    assert pq.read_table(file).column("a").to_pylist() == list(range(40))
    assert Bundle(folder, folder).read_table("t").num_rows == 40
    _hostile_page(file, (1 << 31) - 1)
    tracemalloc.start()
    try:
        with pytest.raises(BundleInvalid, match="page_bytes limit") as refused:
            Bundle(folder, folder).read_table("t")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes at the peak"
    assert "tables/t.parquet: row group 0 column a, page at byte 4: data page uncompressed bytes" in str(
        refused.value
    )
    assert refused.value.exit_code == 4


@pytest.mark.parametrize("dictionary", [True, False])
def test_a_table_of_no_rows_passes_the_page_walk(dictionary: bool, tmp_path: Path) -> None:
    """A chunk of no rows has no data page (its data_page_offset is 0): nothing to refuse."""
    folder = _folder(tmp_path, 1)
    file = folder / "tables" / "t.parquet"
    empty = pa.table({"a": pa.array([], pa.int32()), "b": pa.array([], pa.string())})
    pq.write_table(empty, file, compression="zstd", use_dictionary=dictionary)
    assert Bundle(folder, folder).read_table("t").num_rows == 0


@pytest.mark.parametrize(
    ("limit", "value", "expected"),
    [
        ("page_bytes", 300, "page uncompressed bytes: 320 is more than the page_bytes limit"),
        ("page_header_bytes", 8, "header bytes read: 9 is more than the page_header_bytes limit"),
    ],
)
def test_page_limits_are_named(
    limit: str, value: int, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path, 1)
    _hostile_page(folder / "tables" / "t.parquet", 320)
    monkeypatch.setenv(f"BUNDLER_LIMIT_{limit.upper()}", str(value))
    for read in (Bundle.parquet_file, Bundle.duckdb_source):
        with pytest.raises(BundleInvalid, match=expected):
            read(Bundle(folder, folder), "t")


def test_a_page_running_past_its_column_chunk_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, 1)
    _hostile_page(folder / "tables" / "t.parquet", None, stored=1000)
    with pytest.raises(BundleInvalid, match="page at byte 4: the page runs past the end of the column chunk"):
        Bundle(folder, folder).parquet_file("t")


def test_a_bundle_with_a_hostile_page_is_refused_by_the_commands(new_db: Any, tmp_path: Path) -> None:
    """A hostile actor rewrites a table file and its checksum in the manifest (no signature)."""
    source = fixture.build(new_db("sqlite"))
    acme = export_root(source, "customer", "acme", tmp_path, options=ExportOptions(now=NOW)).path
    runner = CliRunner()
    count = ["inspect", "query", str(acme), "SELECT count(*) AS n FROM accounts"]
    assert runner.invoke(main, count).exit_code == 0
    file = acme / "tables" / "accounts.parquet"
    pq.write_table(
        pq.read_table(file), file, compression="zstd", use_dictionary=False, write_page_checksum=True
    )
    _claim_page_size(file, (1 << 31) - 1)
    doc = json.loads((acme / "manifest.json").read_text())
    doc["tables"]["accounts"].update(
        bytes=file.stat().st_size, sha256=hashlib.sha256(file.read_bytes()).hexdigest()
    )
    (acme / "manifest.json").write_text(json.dumps(doc))
    for args in (count, ["inspect", "verify", str(acme)], ["inspect", "summary", str(acme)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 4, (args, result.output)
        said = result.output  # verify lists its problems on stdout
        assert acme.name in said and "tables/accounts.parquet: row group 0 column i_account, page at" in said
        assert "page_bytes limit" in said and "BUNDLER_LIMIT_PAGE_BYTES" in said
