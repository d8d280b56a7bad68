"""Write the bundle's rows into the target, in dependency order.

Owned and usage rows are all created; of the shared rows, those decided ``create`` (renamed
when they copy a matched row). Each created row takes a new id from the target where its
table has a surrogate key; every reference is rewritten through the id maps; a reference
that closes a cycle (or points into its own table) is written NULL and set by an UPDATE
once every id is known. Every row written or reused is recorded in the ledger: row by row, or,
for the usage rows a load creates with integer keys, as runs of consecutive keys
(see :mod:`bundler.ledger`).

The batches go to the target with :func:`bundler.bulk.insert_arrow` (the bulk path of each
dialect) as they come from the bundle: no row is turned into Python objects on the way. On
PostgreSQL a usage table goes as one stream (one ``COPY``), each batch translated while the
server takes in the one before; its ids are taken before and its ledger written after, since
the ``COPY`` holds the connection in between.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler.errors import BundlerError
from bundler.graph import TableSpec
from bundler.keys import describe
from bundler.ledger import CreatedLedger, LedgerRows, compactable
from bundler.load.state import Contended, LoadState, first_line, pk_text
from bundler.sql import chunks, table_clause

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pyarrow as pa

    from bundler.bulk import ValueRefused


#: tables creating at most this many rows take their ids together, before the first is written
RESERVE_ROWS = 10_000


def write(state: LoadState) -> None:
    """Write every table of the bundle, then the deferred references."""
    task = f"load {state.bundle_id}"
    state.progress.start(task, total=state.manifest.totals.rows)
    compact = CreatedLedger(state.conn, state.bundle_id)
    specs = [s for s in state.graph.tables_in_order(("owned", "shared", "usage")) if s.name in state.tables]
    # the ids of the small tables in one round trip (a big usage table takes its own per batch)
    wanted = {s.name: (s.surrogate, _created(state, s)) for s in specs if s.surrogate}
    state.alloc.reserve({t: w for t, w in wanted.items() if w[1] <= RESERVE_ROWS})
    state.ledger = LedgerRows(state.conn, state.bundle_id)
    for spec in specs:
        _write_table(state, spec, task, compact)
    state.ledger.flush()
    state.ledger_rows += compact.rows + state.ledger.rows
    _apply_deferred(state)
    state.progress.finish(task)


def _created(state: LoadState, spec: TableSpec) -> int:
    """How many rows the write creates in ``spec``'s table: all of an owned or usage table's,
    the shared rows decided ``create``."""
    if spec.scope == "shared":
        return sum(1 for action in state.actions[spec.name].values() if action == "create")
    entry = state.manifest.tables.get(state.tr.source_of(spec.name))
    return entry.rows if entry is not None else 0


def _write_table(state: LoadState, spec: TableSpec, task: str, compact: CreatedLedger) -> None:
    """The rows of one table; the usage rows it creates are recorded in ``compact`` (as runs of
    keys where both keys are integers), every other row in the ledger row by row."""
    import pyarrow as pa

    plan = state.plan_for(spec)
    target = state.sa_table(spec.name)
    needs_map = bool(state.graph.referencing[spec.name]) or spec.scope != "usage"
    runs = spec.is_usage and spec.surrogate is not None
    if runs and _streams(state, spec):
        _write_stream(state, spec, target, task, compact, needs_map)
        return
    for batch in state.batches(spec.name):
        source_pks, row_keys = _source_keys(spec, batch)
        if spec.scope == "shared":
            actions = state.actions[spec.name]
            keep = pa.array([actions.get(k) == "create" for k in row_keys], pa.bool_())
            batch = batch.filter(keep)
            source_pks = source_pks.filter(keep)
            if batch.num_rows == 0:
                continue
            batch = _apply_renames(state, spec, batch)
        else:
            plan.created += batch.num_rows
        batch = _rewrite_references(state, spec, batch)
        batch, target_pks = _target_keys(state, spec, batch, source_pks, needs_map)
        _insert(state, spec, target, batch, functools.partial(_same, source_pks))
        _record_created(state, spec.name, compact, source_pks, target_pks, runs=runs)
        state.progress.advance(task, batch.num_rows)
    compact.finish(spec.name)
    if spec.scope == "shared" and len(spec.pk) == 1:
        _ledger_reused(state, spec)


def _streams(state: LoadState, spec: TableSpec) -> bool:
    """Whether a usage table goes to the target as one stream: on PostgreSQL, one ``COPY``
    that the next batch is translated for while the server takes in the last (see
    :func:`_write_stream`). Not when a reference may point to another root's rows: the rows
    the target lacks are looked up in the ledger, which the ``COPY`` would hold up."""
    return state.conn.dialect.name == "postgresql" and not any(
        ref.table in state.foreign for ref in spec.references
    )


def _write_stream(
    state: LoadState, spec: TableSpec, target: sa.Table, task: str, compact: CreatedLedger, needs_map: bool
) -> None:
    """A usage table in one bulk write, its batches translated as the write takes them.

    Nothing between two batches may use the connection, which the write holds: the table's
    ids are taken before (one round trip) and its ledger entries written after, from the
    keys kept meanwhile (two integers a row)."""
    import pyarrow as pa

    assert spec.surrogate is not None  # a usage table with runs of keys (_write_table)
    plan = state.plan_for(spec)
    state.alloc.take_ahead(spec.name, spec.surrogate, _created(state, spec))
    kept: list[tuple[pa.Array, pa.Array]] = []

    def translated() -> Iterator[pa.RecordBatch]:
        for batch in state.batches(spec.name):
            source_pks, _ = _source_keys(spec, batch)
            plan.created += batch.num_rows
            batch = _rewrite_references(state, spec, batch)
            batch, target_pks = _target_keys(state, spec, batch, source_pks, needs_map)
            kept.append((source_pks, target_pks))
            yield batch
            state.progress.advance(task, batch.num_rows)

    def written_keys() -> pa.Array:  # the source keys of the rows sent, in order
        return pa.concat_arrays([s for s, _ in kept]) if kept else pa.array([], pa.int64())

    _insert(state, spec, target, translated(), written_keys)
    for source_pks, target_pks in kept:
        _record_created(state, spec.name, compact, source_pks, target_pks, runs=True)
    compact.finish(spec.name)


def _same(keys: pa.Array) -> pa.Array:
    """``keys`` (bound with :func:`functools.partial`: a batch's keys, asked for by :func:`_insert`)."""
    return keys


def _record_created(
    state: LoadState,
    table: str,
    compact: CreatedLedger,
    source_pks: pa.Array,
    target_pks: pa.Array,
    *,
    runs: bool,
) -> None:
    """The ledger of rows just created: as runs of keys where the table keeps them (``runs``)
    and both keys are integers, else row by row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if runs and compactable(source_pks, target_pks):
        compact.add(table, source_pks, target_pks)
    else:
        _ledger(state, table, pc.cast(source_pks, pa.string()), pc.cast(target_pks, pa.string()), "created")


def _source_keys(spec: TableSpec, batch: pa.RecordBatch) -> tuple[pa.Array, list[Any]]:
    """The batch's source primary keys as an array (composite ones as text), and as Python values."""
    import pyarrow as pa

    if len(spec.pk) == 1:
        source_pks = batch.column(spec.pk[0])
        return source_pks, source_pks.to_pylist()
    row_keys: list[Any] = list(zip(*(batch.column(c).to_pylist() for c in spec.pk), strict=True))
    return pa.array([pk_text(k) for k in row_keys], pa.string()), row_keys


def _target_keys(
    state: LoadState, spec: TableSpec, batch: pa.RecordBatch, source_pks: pa.Array, needs_map: bool
) -> tuple[pa.RecordBatch, pa.Array]:
    """The batch with its new surrogate ids (mapped from the source's), and its target keys
    (composite ones as text)."""
    import pyarrow as pa

    if spec.surrogate:
        new_ids = pa.array(
            state.alloc.take(spec.name, spec.surrogate, batch.num_rows),
            type=batch.schema.field(spec.surrogate).type,
        )
        if needs_map:
            state.idmap(spec.name).update(dict(zip(source_pks.to_pylist(), new_ids.to_pylist(), strict=True)))
        batch = batch.set_column(
            batch.schema.get_field_index(spec.surrogate), batch.schema.field(spec.surrogate), new_ids
        )
        return batch, new_ids
    if len(spec.pk) == 1:
        single_pk = spec.pk[0]
        if needs_map:
            state.idmap(spec.name).update({v: v for v in batch.column(single_pk).to_pylist()})
        return batch, batch.column(single_pk)
    return batch, pa.array(
        [pk_text(t) for t in zip(*(batch.column(c).to_pylist() for c in spec.pk), strict=True)]
    )


def _insert(
    state: LoadState,
    spec: TableSpec,
    target: sa.Table,
    data: pa.RecordBatch | Iterator[pa.RecordBatch],
    source_pks: Callable[[], pa.Array],
) -> None:
    """Write ``data``; a value the target refuses is named by its row's source key among
    ``source_pks()`` (the keys of the rows written, in order; asked only then)."""
    from bundler.bulk import ValueRefused, insert_arrow

    try:
        insert_arrow(state.conn, target, data)
    except ValueRefused as exc:
        refused = _refused(state, spec, exc, source_pks())
        raise refused from refused.cause(exc)
    except sa.exc.IntegrityError as exc:
        if spec.scope == "shared":  # most likely a concurrent load created it first
            raise Contended(f"{spec.name}: {first_line(exc.orig)}") from exc
        raise BundlerError(
            f"bundle {state.bundle_id}: table {spec.name}: the target refused a row ({first_line(exc.orig)})",
            hint="nothing was written; fix the conflict in the target and load again",
        ) from exc


def _refused(state: LoadState, spec: TableSpec, exc: ValueRefused, source_pks: pa.Array) -> ValueRefused:
    """The target's refusal of a value, naming the bundle, the table and the row by its source key.

    Exit 1, not 4: the bundle holds what its source held, in the types its graph declares;
    it is the target's column (narrower, or PostgreSQL's text, which cannot hold NUL) that
    cannot take the value.
    """
    if exc.row is None or not 0 <= exc.row < len(source_pks):
        row = "a row the database did not name"
    elif len(spec.pk) == 1:
        row = f"row {describe({spec.pk[0]: source_pks[exc.row].as_py()})}"
    else:
        row = f"row {'/'.join(spec.pk)}={source_pks[exc.row].as_py()}"
    if exc.nul:
        hint = (
            "nothing was written; the target cannot store a NUL character in text: remove it from "
            "that row in the source, export and load again"
        )
    else:
        hint = (
            "nothing was written; widen the target's column to hold the value (or correct that row in "
            "the source and export again), then load again"
        )
    return exc.named(f"bundle {state.bundle_id}: table {spec.name}, {row} (source key)", hint, state.graph)


def _apply_renames(state: LoadState, spec: TableSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Created copies of matched shared rows, with their natural keys renamed."""
    import pyarrow as pa

    renames = state.renames.get(spec.name)
    if not renames or len(spec.pk) != 1:
        return batch
    pks = batch.column(spec.pk[0]).to_pylist()
    for col in {c for change in renames.values() for c in change}:
        idx = batch.schema.get_field_index(col)
        values = batch.column(idx).to_pylist()
        for i, pk in enumerate(pks):
            if pk in renames and col in renames[pk]:
                values[i] = renames[pk][col]
        batch = batch.set_column(
            idx, batch.schema.field(idx), pa.array(values, type=batch.schema.field(idx).type)
        )
    return batch


def _rewrite_references(state: LoadState, spec: TableSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every reference through its table's id map; cycles and self references written NULL for now."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for ref in spec.references:
        idx = batch.schema.get_field_index(ref.column)
        column = batch.column(idx)
        if pc.all(pc.is_null(column)).as_py():
            continue
        if ref.table == spec.name or (spec.name, ref.column) in state.graph.deferred:
            _defer(state, spec, ref.column, batch, column)
            batch = batch.set_column(idx, batch.schema.field(idx), pa.nulls(batch.num_rows, type=column.type))
            continue
        mapped, missing = state.idmap(ref.table).apply(column)
        if pc.any(missing).as_py() and ref.table in state.foreign:
            mapped, missing = _leave_open(state, spec, ref.column, batch, column, mapped, missing)
        if pc.any(missing).as_py():
            first = pc.index(missing, True).as_py()
            row_pk = {c: batch.column(c)[first].as_py() for c in spec.pk}
            value = column[first].as_py()
            raise BundlerError(
                f"bundle {state.bundle_id}: table {spec.name}, row {describe(row_pk)}: "
                f"{ref.column} = {value!r} references a {ref.table} row that is neither in the bundle "
                "nor mapped in the target",
                hint=_unmapped_hint(state, ref.table, value),
            )
        batch = batch.set_column(idx, batch.schema.field(idx), mapped)
    return batch


def _leave_open(
    state: LoadState,
    spec: TableSpec,
    column: str,
    batch: pa.RecordBatch,
    values: pa.Array,
    mapped: pa.Array,
    missing: pa.Array,
) -> tuple[pa.Array, pa.Array]:
    """References to another root's rows the target lacks yet: written NULL, kept to record as open."""
    import pyarrow as pa

    from bundler.load.crossroot import refuse_open

    ref = spec.ref_by_column[column]
    foreign = state.foreign[ref.table]
    pks = _source_keys(spec, batch)[0].to_pylist()
    still: list[bool] = []
    pairs = []
    for pk, value, absent in zip(pks, values.to_pylist(), missing.to_pylist(), strict=True):
        if absent and value in foreign:
            if not ref.nullable:
                raise refuse_open(state, spec.name, column, ref.table, value)
            pairs.append((pk, value))
            still.append(False)
        else:
            still.append(bool(absent))
    if pairs:
        state.left_open.append((spec, column, pairs))
    return mapped, pa.array(still, pa.bool_())


def _defer(state: LoadState, spec: TableSpec, column: str, batch: pa.RecordBatch, values: pa.Array) -> None:
    """Keep the (source pk, value) pairs of a reference set after every table is written."""
    pairs = [
        (pk, v)
        for pk, v in zip(batch.column(spec.pk[0]).to_pylist(), values.to_pylist(), strict=True)
        if v is not None
    ]
    if pairs:
        state.deferred.append((spec, column, pairs))


def _unmapped_hint(state: LoadState, table: str, value: Any) -> str:
    if state.actions.get(table, {}).get(value) == "skip":
        return (
            f"that {table} row belongs to a shared row the decisions reuse, and the target's version lacks it; "
            "decide create for its parent"
        )
    return "the bundle is inconsistent with the target; verify it with bundler inspect verify"


def _apply_deferred(state: LoadState) -> None:
    """Second pass for cycle-breaking and self references: set them now that every id is known."""
    for spec, column, pairs in state.deferred:
        ref = spec.ref_by_column[column]
        target_map = state.idmap(ref.table)
        own = state.idmap(spec.name)
        t = table_clause(spec)
        updates = []
        for source_pk, value in pairs:
            mapped = target_map.get(value)
            if mapped is None:
                raise BundlerError(
                    f"bundle {state.bundle_id}: table {spec.name}, row {source_pk}: {column} = {value!r} "
                    f"references a {ref.table} row that is neither in the bundle nor in the target"
                )
            updates.append({"_pk": own.get(source_pk), "_value": mapped})
        stmt = (
            sa.update(t)
            .where(t.c[spec.pk[0]] == sa.bindparam("_pk"))
            .values({column: sa.bindparam("_value")})
        )
        for part in chunks(updates, 1000):
            state.conn.execute(stmt, part)


# -- the ledger ------------------------------------------------------------------------------


def _ledger_reused(state: LoadState, spec: TableSpec) -> None:
    """A ledger row for every shared row of ``spec`` the target's row stands in for."""
    import pyarrow as pa

    reused = [
        (src, state.idmap(spec.name).get(src))
        for src, a in state.actions[spec.name].items()
        if a in ("reuse", "merge")
    ]
    if reused:
        _ledger(
            state,
            spec.name,
            pa.array([str(s) for s, _ in reused]),
            pa.array([str(t) for _, t in reused]),
            "reused",
        )


def _ledger(state: LoadState, table: str, source: pa.Array, target: pa.Array, action: str) -> None:
    assert state.ledger is not None  # set by write()
    state.ledger.add(table, source, target, action)
