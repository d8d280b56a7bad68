"""Recordings stores: folders, or any location pyarrow's filesystems reach.

A store is a base location plus file names relative to it (the ``file_name`` column of a
recording). :func:`open_store` takes a plain path (a local folder, created when missing)
or a URI that :meth:`pyarrow.fs.FileSystem.from_uri` understands (``file:///srv/rec``,
``s3://bucket/prefix?region=eu-west-1``, ``gs://…``, ``hdfs://…``).

Copying (:meth:`Store.copy_from`) is crash-safe and checked:

1. the source file is streamed in chunks (:data:`CHUNK_BYTES`) to a temporary name next to
   its final place (``.<name>.part``: always the same name for the same file, so a copy
   killed half way leaves at most one stray ``.part`` that the next copy of that file
   overwrites), with its sha256 and size computed while copying; when they differ from
   what the recording's metadata says, the source file is wrong and the copy is dropped
   (:class:`SourceFileDiffers`);
2. on local disks the temporary file is fsync'ed, then moved to its final name (a rename:
   atomic on POSIX; on object stores a move is a server-side copy, and an object only
   appears once complete anyway);
3. the file at its final name is read back and its sha256 and size checked against the
   metadata (:class:`CopyCorrupt` when they differ, so the caller can copy again).

Per-file problems (:class:`FileProblem` and subclasses) are for the caller to count and
report; a store that cannot be written at all raises :class:`StoreError`, which stops the
pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from bundler.errors import BundlerError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

__all__ = [
    "CHUNK_BYTES",
    "CopyCorrupt",
    "FileProblem",
    "SourceFileDiffers",
    "SourceFileMissing",
    "SourceFileUnreadable",
    "Store",
    "StoreError",
    "UnsafeFileName",
    "open_store",
    "safe_name",
]

#: Bytes read and written at a time while copying or hashing.
CHUNK_BYTES = 1 << 20

FileState = Literal["ok", "missing", "differs"]


class StoreError(BundlerError):
    """A store cannot be opened or written: the pass cannot go on."""


class FileProblem(Exception):
    """One file could not be brought over; the pass reports it and goes on."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class SourceFileMissing(FileProblem):
    """The recording's file is not in the source store."""


class SourceFileUnreadable(FileProblem):
    """The recording's file is in the source store but cannot be read."""


class SourceFileDiffers(FileProblem):
    """The source file's size or sha256 is not what its metadata row says."""


class UnsafeFileName(FileProblem):
    """The file name is absolute or climbs out of the store (``..``)."""


class CopyCorrupt(FileProblem):
    """The copy, read back from the target store, does not match: copy it again."""


def safe_name(name: str | None) -> str:
    """``name`` as a clean relative POSIX path inside a store, or :class:`UnsafeFileName`."""
    if not name or not isinstance(name, str):
        raise UnsafeFileName(str(name), "empty file name")
    path = PurePosixPath(name)
    if path.is_absolute() or "\\" in name or any(part in ("..", "") for part in path.parts):
        raise UnsafeFileName(name, "unsafe file name (absolute, or with '..' or '\\')")
    if path.name.startswith(".") and path.name.endswith(".part"):
        raise UnsafeFileName(name, "file name looks like a temporary copy (.name.part)")
    return str(path)


def _digest_matches(size: int, digest: str, want_size: int | None, want_sha256: str | None) -> bool:
    if want_size is not None and size != want_size:
        return False
    return want_sha256 is None or digest == want_sha256.lower()


