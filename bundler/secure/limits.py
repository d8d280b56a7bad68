"""The bounds a hostile bundle cannot push: sizes, counts and file kinds, checked before reading.

Each limit has a name that the refusal quotes (exit 4, :class:`~bundler.errors.BundleInvalid`),
and an environment variable ``BUNDLER_LIMIT_<NAME>`` that raises or lowers it for a site
whose bundles are bigger (or a test that wants small ones).

- ``manifest_bytes`` / ``signature_bytes``: ``manifest.json`` and ``manifest.sig``, checked before read;
- ``unpacked_bytes``: the total size of the files a packed bundle unpacks to;
- ``header_bytes``: what a tar header (with its long-name and pax records) may take;
- ``parquet_footer_bytes``: a Parquet file's footer (its metadata), read before any data;
- ``row_group_bytes`` / ``row_group_rows``: one row group, uncompressed, as its metadata says;
- ``column_chunk_bytes``: one column of one row group, uncompressed (its pages are inside it);
- ``page_bytes`` / ``page_header_bytes``: one page and its header (:mod:`bundler.secure.pages`).

The number of files of a packed bundle (:data:`bundler.bundle_pack.MAX_PACKED_MEMBERS`) is bounded
where it is read; path names by the pattern of what a bundle holds.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bundler.errors import BundleInvalid

if TYPE_CHECKING:
    import pyarrow.parquet as pq

DEFAULTS: dict[str, int] = {
    "manifest_bytes": 256 << 20,
    "signature_bytes": 4096,
    "unpacked_bytes": 256 << 30,
    "header_bytes": 1 << 20,
    "parquet_footer_bytes": 64 << 20,
    "row_group_bytes": 2 << 30,
    "row_group_rows": 4_000_000,
    "column_chunk_bytes": 1 << 30,
    "page_bytes": 512 << 20,
    "page_header_bytes": 16 << 20,
}
#: Thrift bounds handed to Arrow's footer reader (strings and lists inside the metadata).
THRIFT_STRING_LIMIT = 16 << 20
THRIFT_CONTAINER_LIMIT = 1_000_000


def limit(name: str) -> int:
    """The value of limit ``name`` (its environment variable, else the default)."""
    raw = os.environ.get(f"BUNDLER_LIMIT_{name.upper()}")
    return int(raw) if raw else DEFAULTS[name]


def exceeded(bundle: str, what: str, value: int, name: str) -> BundleInvalid:
    """The refusal of a bundle that goes past limit ``name``."""
    return BundleInvalid(
        bundle,
        [f"{what}: {value} is more than the {name} limit ({limit(name)})"],
        hint=f"if the bundle is genuine, raise BUNDLER_LIMIT_{name.upper()}",
    )


def check_regular(bundle: str, path: Path, shown: str) -> None:
    """Refuse a symbolic link, device, pipe or socket where a bundle holds a file or folder."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise BundleInvalid(bundle, [f"{shown}: a symbolic link (a bundle holds only regular files)"])
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BundleInvalid(bundle, [f"{shown}: not a regular file (a device, pipe or socket)"])


def check_folder(bundle: str, root: Path) -> None:
    """:func:`check_regular` for a bundle folder and every entry of it and of its ``tables/``."""
    check_regular(bundle, root, root.name)
    for entry in os.scandir(root):
        check_regular(bundle, Path(entry.path), entry.name)
        if entry.name == "tables" and entry.is_dir(follow_symlinks=False):
            for inner in os.scandir(entry.path):
                check_regular(bundle, Path(inner.path), f"tables/{inner.name}")


class _Encrypted(Exception):
    """A Parquet file asked for a key: it holds encrypted columns."""


def _no_keys() -> pq.FileDecryptionProperties:
    """Decryption properties whose key client has no key. Without any, pyarrow aborts the whole
    process (std::terminate) when it reads the metadata of an encrypted column of a file with a
    plain footer; with these, opening such a file raises :class:`_Encrypted`."""
    import pyarrow.parquet.encryption as pe

    class NoKeys(pe.KmsClient):
        def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
            raise _Encrypted

        def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
            raise _Encrypted

    factory = pe.CryptoFactory(lambda _config: NoKeys())
    return factory.file_decryption_properties(pe.KmsConnectionConfig())


def check_parquet(bundle: str, shown: str, fh: IO[bytes], size: int) -> pq.FileMetaData:
    """A Parquet file's metadata, read with bounded memory, after checking every size it declares."""

    from bundler.secure import pages

    if size < 12:
        raise BundleInvalid(bundle, [f"{shown}: {size} bytes, too short to be a Parquet file"])
    fh.seek(size - 8)
    tail = fh.read(8)
    if tail[4:] != b"PAR1":
        raise BundleInvalid(bundle, [f"{shown}: not a Parquet file (no PAR1 at its end)"])
    footer = int.from_bytes(tail[:4], "little")
    if footer > limit("parquet_footer_bytes"):
        raise exceeded(bundle, f"{shown}: footer of {footer} bytes", footer, "parquet_footer_bytes")
    if footer > size - 12:
        raise BundleInvalid(bundle, [f"{shown}: its footer is longer than the file"])
    if _has_encrypted_chunks(bundle, shown, fh, size):  # pyarrow would abort on them without keys
        return _check_encrypted(bundle, shown, fh, size)
    try:
        meta = _metadata(bundle, shown, fh, _no_keys())
    except _Encrypted:  # encrypted columns, read without their key: the footer read by hand
        return _check_encrypted(bundle, shown, fh, size)
    check_row_groups(bundle, shown, size, (meta.row_group(i) for i in range(meta.num_row_groups)))
    pages.check_pages(bundle, shown, fh, size, pages.column_chunks(meta))
    return meta


