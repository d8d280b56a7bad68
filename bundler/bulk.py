"""The Arrow-native bulk write path: Arrow record batches into a table, fast and exact.

:func:`insert_arrow` writes Arrow data into a SQLAlchemy table inside the caller's
transaction, by the fastest exact path each dialect has:

- PostgreSQL (psycopg 3): ``COPY table (cols) FROM STDIN (FORMAT csv)``, fed batch by batch
  with CSV that :func:`pyarrow.csv.write_csv` renders in C. Arrow quotes every string and
  writes NULL as an unquoted empty field, which is exactly how PostgreSQL's CSV format
  tells NULL from ``''``; CSV has no backslash escapes, so backslashes travel as they are.
- MariaDB/MySQL (PyMySQL): ``LOAD DATA LOCAL INFILE`` from temporary CSV files written by
  pyarrow (``ESCAPED BY ''``, so backslashes are plain characters, and NULL as the unquoted
  word ``NULL``, which differs from the quoted string ``"NULL"``). ``LOCAL`` turns errors
  into warnings (a duplicate key would be skipped silently), so every load checks its row
  count and warnings and raises on any. When the connection was opened without
  ``local_infile=True`` the rows go as multi-row ``INSERT`` statements instead
  (``executemany`` in chunks of 1,000 rows).
- SQLite: ``executemany`` on the raw ``sqlite3`` connection, with values converted column by
  column exactly as SQLAlchemy's own bind processors would store them (see below).
- Any other database: SQLAlchemy Core ``executemany`` (slow, exact).

Exactness. Values must read back through SQLAlchemy Core equal to what went in. The
database drivers never see Python objects built by anything but the column's own type:
for each column and batch, the fast vectorised conversion (a decimal as its exact string or
as ``float(str)``, a timestamp as ``YYYY-MM-DD HH:MM:SS.ffffff``, a date as ``YYYY-MM-DD``)
is compared on a sample of values with what the column type's SQLAlchemy bind processor
produces, and when they differ the bind processor is applied to every value. So SQLite
stores a plain ``Numeric`` as a double (as SQLAlchemy does: ``float(Decimal)``, correctly
rounded, which Arrow's own decimal-to-double cast is not) and a text-backed exact decimal
type as its string; and a custom type on PostgreSQL or MariaDB whose bind processor
changes values sends that table through the SQLAlchemy path instead of CSV.

Memory stays bounded by the batch size: batches are converted and written one at a time.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy import types as sat
from sqlalchemy.engine import Connection

from bundler.errors import DatabaseError
from bundler.refusals import (
    MYSQL_COLUMN,
    MYSQL_VALUE_CODES,
    Refusal,
    Seen,
    ValueRefused,
    base_type,
    from_database,
    refused,
)

__all__ = ["ValueRefused", "arrow_schema_for", "insert_arrow"]

#: Rows per CSV chunk sent to PostgreSQL's COPY.
COPY_CHUNK_ROWS = 65_536
#: Rows per temporary file loaded with one LOAD DATA statement.
LOAD_DATA_FILE_ROWS = 262_144
#: Rows per multi-row INSERT (MariaDB without LOAD DATA) and per SQLAlchemy executemany.
INSERT_CHUNK_ROWS = 1_000
#: Rows per executemany on SQLite.
SQLITE_CHUNK_ROWS = 65_536
#: How many non-null values of a column are compared with the SQLAlchemy bind processor.
SAMPLE_SIZE = 64

_CSV_POSTGRES = pacsv.WriteOptions(include_header=False, quoting_style="needed")
_CSV_MYSQL = pacsv.WriteOptions(include_header=False, quoting_style="needed", null_string="NULL")

Converter = Callable[[pa.Array], list[Any]]


# -- types ------------------------------------------------------------------------------


def arrow_type_for(type_: sat.TypeEngine[Any]) -> pa.DataType:
    """The exact Arrow type for a SQLAlchemy column type.

    Integers of every size are ``int64``; ``Numeric(p, s)`` is ``decimal128(p, s)``
    (``decimal256`` above 38 digits; an unconstrained ``Numeric`` is ``decimal128(38, 10)``,
    so values with more decimals fail loudly instead of being rounded); ``Float`` is
    ``float64``; ``DateTime`` is ``timestamp("us")`` (with ``tz="UTC"`` when the column has a
    time zone); ``Date`` is ``date32``; ``Time`` is ``time64("us")``; ``String``, ``Text``,
    ``Enum`` and ``JSON`` are ``string``; binary types are ``binary``; ``Boolean`` is ``bool``.
    """
    base = base_type(type_)
    if isinstance(base, sat.Boolean):
        return pa.bool_()
    if isinstance(base, sat.Integer):
        return pa.int64()
    if isinstance(base, sat.Float) or (isinstance(base, sat.Numeric) and not base.asdecimal):
        return pa.float64()
    if isinstance(base, sat.Numeric):
        precision = base.precision
        scale = base.scale
        if precision is None:
            return pa.decimal128(38, 10 if scale is None else scale)
        scale = 0 if scale is None else scale
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if isinstance(base, sat.DateTime):
        return pa.timestamp("us", tz="UTC") if base.timezone else pa.timestamp("us")
    if isinstance(base, sat.Date):
        return pa.date32()
    if isinstance(base, sat.Time):
        return pa.time64("us")
    if isinstance(base, sat.Interval):
        return pa.duration("us")
    if isinstance(base, sat.String | sat.Enum | sat.JSON):
        return pa.string()
    if isinstance(base, sat._Binary):
        return pa.binary()
    raise TypeError(f"no Arrow type for SQL type {type_!r}")


def arrow_schema_for(table: sa.Table) -> pa.Schema:
    """The Arrow schema of ``table``: one field per column, exact types, nullability kept."""
    return pa.schema(
        [
            pa.field(column.name, arrow_type_for(column.type), nullable=bool(column.nullable))
            for column in table.columns
        ]
    )


# -- input ------------------------------------------------------------------------------


def _batches(data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    if isinstance(data, pa.Table):
        yield from data.to_batches()
    elif isinstance(data, pa.RecordBatch):
        yield data
    elif isinstance(data, pa.RecordBatchReader):
        yield from data
    else:
        for item in data:
            if isinstance(item, pa.Table):
                yield from item.to_batches()
            else:
                yield item


def _conform(batch: pa.RecordBatch, table: sa.Table, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with each column cast (safely) to the table column's Arrow type."""
    names = batch.schema.names
    unknown = [name for name in names if name not in table.c]
    if unknown:
        raise ValueError(f"table {table.name} has no column(s) {', '.join(unknown)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate column names for table {table.name}: {names}")
    arrays = []
    fields = []
    for name, array in zip(names, batch.columns, strict=True):
        field = schema.field(name)
        if array.type != field.type:
            array = array.cast(field.type)
        arrays.append(array)
        fields.append(field.with_nullable(True))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _slices(batch: pa.RecordBatch, rows: int) -> Iterator[pa.RecordBatch]:
    if batch.num_rows <= rows:
        yield batch
        return
    for offset in range(0, batch.num_rows, rows):
        yield batch.slice(offset, rows)


