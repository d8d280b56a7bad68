"""A Parquet footer read by hand (Thrift compact protocol): the sizes a file with encrypted columns declares.

pyarrow cannot show the column chunks of a file whose columns are encrypted without their
key (it aborts the process on them), yet :mod:`bundler.secure.limits` must check every row
group and column chunk of every file before anything reads it. A plaintext footer (the only
kind bundles write) is plain Thrift; an encrypted column's chunk keeps a copy of its
metadata with the sizes (its statistics removed), which is all this reads. Memory stays
bounded: the footer is at most ``parquet_footer_bytes``; each list is refused past
``container_limit`` items or past what the bytes left could hold; fields not needed are
skipped, not kept; the row groups are yielded one at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)
MAX_DEPTH = 32


class FooterError(Exception):
    """The footer is not valid Thrift, or not a Parquet footer."""


@dataclass(frozen=True)
class ColumnChunk:
    """One column of one row group, as pyarrow's ``ColumnChunkMetaData`` names its sizes."""

    path_in_schema: str
    total_uncompressed_size: int
    total_compressed_size: int
    encrypted: bool


@dataclass(frozen=True)
class RowGroup:
    """One row group, as pyarrow's ``RowGroupMetaData`` names what limits check."""

    num_rows: int
    total_byte_size: int
    columns: tuple[ColumnChunk, ...]

    @property
    def num_columns(self) -> int:
        return len(self.columns)

    def column(self, i: int) -> ColumnChunk:
        return self.columns[i]


class _Reader:
    def __init__(self, data: bytes, container_limit: int) -> None:
        self.data = data
        self.pos = 0
        self.container_limit = container_limit

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise FooterError("the footer ends in the middle of a value")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        data, pos, result, shift = self.data, self.pos, 0, 0
        try:
            while True:
                b = data[pos]
                pos += 1
                result |= (b & 0x7F) << shift
                if not b & 0x80:
                    self.pos = pos
                    return result
                shift += 7
                if shift > 63:
                    raise FooterError("a number of more than 64 bits")
        except IndexError:
            raise FooterError("the footer ends in the middle of a value") from None

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def binary(self) -> bytes:
        n = self.varint()
        if n > len(self.data) - self.pos:
            raise FooterError(f"a string of {n} bytes, longer than the footer")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def list_header(self) -> tuple[int, int]:
        head = self.byte()
        size, kind = head >> 4, head & 0x0F
        if size == 15:
            size = self.varint()
        if size > self.container_limit or size > len(self.data) - self.pos:
            raise FooterError(f"a list of {size} items, more than the footer can hold")
        return size, kind

    def fields(self) -> Iterator[tuple[int, int]]:
        """The (field id, type) of each field of a struct, until its end; the caller reads or skips it."""
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == STOP:
                return
            delta = head >> 4
            last = last + delta if delta else self.zigzag()
            yield last, kind

    def value(self, kind: int) -> int | bool | bytes | None:
        """A scalar of ``kind`` (bools inside fields carry their value in the type)."""
        if kind in (TRUE, FALSE):
            return kind == TRUE
        if kind == BYTE:
            return self.byte()
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == BINARY:
            return self.binary()
        raise FooterError(f"a value of type {kind} where a number or string was expected")

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise FooterError("values nested too deep")
        if kind in (TRUE, FALSE):
            return
        if kind == DOUBLE:
            self.pos += 8
            if self.pos > len(self.data):
                raise FooterError("the footer ends in the middle of a value")
        elif kind in (I16, I32, I64):
            self.varint()
        elif kind == BINARY:
            n = self.varint()
            if n > len(self.data) - self.pos:
                raise FooterError(f"a string of {n} bytes, longer than the footer")
            self.pos += n
        elif kind == BYTE:
            self.byte()
        elif kind in (LIST, SET):
            size, inner = self.list_header()
            for _ in range(size):
                if inner in (TRUE, FALSE):
                    self.byte()
                else:
                    self.skip(inner, depth + 1)
        elif kind == MAP:
            size = self.varint()
            if size > self.container_limit or size > len(self.data) - self.pos:
                raise FooterError(f"a map of {size} items, more than the footer can hold")
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == STRUCT:
            for _, inner in self.fields():
                self.skip(inner, depth + 1)
        else:
            raise FooterError(f"unknown Thrift type {kind}")

    def int_field(self, kind: int) -> int:
        value = self.value(kind)
        if not isinstance(value, int) or isinstance(value, bool):
            raise FooterError(f"a number was expected, found type {kind}")
        return value


