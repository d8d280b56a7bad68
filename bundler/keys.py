"""Natural keys: how a row is named across systems.

A natural key is a mapping column → value. Values are rendered to JSON scalars the
same way everywhere (export, inspect, load), so keys computed from a database row,
from a Parquet row or from a manifest compare equal. A reference column in a natural
key stands for the referenced row's natural key, nested.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

Key = dict[str, Any]


def key_value(value: Any) -> Any:
    """A natural-key value as a JSON scalar."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def key_text(key: Key) -> str:
    """A stable one-line text of a key, for messages, dictionaries and sidecars."""
    return json.dumps(key, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def describe(key: Key) -> str:
    """A short human rendering: ``name=acme`` or ``i_tariff=(name=T1), i_dest=(destination=44)``."""
    parts = []
    for col, value in key.items():
        shown = (
            f"({describe(value)})"
            if isinstance(value, dict)
            else repr(value)
            if isinstance(value, str)
            else value
        )
        parts.append(f"{col}={shown}")
    return ", ".join(parts)
