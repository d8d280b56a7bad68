"""Before anything is decided or written: every prerequisite the bundle names exists in the
target (all missing ones listed at once), and none of the bundle's own rows is already there.

A row that an earlier bundle brought (the manifest names it under ``from``: a usage bundle's
accounts, brought by its customer bundle; in a layered bundle, the shared rows an earlier
bundle carried) is found through the ledger of that load, and only there: a row its ledger
does not hold is missing, never matched by natural key instead. The others are found by
natural key.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.errors import BundlerError, PrerequisitesMissing
from bundler.graph import TableSpec
from bundler.keys import Key, describe, key_text, key_value
from bundler.ledger import ledger_map
from bundler.load.crossroot import blocking, deferrable
from bundler.load.decisions import REUSING, Question
from bundler.load.grants import check_write_access, load_tables
from bundler.load.state import LoadState, source_value, typed
from bundler.manifest import Outside, OutsideRow
from bundler.sql import db_values, match_keys, match_target, table_clause

SHOWN = 20  # missing prerequisites named in the error; the rest are counted


def preflight(state: LoadState) -> None:
    """Map every prerequisite to its target row, or raise listing all that are missing (and
    every table the target's database user may not write)."""
    check_write_access(state.conn, load_tables(state.tables), what=f"bundle {state.bundle_id}")
    missing: list[str] = []
    _stamp_layers(state)
    for source_table, entry in sorted(state.manifest.prerequisites.items()):
        _map_prerequisites(state, source_table, entry, missing)
    if missing:
        shown = "; ".join(missing[:SHOWN]) + (
            f"; … and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        )
        raise PrerequisitesMissing(
            f"bundle {state.bundle_id}: the target lacks {len(missing)} prerequisite(s): {shown}",
            hint="create them in the target (or load the bundles that bring them), then load again",
        )


def _map_prerequisites(state: LoadState, source_table: str, entry: Outside, missing: list[str]) -> None:
    """Put the target rows of one table's prerequisites in its id map; add the missing to ``missing``."""
    mapped: dict[Any, Any] = {}
    table = source_table
    if entry.source_bundles:
        mapped = _through_ledger(state, entry.source_bundles, source_table, [r.value for r in entry.rows])
        bundles = ", ".join(entry.source_bundles)
        missing.extend(
            f"{source_table} {describe(r.key)} (not in the ledger of {bundles})"
            for r in entry.rows
            if r.value not in mapped
        )
    elif entry.rows:
        lacking: list[str] = []
        table = _match_by_key(state, source_table, entry.column, list(entry.rows), mapped, lacking)
        if lacking and deferrable(state, table, entry):
            # another root's rows, not loaded yet: the references stay open until that root comes,
            # unless a column that cannot be NULL holds them
            absent = [
                (r, text)
                for r, text in zip((r for r in entry.rows if r.value not in mapped), lacking, strict=True)
            ]
            hard = blocking(state, table, {r.value for r, _ in absent})
            state.foreign[table] = {r.value: r.key for r, _ in absent if r.value not in hard}
            missing.extend(
                f"{text} (another root's, needed by a column that cannot be NULL)"
                for r, text in absent
                if r.value in hard
            )
        else:
            missing.extend(lacking)
    target_map = state.idmap(table)
    for row in entry.rows:
        if row.value in mapped:
            target_map.set(source_value(state.graph.table(table), entry.column, row.value), mapped[row.value])


def _match_by_key(
    state: LoadState,
    source_table: str,
    column: str,
    pending: list[OutsideRow],
    mapped: dict[Any, Any],
    missing: list[str],
) -> str:
    """Find ``pending`` rows in the target by natural key (into ``mapped``); the target table's name."""
    translated = [state.tr.translate_key(source_table, r.key) for r in pending]
    table = translated[0][0]
    spec = state.graph.table(table)
    ambiguous: dict[str, list[Any]] = {}
    keys = [k for _, k in translated]
    found = match_keys(state.conn, state.graph, spec, column, keys, ambiguous=ambiguous)
    for row, (_, key) in zip(pending, translated, strict=True):
        text = key_text(key)
        target = found.get(text)
        if text in ambiguous:
            target = _chosen(state, spec, column, key, ambiguous[text])
        if target is not None:
            mapped[row.value] = target
        elif text not in ambiguous:
            missing.append(f"{table} {describe(key)}")
    return table


def _chosen(state: LoadState, spec: TableSpec, column: str, key: Key, values: list[Any]) -> Any:
    """A prerequisite whose natural key several target rows have: the one a per-key decision
    names (by primary key), else None and a question listing them (never one picked)."""
    t = table_clause(spec)
    rows = [dict(r) for r in state.conn.execute(sa.select(t).where(t.c[column].in_(values))).mappings()]
    rows.sort(key=lambda r: tuple(key_value(r[c]) for c in spec.pk))
    pk = spec.pk[0]
    answer, origin = state.decisions.action(spec.name, key)
    chosen = state.decisions.target(spec.name, key)
    for row in rows:
        if origin == "row" and answer in REUSING and key_value(row[pk]) == chosen:
            return row[column]
    varying = [c for c in spec.column_names if len({key_value(r[c]) for r in rows}) > 1 and c not in spec.pk]
    candidates = tuple(
        {"target_pk": key_value(r[pk]), "differs": {c: key_value(r[c]) for c in varying}} for r in rows
    )
    state.questions.append(Question(spec.name, key, None, {}, (), candidates))
    return None


def _through_ledger(
    state: LoadState, depends: tuple[str, ...], table: str, values: list[Any]
) -> dict[Any, Any]:
    """The target rows the loads of ``depends`` gave these source values (all must be loaded)."""
    absent = state.layers_absent.get(depends)
    if absent is None:
        absent = _absent(state, depends)
    if absent:
        raise PrerequisitesMissing(
            f"bundle {state.bundle_id} depends on bundle {', '.join(absent)}, which this target has not loaded "
            f"(it brought {table})",
            hint=f"load bundle {absent[0]} first, then this one",
        )
    wanted = {str(v): v for v in values}
    found = state.cache.through(depends, table, wanted)
    asked = ledger_map(state.conn, table, [pk for pk in wanted if pk not in found], bundles=depends)
    state.cache.remember_through(depends, table, asked)
    found.update(asked)
    return {wanted[source_pk]: typed(target_pk) for source_pk, target_pk in found.items()}


def _absent(state: LoadState, depends: tuple[str, ...]) -> list[str]:
    """The bundles of ``depends`` the target has not loaded."""
    loads = tracking.loads_table
    loaded = set(
        state.conn.execute(sa.select(loads.c.bundle_id).where(loads.c.bundle_id.in_(depends))).scalars()
    )
    return [d for d in depends if d not in loaded]


def _stamp_layers(state: LoadState) -> None:
    """Tell the cache how many ledger rows the earlier bundles this one refers to have now,
    and note which of them the target has not loaded: one query per group of bundles, not
    one per table that refers to them."""
    ledger, loads = tracking.ledger_table, tracking.loads_table
    for depends in {e.source_bundles for e in state.manifest.prerequisites.values() if e.source_bundles}:
        count, loaded = state.conn.execute(
            sa.select(
                sa.select(sa.func.count())
                .select_from(ledger)
                .where(ledger.c.bundle_id.in_(depends))
                .scalar_subquery(),
                sa.select(sa.func.count())
                .select_from(loads)
                .where(loads.c.bundle_id.in_(depends))
                .scalar_subquery(),
            )
        ).one()
        state.cache.through_stamp(depends, count)
        state.layers_absent[depends] = [] if loaded == len(set(depends)) else _absent(state, depends)


def check_owned_conflicts(state: LoadState) -> None:
    """Owned rows whose natural key the target already has: the load would collide."""
    wanted: list[tuple[TableSpec, list[tuple[Any, ...]]]] = []
    for spec in state.graph.tables_in_order(("owned",)):
        if spec.name not in state.tables or any(c in spec.ref_by_column for c in spec.natural_key):
            continue
        keep = state.worth_keeping(spec.name)  # for the write, which reads them next
        values = [
            tuple(key_value(row[c]) for c in spec.natural_key)
            for batch in state.reader.scan(spec.name, keep=keep)
            for row in batch.select(list(spec.natural_key)).to_pylist()
        ]
        if values:
            wanted.append((spec, values))
    clashes: list[str] = []
    for spec, values in _screened(state.conn, wanted):
        for key, row in match_target(state.conn, spec, values).items():
            clashes.append(
                f"{spec.name} {describe(dict(zip(spec.natural_key, key, strict=True)))} (target {spec.pk[0]} {row[spec.pk[0]]})"
            )
    if clashes:
        raise BundlerError(
            f"bundle {state.bundle_id}: the target already has {len(clashes)} of its own row(s): "
            + "; ".join(clashes[:10]),
            hint="was it loaded before under another bundle id? clean it from the target first (bundler clean)",
        )


#: the owned tables' keys are screened in one query up to this many values (see :func:`_screened`)
SCREEN_VALUES = 1_000


def _screened(
    connection: sa.Connection, wanted: list[tuple[TableSpec, list[tuple[Any, ...]]]]
) -> list[tuple[TableSpec, list[tuple[Any, ...]]]]:
    """The tables of ``wanted`` (with their natural keys) whose target rows may clash: those
    with a row whose first natural key column holds one of the keys' first values. All the
    tables are asked in one query (a row of EXISTS, one per table) instead of one query each:
    a new customer's ~10 owned tables clash with nothing, and that costs one round trip. With
    more than :data:`SCREEN_VALUES` values every table is matched on its own, as before."""
    firsts = [db_values(spec, spec.natural_key[0], {k[0] for k in keys}) for spec, keys in wanted]
    if len(wanted) < 2 or sum(map(len, firsts)) > SCREEN_VALUES:
        return wanted
    checks = [
        sa.exists().where(table_clause(spec).c[spec.natural_key[0]].in_(values)).label(f"t{i}")
        for i, ((spec, _), values) in enumerate(zip(wanted, firsts, strict=True))
    ]
    found = connection.execute(sa.select(*checks)).one()
    return [w for w, hit in zip(wanted, found, strict=True) if hit]
