"""The bundle format: open, read and validate a bundle.

A bundle is a folder ``<bundle-id>.bundle/`` holding ``tables/<table>.parquet`` (one zstd
Parquet file per table that has rows, Arrow types kept exactly) and ``manifest.json``,
written last: its presence marks the bundle complete. The folder is built under a
temporary name beside its destination and renamed into place, so a bundle appears
whole or not at all (:mod:`bundler.bundle_writer`). :mod:`bundler.bundle_pack` makes one
zstandard-compressed tar of it for copying, and opens it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bundler.errors import BundleInvalid, BundlerError
from bundler.manifest import (
    MANIFEST,
    TABLES_DIR,
    Manifest,
    parse_manifest_bytes,
    read_manifest,
)
from bundler.secure import limits
from bundler.secure.signing import SIGNATURE

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bundler.secure.columns import ColumnDecryption

BUNDLE_SUFFIX = ".bundle"
PACKED_SUFFIX = ".bundle.tar.zst"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


BUNDLE_ID_MAX = 64  # the bookkeeping tables' bundle_id columns


def bundle_slug(name: Mapping[str, Any] | str) -> str:
    """A natural key (or a text) as the readable middle of a bundle id: transliterated to
    ASCII (東京テレコム → DongJingterekomu, Société → Societe), other signs as ``_``."""
    from anyascii import anyascii

    if isinstance(name, Mapping):
        name = "-".join(str(v if not isinstance(v, Mapping) else bundle_slug(v)) for v in name.values())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", anyascii(name)).strip("_.-")[:40]
    return slug or "root"


def _key_hash(name: Mapping[str, Any] | str) -> str:
    """6 hex digits of the key: two keys that read alike still give different ids."""
    import hashlib

    text = (
        name if isinstance(name, str) else json.dumps(name, sort_keys=True, ensure_ascii=False, default=str)
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:6]


def new_bundle_id(kind: str, name: Mapping[str, Any] | str, now: datetime) -> str:
    """``kind-slug-hhhhhh-YYYYmmddTHHMMSS-xxxxxx``, at most 64 characters (the slug is
    shortened): ``hhhhhh`` is a hash of the key, ``xxxxxx`` random."""
    room = BUNDLE_ID_MAX - len(kind) - len("-") - len("-hhhhhh-YYYYmmddTHHMMSS-xxxxxx")
    slug = bundle_slug(name)[:room].rstrip("_.-") or "root"
    return f"{kind}-{slug}-{_key_hash(name)}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def manifest_sha256(bundle_path: Path) -> str:
    """The sha256 of a bundle folder's manifest (what the export and load records keep)."""
    return sha256_file(bundle_path / MANIFEST)