def row_groups(data: bytes, container_limit: int) -> Iterator[RowGroup]:
    """The row groups of a Parquet footer (``FileMetaData``, plain Thrift), one at a time."""
    r = _Reader(data, container_limit)
    for fid, kind in r.fields():
        if fid == 4 and kind == LIST:  # row_groups
            size, inner = r.list_header()
            if inner != STRUCT:
                raise FooterError("row_groups is not a list of structs")
            for _ in range(size):
                yield _row_group(r)
        else:
            r.skip(kind)


def _row_group(r: _Reader) -> RowGroup:
    rows = size = -1
    chunks: list[ColumnChunk] = []
    for fid, kind in r.fields():
        if fid == 1 and kind == LIST:
            count, inner = r.list_header()
            if inner != STRUCT:
                raise FooterError("a row group's columns are not structs")
            chunks = [_column_chunk(r) for _ in range(count)]
        elif fid == 2:
            size = r.int_field(kind)
        elif fid == 3:
            rows = r.int_field(kind)
        else:
            r.skip(kind)
    if rows < 0 or size < 0:
        raise FooterError("a row group without its row count or byte size")
    return RowGroup(rows, size, tuple(chunks))


def _column_chunk(r: _Reader) -> ColumnChunk:
    encrypted = False
    meta: tuple[str, int, int] | None = None
    for fid, kind in r.fields():
        if fid == 3 and kind == STRUCT:
            meta = _column_meta(r)
        elif fid in (8, 9):  # crypto_metadata, encrypted_column_metadata
            encrypted = True
            r.skip(kind)
        else:
            r.skip(kind)
    if meta is None:
        raise FooterError("a column chunk without plain metadata (its sizes cannot be checked)")
    return ColumnChunk(*meta, encrypted)


def _column_meta(r: _Reader) -> tuple[str, int, int]:
    path: list[str] = []
    uncompressed = compressed = -1
    for fid, kind in r.fields():
        if fid == 3 and kind == LIST:
            count, inner = r.list_header()
            if inner != BINARY:
                raise FooterError("path_in_schema is not a list of strings")
            path = [r.binary().decode("utf-8", "replace") for _ in range(count)]
        elif fid == 6:
            uncompressed = r.int_field(kind)
        elif fid == 7:
            compressed = r.int_field(kind)
        else:
            r.skip(kind)
    if uncompressed < 0 or compressed < 0:
        raise FooterError("a column chunk without its sizes")
    return ".".join(path), uncompressed, compressed


def footer_bytes(fh: IO[bytes], size: int) -> bytes:
    """The footer of a Parquet file of ``size`` bytes whose length was checked
    (:func:`bundler.secure.limits.check_parquet`)."""
    fh.seek(size - 8)
    footer = int.from_bytes(fh.read(4), "little")
    fh.seek(size - 8 - footer)
    return fh.read(footer)


def encrypted_columns(data: bytes, container_limit: int) -> tuple[str, ...]:
    """The columns (paths in the schema) that a footer declares encrypted, in schema order."""
    found: dict[str, None] = {}
    for rg in row_groups(data, container_limit):
        found.update((c.path_in_schema, None) for c in rg.columns if c.encrypted)
    return tuple(found)
