"""References that cross roots: a row of one root that points at a row another root owns.

An account moved from one customer to another leaves the first customer's CPE and
extensions pointing at it; the second customer's xDRs on it point at the first one's
invoices. Each customer's bundle then names the other's rows as outside rows (owned scope,
found by natural key). A load whose outside rows of another root are not in the target yet
does not stop: where every reference to them is nullable, it writes them NULL and records
each in ``bundler_deferred`` (the row, the column, the referenced row's source key and
natural key). The load that later brings the referenced row (from the same source system)
sets every such reference through its ledger and removes the records, so every order of the
two loads ends with the same rows. :func:`open_references` lists what is still open.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.errors import PrerequisitesMissing
from bundler.graph import Graph, TableSpec
from bundler.keys import describe, key_text
from bundler.ledger import ledger_map
from bundler.load.state import LoadState
from bundler.manifest import Outside
from bundler.sql import chunks, table_clause


def deferrable(state: LoadState, table: str, entry: Outside) -> bool:
    """Whether missing outside rows of ``table`` may be left open: they belong to another root
    (:meth:`bundler.graph.Graph.of_another_root`). The write refuses a reference to one through
    a column that cannot be NULL (:func:`refuse_open`)."""
    return state.graph.of_another_root(table, entry.scope)


def blocking(state: LoadState, table: str, values: set[Any]) -> set[Any]:
    """Those of ``values`` (rows of ``table``) that the bundle references through a column
    that cannot be NULL: they cannot wait for their root."""
    import pyarrow.compute as pc

    found: set[Any] = set()
    for spec, ref in state.graph.referencing.get(table, []):
        if ref.nullable or spec.name not in state.tables:
            continue
        for batch in state.reader.scan(spec.name, keep=False):
            found.update(v for v in pc.unique(batch.column(ref.column)).to_pylist() if v in values)
    return found


def refuse_open(
    state: LoadState, spec_name: str, column: str, table: str, value: Any
) -> PrerequisitesMissing:
    """A reference to another root's row the target lacks, through a column that cannot wait as NULL."""
    key = state.foreign[table][value]
    return PrerequisitesMissing(
        f"bundle {state.bundle_id}: the target lacks {table} {describe(key)}, which another root owns; "
        f"{spec_name}.{column} references it and cannot be left open (not nullable)",
        hint="load the bundle of the root that owns it first, then this one",
    )


def record_open(state: LoadState) -> int:
    """Record the references this load left open (after the write: the rows' target keys are known)."""
    rows: list[dict[str, Any]] = []
    system = state.manifest.source.system_id
    for spec, column, pairs in state.left_open:
        ref = spec.ref_by_column[column]
        targets = ledger_map(state.conn, spec.name, (str(pk) for pk, _ in pairs), bundles=[state.bundle_id])
        keys = state.foreign[ref.table]
        for pk, value in pairs:
            rows.append(
                {
                    "bundle_id": state.bundle_id,
                    "table_name": spec.name,
                    "target_pk": targets[str(pk)],
                    "column_name": column,
                    "ref_table": ref.table,
                    "ref_source_pk": str(value),
                    "ref_key": key_text(keys[value]),
                    "source_system": system,
                }
            )
    for part in chunks(rows, 1000):
        state.conn.execute(tracking.deferred_table.insert(), part)
    if rows:
        tables = sorted({f"{r['table_name']}.{r['column_name']}" for r in rows})
        state.progress.note(
            f"{state.bundle_id}: {len(rows)} reference(s) to rows of another root not in the target yet "
            f"left open ({', '.join(tables)}); the load that brings those rows sets them"
        )
    return len(rows)


def complete_open(state: LoadState) -> int:
    """Set the open references of earlier loads to the rows this load created; how many."""
    deferred = tracking.deferred_table
    system = state.manifest.source.system_id
    tables = [t for t in state.tables if t in state.graph.tables]
    if not tables:
        return 0
    waiting = state.conn.execute(
        sa.select(deferred).where(deferred.c.source_system == system, deferred.c.ref_table.in_(tables))
    ).all()
    done = _set_open(state.conn, state.graph, waiting, bundles=[state.bundle_id])
    if done:
        state.progress.note(f"{state.bundle_id}: set {done} reference(s) earlier loads had left open")
    return done


def settle_open(connection: sa.Connection, graph: Graph) -> int:
    """Set every open reference whose row a load of the same source has brought since; how many.

    Two loads running side by side (lineup workers) do not see each other's rows before they
    commit: one may leave a reference open to a row the other brings, after the other looked
    for references to set. Run once the loads are done (the lineup does, at its end)."""
    deferred = tracking.deferred_table
    if not sa.inspect(connection).has_table(deferred.name):
        return 0
    waiting = connection.execute(
        sa.select(deferred).where(deferred.c.ref_table.in_(list(graph.tables)))
    ).all()
    by_system: dict[str, list[Any]] = defaultdict(list)
    for row in waiting:
        by_system[row.source_system].append(row)
    return sum(_set_open(connection, graph, rows, source_system=system) for system, rows in by_system.items())


