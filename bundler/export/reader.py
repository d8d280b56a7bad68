"""Read query results as Arrow record batches with the exact types of the entity graph.

These are the reads through the snapshot's own SQLAlchemy connection, where ADBC cannot
serve (MariaDB, an in-memory SQLite, values ADBC cannot type; see
:mod:`bundler.export.snapshot`). One path per dialect, each streaming so memory stays
bounded by the batch size:

- PostgreSQL: ``COPY (SELECT …) TO STDOUT (FORMAT csv)`` parsed by Arrow's CSV reader
  with explicit column types (the server formats, Arrow parses in parallel);
- SQLite: the raw ``sqlite3`` cursor, ``fetchmany`` into columns, cast by Arrow
  (timestamps, dates and exact decimals are stored as text there);
- MariaDB and others: an unbuffered DBAPI cursor, ``fetchmany`` into Arrow arrays.

Text becomes the graph's type in one place, :func:`cast_text`: timestamps written as text
(ISO 8601 with ``T``, ``Z`` or an offset, as SQLite and foreign schemas keep them) become
UTC instants exactly; PostgreSQL's ``bytea`` arrives as hex text.

Every path runs on the caller's SQLAlchemy connection, inside its transaction, so all
tables of a bundle come from one consistent snapshot.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    import pyarrow as pa

    from bundler.graph import TableSpec

BATCH_ROWS = 65_536


def literal_sql(connection: sa.Connection, stmt: sa.Select[Any]) -> str:
    """The statement with its parameters rendered inline, for raw cursors and COPY."""
    return str(stmt.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))


def select_statement(spec: TableSpec, where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """``spec``'s columns, in order, of the rows of ``where``, in primary key order."""
    from bundler.sql import table_clause

    t = table_clause(spec)
    return sa.select(*(t.c[c] for c in spec.column_names)).where(where).order_by(*(t.c[c] for c in spec.pk))


#: engine -> (table, its columns, its key) -> (``SELECT … FROM table``, ``ORDER BY …``) as that
#: engine's dialect writes them (keyed by the columns too: another graph may name them otherwise)
_FRAMES: weakref.WeakKeyDictionary[
    sa.Engine, dict[tuple[str, tuple[str, ...], tuple[str, ...]], tuple[str, str]]
] = weakref.WeakKeyDictionary()


def select_sql(connection: sa.Connection, spec: TableSpec, where: sa.ColumnElement[bool]) -> str:
    """:func:`select_statement` with its values inline (:func:`literal_sql`), compiled in parts.

    Compiling the whole statement took ~0.3 ms, the ~20 reads of a small root's export ~6 ms
    of its downtime; its ``SELECT … FROM`` and ``ORDER BY`` are the same for every read of
    the table, so they are compiled once per engine and only ``where`` each time. A ``where``
    that names anything but the table's own columns and values (a subquery) is compiled
    within the whole statement, as it may correlate with it.
    """
    if not _plain_on(where, spec.name):
        return literal_sql(connection, select_statement(spec, where))
    frames = _FRAMES.setdefault(connection.engine, {})
    key = (spec.name, tuple(spec.column_names), tuple(spec.pk))
    frame = frames.get(key)
    if frame is None:
        from bundler.sql import table_clause

        t = table_clause(spec)
        dialect = connection.dialect
        head = str(sa.select(*(t.c[c] for c in spec.column_names)).compile(dialect=dialect))
        order = ", ".join(str(t.c[c].compile(dialect=dialect)) for c in spec.pk)
        frame = frames[key] = (head, order)
    where_sql = where.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    return f"{frame[0]} \nWHERE {where_sql} ORDER BY {frame[1]}"


def _plain_on(where: sa.ColumnElement[bool], table: str) -> bool:
    """Whether ``where`` holds only columns of ``table``, values and operators."""
    from sqlalchemy.sql import elements, visitors

    plain = (
        elements.BinaryExpression,
        elements.BooleanClauseList,
        elements.ClauseList,
        elements.Grouping,
        elements.BindParameter,
        elements.Null,
        elements.True_,
        elements.False_,
    )
    for element in visitors.iterate(where):
        if type(element) is elements.ColumnClause:
            owner = element.table
            if owner is None or getattr(owner, "name", None) != table:
                return False
        elif not isinstance(element, plain):
            return False
    return True