# -- Python values, the way SQLAlchemy would bind them -----------------------------------


def _as_strings(array: pa.Array) -> list[Any]:
    return array.cast(pa.string()).to_pylist()


def _as_floats(array: pa.Array) -> list[Any]:
    # float(str) is correctly rounded, like float(Decimal); Arrow's decimal->double cast is not.
    return [None if text is None else float(text) for text in array.cast(pa.string()).to_pylist()]


def _as_ints(array: pa.Array) -> list[Any]:
    return array.cast(pa.int64()).to_pylist()


def _as_python(array: pa.Array) -> list[Any]:
    return array.to_pylist()


def _candidates(arrow_type: pa.DataType) -> list[Converter]:
    """Vectorised conversions worth trying for a column of this Arrow type, fastest first."""
    if pa.types.is_decimal(arrow_type):
        return [_as_strings, _as_floats, _as_python]
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz is None:
        return [_as_strings, _as_python]
    if pa.types.is_date(arrow_type) or pa.types.is_time(arrow_type):
        return [_as_strings, _as_python]
    if pa.types.is_boolean(arrow_type):
        return [_as_python, _as_ints]
    return [_as_python]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _sample(array: pa.Array) -> pa.Array:
    """Up to SAMPLE_SIZE non-null values, spread over the whole array."""
    valid = array.drop_null()
    if len(valid) <= SAMPLE_SIZE:
        return valid
    step = len(valid) // SAMPLE_SIZE
    return valid.take(pa.array(range(0, step * SAMPLE_SIZE, step), pa.int64()))


