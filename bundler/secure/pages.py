"""The pages of a Parquet file, checked against the limits before any page is read.

A Parquet column chunk is a run of pages, each behind a header (a Thrift compact-protocol
``PageHeader``) that says how big the page is once uncompressed. The file's metadata bounds
the column chunk, not its pages: a hostile file can declare a small chunk whose one page
claims gigabytes uncompressed, and a reader allocates what the header claims. So every
page header of every column chunk is walked here, reading the headers only (a few hundred
bytes at a time, never a page), and each page is held to:

- ``page_bytes``: a page's size, uncompressed and as stored;
- ``page_header_bytes``: a page header's size (what a reader buffers to parse it).

Column chunks whose pages cannot be read without a key (Parquet modular encryption encrypts
page headers too) are left out by the caller (:func:`column_chunks` ``skip``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import IO, TYPE_CHECKING, NamedTuple

from bundler.errors import BundleInvalid
from bundler.secure.limits import exceeded, limit

if TYPE_CHECKING:
    import pyarrow.parquet as pq

#: How much of a file is read at a time while parsing a header (headers are tens of bytes).
WINDOW = 512
#: How deep structures may nest inside a page header (PageHeader → DataPageHeader → Statistics).
MAX_DEPTH = 16

# Thrift compact protocol types (a field header's low nibble, a list's element type).
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(1, 13)
# PageHeader fields: 1 type, 2 uncompressed_page_size, 3 compressed_page_size (all i32).
_SIZES = {1: "type", 2: "uncompressed", 3: "compressed"}
_PAGE_TYPES = {0: "data", 1: "index", 2: "dictionary", 3: "data v2"}


class Chunk(NamedTuple):
    """One column chunk's bytes: ``where`` it is (for messages), its first byte and its length."""

    where: str
    start: int
    length: int


class PageHeader(NamedTuple):
    header_bytes: int
    kind: int
    uncompressed: int
    compressed: int


class _TooLong(Exception):
    """The header did not end within the bytes it may take."""


class _Malformed(Exception):
    """The header is not a Thrift compact-protocol PageHeader."""


class _Reader:
    """Reads a header at ``start`` of ``fh`` through a small window, ``cap`` bytes at most."""

    def __init__(self, fh: IO[bytes], start: int, cap: int) -> None:
        self.fh, self.start, self.cap = fh, start, cap
        self.pos = 0
        self.window_at, self.window = 0, b""

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.cap:
            raise _TooLong
        lo, hi = self.pos - self.window_at, end - self.window_at
        if lo < 0 or hi > len(self.window):
            self.fh.seek(self.start + self.pos)
            self.window_at, self.window = self.pos, self.fh.read(min(max(n, WINDOW), self.cap - self.pos))
            lo, hi = 0, n
            if hi > len(self.window):
                raise _Malformed("the file ends inside a page header")
        self.pos = end
        return self.window[lo:hi]

    def skip(self, n: int) -> None:
        if n < 0:
            raise _Malformed(f"a negative length ({n})")
        if self.pos + n > self.cap:
            raise _TooLong
        self.pos += n

    def varint(self) -> int:
        value = shift = 0
        for _ in range(10):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise _Malformed("a variable-length integer of more than 10 bytes")

    def zigzag(self) -> int:
        raw = self.varint()
        return (raw >> 1) ^ -(raw & 1)

    def value(self, kind: int, depth: int) -> None:
        """Skip one value of compact type ``kind`` (every value takes at least one byte but a
        field's boolean, so a count that lies cannot loop past ``cap``)."""
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.take(1)
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.take(8)
        elif kind == _BINARY:
            self.skip(self.varint())
        elif kind in (_LIST, _SET):
            head = self.take(1)[0]
            count, element = head >> 4, head & 0x0F
            if count == 15:
                count = self.varint()
            for _ in range(count):
                self.element(element, depth + 1)
        elif kind == _MAP:
            count = self.varint()
            if count:
                types = self.take(1)[0]
                for _ in range(count):
                    self.element(types >> 4, depth + 1)
                    self.element(types & 0x0F, depth + 1)
        elif kind == _STRUCT:
            self.struct(depth + 1)
        else:
            raise _Malformed(f"unknown Thrift type {kind}")

    def element(self, kind: int, depth: int) -> None:
        """A list, set or map element: a boolean takes a byte there."""
        if kind in (_TRUE, _FALSE):
            self.take(1)
        else:
            self.value(kind, depth)

    def struct(self, depth: int, wanted: dict[int, str] | None = None) -> dict[str, int]:
        """Skip a struct's fields up to its stop byte, keeping the i32 fields ``wanted`` names."""
        if depth > MAX_DEPTH:
            raise _Malformed(f"structures nested more than {MAX_DEPTH} deep")
        found: dict[str, int] = {}
        field = 0
        while True:
            head = self.take(1)[0]
            if head == 0:
                return found
            kind, delta = head & 0x0F, head >> 4
            field = field + delta if delta else self.zigzag()
            if wanted and field in wanted and kind == _I32:
                found[wanted[field]] = self.zigzag()
            else:
                self.value(kind, depth)