def _set_open(
    connection: sa.Connection,
    graph: Graph,
    waiting: Sequence[Any],
    *,
    bundles: list[str] | None = None,
    source_system: str | None = None,
) -> int:
    """Set those of the ``waiting`` open references whose row the ledger (of ``bundles``, or of
    the loads from ``source_system``) now maps; how many."""
    deferred = tracking.deferred_table
    by_ref: dict[str, list[Any]] = defaultdict(list)
    for row in waiting:
        by_ref[row.ref_table].append(row)
    done = 0
    for ref_table, rows in by_ref.items():
        found = ledger_map(
            connection,
            ref_table,
            {r.ref_source_pk for r in rows},
            bundles=bundles,
            source_system=source_system,
        )
        for row in rows:
            target = found.get(row.ref_source_pk)
            if target is None:
                continue
            spec = graph.table(row.table_name)
            ref_spec = graph.table(ref_table)
            t = table_clause(spec)
            column = spec.ref_by_column[row.column_name]
            connection.execute(
                sa.update(t)
                .where(t.c[spec.pk[0]] == spec.from_text(spec.pk[0], row.target_pk))
                .values({row.column_name: ref_spec.from_text(column.target_column, target)})
            )
            connection.execute(
                sa.delete(deferred).where(
                    deferred.c.bundle_id == row.bundle_id,
                    deferred.c.table_name == row.table_name,
                    deferred.c.target_pk == row.target_pk,
                    deferred.c.column_name == row.column_name,
                )
            )
            done += 1
    return done


def forget_open(connection: sa.Connection, table: str, target_pks: Sequence[str]) -> int:
    """Forget the open references of removed rows of ``table`` (target keys as text); how many."""
    deferred = tracking.deferred_table
    return sum(
        int(
            connection.execute(
                sa.delete(deferred).where(deferred.c.table_name == table, deferred.c.target_pk.in_(part))
            ).rowcount
        )
        for part in chunks(sorted(target_pks))
    )


def forget_open_gone(connection: sa.Connection, spec: TableSpec, bundles: Sequence[str]) -> int:
    """Forget the open references the loads ``bundles`` recorded for rows of ``spec`` that are gone
    (usage rows a clean removed by SQL, whose keys it never holds); how many. Read from the
    few open references, each looked up in ``spec``'s table by its key."""
    deferred = tracking.deferred_table
    t = table_clause(spec)
    key = t.c[spec.pk[0]]
    integer = spec.column_map[spec.pk[0]].type.startswith("int")
    target = sa.cast(deferred.c.target_pk, sa.BigInteger) if integer else deferred.c.target_pk
    return int(
        connection.execute(
            sa.delete(deferred).where(
                deferred.c.bundle_id.in_(sorted(bundles)),
                deferred.c.table_name == spec.name,
                ~sa.exists().where(key == target),
            )
        ).rowcount
    )


def forget_open_of(connection: sa.Connection, bundle_id: str) -> int:
    """Forget every open reference a load recorded (the load is forgotten); how many."""
    deferred = tracking.deferred_table
    return int(connection.execute(sa.delete(deferred).where(deferred.c.bundle_id == bundle_id)).rowcount)


@dataclass(frozen=True)
class OpenReference:
    bundle_id: str
    table: str
    target_pk: str
    column: str
    ref_table: str
    ref_key: str

    def line(self) -> str:
        return (
            f"{self.table} {self.target_pk}.{self.column} → {self.ref_table} {self.ref_key} "
            f"(left open by {self.bundle_id}: that row's root is not loaded yet)"
        )


#: what an operator does about references still open
WHAT_TO_DO = (
    "migrate (or load) the roots that own the referenced rows: their loads set these references; "
    "until then the columns are NULL in the target"
)


def open_summary(connection: sa.Connection, shown: int = 100) -> dict[str, Any]:
    """The references still open (:func:`open_references`) as ``migrate --json`` reports them:
    how many, per column, per root that left them open, the first ``shown`` of them (as
    objects and as lines), and what to do."""
    found = open_references(connection)
    per_column: dict[str, int] = defaultdict(int)
    per_bundle: dict[str, int] = defaultdict(int)
    for o in found:
        per_column[f"{o.table}.{o.column}"] += 1
        per_bundle[o.bundle_id] += 1
    loads = tracking.loads_table
    roots = {
        r.bundle_id: r
        for part in chunks(sorted(per_bundle), 1000)
        for r in connection.execute(
            sa.select(loads.c.bundle_id, loads.c.kind, loads.c.root_key).where(loads.c.bundle_id.in_(part))
        )
    }
    return {
        "count": len(found),
        "per_column": dict(sorted(per_column.items())),
        "per_root": [
            {
                "bundle_id": bundle_id,
                "kind": roots[bundle_id].kind if bundle_id in roots else None,
                "root": roots[bundle_id].root_key if bundle_id in roots else None,
                "count": n,
            }
            for bundle_id, n in sorted(per_bundle.items())
        ],
        "refs": [
            {
                "bundle_id": o.bundle_id,
                "table": o.table,
                "target_pk": o.target_pk,
                "column": o.column,
                "ref_table": o.ref_table,
                "ref_key": o.ref_key,
            }
            for o in found[:shown]
        ],
        "lines": [o.line() for o in found[:shown]],
        "what_to_do": WHAT_TO_DO if found else None,
    }


def open_references(connection: sa.Connection) -> list[OpenReference]:
    """Every reference a load left open that no later load has set yet (and whose row a clean
    has not removed: the load's ledger still names it, row by row or in a range of usage rows)."""
    from collections import defaultdict

    from bundler.ledger import ledger_map

    deferred = tracking.deferred_table
    if not sa.inspect(connection).has_table(deferred.name):
        return []
    rows = connection.execute(
        sa.select(deferred).order_by(deferred.c.table_name, deferred.c.target_pk, deferred.c.column_name)
    ).all()
    named: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in rows:
        named[(r.bundle_id, r.table_name)].add(r.target_pk)
    kept = {
        (bundle_id, table, pk)
        for (bundle_id, table), pks in named.items()
        for pk in ledger_map(connection, table, pks, by="target", bundles=[bundle_id])
    }
    return [
        OpenReference(r.bundle_id, r.table_name, r.target_pk, r.column_name, r.ref_table, r.ref_key)
        for r in rows
        if (r.bundle_id, r.table_name, r.target_pk) in kept
    ]