class Store:
    """A recordings store: a pyarrow filesystem and a base path in it."""

    def __init__(self, filesystem: pafs.FileSystem, base: str, location: str | None = None) -> None:
        self.filesystem = filesystem
        self.base = base.rstrip("/") or "/"
        self.location = location or base

    def __repr__(self) -> str:
        return f"Store({self.location!r})"

    @property
    def is_local(self) -> bool:
        import pyarrow.fs as pafs

        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, name: str) -> str:
        """The filesystem path of the file ``name`` (checked with :func:`safe_name`)."""
        name = safe_name(name)
        return f"{self.base}/{name}" if self.base != "/" else f"/{name}"

    def require_exists(self) -> None:
        """Fail with :class:`StoreError` unless the store's base folder (or prefix) is there."""
        import pyarrow.fs as pafs

        try:
            info = self.filesystem.get_file_info(self.base)
        except OSError as exc:
            raise StoreError(f"cannot reach recordings store {self.location}: {exc}") from exc
        if info.type != pafs.FileType.Directory:
            raise StoreError(
                f"recordings store {self.location} does not exist or is not a folder",
                hint="check the --from location",
            )

    # -- reading ----------------------------------------------------------------------------

    def size(self, name: str) -> int | None:
        """The file's size, or None when there is no such file."""
        import pyarrow.fs as pafs

        info = self.filesystem.get_file_info(self.path(name))
        if info.type == pafs.FileType.NotFound:
            return None
        if info.type != pafs.FileType.File:
            raise FileProblem(name, f"{self.location}/{name} is not a file")
        return int(info.size)

    def open_input(self, name: str) -> pa.NativeFile:
        return self.filesystem.open_input_stream(self.path(name))

    def digest(self, name: str) -> tuple[int, str]:
        """(size, sha256 hex) of a file, read in chunks."""
        sha = hashlib.sha256()
        size = 0
        with self.open_input(name) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                sha.update(chunk)
                size += len(chunk)
        return size, sha.hexdigest()

    def read_bytes(self, name: str) -> bytes:
        with self.open_input(name) as stream:
            return bytes(stream.read())

    def check(self, name: str, size: int | None, sha256: str | None) -> FileState:
        """Whether the file is here and matches (``ok``), is absent, or ``differs``."""
        present = self.size(name)
        if present is None:
            return "missing"
        if size is not None and present != size:
            return "differs"
        try:
            got_size, got = self.digest(name)
        except FileNotFoundError:
            return "missing"
        return "ok" if _digest_matches(got_size, got, size, sha256) else "differs"

    # -- writing ----------------------------------------------------------------------------

    def open_output(self, path: str) -> pa.NativeFile:
        """A stream writing ``path`` (a full filesystem path); tests override it to inject faults."""
        return self.filesystem.open_output_stream(path)

    def _make_parent(self, path: str) -> None:
        parent = path.rsplit("/", 1)[0]
        if parent:
            self.filesystem.create_dir(parent, recursive=True)

    @staticmethod
    def temporary(path: str) -> str:
        """The temporary name a copy to ``path`` is written under before it is moved."""
        parent, _, base = path.rpartition("/")
        return f"{parent}/.{base}.part"

    def _sync(self, path: str, *, directory: bool = False) -> None:
        """Flush a local file (or folder entry) to disk; object stores need nothing."""
        if not self.is_local:
            return
        try:
            fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _discard(self, path: str) -> None:
        with contextlib.suppress(OSError):
            self.filesystem.delete_file(path)

    def _place(self, tmp: str, final: str) -> None:
        try:
            self._sync(tmp)
            self.filesystem.move(tmp, final)
            self._sync(final.rsplit("/", 1)[0], directory=True)
        except OSError as exc:
            self._discard(tmp)
            raise StoreError(f"cannot move {tmp} to {final} in store {self.location}: {exc}") from exc

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole file atomically (temporary name, then move)."""
        final = self.path(name)
        tmp = self.temporary(final)
        try:
            self._make_parent(final)
            with self.open_output(tmp) as out:
                out.write(data)
        except OSError as exc:
            self._discard(tmp)
            raise StoreError(f"cannot write {name} in store {self.location}: {exc}") from exc
        self._place(tmp, final)

    def delete(self, name: str) -> None:
        self.filesystem.delete_file(self.path(name))

    def copy_from(self, source: Store, name: str, *, size: int | None, sha256: str | None) -> int:
        """Copy ``name`` from ``source`` here, checked against ``size`` and ``sha256``.

        Returns the bytes copied. Raises :class:`SourceFileMissing`,
        :class:`SourceFileUnreadable` or :class:`SourceFileDiffers` (nothing is left here),
        :class:`CopyCorrupt` (the copy read back differs: a corrupt file may be left at its
        final name, with no metadata row pointing at it; copy again) and
        :class:`StoreError` when this store cannot be written.
        """
        final = self.path(name)
        tmp = self.temporary(final)
        src = _open_source(source, name)
        with src:
            out = self._open_temporary(name, final, tmp)
            try:
                with out:
                    copied, digest = self._stream(name, src, out)
            except Exception:
                self._discard(tmp)
                raise
        if not _digest_matches(copied, digest, size, sha256):
            self._discard(tmp)
            raise SourceFileDiffers(
                name,
                f"the source file ({copied:,} bytes, sha256 {digest[:12]}…) does not match "
                f"its metadata ({size if size is not None else '?'} bytes, sha256 {(sha256 or '?')[:12]}…)",
            )
        self._place(tmp, final)
        self._check_copy(name, size, sha256)
        return copied

    def _open_temporary(self, name: str, final: str, tmp: str) -> pa.NativeFile:
        """The temporary file a copy of ``name`` is written to, its folder made first."""
        try:
            self._make_parent(final)
            return self.open_output(tmp)
        except OSError as exc:
            raise StoreError(f"cannot write {name} in store {self.location}: {exc}") from exc

    def _stream(self, name: str, src: pa.NativeFile, out: pa.NativeFile) -> tuple[int, str]:
        """Copy ``src`` to ``out`` in chunks; the bytes copied and their sha256 (hex)."""
        sha = hashlib.sha256()
        copied = 0
        while True:
            try:
                chunk = src.read(CHUNK_BYTES)
            except OSError as exc:
                raise SourceFileUnreadable(name, f"reading it failed half way: {exc}") from None
            if not chunk:
                break
            sha.update(chunk)
            copied += len(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                raise StoreError(f"cannot write {name} in store {self.location}: {exc}") from exc
        return copied, sha.hexdigest()

    def _check_copy(self, name: str, size: int | None, sha256: str | None) -> None:
        """Read the copy back at its final name: :class:`CopyCorrupt` unless it matches."""
        try:
            got_size, got = self.digest(name)
        except OSError as exc:
            raise CopyCorrupt(name, f"the copy cannot be read back: {exc}") from None
        if not _digest_matches(got_size, got, size, sha256):
            raise CopyCorrupt(
                name, f"the copy read back ({got_size:,} bytes, sha256 {got[:12]}…) differs from the source"
            )


def _open_source(source: Store, name: str) -> pa.NativeFile:
    """``name`` opened in the source store, or the file problem that prevents it."""
    try:
        return source.open_input(name)
    except FileNotFoundError:
        raise SourceFileMissing(name, f"missing in the source store {source.location}") from None
    except OSError as exc:
        raise SourceFileUnreadable(name, f"cannot read it in the source store: {exc}") from None


def open_store(location: str | Store) -> Store:
    """A store for a folder path or a pyarrow filesystem URI (a :class:`Store` passes through).

    A plain path is a local folder (relative to the current directory, created when
    missing); ``scheme://…`` goes to :meth:`pyarrow.fs.FileSystem.from_uri`.
    """
    if isinstance(location, Store):
        return location
    import pyarrow.fs as pafs

    text = str(location)
    if not text:
        raise UsageError(
            "a recordings store location is empty", hint="give a folder or a URI (s3://bucket/prefix)"
        )
    if "://" in text:
        try:
            filesystem, base = pafs.FileSystem.from_uri(text)
        except (ValueError, OSError) as exc:
            raise UsageError(
                f"cannot open recordings store {text!r}: {exc}",
                hint="use a folder path or a URI pyarrow knows (file://, s3://, gs://, hdfs://)",
            ) from None
        return Store(filesystem, base, text)
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"recordings store {text!r} is not a folder")
    return Store(pafs.LocalFileSystem(), path, text)