@dataclass
class Bundle:
    """A bundle on disk (a packed one is unpacked to a temporary folder first)."""

    path: Path
    source: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _checked: dict[str, pq.FileMetaData] = field(default_factory=dict, repr=False)
    _encrypted: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _sha256: dict[str, str] = field(default_factory=dict, repr=False)
    #: the files are the ones this process wrote (their checksums checked against the manifest
    #: it wrote): read without the checks that guard against a hostile file (see trust_written)
    _written: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        from bundler.store import remote_url

        return remote_url(self.source) or str(self.source)

    @cached_property
    def manifest_bytes(self) -> bytes:
        try:
            size = (self.path / MANIFEST).stat().st_size
            if size > limits.limit("manifest_bytes"):  # refused before it is read
                raise limits.exceeded(self.name, MANIFEST, size, "manifest_bytes")
            return (self.path / MANIFEST).read_bytes()
        except FileNotFoundError:
            raise BundleInvalid(
                self.name,
                ["manifest.json is missing: the bundle is incomplete (an export that did not finish?)"],
            ) from None
        except OSError as exc:
            raise BundleInvalid(self.name, [f"manifest.json cannot be read ({exc.strerror})"]) from None

    @cached_property
    def doc(self) -> dict[str, Any]:
        """The manifest as JSON, not yet validated (``inspect verify`` reports what is wrong with it)."""
        doc = parse_manifest_bytes(self.manifest_bytes, self.name)
        if not isinstance(doc, dict):
            raise BundleInvalid(self.name, ["manifest.json is not a JSON object"])
        return doc

    @cached_property
    def manifest(self) -> Manifest:
        """The manifest, validated against its schema, upgraded to this format version and typed."""
        return read_manifest(self.manifest_bytes, self.name)

    @cached_property
    def signature_bytes(self) -> bytes | None:
        """The bytes of ``manifest.sig`` (None: the bundle is not signed), bounded in size."""
        bound = limits.limit("signature_bytes")
        try:
            with open(self.path / SIGNATURE, "rb") as fh:
                data = fh.read(bound + 1)
        except FileNotFoundError:
            return None
        if len(data) > bound:
            raise limits.exceeded(self.name, SIGNATURE, len(data), "signature_bytes")
        return data

    def check_signature(self, trust: tuple[Path, ...]) -> None:
        """Refuse (exit 4) a bundle not signed by one of the ``trust`` public key files, or whose
        files are not those its signed manifest lists (sizes and sha256)."""
        from bundler.secure.signing import check_signature

        check_signature(self.name, self.manifest_bytes, self.signature_bytes, trust)
        problems = checksum_problems(self)
        if problems:
            raise BundleInvalid(self.name, problems, hint="copy the bundle again from its origin")

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def bundle_id(self) -> str:
        return str(self.doc.get("bundle_id", self.path.name))

    def tables(self) -> dict[str, dict[str, Any]]:
        """The manifest's table entries as JSON (use ``manifest.tables`` once the bundle verified)."""
        tables = self.doc.get("tables", {})
        return dict(tables) if isinstance(tables, dict) else {}

    # -- reading the files: every read of a bundle's data goes through the methods below, so
    # -- that how a table is stored (today a Parquet file in the folder) is known here only

    @staticmethod
    def table_file(table: str) -> str:
        """A table's file as the manifest names it, ``tables/<table>.parquet`` (in checks and messages)."""
        return f"{TABLES_DIR}/{table}.parquet"

    def table_path(self, table: str) -> Path:
        """The local file of a table (for tests and tools; readers use the methods below)."""
        return self.path / self.table_file(table)

    def has_table_file(self, table: str) -> bool:
        """Whether the bundle holds a file for ``table`` (listed in the manifest or not)."""
        return self.table_path(table).is_file()

    def parquet_metadata(self, table: str) -> pq.FileMetaData:
        """The table file's Parquet metadata, once its sizes were checked against the limits
        (footer, row groups, column chunks) with bounded memory; every read below checks first."""
        if table not in self._checked:
            relpath = self.table_file(table)
            size = self.file_size(relpath)
            if size is None:
                raise BundleInvalid(self.name, [f"{relpath}: missing"])
            with self.open_file(relpath) as fh:
                if self._written and not self._declared_encrypted(table):
                    import pyarrow.parquet as pq

                    meta = pq.ParquetFile(fh).metadata
                    self._encrypted[table] = ()
                else:
                    meta = limits.check_parquet(self.name, relpath, fh, size)
                    self._encrypted[table] = _encrypted_in(self.name, relpath, fh, size)
                self._checked[table] = meta
        return self._checked[table]

    def trust_written(self) -> None:
        """This process wrote the bundle and its files' checksums were checked against the
        manifest it wrote (:func:`bundler.load.load._check_written`): the files are its own, so
        their Parquet metadata is read as is, without the page and footer walks that guard
        against a hostile file (about 1.4 ms a table, inside a customer's downtime). A table
        the manifest declares with encrypted columns is still read the careful way."""
        self._written = True

    def _declared_encrypted(self, table: str) -> bool:
        from bundler.secure.columns import encrypted_columns

        return bool(encrypted_columns(self.tables().get(table)))

    # -- columns encrypted column by column (bundler.secure.columns): the file says which, and they
    # -- are read with the --identity's keys only; without them, the other columns are

    def encrypted_columns(self, table: str) -> tuple[str, ...]:
        """The columns of the table's file that are encrypted (Parquet modular encryption)."""
        self.parquet_metadata(table)
        return self._encrypted[table]

    @cached_property
    def column_keys(self) -> ColumnDecryption | None:
        """What encrypted columns are decrypted with: the identities given (None: no key)."""
        from bundler.secure import current

        identities = current().identities
        if not identities:
            return None
        from bundler.secure.columns import ColumnDecryption

        return ColumnDecryption(self.name, identities)

    def require_column_keys(self) -> None:
        """Refuse a bundle with encrypted columns without a key that opens them (exit 2 without
        ``--identity``, exit 4 with one the keys are not wrapped for), before anything is written."""
        from bundler.errors import UsageError

        tables = [t for t in sorted(self.tables()) if self.has_table_file(t) and self.encrypted_columns(t)]
        if not tables:
            return
        if self.column_keys is None:
            raise UsageError(
                f"bundle {self.name} has encrypted columns ({', '.join(tables)}): loading it needs their key",
                hint="give the age identity it was encrypted to: --identity FILE or BUNDLER_IDENTITY",
            )
        for table in tables:
            self.parquet_file(table).close()  # opening it unwraps its keys and checks its footer

    def parquet_file(self, table: str) -> pq.ParquetFile:
        """The table's Parquet file, its footer read; close it (it is a context manager). A file with
        encrypted columns is opened with their keys when given (else its other columns only are read)."""
        import pyarrow.parquet as pq

        meta = self.parquet_metadata(table)
        keys = self.column_keys if self._encrypted[table] else None
        if keys is None:
            return pq.ParquetFile(self.table_path(table), metadata=meta)
        try:
            return pq.ParquetFile(self.table_path(table), decryption_properties=keys.properties())
        except BaseException as exc:
            raise keys.refusal(self.table_file(table), exc) from None

    def _readable(self, table: str, columns: list[str] | None) -> None:
        """Refuse to read encrypted columns without their key (pyarrow would abort the process)."""
        from bundler.errors import UsageError

        wanted = self.encrypted_columns(table) if columns is None else columns
        hidden = [c for c in wanted if c in self.encrypted_columns(table)]
        if hidden and self.column_keys is None:
            raise UsageError(
                f"bundle {self.name}: {table}.{', '.join(hidden)} encrypted: reading them needs their key",
                hint="give the age identity the bundle was encrypted to: --identity FILE or BUNDLER_IDENTITY",
            )

    def iter_batches(self, table: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        self._readable(table, None)
        with self.parquet_file(table) as pf, self._decrypting(table):
            yield from pf.iter_batches(batch_size=batch_rows)

    def read_table(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """The whole table (or some of its columns) in memory: for small tables only."""
        self._readable(table, columns)
        with self.parquet_file(table) as pf, self._decrypting(table):
            return pf.read(columns=columns)

    @contextlib.contextmanager
    def _decrypting(self, table: str) -> Iterator[None]:
        """A failure to decrypt a column as it is read becomes exit 4 (the file was altered)."""
        keys = self.column_keys if self._encrypted[table] else None
        try:
            yield
        except Exception as exc:  # pyarrow's: a page that does not decrypt (altered)
            if keys is None or isinstance(exc, BundlerError):
                raise
            raise keys.refusal(self.table_file(table), exc) from None

    def duckdb_source(self, table: str, con: Any = None) -> str:
        """What DuckDB reads the table from, as SQL to put after FROM: ``read_parquet('…')``.

        Encrypted columns are read, with their key, through a decrypting pyarrow dataset registered
        in ``con``; without it (or without ``con``) they show as ``(encrypted)`` and are never read."""
        from bundler.secure.columns import shown_select

        self.parquet_metadata(table)
        plain = "read_parquet('" + str(self.table_path(table)).replace("'", "''") + "')"
        encrypted = self._encrypted[table]
        if not encrypted:
            return plain
        if self.column_keys is None or con is None:
            return shown_select(self.parquet_metadata(table).schema.names, encrypted, plain)
        import pyarrow.dataset as ds

        self.parquet_file(table).close()  # a key that does not open it is refused here, by name
        options = ds.ParquetFragmentScanOptions(decryption_config=self.column_keys.dataset_config())
        dataset = ds.dataset(
            str(self.table_path(table)), format=ds.ParquetFileFormat(default_fragment_scan_options=options)
        )
        name = f"bundler_decrypted_{uuid.uuid4().hex[:12]}_{table}"
        con.register(name, dataset)
        return name

    def file_names(self, folder: str = TABLES_DIR) -> list[str]:
        """The names of the entries of one of the bundle's folders (``""``: the bundle folder itself),
        sorted (none: no such folder)."""
        path = self.path / folder if folder else self.path
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def is_folder(self, relpath: str) -> bool:
        """Whether ``relpath`` is a folder of the bundle (a symbolic link is not)."""
        path = self.path / relpath
        return path.is_dir() and not path.is_symlink()

    def file_size(self, relpath: str) -> int | None:
        """The size of one of the bundle's files (``tables/x.parquet``); None when it is not there."""
        file = self.path / relpath
        return file.stat().st_size if file.is_file() else None

    def open_file(self, relpath: str) -> IO[bytes]:
        """One of the bundle's files (``tables/x.parquet``), opened for reading bytes."""
        return open(self.path / relpath, "rb")

    def file_sha256(self, relpath: str) -> str:
        """The sha256 of one of the bundle's files, read in chunks (once per bundle opened)."""
        if relpath not in self._sha256:
            digest = hashlib.sha256()
            with self.open_file(relpath) as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
            self._sha256[relpath] = digest.hexdigest()
        return self._sha256[relpath]

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _encrypted_in(bundle: str, relpath: str, fh: IO[bytes], size: int) -> tuple[str, ...]:
    """The encrypted columns that a checked Parquet file's footer declares."""
    from bundler.secure.footer import FooterError, encrypted_columns, footer_bytes

    try:
        return encrypted_columns(footer_bytes(fh, size), limits.THRIFT_CONTAINER_LIMIT)
    except FooterError as exc:
        raise BundleInvalid(bundle, [f"{relpath}: unreadable Parquet metadata ({exc})"]) from None


def open_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder or a packed ``.bundle.tar.zst`` file.

    A symbolic link, device or pipe where the bundle has a file is refused; with trusted keys
    configured (:mod:`bundler.secure`), so is a bundle they did not sign (exit 4).
    """
    from bundler.secure import current
    from bundler.store import remote_url

    url = remote_url(path)
    bundle = _open_remote(url) if url is not None else _open_bundle(Path(path))
    try:
        trust = current().trust
        if trust:
            bundle.check_signature(trust)
    except BaseException:
        bundle.close()
        raise
    return bundle


def _open_remote(url: str) -> Bundle:
    """A bundle in an object store, fetched into a private temporary folder (see bundler.store)."""
    from bundler.store import fetch, local_staging

    staging = local_staging("bundler-fetched-")
    try:
        local = fetch(url, Path(staging.name))
        if local.is_dir():
            limits.check_folder(url, local)
            return Bundle(local, Path(url), staging)
        bundle = _open_bundle(local)  # packed: unpacked into its own folder
    except BaseException:
        staging.cleanup()
        raise
    staging.cleanup()
    bundle.source = Path(url)
    return bundle


def _open_bundle(p: Path) -> Bundle:
    from bundler.secure.encryption import is_encrypted, private_tmpdir

    if p.is_dir():
        limits.check_folder(str(p), p)
        return Bundle(p, p)
    if p.is_file():
        encrypted = is_encrypted(p)
        prefix = "bundler-unpacked-"
        tmp = private_tmpdir(prefix) if encrypted else tempfile.TemporaryDirectory(prefix=prefix)
        try:
            from bundler.bundle_pack import extract

            inner = extract(p, Path(tmp.name))
        except BaseException:
            tmp.cleanup()
            raise
        return Bundle(inner, p, tmp)
    raise BundlerError(
        f"bundle {p} does not exist", hint="give the path of a .bundle folder or a packed bundle file"
    )


def checksum_problems(bundle: Bundle) -> list[str]:
    """Every file whose size or sha256 differs from the manifest, and every file or folder it does
    not list: a bundle holds ``manifest.json`` and the listed ``tables/<table>.parquet``, nothing else."""
    problems = []
    listed = bundle.tables()
    for table, entry in sorted(listed.items()):
        if isinstance(entry, dict):
            problem = _file_problem(bundle, table, entry)
            if problem is not None:
                problems.append(problem)
    for name in bundle.file_names(""):
        folder = bundle.is_folder(name)
        if (name, folder) not in ((MANIFEST, False), (SIGNATURE, False), (TABLES_DIR, True)):
            shown = f"{name}/" if folder else name
            problems.append(
                f"{shown}: present in the bundle but not part of it "
                f"(a bundle holds only {MANIFEST}, {SIGNATURE} and {TABLES_DIR}/<table>.parquet)"
            )
    expected = {Bundle.table_file(t) for t in listed}
    for name in bundle.file_names(TABLES_DIR):
        rel = f"{TABLES_DIR}/{name}"
        if rel not in expected:
            problems.append(f"{rel}: present in the bundle but not listed in the manifest")
    return problems


def _file_problem(bundle: Bundle, table: str, entry: dict[str, Any]) -> str | None:
    """What is wrong with the file of one table entry of the manifest, if anything."""
    file = entry.get("file")
    if file != Bundle.table_file(table):
        return f"manifest.json: table {table} names file {file!r}, not {Bundle.table_file(table)}"
    size = bundle.file_size(file)
    if size is None:
        return f"{file}: listed in the manifest but missing"
    if size != entry.get("bytes"):
        return f"{file}: {size} bytes, the manifest says {entry.get('bytes')} (truncated or replaced)"
    if bundle.file_sha256(file) != entry.get("sha256"):
        return f"{file}: sha256 differs from the manifest (the file was altered)"
    return None