def read_header(fh: IO[bytes], start: int, cap: int) -> PageHeader:
    """The page header at byte ``start``, read within ``cap`` bytes (:class:`_TooLong` past them)."""
    reader = _Reader(fh, start, cap)
    found = reader.struct(0, _SIZES)
    missing = [name for name in _SIZES.values() if name not in found]
    if missing:
        raise _Malformed(f"no {', '.join(missing)} size in the page header")
    return PageHeader(reader.pos, found["type"], found["uncompressed"], found["compressed"])


def column_chunks(meta: pq.FileMetaData, skip: Collection[str] = ()) -> Iterator[Chunk]:
    """The byte ranges of every column chunk of a file, but those of the columns in ``skip``
    (``path_in_schema``: encrypted columns, whose page headers are encrypted too)."""
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        for c in range(rg.num_columns):
            # skipped by the schema's name: pyarrow aborts on an encrypted chunk's metadata
            if meta.schema.column(c).path in skip:
                continue
            col = rg.column(c)
            # the chunk's first page: its dictionary's, if any; a chunk of no rows has no data
            # page, and writers leave its data_page_offset 0
            firsts = [col.data_page_offset]
            if col.has_dictionary_page:
                firsts.append(col.dictionary_page_offset)
            start = min((f for f in firsts if f > 0), default=0)
            if start == 0 and col.total_compressed_size == 0:
                continue  # no page at all (a chunk of no rows written without a dictionary)
            yield Chunk(f"row group {i} column {col.path_in_schema}", start, col.total_compressed_size)


def check_pages(bundle: str, shown: str, fh: IO[bytes], size: int, chunks: Iterable[Chunk]) -> None:
    """Walk the page headers of each column chunk of file ``shown`` (``size`` bytes), refusing
    (exit 4) a page or header past its limit, or one that does not fit in its column chunk."""
    page_limit, header_limit = limit("page_bytes"), limit("page_header_bytes")

    def invalid(where: str, problem: str) -> BundleInvalid:
        return BundleInvalid(bundle, [f"{shown}: {where}: {problem}"])

    for where, start, length in chunks:
        end = start + length
        if start < 4 or length < 0 or end > size:
            raise invalid(where, f"bytes {start} to {end} are not inside the file ({size} bytes)")
        pos = start
        while pos < end:
            at = f"{where}, page at byte {pos}"
            try:
                header = read_header(fh, pos, min(header_limit, end - pos))
            except _TooLong:
                if end - pos <= header_limit:
                    raise invalid(at, "its header runs past the end of the column chunk") from None
                raise exceeded(
                    bundle, f"{shown}: {at}: header bytes read", header_limit + 1, "page_header_bytes"
                ) from None
            except _Malformed as exc:
                raise invalid(at, f"unreadable page header ({exc})") from None
            kind = _PAGE_TYPES.get(header.kind, f"type {header.kind}")
            for what, value in (("uncompressed", header.uncompressed), ("compressed", header.compressed)):
                if value < 0:
                    raise invalid(at, f"a negative {what} size ({value})")
                if value > page_limit:
                    raise exceeded(bundle, f"{shown}: {at}: {kind} page {what} bytes", value, "page_bytes")
            pos += header.header_bytes + header.compressed
            if pos > end:
                raise invalid(at, "the page runs past the end of the column chunk")
