"""Late usage moves balances: the charge of each usage row that reached the source after its
root was exported is applied, in the load's transaction, to the balances the graph declares
above it (an xDR's debit account, its customer), and recorded in ``bundler_charges``.

The usage bundle names, per usage table, the source key above which a row is late
(``usage.late_after``): those rows were not yet in the balances the root's own bundle
carried. A row's charge (the table's ``charge`` column) climbs the owner references (an
xDR to its account, the account to its customer; not a customer to its reseller) and moves
every balance with a ``usage`` sign on the way: ``add`` (what a customer owes) or
``subtract`` (a debit account's funds), where the balance's ``where`` holds.

``bundler_charges`` is the ledger of those adjustments: per load, table and target row, the
amount added to the balance and the late rows it sums. A load is recorded once, so a
balance moves once per late row. Cleaning a load from the target takes its adjustments back
(:func:`reverse_charges`, in the clean's transaction) and forgets them.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.errors import BundlerError
from bundler.graph import Graph, TableSpec
from bundler.keys import key_value
from bundler.load.cache import reflect
from bundler.load.state import LoadState, source_value
from bundler.sql import chunks

metadata = sa.MetaData()

charges_table = sa.Table(
    "bundler_charges",
    metadata,
    sa.Column("bundle_id", sa.String(64), primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("target_pk", sa.String(255), primary_key=True),
    sa.Column("column_name", sa.String(64), nullable=False),
    sa.Column("amount", sa.String(64), nullable=False),  # exact decimal text, signed as applied
    sa.Column("usage_rows", sa.BigInteger, nullable=False),
    sa.Column("applied_at", tracking.TIMESTAMP, nullable=False),
)


def apply_charges(state: LoadState) -> dict[str, Decimal]:
    """Apply the charges of the bundle's late usage rows; the total charged per usage table."""
    late_after = state.manifest.usage.late_after
    if not late_after:
        return {}
    totals: dict[str, Decimal] = {}
    # (table, column it is reached by) -> value -> [amount, late rows]
    level: dict[tuple[str, str], dict[Any, list[Any]]] = defaultdict(dict)
    for source_table, after in sorted(late_after.items()):
        table, _ = state.tr.translate_key(source_table, {})
        if table not in state.graph.tables or table not in state.tables:
            continue
        spec = state.graph.table(table)
        if spec.charge is None:
            continue
        totals[table] = _late_charges(state, spec, source_value(spec, spec.pk[0], after), level)
    adjustments: list[dict[str, Any]] = []
    while level:
        level = _climb(state, level, adjustments)
    if adjustments:
        state.conn.execute(charges_table.insert(), adjustments)
        shown = ", ".join(f"{t} {total}" for t, total in sorted(totals.items()))
        state.progress.note(
            f"{state.bundle_id}: late usage charged ({shown}) to {len(adjustments)} balance(s)"
        )
    return totals


def _late_charges(
    state: LoadState, spec: TableSpec, after: Any, level: dict[tuple[str, str], dict[Any, list[Any]]]
) -> Decimal:
    """Sum the charges of the rows above ``after`` per owner (in target keys) into ``level``."""
    import pyarrow.compute as pc

    assert spec.charge is not None
    total = Decimal(0)
    owners = [r for r in spec.owner_refs if r.table != spec.name]
    for batch in state.batches(spec.name):
        batch = batch.filter(pc.greater(batch.column(spec.pk[0]), after))
        if batch.num_rows == 0:
            continue
        charges = batch.column(spec.charge).to_pylist()
        for ref in owners:
            idmap = state.idmap(ref.table)
            for value, charge in zip(batch.column(ref.column).to_pylist(), charges, strict=True):
                if value is None or charge is None:
                    continue
                target = idmap.get(value)
                if target is None:
                    continue  # the write refused unmapped owners already
                entry = level[(ref.table, ref.target_column)].setdefault(target, [Decimal(0), 0])
                entry[0] += Decimal(charge)
                entry[1] += 1
        total += sum((Decimal(c) for c in charges if c is not None), Decimal(0))
    return total


