"""The target's bookkeeping, shared by load, reverse, clean and the lineup: new surrogate
ids taken inside a load's transaction, and what the ledger pairs with a row's key."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import sqlalchemy as sa

from bundler import tracking
from bundler.sql import chunks


class IdAllocator:
    """New surrogate ids from the target, per table, inside the load's transaction."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self._next: dict[str, int] = {}
        self._sequence: dict[str, str | None] = {}

    def take(self, table: str, column: str, n: int) -> Sequence[int]:
        if n == 0:
            return []
        if self.dialect == "postgresql":
            if table not in self._sequence:
                self._sequence[table] = self.connection.exec_driver_sql(
                    f"SELECT pg_get_serial_sequence('{table}', '{column}')"
                ).scalar()
            seq = self._sequence[table]
            if seq:
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


def ledger_map(
    connection: sa.Connection,
    table: str,
    pks: Iterable[str],
    *,
    by: str = "source",
    bundles: Sequence[str] | None = None,
    source_system: str | None = None,
    skip_kind: str | None = None,
) -> dict[str, str]:
    """What the ledger pairs with each of ``pks`` (text) for ``table``, as text.

    ``by="source"``: source pk -> target pk; ``by="target"``: target pk -> source pk (the
    first found). Only the ledger rows of ``bundles``, or of the loads from
    ``source_system`` (not of kind ``skip_kind``), count.
    """
    ledger, loads = tracking.ledger_table, tracking.loads_table
    key, other = (
        (ledger.c.source_pk, ledger.c.target_pk)
        if by == "source"
        else (ledger.c.target_pk, ledger.c.source_pk)
    )
    found: dict[str, str] = {}
    for part in chunks(sorted(set(pks))):
        q = sa.select(key, other).where(ledger.c.table_name == table, key.in_(part))
        if bundles is not None:
            q = q.where(ledger.c.bundle_id.in_(bundles))
        if source_system is not None:
            q = q.join(loads, loads.c.bundle_id == ledger.c.bundle_id).where(
                loads.c.source_system == source_system
            )
            if skip_kind is not None:
                q = q.where(loads.c.kind != skip_kind)
        for mine, theirs in connection.execute(q):
            found.setdefault(mine, theirs)
    return found
