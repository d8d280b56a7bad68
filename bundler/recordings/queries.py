"""SQL helpers of recordings sync: key order, key lists, chunks, keys read back from JSON."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

__all__ = ["IN_CHUNK", "chunks", "decode", "key_in", "tuple_after"]

#: Identities per ``IN (...)`` list.
IN_CHUNK = 500


def tuple_after(columns: Sequence[sa.ColumnElement[Any]], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``(c1, c2, …) > (v1, v2, …)`` in lexicographic order, spelled out for every dialect."""
    terms = []
    for i, column in enumerate(columns):
        equal = [columns[j] == values[j] for j in range(i)]
        terms.append(sa.and_(*equal, column > values[i]))
    return sa.or_(*terms)


def key_in(
    columns: Sequence[sa.ColumnElement[Any]], keys: Sequence[tuple[Any, ...]]
) -> sa.ColumnElement[bool]:
    """The rows whose ``columns`` hold one of ``keys``."""
    if len(columns) == 1:
        return columns[0].in_([k[0] for k in keys])
    return sa.or_(*(sa.and_(*(c == v for c, v in zip(columns, k, strict=True))) for k in keys))


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def decode(value: Any, type_: sa.types.TypeEngine[Any]) -> Any:
    """A key value read back from JSON, in the Python type of its column."""
    if isinstance(value, str):
        if isinstance(type_, sa.DateTime):
            return datetime.fromisoformat(value)
        if isinstance(type_, sa.Date):
            return date.fromisoformat(value)
    return value
