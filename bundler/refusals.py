"""Values a database refuses while rows are bulk written, named: the table, the column, the
row (by the bundle's key) and the value, found from the database's own diagnostics or, where
it names no column, by checking the batch against the column's declared limits. The value of a
sensitive column (:mod:`bundler.secure.mask`) is named masked, unless ``--show-sensitive``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import types as sat
from sqlalchemy.engine import Connection

from bundler.errors import BundlerError
from bundler.secure.mask import MASK, masking, sensitive_columns

if TYPE_CHECKING:
    from bundler.graph import Graph


def base_type(type_: sat.TypeEngine[Any]) -> sat.TypeEngine[Any]:
    """The SQL type behind a TypeDecorator (or the type itself)."""
    seen = 0
    while isinstance(type_, sat.TypeDecorator) and seen < 10:
        type_ = type_.impl_instance
        seen += 1
    return type_


#: MariaDB codes (errors, or warnings of LOAD DATA LOCAL) of a value that does not fit its column.
MYSQL_VALUE_CODES = frozenset({1048, 1263, 1264, 1265, 1292, 1366, 1406})
MYSQL_COLUMN = re.compile(r" for column '([^']+)'(?: at row (\d+))?")
_PG_CONTEXT = re.compile(r"\bline (\d+)(?:, column ([^:]+): \"(.*)\")?", re.S)
_INT_BOUNDS = {sat.SmallInteger: 2**15, sat.BigInteger: None, sat.Integer: 2**31}
#: What a database quotes in its reason (MariaDB's 'value', PostgreSQL's "value").
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


class ValueRefused(BundlerError):
    """The database refused a value of the rows being written: a text longer than its column,
    a number out of the column's range, a character it cannot store (PostgreSQL: NUL).

    ``row`` is the refused row's index in the data given to :func:`insert_arrow` (None when
    neither the database nor the data tell), ``column`` its column when known, ``value`` the
    value when known, ``reason`` what the database said. A caller that knows what the rows
    are names them with :meth:`named`.
    """

    def __init__(
        self,
        table: str,
        column: str | None,
        row: int | None,
        value: Any,
        reason: str,
        *,
        where: str | None = None,
        hint: str | None = None,
        graph: Graph | None = None,
    ) -> None:
        self.graph = graph
        self.table = table
        self.column = column
        self.row = row
        self.value = value
        self.reason = reason
        where = where or f"table {table}, row {'?' if row is None else row + 1} of the data written"
        super().__init__(f"{where}: {self.what()}", hint=hint or self.default_hint())

    def what(self) -> str:
        """``column c = 'value': the database refused it (reason)``."""
        shown = "" if self.column is None else f"column {self.column}"
        reason = self.reason
        if self.hidden:  # the value, and whatever the database quoted of it, masked
            reason = _QUOTED.sub(repr(MASK), reason)
            if isinstance(self.value, str) and self.value:
                reason = reason.replace(self.value, MASK)
        if self.column is not None and self.value is not None:
            text = repr(MASK if self.hidden else self.value)
            shown += f" = {text[:60] + '…' if len(text) > 60 else text}"
        return f"{shown + ': ' if shown else ''}the database refused the value ({reason})"

    @property
    def hidden(self) -> bool:
        """Whether the value is of a sensitive column, shown masked."""
        return (
            self.column is not None and masking() and self.column in sensitive_columns(self.table, self.graph)
        )

    def cause(self, exc: BaseException) -> BaseException | None:
        """What to raise this refusal from: ``exc``, but nothing when the value is masked (the
        driver's error, which ``--debug`` prints, quotes the value)."""
        return None if self.hidden else exc

    @property
    def nul(self) -> bool:
        """Whether the refusal is of a NUL character (PostgreSQL cannot store one in text)."""
        return "0x00" in self.reason or (isinstance(self.value, str) and "\x00" in self.value)

    def default_hint(self) -> str:
        if self.nul:
            return "PostgreSQL cannot store a NUL character in text: remove it from the row at its source"
        return "nothing was written; widen the column in the database (or correct the value at its source)"

    def named(self, where: str, hint: str | None = None, graph: Graph | None = None) -> ValueRefused:
        """The same refusal, its line starting with ``where`` (the bundle, table and row); the
        sensitive columns those of ``graph`` (and of the shipped graphs)."""
        return ValueRefused(
            self.table,
            self.column,
            self.row,
            self.value,
            self.reason,
            where=where,
            hint=hint or self.default_hint(),
            graph=graph or self.graph,
        )


class Refusal(Exception):
    """What a bulk path learned of a refused value: column, row in the data, reason."""

    def __init__(self, column: str | None, row: int | None, reason: str, value: Any = None) -> None:
        super().__init__(reason)
        self.column = column
        self.row = row
        self.reason = reason
        self.value = value


class Seen:
    """The batch being written and the index of its first row in the data, to name a refused row."""

    def __init__(self) -> None:
        self.batch: pa.RecordBatch | None = None
        self.offset = 0
        self._next = 0

    def track(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            self.batch, self.offset = batch, self._next
            self._next += batch.num_rows
            yield batch


def from_database(exc: sa.exc.DBAPIError) -> Refusal | None:
    """The refusal a driver error reports, or None when it is not a refused value."""
    orig = exc.orig
    lines = str(orig).strip().splitlines()
    reason = lines[0] if lines else type(orig).__name__
    diag = getattr(orig, "diag", None)
    if diag is not None:  # psycopg
        if not str(diag.sqlstate or "").startswith("22"):
            return None
        found = _PG_CONTEXT.search(diag.context or "")
        if found is None:
            return Refusal(diag.column_name, None, reason)
        return Refusal(found.group(2) or diag.column_name, int(found.group(1)) - 1, reason, found.group(3))
    code = orig.args[0] if orig is not None and orig.args else None
    if code in MYSQL_VALUE_CODES:  # "at row N" counts rows of one multi-row INSERT: not kept
        reason = str(orig.args[1]) if orig is not None and len(orig.args) > 1 else reason
        column = MYSQL_COLUMN.search(reason)
        return Refusal(column.group(1) if column else None, None, MYSQL_COLUMN.sub("", reason))
    return None


def misfits(column: sa.Column[Any], array: pa.Array, dialect: str) -> pa.Array | None:
    """Which values of ``array`` cannot fit ``column`` (None: no test for its type)."""
    import pyarrow.compute as pc

    base = base_type(column.type)
    if pa.types.is_string(array.type):
        masks = []
        length = getattr(base, "length", None)
        if length:
            masks.append(pc.greater(pc.utf8_length(array), length))
        if dialect == "postgresql":
            masks.append(pc.match_substring(array, "\x00"))
        return pc.or_(*masks) if len(masks) == 2 else (masks[0] if masks else None)
    if pa.types.is_integer(array.type) and isinstance(base, sat.Integer):
        bound = next(b for t, b in _INT_BOUNDS.items() if isinstance(base, t))
        if bound is None:  # 64 bits: whatever Arrow holds fits
            return None
        return pc.or_(pc.greater_equal(array, pa.scalar(bound)), pc.less(array, pa.scalar(-bound)))
    return None


def first_misfit(
    batch: pa.RecordBatch, table: sa.Table, names: list[str], dialect: str
) -> tuple[str, int] | None:
    """The first (column, row in the batch) of ``names`` whose value cannot fit, by row order."""
    import pyarrow.compute as pc

    found: tuple[str, int] | None = None
    for name in names:
        mask = misfits(table.c[name], batch.column(name), dialect)
        if mask is None:
            continue
        index = pc.index(pc.fill_null(mask, False), True).as_py()
        if index >= 0 and (found is None or index < found[1]):
            found = (name, index)
    return found


def refused(connection: Connection, table: sa.Table, seen: Seen, refusal: Refusal) -> ValueRefused:
    """The refusal with its row, column and value completed from the batch being written."""
    column, row, value = refusal.column, refusal.row, refusal.value
    batch = seen.batch
    local = None if row is None else row - seen.offset
    if batch is not None and (local is None or 0 <= local < batch.num_rows):
        names = [column] if column is not None and column in batch.schema.names else batch.schema.names
        if local is not None:
            batch = batch.slice(local, 1)
        found = first_misfit(batch, table, names, connection.dialect.name)
        if found is not None:
            column = found[0]
            local = found[1] + (local or 0)
        if local is not None and column in batch.schema.names:
            row = seen.offset + local
            value = seen.batch.column(column)[local].as_py() if seen.batch is not None else value
    return ValueRefused(table.name, column, row, value, refusal.reason)
