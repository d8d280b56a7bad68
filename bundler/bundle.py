"""The bundle format, version 1: write, read, validate, pack and unpack.

A bundle is a folder ``<bundle-id>.bundle/`` holding ``tables/<table>.parquet`` (one zstd
Parquet file per table that has rows, Arrow types kept exactly) and ``manifest.json``,
written last: its presence marks the bundle complete. The folder is built under a
temporary name beside its destination and renamed into place, so a bundle appears
whole or not at all. ``pack`` makes one zstandard-compressed tar of it for copying.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bundler import __version__
from bundler.errors import BundleInvalid, BundlerError
from bundler.graph import SPEC_DIR

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

FORMAT = "bundler-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TABLES_DIR = "tables"
BUNDLE_SUFFIX = ".bundle"
PACKED_SUFFIX = ".bundle.tar.zst"
ROW_GROUP_ROWS = 131_072
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_problems(doc: Any) -> list[str]:
    """Everything wrong with a manifest document against its JSON Schema and format version."""
    import jsonschema

    if not isinstance(doc, dict):
        return ["manifest.json is not a JSON object"]
    version = doc.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        return [
            f"manifest.json has format version {version}, newer than this bundler reads ({FORMAT_VERSION}); "
            "upgrade bundler to read it"
        ]
    schema = json.loads((SPEC_DIR / "manifest.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    problems = []
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        at = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"manifest.json does not match its schema at {at}: {error.message}")
    return problems


class TableFile:
    """Streams Arrow record batches of one table into its Parquet file.

    Columns whose first batch repeats its values (at most half distinct) are dictionary
    encoded; the others are written plain, which is faster and, for ids, timestamps and
    amounts, smaller too (a dictionary that overflows only costs time before the writer
    falls back to plain).
    """

    def __init__(self, path: Path, schema: pa.Schema, sink: _BackgroundWriter | None = None) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self.sha256: str | None = None  # of the finished file
        self._done = False
        self._sink = sink
        self._writer: pq.ParquetWriter | None = None

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Write ``batch`` (in a background thread when the bundle has one; errors surface later)."""
        if batch.num_rows == 0:
            return
        if self._done:
            raise BundlerError(f"{self.path.name} was already finished")  # a bug of ours
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)
        self.rows += batch.num_rows
        if self._sink is not None:
            self._sink.submit(self._write, batch)
        else:
            self._write(batch)

    def _write(self, batch: pa.RecordBatch | pa.Table) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self.path,
                self.schema,
                compression="zstd",
                write_statistics=True,
                store_decimal_as_integer=True,
                use_dictionary=_dictionary_columns(batch),
            )
        self._writer.write(batch, row_group_size=ROW_GROUP_ROWS)

    def done(self) -> None:
        """No more batches: close the file (in the background when there is a writer thread)."""
        if self._done:
            return
        self._done = True
        if self._sink is not None:
            self._sink.submit(self._close)
        else:
            self._close()

    def close(self) -> None:
        """Close the file and wait until it is written."""
        self.done()
        if self._sink is not None:
            self._sink.drain()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            # in the writer thread too: the big file's checksum overlaps the next tables' reads
            self.sha256 = sha256_file(self.path)


def _dictionary_columns(batch: pa.RecordBatch | pa.Table) -> list[str]:
    """The columns of ``batch`` worth dictionary encoding: at most half their values distinct."""
    import pyarrow.compute as pc

    return [
        field.name
        for field, column in zip(batch.schema, batch.columns, strict=True)
        if pc.count_distinct(column, mode="all").as_py() * 2 <= max(batch.num_rows, 2)
    ]


