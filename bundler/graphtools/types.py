"""The graph column type of a SQL column type: one mapping for ``graph infer`` and for the
billing graphs' generator."""

from __future__ import annotations

from typing import Any

import sqlalchemy.types as sat

from bundler.graph import MAX_DECIMAL_DIGITS, TIMESTAMP_TZ

#: a column of no type the graph knows is read as text and marked for review
FALLBACK = "string"


def graph_type(sa_type: Any) -> str:
    """The exact graph type of a SQLAlchemy column type (raises TypeError when there is none).

    Integers are ``int32`` (``int64`` when big), ``Float``/``REAL``/``DOUBLE`` ``float64``,
    ``Numeric(p, s)`` ``decimal(p,s)`` (p up to 38), ``DateTime`` ``timestamp[us]`` or, with a
    time zone, ``timestamp[us, tz=UTC]``, ``Date`` ``date32``, ``Boolean`` ``bool``, ``JSON``
    ``json``, binary types ``binary``, text types ``string``. A type decorator maps as the
    type it stores.
    """
    if isinstance(sa_type, sat.TypeDecorator):
        sa_type = sa_type.impl_instance
    if isinstance(sa_type, sat.JSON):
        return "json"
    if isinstance(sa_type, sat.Boolean):
        return "bool"
    if isinstance(sa_type, sat.BigInteger):
        return "int64"
    if isinstance(sa_type, sat.Integer):
        return "int32"
    if isinstance(sa_type, sat.Float) or (isinstance(sa_type, sat.Numeric) and not sa_type.asdecimal):
        return "float64"
    if isinstance(sa_type, sat.Numeric):
        precision, scale = sa_type.precision, sa_type.scale
        if precision is None:
            raise TypeError(f"NUMERIC without a precision ({sa_type!r}): declare decimal(P,S)")
        if precision > MAX_DECIMAL_DIGITS:
            raise TypeError(f"{sa_type!r} has more than {MAX_DECIMAL_DIGITS} digits")
        return f"decimal({precision},{scale or 0})"
    if isinstance(sa_type, sat.DateTime):
        return TIMESTAMP_TZ if sa_type.timezone else "timestamp[us]"
    if isinstance(sa_type, sat.Date):
        return "date32"
    if isinstance(sa_type, sat.String | sat.Enum):  # Text and the dialects' text types too
        return "string"
    if isinstance(sa_type, sat._Binary):
        return "binary"
    raise TypeError(f"no graph type for {sa_type!r}")
