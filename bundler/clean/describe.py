"""The kept rows of a clean, each with what holds it: a few rows outside the set that still
reference it (and why each is outside), or the kept row it belongs to."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from bundler.clean.model import PK, KeptRow, pk_json
from bundler.clean.plan import Belongs, CleanSet, Held
from bundler.graph import Scope, TableSpec
from bundler.sql import table_clause

# holders shown per reason, and reasons shown per kept row
_HOLDERS = 3
_REASONS = 2


class _Describer:
    def __init__(self, cleanset: CleanSet) -> None:
        self.set = cleanset
        self.side = cleanset.side
        self.conn = cleanset.conn
        self.graph = cleanset.graph
        # a few holders of each reason, with why each is outside the set
        self.examples: dict[Held, list[tuple[PK, str]]] = {}
        self.labels: dict[str, dict[PK, str]] = {}
        self.order = {name: i for i, name in enumerate(self.graph.dependency_order)}

    def gather(self) -> None:
        """The holders of every reason, and the labels of every row the reasons name."""
        wanted: dict[str, set[PK]] = defaultdict(set)
        for table, rows in self.set.kept.items():
            wanted[table] |= set(rows)
            for whys in rows.values():
                for why in whys:
                    if isinstance(why, Belongs):
                        wanted[why.table].add(why.pk)
                    elif why not in self.examples:
                        found = self._holders(why)
                        self.examples[why] = [(pk, self._status(why.table, pk, row)) for pk, row in found]
                        wanted[why.table] |= {pk for pk, _ in found}
        self.labels = {table: self.side.labels(table, pks) for table, pks in wanted.items()}

    def _holders(self, why: Held) -> list[tuple[PK, dict[str, Any]]]:
        """A few rows outside the set that reference the kept value (pk, owner columns)."""
        spec = self.graph.tables[why.table]
        t = table_clause(spec)
        owner_cols = [r.column for r in spec.owner_refs]
        cols = list(dict.fromkeys([*spec.pk, *owner_cols]))
        stmt = sa.select(*(t.c[c] for c in cols)).where(t.c[why.column] == why.value)
        if spec.is_usage:
            return self._usage_holders(spec, why, stmt)
        inside = set(self.set.inside(why.table))
        found: list[tuple[PK, dict[str, Any]]] = []
        for row in self.conn.execute(stmt.order_by(*(t.c[c] for c in spec.pk))).mappings():
            pk = tuple(row[c] for c in spec.pk)
            if pk not in inside:
                found.append((pk, dict(row)))
                if len(found) == _HOLDERS:
                    break
        return found

    def _usage_holders(
        self, spec: TableSpec, why: Held, stmt: sa.Select[Any]
    ) -> list[tuple[PK, dict[str, Any]]]:
        """Usage rows that reference the kept value and are not in the set (SQL decides which)."""
        clauses = list(self.set.usage_clauses(why.table, {why.column: {why.value}}))
        if clauses:
            stmt = stmt.where(sa.not_(sa.or_(*clauses)))
        return [
            (tuple(row[c] for c in spec.pk), dict(row))
            for row in self.conn.execute(stmt.limit(_HOLDERS)).mappings()
        ]

    def _status(self, table: str, pk: PK, row: dict[str, Any]) -> str:
        """Why a row outside the set is outside it, in a few words."""
        if pk in self.set.kept.get(table, {}):
            return "kept"
        spec = self.graph.tables[table]
        if spec.is_usage:
            status = self._usage_status(spec, pk, row)
            if status is not None:
                return status
        return self.side.status(spec, pk, row)

    def _usage_status(self, spec: TableSpec, pk: PK, row: dict[str, Any]) -> str | None:
        """A usage row whose owner is in the set: kept with its owner, or not transferred."""
        t = table_clause(spec)
        for part in self.set.parts.get(spec.name, []):
            if row.get(part.ref.column) not in part.values:
                continue
            this = sa.and_(*(t.c[c] == v for c, v in zip(spec.pk, pk, strict=True)))
            stmt = (
                sa.select(sa.func.count())
                .select_from(t)
                .where(this, self.side.transferred(spec, part.bundles))
            )
            if self.conn.execute(stmt).scalar_one():
                return "kept"  # transferred, and its owner is kept
            return self.side.untransferred_usage
        return None

    def kept_row(self, table: str, pk: PK, whys: list[Held | Belongs]) -> tuple[tuple[Any, ...], KeptRow]:
        """A kept row with its reasons, and where it ranks in the list."""
        held = [w for w in whys if isinstance(w, Held)]
        reasons = [self._reason(why) for why in held[:_REASONS]]
        if not held:
            parent = next(w for w in whys if isinstance(w, Belongs))
            reasons.append(f"belongs to kept {parent.table} {self.labels[parent.table][parent.pk]}")
        outside = any(status != "kept" for why in held for _, status in self.examples[why])
        row = KeptRow(table, pk_json(pk), self.labels[table][pk], "; ".join(reasons), outside)
        rank = (
            (table, pk) not in self.side.named,
            not outside,
            self.graph.tables[table].scope is not Scope.OWNED,
            self.order[table],
            str(pk),
        )
        return rank, row

    def _reason(self, why: Held) -> str:
        shown_rows = self.examples[why]
        shown = ", ".join(f"{self.labels[why.table][hpk]} ({status})" for hpk, status in shown_rows)
        more = why.count - len(shown_rows)
        tail = f" and {more} more" if more > 0 else ""
        return f"still referenced by {why.table} {shown or f'({why.count} rows)'}{tail}"


def kept_rows(cleanset: CleanSet) -> list[KeptRow]:
    """Every kept row with what holds it; rows held from outside the set (not by kept rows) first,
    the named rows first of all."""
    describer = _Describer(cleanset)
    describer.gather()
    out = [
        describer.kept_row(table, pk, whys)
        for table, rows in cleanset.kept.items()
        for pk, whys in rows.items()
    ]
    return [row for _, row in sorted(out, key=lambda item: item[0])]