def _converter(column: sa.Column[Any], array: pa.Array, dialect: sa.Dialect) -> Converter:
    """How to turn ``array`` into the Python values SQLAlchemy would hand the driver."""
    if isinstance(base_type(column.type), sat.JSON) and pa.types.is_string(array.type):
        return _as_python  # JSON text goes in as written (the JSON type's processor would quote it again)
    processor = column.type._cached_bind_processor(dialect)
    sample = _sample(array)
    python = sample.to_pylist()
    expected = [processor(value) for value in python] if processor is not None else python
    for candidate in _candidates(array.type):
        got = candidate(sample)
        if all(_same(a, b) for a, b in zip(got, expected, strict=True)):
            return candidate
    if processor is None:  # pragma: no cover - _as_python always matches then
        return _as_python

    def apply(values: pa.Array, proc: Callable[[Any], Any] = processor) -> list[Any]:
        return [None if value is None else proc(value) for value in values.to_pylist()]

    return apply


def _python_columns(batch: pa.RecordBatch, table: sa.Table, dialect: sa.Dialect) -> list[list[Any]]:
    return [
        _converter(table.c[name], array, dialect)(array)
        for name, array in zip(batch.schema.names, batch.columns, strict=True)
    ]


def _binds_unchanged(batch: pa.RecordBatch, table: sa.Table, dialect: sa.Dialect) -> bool:
    """Whether every column's bind processor leaves this batch's (sampled) values as they are."""
    for name, array in zip(batch.schema.names, batch.columns, strict=True):
        processor = table.c[name].type._cached_bind_processor(dialect)
        if processor is None:
            continue
        for value in _sample(array).to_pylist():
            if not _same(processor(value), value):
                return False
    return True


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Booleans as 0/1 (MariaDB reads ``true`` as 0); everything else as Arrow writes it."""
    if not any(pa.types.is_boolean(t) for t in batch.schema.types):
        return batch
    arrays = [a.cast(pa.int8()) if pa.types.is_boolean(a.type) else a for a in batch.columns]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _csv_capable(schema: pa.Schema) -> bool:
    return not any(pa.types.is_binary(t) or pa.types.is_large_binary(t) for t in schema.types)


# -- dialect paths ----------------------------------------------------------------------


@contextlib.contextmanager
def _driver_errors(connection: Connection, statement: str) -> Iterator[None]:
    """Driver exceptions handled exactly as SQLAlchemy Core handles them.

    They become SQLAlchemy's exceptions (``IntegrityError``, ``OperationalError``, ...); a
    lost connection is recognised by the dialect (``connection_invalidated`` is True and the
    connection is invalidated), and ``handle_error`` event hooks run.
    """
    dbapi = connection.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        connection._handle_dbapi_exception(exc, statement, None, None, None)


def _quoted_columns(connection: Connection, names: list[str]) -> str:
    quote = connection.dialect.identifier_preparer.quote
    return ", ".join(quote(name) for name in names)


def _table_name(connection: Connection, table: sa.Table) -> str:
    return connection.dialect.identifier_preparer.format_table(table)


def _insert_postgresql(
    connection: Connection, table: sa.Table, first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]
) -> int:
    names = first.schema.names
    statement = (
        f"COPY {_table_name(connection, table)} ({_quoted_columns(connection, names)}) "
        "FROM STDIN (FORMAT csv, ENCODING 'UTF8')"
    )
    raw = connection.connection.driver_connection
    assert raw is not None
    count = 0
    with (
        _driver_errors(connection, statement),
        raw.cursor() as cursor,
        cursor.copy(statement) as copy,
        _Sender(copy.write) as sender,
    ):
        for batch in _chain(first, rest):
            for chunk in _slices(batch, COPY_CHUNK_ROWS):
                _check_names(chunk, names, table)
                sink = pa.BufferOutputStream()
                pacsv.write_csv(_csv_ready(chunk), sink, _CSV_POSTGRES)
                sender.send(memoryview(sink.getvalue()))
                count += chunk.num_rows
    return count


class _Sender:
    """Sends buffers from a thread of its own, so that the next batch is read, translated
    and rendered as CSV while the server takes in the last one. At most ``depth`` buffers
    wait, so memory stays bounded by the batch size. The thread starts with the second
    buffer: a write of one buffer (most tables of a small bundle) is sent as it was. An
    error of the sending thread is raised by the next :meth:`send` or on leaving; an error
    of the caller stops the sending, and what waits is dropped."""

    def __init__(self, write: Callable[[Any], object], depth: int = 2) -> None:
        self._write = write
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._dropping = False
        self._held: Any = None
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None and not self._dropping:
                try:
                    self._write(data)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def send(self, data: Any) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            if self._held is None:
                self._held = data
                return
            self._thread = threading.Thread(target=self._run, name="bundler-copy", daemon=True)
            self._thread.start()
            self._queue.put(self._held)
            self._held = None
        self._queue.put(data)

    def __enter__(self) -> _Sender:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._thread is None:
            if kind is None and self._held is not None:
                self._write(self._held)
            return
        self._dropping = kind is not None
        self._queue.put(None)
        self._thread.join()
        if kind is None and self._error is not None:
            raise self._error


def _mysql_local_infile(connection: Connection) -> bool:
    """Whether LOAD DATA LOCAL works here: the client allows it and so does the server.

    The server's answer is kept in the pooled connection's ``info``, asked once.
    """
    pooled = connection.connection
    if not getattr(pooled.driver_connection, "_local_infile", False):
        return False
    known = pooled.info.get("bundler_local_infile")
    if known is None:
        value = connection.exec_driver_sql("SELECT @@GLOBAL.local_infile").scalar()
        known = pooled.info["bundler_local_infile"] = str(value).upper() in ("1", "ON")
    return bool(known)


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _load_data_file(
    connection: Connection, table: sa.Table, names: list[str], path: str, rows: int, first_row: int
) -> None:
    """LOAD DATA of one file of ``rows`` rows, the first being row ``first_row`` of the data."""
    statement = (
        f"LOAD DATA LOCAL INFILE {_sql_string(path)} INTO TABLE {_table_name(connection, table)} "
        "CHARACTER SET utf8mb4 "
        "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' "
        "LINES TERMINATED BY 0x0a "
        f"({_quoted_columns(connection, names)})"
    )
    raw = connection.connection.driver_connection
    assert raw is not None
    with _driver_errors(connection, statement), raw.cursor() as cursor:
        loaded = cursor.execute(statement)
        warnings = cursor.warning_count
        if loaded != rows or warnings:
            cursor.execute("SHOW WARNINGS LIMIT 3")
            shown = cursor.fetchall()
            details = "; ".join(f"{row[2]}" for row in shown)
            if any(row[1] == 1062 for row in shown):  # a duplicate key: what an INSERT would raise
                raise sa.exc.IntegrityError(
                    statement, None, Exception(f"LOAD DATA into {table.name}: {details}")
                )
            if shown and shown[0][1] in MYSQL_VALUE_CODES:  # "... for column 'c' at row N" of the file
                found = MYSQL_COLUMN.search(shown[0][2])
                at = found.group(2) if found else None
                raise Refusal(
                    found.group(1) if found else None,
                    first_row + int(at) - 1 if at else None,
                    MYSQL_COLUMN.sub("", shown[0][2]),
                )
            raise DatabaseError(
                f"LOAD DATA into {table.name} wrote {loaded} of {rows} rows with {warnings} warning(s)"
                + (f": {details}" if details else ""),
                hint="the data does not fit the table (duplicate key, value too long or out of range)",
            )


def _insert_mysql_load_data(
    connection: Connection, table: sa.Table, first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]
) -> int:
    names = first.schema.names
    count = 0
    handle, path = tempfile.mkstemp(prefix="bundler-load-", suffix=".csv")
    os.close(handle)
    try:
        pending = 0
        writer: pacsv.CSVWriter | None = None
        schema: pa.Schema | None = None
        for batch in _chain(first, rest):
            _check_names(batch, names, table)
            ready = _csv_ready(batch)
            if writer is None:
                schema = ready.schema
                writer = pacsv.CSVWriter(path, schema, write_options=_CSV_MYSQL)
            assert schema is not None
            writer.write_batch(ready.cast(schema) if ready.schema != schema else ready)
            pending += batch.num_rows
            if pending >= LOAD_DATA_FILE_ROWS:
                writer.close()
                writer = None
                _load_data_file(connection, table, names, path, pending, count)
                count += pending
                pending = 0
        if writer is not None:
            writer.close()
            if pending:
                _load_data_file(connection, table, names, path, pending, count)
                count += pending
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return count


def _insert_dbapi_executemany(
    connection: Connection,
    table: sa.Table,
    first: pa.RecordBatch,
    rest: Iterator[pa.RecordBatch],
    *,
    placeholder: str,
    chunk_rows: int,
) -> int:
    names = first.schema.names
    statement = (
        f"INSERT INTO {_table_name(connection, table)} ({_quoted_columns(connection, names)}) "
        f"VALUES ({', '.join([placeholder] * len(names))})"
    )
    raw = connection.connection.driver_connection
    assert raw is not None
    count = 0
    cursor = raw.cursor()
    try:
        for batch in _chain(first, rest):
            for chunk in _slices(batch, chunk_rows):
                _check_names(chunk, names, table)
                columns = _python_columns(chunk, table, connection.dialect)
                with _driver_errors(connection, statement):
                    cursor.executemany(statement, list(zip(*columns, strict=True)))
                count += chunk.num_rows
    finally:
        cursor.close()
    return count


def _insert_sqlalchemy(
    connection: Connection, table: sa.Table, first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]
) -> int:
    count = 0
    into = _json_as_text(table)
    for batch in _chain(first, rest):
        for chunk in _slices(batch, INSERT_CHUNK_ROWS):
            connection.execute(into.insert(), chunk.to_pylist())
            count += chunk.num_rows
    return count


def _json_as_text(table: sa.Table) -> sa.Table | sa.TableClause:
    """``table``, with its JSON columns bound as the text they hold (written as it is)."""
    if not any(isinstance(base_type(c.type), sat.JSON) for c in table.columns):
        return table
    columns = [
        sa.column(c.name, sat.NullType() if isinstance(base_type(c.type), sat.JSON) else c.type)
        for c in table.columns
    ]
    return sa.table(table.name, *columns, schema=table.schema)


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _check_names(batch: pa.RecordBatch, names: list[str], table: sa.Table) -> None:
    if batch.schema.names != names:
        raise ValueError(
            f"batches for table {table.name} change their columns: {names} then {batch.schema.names}"
        )


# -- entry point ------------------------------------------------------------------------


def insert_arrow(
    connection: Connection,
    table: sa.Table,
    data: pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch],
) -> int:
    """Insert Arrow data into ``table`` in the connection's transaction; return the row count.

    ``data`` is a table, a record batch, a reader or any iterable of record batches, all with
    the same columns; their names are the table's column names, a subset being allowed
    (the other columns take their server defaults; Python-side ``Column(default=...)``
    values are not applied). Each column is cast safely to the table column's Arrow type
    (:func:`arrow_schema_for`), so a value that does not fit (a decimal with too many
    digits) raises before anything is written for that batch. A value the database
    refuses (a text too long for its column, a number out of range, a NUL character on
    PostgreSQL) raises :class:`ValueRefused`, naming the column and the row's index in
    ``data`` as far as the database's diagnostics and the batch being written tell.

    Never commits: when the connection has no transaction yet, one is begun (as
    SQLAlchemy's autobegin would), and the caller commits or rolls back. On any error the
    caller's rollback undoes every row written.
    """
    schema = arrow_schema_for(table)
    seen = Seen()
    conformed = seen.track(_conform(batch, table, schema) for batch in _batches(data) if batch.num_rows)
    first = next(conformed, None)
    if first is None:
        return 0
    if not connection.in_transaction():
        connection.begin()
    try:
        return _insert(connection, table, first, conformed)
    except Refusal as found:
        raise refused(connection, table, seen, found) from None
    except sa.exc.DBAPIError as exc:
        refusal = from_database(exc)
        if refusal is None:
            raise
        raise refused(connection, table, seen, refusal) from exc


def _insert(
    connection: Connection, table: sa.Table, first: pa.RecordBatch, conformed: Iterator[pa.RecordBatch]
) -> int:
    """The rows written by the fastest exact path of the connection's dialect."""
    dialect = connection.dialect
    driver = dialect.driver
    name = dialect.name
    if name == "postgresql" and driver == "psycopg" and _csv_capable(first.schema):
        if _binds_unchanged(first, table, dialect):
            return _insert_postgresql(connection, table, first, _verified(conformed, table, dialect))
    elif name in ("mysql", "mariadb") and driver == "pymysql":
        if (
            _mysql_local_infile(connection)
            and _csv_capable(first.schema)
            and _binds_unchanged(first, table, dialect)
        ):
            return _insert_mysql_load_data(connection, table, first, _verified(conformed, table, dialect))
        return _insert_dbapi_executemany(
            connection, table, first, conformed, placeholder="%s", chunk_rows=INSERT_CHUNK_ROWS
        )
    elif name == "sqlite" and driver == "pysqlite":
        return _insert_dbapi_executemany(
            connection, table, first, conformed, placeholder="?", chunk_rows=SQLITE_CHUNK_ROWS
        )
    return _insert_sqlalchemy(connection, table, first, conformed)


def _verified(
    batches: Iterator[pa.RecordBatch], table: sa.Table, dialect: sa.Dialect
) -> Iterator[pa.RecordBatch]:
    """Later batches of a CSV path: each is checked like the first, and refused if a bind
    processor would change its values (never silently written inexactly)."""
    for batch in batches:
        if not _binds_unchanged(batch, table, dialect):
            raise ValueError(
                f"a column type of table {table.name} changes values when binding; "
                "its values cannot go through the CSV bulk path"
            )
        yield batch