class _BackgroundWriter:
    """One thread that runs a bundle's file writes in order, so reading and encoding overlap.

    At most ``depth`` writes wait in the queue (one was as fast as four, measured), which
    bounds memory to a batch or two. The
    first failure is kept and raised to the caller at its next submit or drain.
    """

    def __init__(self, depth: int = 1) -> None:
        import queue
        import threading

        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="bundle-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                fn, args = item
                if self._error is None:
                    fn(*args)
            except BaseException as exc:
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Any, *args: Any) -> None:
        self._raise()
        if self._stopped:  # after the bundle is finished or aborted: run in the caller
            fn(*args)
        else:
            self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait until every submitted write is done; raise the first failure."""
        if not self._stopped:
            self._queue.join()
        self._raise()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join()


class BundleWriter:
    """Builds a bundle in a temporary folder and moves it into place when finished.

    Parquet encoding runs in a background thread (one per bundle, writes in order), so
    the caller reads the next batch while the last one is compressed.
    """

    def __init__(self, out_dir: str | Path, bundle_id: str) -> None:
        self.out_dir = Path(out_dir)
        self.bundle_id = bundle_id
        self.final_path = self.out_dir / f"{bundle_id}{BUNDLE_SUFFIX}"
        if self.final_path.exists():
            raise BundlerError(f"{self.final_path} already exists", hint="choose another --out or remove it")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_path = self.out_dir / f".{bundle_id}.tmp-{uuid.uuid4().hex[:8]}"
        (self.tmp_path / TABLES_DIR).mkdir(parents=True)
        self._files: dict[str, tuple[TableFile, str]] = {}
        self._sink: _BackgroundWriter | None = _BackgroundWriter()

    def table(self, name: str, schema: pa.Schema, scope: str) -> TableFile:
        if name not in self._files:
            path = self.tmp_path / TABLES_DIR / f"{name}.parquet"
            self._files[name] = (TableFile(path, schema, self._sink), scope)
        return self._files[name][0]

    def _stop_sink(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.stop()

    def finish(self, manifest: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
        """Write checksums and the manifest, then rename the folder into place."""
        tables: dict[str, Any] = {}
        total_rows = total_bytes = 0
        for tf, _ in self._files.values():
            tf.close()
        self._stop_sink()
        for name in sorted(self._files):
            tf, scope = self._files[name]
            if tf.rows == 0:
                continue
            size = tf.path.stat().st_size
            tables[name] = {
                "file": f"{TABLES_DIR}/{name}.parquet",
                "scope": scope,
                "rows": tf.rows,
                "bytes": size,
                "sha256": tf.sha256 or sha256_file(tf.path),
                "columns": {f.name: str(f.type) for f in tf.schema},
            }
            tables[name].update(manifest.get("_table_extra", {}).get(name, {}))
            total_rows += tf.rows
            total_bytes += size
        doc = {k: v for k, v in manifest.items() if not k.startswith("_")}
        doc.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            bundle_id=self.bundle_id,
            tool={"name": "bundler", "version": __version__},
            tables=tables,
            totals={"rows": total_rows, "bytes": total_bytes},
        )
        problems = manifest_problems(doc)
        if problems:  # a bug of ours, never the user's: refuse to write a bundle we could not read
            raise BundleInvalid(self.bundle_id, problems)
        manifest_path = self.tmp_path / MANIFEST
        with open(manifest_path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, ensure_ascii=False, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(self.tmp_path, self.final_path)
        return self.final_path, doc

    def abort(self) -> None:
        for tf, _ in self._files.values():
            with contextlib.suppress(Exception):
                tf.close()
        with contextlib.suppress(Exception):
            self._stop_sink()
        shutil.rmtree(self.tmp_path, ignore_errors=True)


@dataclass
class Bundle:
    """A bundle on disk (a packed one is unpacked to a temporary folder first)."""

    path: Path
    source: Path
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def name(self) -> str:
        return str(self.source)

    @cached_property
    def manifest_bytes(self) -> bytes:
        try:
            return (self.path / MANIFEST).read_bytes()
        except FileNotFoundError:
            raise BundleInvalid(
                self.name,
                ["manifest.json is missing: the bundle is incomplete (an export that did not finish?)"],
            ) from None

    @cached_property
    def manifest(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.manifest_bytes)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleInvalid(self.name, [f"manifest.json is not valid JSON: {exc}"]) from None
        if not isinstance(doc, dict):
            raise BundleInvalid(self.name, ["manifest.json is not a JSON object"])
        return doc

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()

    @property
    def bundle_id(self) -> str:
        return str(self.manifest.get("bundle_id", self.path.name))

    def table_path(self, table: str) -> Path:
        return self.path / TABLES_DIR / f"{table}.parquet"

    def tables(self) -> dict[str, dict[str, Any]]:
        return dict(self.manifest.get("tables", {}))

    def iter_batches(self, table: str, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.table_path(table)) as pf:
            yield from pf.iter_batches(batch_size=batch_rows)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bundle(path: str | Path) -> Bundle:
    """Open a bundle folder or a packed ``.bundle.tar.zst`` file."""
    p = Path(path)
    if p.is_dir():
        return Bundle(p, p)
    if p.is_file():
        tmp = tempfile.TemporaryDirectory(prefix="bundler-unpacked-")
        try:
            inner = _extract(p, Path(tmp.name))
        except BaseException:
            tmp.cleanup()
            raise
        return Bundle(inner, p, tmp)
    raise BundlerError(
        f"bundle {p} does not exist", hint="give the path of a .bundle folder or a packed bundle file"
    )


def checksum_problems(bundle: Bundle) -> list[str]:
    """Every file whose size or sha256 differs from the manifest, and every file it does not list."""
    problems = []
    listed = bundle.tables()
    for table, entry in sorted(listed.items()):
        if not isinstance(entry, dict):
            continue
        if entry.get("file") != f"{TABLES_DIR}/{table}.parquet":
            problems.append(
                f"manifest.json: table {table} names file {entry.get('file')!r}, not {TABLES_DIR}/{table}.parquet"
            )
            continue
        file = bundle.path / str(entry.get("file", ""))
        if not file.is_file():
            problems.append(f"{entry.get('file')}: listed in the manifest but missing")
            continue
        size = file.stat().st_size
        if size != entry.get("bytes"):
            problems.append(
                f"{entry.get('file')}: {size} bytes, the manifest says {entry.get('bytes')} (truncated or replaced)"
            )
        elif sha256_file(file) != entry.get("sha256"):
            problems.append(f"{entry.get('file')}: sha256 differs from the manifest (the file was altered)")
    tables_dir = bundle.path / TABLES_DIR
    if tables_dir.is_dir():
        expected = {f"{TABLES_DIR}/{t}.parquet" for t in listed}
        for extra in sorted(tables_dir.iterdir()):
            rel = f"{TABLES_DIR}/{extra.name}"
            if rel not in expected:
                problems.append(f"{rel}: present in the bundle but not listed in the manifest")
    return problems


# -- pack / unpack -------------------------------------------------------------------------


def pack(bundle_path: str | Path, out_file: str | Path, level: int = 3) -> Path:
    """Write one zstandard-compressed tar file of a bundle folder (atomically)."""
    import zstandard

    src = Path(bundle_path)
    bundle = open_bundle(src)
    if not src.is_dir():
        raise BundlerError(f"{src} is already a packed bundle")
    problems = manifest_problems(bundle.manifest) + checksum_problems(bundle)
    if problems:
        raise BundleInvalid(str(src), problems, hint="re-export it; a bundle is packed only when it verifies")
    out = Path(out_file)
    if out.is_dir():
        out = out / f"{src.name}.tar.zst"
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    arcroot = src.name if src.name.endswith(BUNDLE_SUFFIX) else f"{bundle.bundle_id}{BUNDLE_SUFFIX}"
    try:
        with open(tmp, "wb") as raw:
            cctx = zstandard.ZstdCompressor(level=level, threads=-1)
            with cctx.stream_writer(raw, closefd=False) as zw, tarfile.open(fileobj=zw, mode="w|") as tar:
                # manifest last, as in a folder: a reader streaming the tar sees every table first
                for file in sorted((src / TABLES_DIR).glob("*.parquet")):
                    tar.add(file, arcname=f"{arcroot}/{TABLES_DIR}/{file.name}", recursive=False)
                tar.add(src / MANIFEST, arcname=f"{arcroot}/{MANIFEST}", recursive=False)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _extract(packed: Path, dest: Path) -> Path:
    import zstandard

    try:
        with open(packed, "rb") as raw:
            reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw)
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                roots: set[str] = set()
                for member in tar:
                    parts = Path(member.name).parts
                    if not member.isfile() and not member.isdir():
                        raise BundleInvalid(str(packed), [f"{member.name}: not a regular file"])
                    if member.name.startswith("/") or ".." in parts or len(parts) > 3:
                        raise BundleInvalid(str(packed), [f"{member.name}: unsafe path in the packed bundle"])
                    roots.add(parts[0])
                    tar.extract(member, dest, filter="data")
    except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
        raise BundleInvalid(str(packed), [f"not a readable packed bundle ({exc})"]) from None
    if len(roots) != 1:
        raise BundleInvalid(str(packed), ["a packed bundle must hold exactly one bundle folder"])
    return dest / roots.pop()


def unpack(packed: str | Path, out_dir: str | Path) -> Path:
    """Restore a packed bundle into ``out_dir`` and verify every checksum."""
    src = Path(packed)
    if not src.is_file():
        raise BundlerError(f"packed bundle {src} does not exist")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=out))
    try:
        inner = _extract(src, staging)
        bundle = Bundle(inner, src)
        problems = manifest_problems(bundle.manifest) + checksum_problems(bundle)
        if problems:
            raise BundleInvalid(str(src), problems, hint="copy the file again from its origin")
        final = out / inner.name
        if final.exists():
            raise BundlerError(f"{final} already exists", hint="unpack into another folder or remove it")
        os.rename(inner, final)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