def _metadata(
    bundle: str, shown: str, fh: IO[bytes], decryption: pq.FileDecryptionProperties | None = None
) -> pq.FileMetaData:
    """pyarrow's metadata of a Parquet file whose footer was checked, its Thrift bounded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fh.seek(0)
    try:
        return pq.ParquetFile(
            fh,
            thrift_string_size_limit=THRIFT_STRING_LIMIT,
            thrift_container_size_limit=THRIFT_CONTAINER_LIMIT,
            decryption_properties=decryption,
        ).metadata
    except (pa.ArrowException, OSError) as exc:
        raise BundleInvalid(bundle, [f"{shown}: unreadable Parquet metadata ({exc})"]) from None


def check_row_groups(bundle: str, shown: str, size: int, groups: Iterable[Any]) -> None:
    """Every row group's rows and bytes, and every column chunk's, within the limits."""
    for i, rg in enumerate(groups):
        where = f"{shown}: row group {i}"
        if rg.num_rows > limit("row_group_rows"):
            raise exceeded(bundle, f"{where} rows", rg.num_rows, "row_group_rows")
        if rg.total_byte_size > limit("row_group_bytes"):
            raise exceeded(bundle, f"{where} bytes", rg.total_byte_size, "row_group_bytes")
        for c in range(rg.num_columns):
            col = rg.column(c)
            if col.total_uncompressed_size > limit("column_chunk_bytes"):
                raise exceeded(
                    bundle,
                    f"{where} column {col.path_in_schema}",
                    col.total_uncompressed_size,
                    "column_chunk_bytes",
                )
            if col.total_compressed_size > size:
                raise BundleInvalid(bundle, [f"{where} column {col.path_in_schema}: larger than the file"])


def _has_encrypted_chunks(bundle: str, shown: str, fh: IO[bytes], size: int) -> bool:
    """Whether the footer (read by hand) declares encrypted column chunks, whatever else it says."""
    from bundler.secure.footer import FooterError, encrypted_columns, footer_bytes

    try:
        return bool(encrypted_columns(footer_bytes(fh, size), THRIFT_CONTAINER_LIMIT))
    except FooterError as exc:
        raise BundleInvalid(bundle, [f"{shown}: unreadable Parquet metadata ({exc})"]) from None


def _check_encrypted(bundle: str, shown: str, fh: IO[bytes], size: int) -> pq.FileMetaData:
    """:func:`check_parquet` of a file with encrypted columns, without their key: the sizes are read
    from the footer by :mod:`bundler.secure.footer`; pyarrow's metadata (schema, row counts) is
    returned, whose encrypted column chunks must not be looked at (pyarrow aborts on them)."""

    from bundler.secure import pages
    from bundler.secure.footer import FooterError, encrypted_columns, footer_bytes, row_groups

    data = footer_bytes(fh, size)
    try:
        check_row_groups(bundle, shown, size, row_groups(data, THRIFT_CONTAINER_LIMIT))
        skip = encrypted_columns(data, THRIFT_CONTAINER_LIMIT)
    except FooterError as exc:
        raise BundleInvalid(bundle, [f"{shown}: unreadable Parquet metadata ({exc})"]) from None
    meta = _metadata(bundle, shown, fh)
    # the pages of the plain columns (an encrypted column's page headers are encrypted too)
    pages.check_pages(bundle, shown, fh, size, pages.column_chunks(meta, skip))
    return meta


class BoundedReader:
    """A stream that refuses to be read past ``allowed`` bytes (set as each tar member is checked),
    so a tar header (pax records, long names) cannot make the reader buffer without end."""

    def __init__(self, raw: IO[bytes], bundle: str) -> None:
        self._raw = raw
        self.bundle = bundle
        self.consumed = 0
        self.allowed = limit("header_bytes")

    def read(self, n: int = -1) -> bytes:
        if n < 0 or self.consumed + n > self.allowed:
            n = max(0, self.allowed - self.consumed) + 1  # one byte past tells a bound from the end
        data = self._raw.read(n)
        self.consumed += len(data)
        if self.consumed > self.allowed:
            raise exceeded(self.bundle, "a tar header", self.consumed, "header_bytes")
        return data

    def allow(self, member_end: int) -> None:
        """The member whose data ends at ``member_end`` passed its checks: read it and the next header."""
        self.allowed = member_end + limit("header_bytes")
