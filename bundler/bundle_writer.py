"""Writing a bundle: each table's Parquet file streamed from Arrow batches (encoded in a
background thread), then the manifest, written last, and the folder renamed into place.

See :mod:`bundler.bundle` for the format; reading and verifying a bundle live there, packing
in :mod:`bundler.bundle_pack`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.bundle import BUNDLE_SUFFIX, sha256_file
from bundler.errors import BundleInvalid, BundlerError
from bundler.manifest import MANIFEST, TABLES_DIR, Manifest, ManifestDraft, TableEntry, manifest_problems
from bundler.secure.signing import SIGNATURE

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bundler.secure.columns import ColumnEncryption

#: rows per Parquet row group of the tables a bundle holds
ROW_GROUP_ROWS = 131_072


class TableFile:
    """Streams Arrow record batches of one table into its Parquet file.

    Columns whose first batch repeats its values (at most half distinct) are dictionary
    encoded; the others are written plain, which is faster and, for ids, timestamps and
    amounts, smaller too (a dictionary that overflows only costs time before the writer
    falls back to plain).
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        sink: _BackgroundWriter | None = None,
        encryption: ColumnEncryption | None = None,
        encrypted: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        self.schema = schema
        self.encrypted = encrypted if encryption is not None else ()
        self._encryption = encryption
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
            self._sink.submit(self._write, batch, size=batch.nbytes)
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
                encryption_properties=(
                    self._encryption.properties(self.encrypted)
                    if self._encryption and self.encrypted
                    else None
                ),
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


#: bytes of batches that may wait for the bundle's writer thread (see :class:`_BackgroundWriter`)
BACKLOG_BYTES = 8 << 20


class _BackgroundWriter:
    """One thread that runs a bundle's file writes in order, so reading and encoding overlap.

    The batches waiting in the queue hold at most ``backlog`` bytes (one batch always may:
    a big table's 65,536-row batches wait one at a time, as fast as four, measured), which
    bounds memory to a batch or two; a small bundle's tables, a few KiB each, do not wait
    for one another's encoding. The first failure is kept and raised to the caller at its
    next submit or drain.
    """

    def __init__(self, backlog: int = BACKLOG_BYTES) -> None:
        import queue
        import threading

        self._queue: queue.Queue[Any] = queue.Queue()
        self._backlog = backlog
        self._waiting = 0  # bytes of the batches submitted and not written yet
        self._room = threading.Condition()
        self._error: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="bundle-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args, size = item
            try:
                if self._error is None:
                    fn(*args)
            except BaseException as exc:
                self._error = exc
            finally:
                if size:
                    with self._room:
                        self._waiting -= size
                        self._room.notify_all()
                self._queue.task_done()
        self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, fn: Any, *args: Any, size: int = 0) -> None:
        """Run ``fn(*args)`` in the thread, after what was submitted before; ``size``: the bytes
        it holds (waits while the backlog is full)."""
        self._raise()
        if self._stopped:  # after the bundle is finished or aborted: run in the caller
            fn(*args)
            return
        if size:
            with self._room:
                while self._waiting and self._waiting + size > self._backlog:
                    self._room.wait()
                self._waiting += size
        self._queue.put((fn, args, size))

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
        self._encryption = _column_encryption()

    def table(self, name: str, schema: pa.Schema, scope: str, sensitive: tuple[str, ...] = ()) -> TableFile:
        """The file of table ``name``; its ``sensitive`` columns (and those the shipped graphs
        declare) are encrypted when the command was given recipients (:mod:`bundler.secure.columns`)."""
        from bundler.secure.mask import sensitive_columns

        if name not in self._files:
            path = self.tmp_path / TABLES_DIR / f"{name}.parquet"
            hidden = set(sensitive) | sensitive_columns(name)
            encrypted = tuple(f.name for f in schema if f.name in hidden)
            self._files[name] = (TableFile(path, schema, self._sink, self._encryption, encrypted), scope)
        return self._files[name][0]

    def _stop_sink(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.stop()

    def finish(self, draft: ManifestDraft, *, validate: bool = True) -> tuple[Path, Manifest]:
        """Write checksums and the manifest, then rename the folder into place.

        ``validate=False``: the caller validates the manifest itself, later (the lineup does
        it after the root's downtime)."""
        tables: dict[str, TableEntry] = {}
        for tf, _ in self._files.values():
            tf.close()
        self._stop_sink()
        for name in sorted(self._files):
            tf, scope = self._files[name]
            if tf.rows == 0:
                continue
            tables[name] = TableEntry(
                file=f"{TABLES_DIR}/{name}.parquet",
                scope=scope,
                rows=tf.rows,
                bytes=tf.path.stat().st_size,
                sha256=tf.sha256 or sha256_file(tf.path),
                columns={f.name: str(f.type) for f in tf.schema},
                encrypted=tf.encrypted,
            )
        manifest = draft.complete(self.bundle_id, tables)
        text = manifest.to_json()
        problems = manifest_problems(json.loads(text)) if validate else []
        if problems:  # a bug of ours, never the user's: refuse to write a bundle we could not read
            raise BundleInvalid(self.bundle_id, problems)
        manifest_path = self.tmp_path / MANIFEST
        with open(manifest_path, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _sign(self.tmp_path, text.encode("utf-8"))
        os.rename(self.tmp_path, self.final_path)
        return self.final_path, manifest

    def abort(self) -> None:
        for tf, _ in self._files.values():
            with contextlib.suppress(Exception):
                tf.close()
        with contextlib.suppress(Exception):
            self._stop_sink()
        shutil.rmtree(self.tmp_path, ignore_errors=True)


def _column_encryption() -> ColumnEncryption | None:
    """The column encryption of the bundles this command writes (None: their columns travel plain)."""
    from bundler.secure import current

    to = current().columns_to
    if not to:
        return None
    from bundler.secure.columns import ColumnEncryption

    return ColumnEncryption(to)


def _sign(folder: Path, manifest: bytes) -> None:
    """Write ``manifest.sig`` beside the manifest when a signing key is configured."""
    from bundler.secure import current
    from bundler.secure.signing import sign_manifest

    key = current().sign_key
    if key is not None:
        (folder / SIGNATURE).write_bytes(sign_manifest(manifest, key))