def _climb(
    state: LoadState, level: dict[tuple[str, str], dict[Any, list[Any]]], adjustments: list[dict[str, Any]]
) -> dict[tuple[str, str], dict[Any, list[Any]]]:
    """Move the balances of the rows in ``level``; the next level up (their owners)."""
    following: dict[tuple[str, str], dict[Any, list[Any]]] = defaultdict(dict)
    for (table, column), amounts in level.items():
        spec = state.graph.table(table)
        t = state.sa_table(table)
        parents = [r for r in spec.owner_refs if r.table != table]
        balance = spec.balance if spec.balance is not None and spec.balance.usage_sign else None
        wanted = list(dict.fromkeys([spec.pk[0], column, *(r.column for r in parents)]))
        if balance is not None:
            wanted += [c for c in (balance.column, *balance.where) if c not in wanted]
        for part in chunks(list(amounts)):
            query = sa.select(*(t.c[c] for c in wanted)).where(t.c[column].in_(part))
            if balance is not None and state.conn.dialect.name != "sqlite":
                query = query.with_for_update()
            for row in state.conn.execute(query).mappings():
                amount, rows = amounts[row[column]]
                if balance is not None and balance.holds(dict(row)):
                    delta = amount * balance.usage_sign
                    before = Decimal(str(row[balance.column] or 0))
                    value: Any = before + delta
                    if isinstance(t.c[balance.column].type, sa.String):
                        value = str(value)
                    pk = spec.pk[0]
                    state.conn.execute(sa.update(t).where(t.c[pk] == row[pk]).values({balance.column: value}))
                    adjustments.append(
                        {
                            "bundle_id": state.bundle_id,
                            "table_name": table,
                            "target_pk": str(row[pk]),
                            "column_name": balance.column,
                            "amount": str(key_value(delta)),
                            "usage_rows": rows,
                            "applied_at": tracking.now(),
                        }
                    )
                for ref in parents:
                    value = row[ref.column]
                    if value is None:
                        continue
                    entry = following[(ref.table, ref.target_column)].setdefault(value, [Decimal(0), 0])
                    entry[0] += amount
                    entry[1] += rows
    return following


def reverse_charges(conn: sa.Connection, graph: Graph, bundles: list[str]) -> int:
    """Take back the balance adjustments the late usage of ``bundles`` made (a balance row
    that is gone needs none) and forget them; how many records were forgotten."""
    if not bundles or not sa.inspect(conn).has_table(charges_table.name):
        return 0
    c = charges_table.c
    records = conn.execute(sa.select(charges_table).where(c.bundle_id.in_(sorted(bundles)))).all()
    for record in records:
        spec = graph.tables.get(record.table_name)
        if spec is None or record.column_name not in spec.column_names:
            raise BundlerError(
                f"bundle {record.bundle_id}: its late usage charged {record.table_name}.{record.column_name}, "
                "which the entity graph does not know; nothing was removed",
                hint="clean with the graph the bundle was loaded with (--spec)",
            )
        t = reflect(conn, spec.name)
        pk = t.c[spec.pk[0]] == spec.from_text(spec.pk[0], record.target_pk)
        query = sa.select(t.c[record.column_name]).where(pk)
        if conn.dialect.name != "sqlite":
            query = query.with_for_update()
        found = conn.execute(query).first()
        if found is None:
            continue  # the balance's row is removed with the load
        value: Any = Decimal(str(found[0] or 0)) - Decimal(record.amount)
        if isinstance(t.c[record.column_name].type, sa.String):
            value = str(value)
        conn.execute(sa.update(t).where(pk).values({record.column_name: value}))
    return sum(
        conn.execute(sa.delete(charges_table).where(c.bundle_id.in_(part))).rowcount
        for part in chunks(sorted(bundles))
    )
