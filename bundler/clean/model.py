"""What clean is asked, what it plans and what it did; and the small helpers its steps share."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bundler.errors import BundlerError
from bundler.graph import Graph
from bundler.keys import Key, describe, key_value
from bundler.sql import natural_keys

NOT_A_CLEANER = "bundler clean removes only what was transferred; it is not a general clean-up tool"
PK = tuple[Any, ...]


class CleanRefused(BundlerError):
    """Asked to remove something that was never transferred, or that clean does not touch."""


# -- requests, plans, results ----------------------------------------------------------------


@dataclass(frozen=True)
class CleanRequest:
    """What the operator asked for: bundle ids and (kind, id-or-name) entities, on a side."""

    entities: tuple[tuple[str, str], ...] = ()
    bundles: tuple[str, ...] = ()
    side: str | None = None
    spec: str | None = None
    # source side: remove a root's usage outside its exported windows too, for every root
    # (``all_usage``) or for those whose export the target has loaded (``loaded``: export ids)
    all_usage: bool = False
    loaded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selected:
    """One named thing, resolved: what it is and the loads or exports it covers."""

    what: str
    bundles: tuple[str, ...]


@dataclass(frozen=True)
class KeptRow:
    """A row of the set that stays, and why."""

    table: str
    pk: Any
    label: str
    reason: str
    # held by a row outside the set that is not itself kept: a cause, not a consequence
    held_from_outside: bool = False

    def line(self) -> str:
        return f"kept {self.table} {self.label}: {self.reason}"


@dataclass
class CleanPlan:
    """What a clean would remove (children first) and keep. Nothing is written to make it."""

    request: CleanRequest
    side: str
    side_reason: str
    database: str
    release: str
    selected: list[Selected]
    tables: dict[str, int]
    unlink: dict[str, int]
    kept: list[KeptRow]
    closes: list[str]
    partly: dict[str, int]

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def signature(self) -> tuple[Any, ...]:
        """What must not change between the plan and the run."""
        return (
            self.side,
            tuple(self.tables.items()),
            tuple(sorted((k.table, json.dumps(k.pk)) for k in self.kept)),
            tuple(sorted(self.closes)),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "side_reason": self.side_reason,
            "database": self.database,
            "release": self.release,
            "selected": [{"what": s.what, "bundles": list(s.bundles)} for s in self.selected],
            "rows": self.rows,
            "tables": dict(self.tables),
            "unlink": dict(self.unlink),
            "kept": [
                {
                    "table": k.table,
                    "pk": k.pk,
                    "label": k.label,
                    "reason": k.reason,
                    "held_from_outside": k.held_from_outside,
                }
                for k in self.kept
            ],
            ("forget_loads" if self.side == "target" else "close_exports"): list(self.closes),
            ("loads_kept" if self.side == "target" else "exports_kept"): dict(self.partly),
        }


@dataclass
class CleanResult:
    plan: CleanPlan
    deleted: dict[str, int]
    bookkeeping_rows: int
    closed: list[str]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(self.deleted.values())

    def summary(self) -> dict[str, Any]:
        out = self.plan.summary()
        out.update(
            outcome="cleaned",
            deleted=dict(self.deleted),
            rows_deleted=self.rows,
            bookkeeping_rows_removed=self.bookkeeping_rows,
            seconds=round(self.seconds, 3),
        )
        out["forgot_loads" if self.plan.side == "target" else "closed_exports"] = list(self.closed)
        return out


# -- small helpers ---------------------------------------------------------------------------


def pk_text(values: PK) -> str:
    """A primary key as the ledger and the export marks write it."""
    return str(values[0]) if len(values) == 1 else json.dumps([key_value(v) for v in values])


def pk_json(values: PK) -> Any:
    return key_value(values[0]) if len(values) == 1 else [key_value(v) for v in values]


def short(key: Key) -> str:
    if len(key) == 1:
        (value,) = key.values()
        if isinstance(value, str):
            return repr(value)
        if not isinstance(value, dict):
            return str(value)
    return describe(key)


def labels(connection: sa.Connection, graph: Graph, table: str, pks: Iterable[PK]) -> dict[PK, str]:
    """Each row by its natural key in a few words (``'acme'``), or by its id (``#12``)."""
    spec = graph.table(table)
    pks = list(pks)
    if len(spec.pk) != 1:
        return {pk: describe({c: key_value(v) for c, v in zip(spec.pk, pk, strict=True)}) for pk in pks}
    keys = natural_keys(connection, graph, table, spec.pk[0], [pk[0] for pk in pks])
    return {pk: short(keys[pk[0]]) if pk[0] in keys else f"#{pk[0]}" for pk in pks}
