"""Loading a bundle again after a clean removed its root from the target.

A target-side clean keeps the rows other data still uses (a tariff another customer has)
and, with them, the load's record and the ledger rows that name them. Loading the same
bundle again then restores the root, reusing what was kept: the kept rows are found through
that ledger (as any load finds rows an earlier load from the same source brought), the old
record is dropped before the write, and the rows it had created are recorded as created by
the new load again, so a later clean removes them as before.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.graph import Graph
from bundler.sql import chunks, table_clause


def root_cleaned(connection: sa.Connection, graph: Graph, done: Any) -> bool:
    """Whether the root a recorded load brought is gone from the target (a clean removed it)."""
    if done.outcome != "loaded" or not done.root_table or not done.root_target_pk:
        return False
    if done.kind not in graph.roots or done.root_table not in graph.tables:
        return False
    spec = graph.table(done.root_table)
    t = table_clause(spec)
    pk = spec.from_text(spec.pk[0], str(done.root_target_pk))
    return connection.execute(sa.select(t.c[spec.pk[0]]).where(t.c[spec.pk[0]] == pk)).first() is None


def drop_record(connection: sa.Connection, bundle_id: str) -> dict[str, set[str]]:
    """Drop the old record of ``bundle_id`` and its ledger rows; the rows it had created (table → source pks)."""
    ledger, loads = tracking.ledger_table, tracking.loads_table
    created: dict[str, set[str]] = defaultdict(set)
    for table, source_pk in connection.execute(
        sa.select(ledger.c.table_name, ledger.c.source_pk).where(
            ledger.c.bundle_id == bundle_id, ledger.c.action == "created"
        )
    ):
        created[table].add(source_pk)
    connection.execute(sa.delete(ledger).where(ledger.c.bundle_id == bundle_id))
    connection.execute(sa.delete(loads).where(loads.c.bundle_id == bundle_id))
    return created


def restore_created(connection: sa.Connection, bundle_id: str, created: dict[str, set[str]]) -> int:
    """The kept rows the new load reused are recorded as created by it again; how many."""
    ledger = tracking.ledger_table
    n = 0
    for table, pks in created.items():
        for part in chunks(sorted(pks)):
            n += connection.execute(
                sa.update(ledger)
                .where(ledger.c.bundle_id == bundle_id, ledger.c.table_name == table)
                .where(ledger.c.source_pk.in_(part), ledger.c.action == "reused")
                .values(action="created")
            ).rowcount
    return n
