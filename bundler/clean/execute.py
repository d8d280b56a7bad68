"""Carrying out a clean plan on the connection it was made on: cycle-breaking references set to
NULL, the rows deleted children first (each table checked against the plan), then the
bookkeeping of each side."""

from __future__ import annotations

import sqlalchemy as sa

from bundler.clean.model import CleanPlan, pk_text
from bundler.clean.plan import CleanSet
from bundler.errors import BundlerError
from bundler.graph import TableSpec
from bundler.progress import Progress
from bundler.sql import chunks, sorted_values, table_clause


def execute(cleanset: CleanSet, plan: CleanPlan, progress: Progress) -> tuple[dict[str, int], int, list[str]]:
    """Rows deleted per table, bookkeeping rows removed, and the loads or exports closed."""
    task = "clean"
    progress.start(task, total=plan.rows)
    _unlink(cleanset)
    deleted: dict[str, int] = {}
    bookkeeping = 0
    for name, planned in plan.tables.items():
        spec = cleanset.graph.tables[name]
        n, b = _delete_usage(cleanset, spec) if spec.is_usage else _delete_rows(cleanset, spec)
        bookkeeping += b
        if n != planned:
            raise BundlerError(
                f"{spec.name}: {n} row(s) deleted where the plan had {planned}: the database changed while "
                "cleaning; nothing was removed",
                hint="run the clean again",
            )
        deleted[name] = n
        progress.advance(task, n)
    bookkeeping += cleanset.side.close(plan)
    progress.finish(task)
    return deleted, bookkeeping, list(plan.closes)


def _unlink(cleanset: CleanSet) -> None:
    conn = cleanset.conn
    for name, ref in cleanset.unlink_refs():
        spec = cleanset.graph.tables[name]
        t = table_clause(spec)
        pks = [pk[0] for pk in cleanset.inside(name) if cleanset.rows[name][pk].get(ref.column) is not None]
        for part in chunks(sorted_values(pks)):
            conn.execute(sa.update(t).where(t.c[spec.pk[0]].in_(part)).values({ref.column: None}))


def _delete_rows(cleanset: CleanSet, spec: TableSpec) -> tuple[int, int]:
    t = table_clause(spec)
    pks = cleanset.inside(spec.name)
    n = 0
    size = 2_000 if len(spec.pk) == 1 else 500
    for part in chunks(sorted(pks, key=str), size):
        if len(spec.pk) == 1:
            where = t.c[spec.pk[0]].in_([p[0] for p in part])
        else:
            where = sa.tuple_(*(t.c[c] for c in spec.pk)).in_(part)
        n += cleanset.conn.execute(sa.delete(t).where(where)).rowcount
    texts = [pk_text(pk) for pk in pks]
    return n, cleanset.side.forget_rows(spec.name, texts)


def _delete_usage(cleanset: CleanSet, spec: TableSpec) -> tuple[int, int]:
    t = table_clause(spec)
    n = sum(
        cleanset.conn.execute(sa.delete(t).where(clause)).rowcount
        for clause in list(cleanset.usage_clauses(spec.name))
    )
    if not n:
        return n, 0
    return n, cleanset.side.forget_usage(spec, cleanset.usage_bundles(spec.name))
