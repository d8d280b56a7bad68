"""New surrogate ids in the target, per table, taken inside a load's transaction: from the
column's sequence on PostgreSQL (several tables in one round trip, a big table as a run),
above the table's highest id elsewhere (the table locked for the transaction)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence

import sqlalchemy as sa

#: engine -> (table, column) -> the sequence that serves the column on PostgreSQL (None: none),
#: asked once per engine: the target's schema does not change under a run
_SEQUENCES: weakref.WeakKeyDictionary[sa.Engine, dict[tuple[str, str], str | None]] = (
    weakref.WeakKeyDictionary()
)


#: a table taking more ids than this asks first for a run of them (see :meth:`IdAllocator.take`)
CONTIGUOUS_FIRST = 10_000


class IdAllocator:
    """New surrogate ids from the target, per table, inside the load's transaction."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self._next: dict[str, int] = {}
        self._sequence = _SEQUENCES.setdefault(connection.engine, {})
        self._reserved: dict[str, Sequence[int]] = {}

    def _sequences(self, wanted: Iterable[tuple[str, str]]) -> None:
        """Find the sequences of these (table, column) pairs not known yet, in one query."""
        unknown = [pair for pair in dict.fromkeys(wanted) if pair not in self._sequence]
        if not unknown:
            return
        found = self.connection.exec_driver_sql(
            "SELECT " + ", ".join(f"pg_get_serial_sequence('{t}', '{c}')" for t, c in unknown)
        ).one()
        self._sequence.update(zip(unknown, found, strict=True))

    def reserve(self, wanted: dict[str, tuple[str, int]]) -> None:
        """Take ids for several tables at once (table -> (column, how many)): one round trip
        on PostgreSQL instead of one per table. :meth:`take` hands them out; what is not
        used is a gap, as a rolled-back transaction leaves in a sequence."""
        if self.dialect != "postgresql":
            return
        self._sequences((table, column) for table, (column, _) in wanted.items())
        asked = [
            (table, seq, n)
            for table, (column, n) in wanted.items()
            if n > 0 and (seq := self._sequence[(table, column)])
        ]
        if not asked:
            return
        parts = " UNION ALL ".join(
            f"SELECT {i} AS k, nextval('{seq}') AS id FROM generate_series(1, {int(n)})"
            for i, (_, seq, n) in enumerate(asked)
        )
        rows = self.connection.exec_driver_sql(
            f"SELECT k, array_agg(id ORDER BY id) FROM ({parts}) v GROUP BY k"
        ).all()
        for k, ids in rows:
            self._reserved[asked[k][0]] = [int(v) for v in ids]

    def take_ahead(self, table: str, column: str, n: int) -> None:
        """Take ``n`` ids of one table now, for :meth:`take` to hand out later without a
        round trip (as while one ``COPY`` writes the whole table)."""
        if n > 0 and len(self._reserved.get(table, ())) < n:
            self._reserved[table] = self.take(table, column, n)

    def take(self, table: str, column: str, n: int) -> Sequence[int]:
        if n == 0:
            return []
        reserved = self._reserved.get(table)
        if reserved is not None and len(reserved) >= n:
            self._reserved[table] = reserved[n:]
            return reserved[:n]
        if self.dialect == "postgresql":
            self._sequences([(table, column)])
            seq = self._sequence[(table, column)]
            if seq:
                if n > CONTIGUOUS_FIRST:
                    # a big table: asked for a run of ids without keeping the values (0.4 s for a
                    # million here; 0.7 s keeping them); another session taking some in between
                    # leaves a gap, and the values are then taken again, kept
                    low, high, count = self.connection.exec_driver_sql(
                        f"SELECT min(id), max(id), count(*) FROM "
                        f"(SELECT nextval('{seq}') AS id FROM generate_series(1, {int(n)})) v"
                    ).one()
                    if int(high) - int(low) + 1 == int(count):
                        return range(int(low), int(high) + 1)
                # one row back, not n: the range when the values came out contiguous (the usual
                # case), the list only when another session took values in between
                low, high, values = self.connection.exec_driver_sql(
                    f"WITH v AS MATERIALIZED (SELECT nextval('{seq}') AS id FROM generate_series(1, {int(n)})) "
                    "SELECT min(id), max(id), CASE WHEN max(id) - min(id) + 1 = count(*) THEN NULL "
                    "ELSE array_agg(id ORDER BY id) END FROM v"
                ).one()
                return range(int(low), int(high) + 1) if values is None else [int(v) for v in values]
        if table not in self._next:
            t = sa.table(table, sa.column(column))
            stmt = sa.select(sa.func.coalesce(sa.func.max(t.c[column]), 0))
            if self.dialect == "mysql":
                stmt = stmt.with_for_update()
            elif self.dialect == "postgresql":
                self.connection.exec_driver_sql(f'LOCK TABLE "{table}" IN SHARE ROW EXCLUSIVE MODE')
            self._next[table] = int(self.connection.execute(stmt).scalar() or 0) + 1
        first = self._next[table]
        self._next[table] = first + n
        return range(first, first + n)