def read_arrow(
    connection: sa.Connection,
    spec: TableSpec,
    stmt: sa.Select[Any] | str,
    *,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Run ``stmt`` (which selects ``spec``'s columns, in order; SQL text with its values
    inline, or a statement) and yield exact Arrow batches."""
    schema = spec.arrow_schema()
    dialect = connection.dialect.name
    sql = stmt if isinstance(stmt, str) else literal_sql(connection, stmt)
    if dialect == "postgresql":
        yield from _read_postgresql(connection, spec, schema, sql)
    else:
        yield from _read_cursor(connection, schema, sql, batch_rows, dialect)


# -- PostgreSQL: COPY … TO STDOUT, parsed by Arrow --------------------------------------------


class _CopyStream:
    """A read-only file over a psycopg ``Copy`` object, for Arrow's CSV reader."""

    def __init__(self, copy: Any) -> None:
        self._copy = copy
        self._buffer = bytearray()
        self._done = False
        self._lock = threading.Lock()
        self.closed = False

    def _fill(self, size: int) -> None:
        """Read chunks until the buffer holds ``size`` bytes (all of them, for -1) or data ends."""
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = self._copy.read()
            if not chunk:
                self._done = True
                break
            self._buffer += chunk

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            self._fill(size)
            if size < 0 or size >= len(self._buffer):
                out = bytes(self._buffer)
                self._buffer.clear()
            else:
                out = bytes(self._buffer[:size])
                del self._buffer[:size]
            return out

    def fill(self, size: int) -> bool:
        """Read up to ``size`` bytes ahead into the buffer; whether any data comes at all."""
        with self._lock:
            self._fill(size)
            return bool(self._buffer)

    @property
    def ended(self) -> bool:
        """Whether the whole result is in the buffer."""
        return self._done

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def _read_postgresql(
    connection: sa.Connection, spec: TableSpec, schema: pa.Schema, sql: str
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    raw = connection.connection.driver_connection
    assert raw is not None
    # zoned timestamps (any offset), bytea (hex) and timestamps the table keeps as text
    # (ISO 8601 with T, Z or an offset) are read as text and cast by cast_text
    as_text = {f.name for f in schema if _text_first(f.type)}
    naive = {f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.tz is None}
    if naive:
        as_text |= naive & _text_columns(connection, spec.name)
    read_types = {f.name: pa.string() if f.name in as_text else f.type for f in schema}
    with raw.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        stream = _CopyStream(copy)
        if not stream.fill(WHOLE_BYTES):
            return  # no rows: Arrow's reader refuses an empty file
        read_options = pcsv.ReadOptions(column_names=schema.names, block_size=1 << 20)
        parse_options = pcsv.ParseOptions(newlines_in_values=True)
        convert_options = pcsv.ConvertOptions(
            column_types=read_types,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
            true_values=["t"],
            false_values=["f"],
        )
        if stream.ended:  # a small result (a root's own tables): parsed in one go, no reader thread
            table = pcsv.read_csv(
                pa.py_buffer(stream.read()),
                read_options=pcsv.ReadOptions(column_names=schema.names, use_threads=False),
                parse_options=parse_options,
                convert_options=convert_options,
            )
            batches = table.to_batches()
        else:
            # 1 MiB blocks: Arrow's streaming reader reads ahead, and 8 MiB blocks made memory
            # grow with the number of rows (measured: 202 MiB at 100k xDRs, 380 MiB at 1M)
            batches = pcsv.open_csv(
                pa.PythonFile(stream, mode="r"),
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
        for batch in batches:
            if batch.num_rows:
                if as_text:
                    batch = _cast_columns(batch, schema, as_text)
                yield _with_schema(batch, schema)
        # drain whatever the reader did not ask for, so the connection is usable again
        while copy.read():
            pass


#: a COPY result of at most this many bytes is parsed in one go (bigger ones are streamed)
WHOLE_BYTES = 1 << 20


#: engine -> table -> its text columns (the schema does not change under a run)
_TEXT_COLUMNS: weakref.WeakKeyDictionary[sa.Engine, dict[str, frozenset[str]]] = weakref.WeakKeyDictionary()


def _text_columns(connection: sa.Connection, table: str) -> frozenset[str]:
    """The columns of PostgreSQL table ``table`` (found on the search path) that hold text;
    asked once per engine and table."""
    known = _TEXT_COLUMNS.setdefault(connection.engine, {})
    if table not in known:
        rows = connection.execute(
            sa.text(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(:t))"
                " AND attnum > 0 AND NOT attisdropped"
                " AND atttypid IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype)"
            ),
            {"t": table},
        )
        known[table] = frozenset(name for (name,) in rows)
    return known[table]


def _text_first(type_: pa.DataType) -> bool:
    import pyarrow as pa

    return (pa.types.is_timestamp(type_) and type_.tz is not None) or pa.types.is_binary(type_)


def _cast_columns(batch: pa.RecordBatch, schema: pa.Schema, names: set[str]) -> pa.RecordBatch:
    import pyarrow as pa

    arrays = [
        cast_text(column, field.type, hex_binary=True) if field.name in names else column
        for column, field in zip(batch.columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


#: an ISO 8601 time of day followed by a zone: ``Z``, ``+02``, ``+0530``, ``-05:00``
_ZONED = r"\d:\d\d(:\d\d(\.\d*)?)?\s*(Z|z|[+-]\d\d(:?\d\d)?)$"


def cast_text(array: pa.Array, type_: pa.DataType, *, hex_binary: bool = False) -> pa.Array:
    """Text values as ``type_``, exactly.

    Timestamps: ``T`` or a space between date and time; a value with a zone (``Z`` or an
    offset) is that UTC instant, one without is taken as UTC for a zoned column and as it is
    for a column without a zone (so ``2008-03-10T00:00:00Z`` is midnight UTC in both).
    Binary: PostgreSQL's hex form (``\\x0aff``) when ``hex_binary``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_binary(type_) and hex_binary:
        return pa.array(
            [
                None if v is None else bytes.fromhex(v[2:] if v.startswith("\\x") else v)
                for v in array.to_pylist()
            ],
            type=type_,
        )
    if not pa.types.is_timestamp(type_):
        return array.cast(type_)
    try:
        return array.cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # a zone where the column has none, or none where it has one
    text = pc.utf8_trim_whitespace(array)
    zoned = pc.match_substring_regex(text, _ZONED)
    text = pc.if_else(zoned, text, pc.binary_join_element_wise(text, pa.scalar("Z"), ""))
    instants = text.cast(pa.timestamp(type_.unit, tz="UTC"))
    return instants.cast(type_)


def _with_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    if batch.schema.equals(schema):
        return batch
    return pa.RecordBatch.from_arrays(list(batch.columns), schema=schema)


# -- SQLite, MariaDB and the generic path: a DBAPI cursor ----------------------------------


def _read_cursor(
    connection: sa.Connection, schema: pa.Schema, sql: str, batch_rows: int, dialect: str
) -> Iterator[pa.RecordBatch]:
    raw = connection.connection.driver_connection
    assert raw is not None
    if dialect == "mysql":
        import pymysql.cursors

        cursor = raw.cursor(pymysql.cursors.SSCursor)
    else:
        cursor = raw.cursor()
    try:
        if dialect == "mysql":
            # PyMySQL converts every value in Python (datetimes by regex, Decimals): take
            # the text as the server sends it and let Arrow parse whole columns (2x faster).
            # Converters are chosen when the result's columns are described, in execute().
            decoders, raw.decoders = raw.decoders, {}
            try:
                cursor.execute(sql)
            finally:
                raw.decoders = decoders
        else:
            cursor.execute(sql)
        yield from _batches(cursor, schema, batch_rows)
    finally:
        cursor.close()


FETCH_ROWS = 8_192


def _batches(cursor: Any, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The cursor's rows as batches of ``batch_rows``, fetched a few thousand at a time.

    Python row tuples take ten times the memory of the Arrow columns they become: a
    65,536-row fetch held ~150 MB of them (MariaDB's export peaked near 300 MiB); only
    ``FETCH_ROWS`` of them live at once now, the batch is put together in Arrow.
    """
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    size = 0
    while rows := cursor.fetchmany(min(FETCH_ROWS, batch_rows)):
        pending.append(_rows_to_batch(rows, schema))
        size += len(rows)
        if size >= batch_rows:
            yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            pending, size = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def _rows_to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True))
    arrays = [_to_array(list(values), field.type) for values, field in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _to_array(values: list[Any], type_: pa.DataType) -> pa.Array:
    import pyarrow as pa

    try:
        if pa.types.is_string(type_):
            return pa.array(values, type=type_)
        sample = next((v for v in values if v is not None), None)
        if isinstance(sample, str):  # SQLite's timestamps, dates and decimals; MariaDB's text
            return cast_text(pa.array(values, type=pa.string()), type_)
        if isinstance(sample, int) and pa.types.is_boolean(type_):  # SQLite's and MariaDB's 0/1
            return pa.array(values, type=pa.int64()).cast(type_)
        return pa.array(values, type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([_coerce(v, type_) for v in values], type=type_)


def _coerce(value: Any, type_: pa.DataType) -> Any:
    """The slow, forgiving path: one value at a time (mixed storage classes in SQLite)."""
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_decimal(type_):
        return Decimal(str(value)).quantize(Decimal(1).scaleb(-type_.scale))
    if pa.types.is_timestamp(type_) or pa.types.is_date(type_):
        return cast_text(pa.array([value]), type_)[0].as_py() if isinstance(value, str) else value
    if pa.types.is_boolean(type_):
        return value if isinstance(value, bool) else bool(int(value))
    if pa.types.is_floating(type_):
        return float(value)
    if pa.types.is_binary(type_):
        return value.encode() if isinstance(value, str) else bytes(value)
    if pa.types.is_string(type_):
        return value if isinstance(value, str) else str(value)
    if pa.types.is_integer(type_):
        return int(value)
    return value
