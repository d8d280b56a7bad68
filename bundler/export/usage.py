"""Which usage rows an export carries: each customer's own window, and late usage exactly once.

**Windows.** In modes ``current`` and ``since`` every usage row is selected by the window of
the row that has a billing period above it (an xDR by its account's customer): its own
billing period, or the date's midnight, in its own time zone
(:func:`~bundler.export.window.owner_bounds`). A reseller bundle thus
gives every customer under it its own window; each is recorded in the manifest.

**Late usage.** Every export records, per usage table, the source keys it carried and the
highest key the table held in its snapshot (the *high-water*), in ``bundler_export_usage``,
before the export is recorded done. A usage bundle of an Exported root
(``--usage-only``) then carries the root's rows that are in its window or arrived after the
root was exported (a key above the marking export's high-water, whatever its timestamp),
minus every key the root's exports since the marking one carried: each row once. Keys are
compared, not times, since late usage may carry old timestamps. A row whose key is below the
high-water but that committed after the snapshot (its key was taken before, its transaction
ended after) is late too: the marking export also records the keys of the root's usage it
*left* in the source (in its snapshot, at or below the high-water, not carried: older
periods), and a usage export carries every row of the root that is neither carried nor left. The manifest names the
high-water (``usage.late_after``): the load applies the charge of each row above it to the
balances the graph declares, as those rows were not in the balances the root left with.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from bundler import tracking
from bundler.errors import BundlerError, ExitCode
from bundler.export.timecol import window_bounds
from bundler.export.window import OwnerWindow, UsageWindow, owner_bounds, zone
from bundler.graph import Graph, Reference, TableSpec
from bundler.keys import describe, key_value
from bundler.sql import Closure, _in, chunks, natural_keys, table_clause

if TYPE_CHECKING:
    import pyarrow as pa

    from bundler.marking import Root

BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

metadata = sa.MetaData()

#: per export and usage table: the keys it carried (a Parquet file of one column, zstd) and
#: the highest key the table held in the export's snapshot
usage_keys_table = sa.Table(
    "bundler_export_usage",
    metadata,
    sa.Column("bundle_id", sa.String(64), primary_key=True),
    sa.Column("table_name", sa.String(64), primary_key=True),
    sa.Column("high_water", sa.String(255)),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("keys", BLOB, nullable=False),
    #: the marking export: the keys of the root's rows in its snapshot that it did not carry
    #: (None: not recorded, by an export of mode none or an older bundler)
    sa.Column("left_keys", BLOB),
)


class NothingNew(BundlerError):
    """A usage export found no usage the root's earlier exports did not carry: no bundle."""

    exit_code = ExitCode.OK


_upgraded: set[str] = set()


def ensure_tables(connection: sa.Connection) -> None:
    tracking.create_tables(connection, metadata)
    url = connection.engine.url.render_as_string(hide_password=True)
    if url not in _upgraded:  # a table of an older bundler gets the columns it lacks
        tracking.add_missing_columns(connection, metadata)
        _upgraded.add(url)


@dataclass
class Late:
    """What the root's earlier exports carried: the base (marking) export's high-water per
    usage table, and every key carried since."""

    base: str
    high_water: dict[str, Any] = field(default_factory=dict)
    carried: dict[str, pa.Array] = field(default_factory=dict)
    #: per usage table, the keys the base export left in the source (older usage, not late)
    left: dict[str, pa.Array] = field(default_factory=dict)


@dataclass
class UsagePlan:
    """The usage one export carries, per usage table, and what it records of it."""

    window: UsageWindow
    windows: tuple[OwnerWindow, ...] = ()
    late: Late | None = None
    #: per usage table: the keys written into the bundle (filled while streaming)
    keys: dict[str, list[pa.Array]] = field(default_factory=lambda: defaultdict(list))
    high_water: dict[str, Any] = field(default_factory=dict)
    #: a marking export: per usage table, the keys of the root's rows it left in the source
    left: dict[str, pa.Array] = field(default_factory=dict)
    rows: int = 0
    warning: str | None = None

    def manifest_late_after(self) -> dict[str, Any] | None:
        """Per usage table, the key above which the bundle's rows are late: the marking
        export's high-water; where it recorded what it left, every row of the bundle is late
        (none existed in its snapshot), so below the lowest key carried when that is lower."""
        import pyarrow.compute as pc

        if self.late is None:
            return None
        out = {}
        for table, value in self.late.high_water.items():
            if value is None:
                continue
            carried = [k for k in self.keys.get(table, []) if len(k)]
            if table in self.late.left and carried:
                value = min(value, min(int(pc.min(k).as_py()) for k in carried) - 1)
            out[table] = key_value(value)
        return out


# -- windows -----------------------------------------------------------------------------------


def _period_owner(
    graph: Graph, closure: Closure, table: str, column: str, value: Any
) -> tuple[str, Any] | None:
    """The nearest row with a billing period at or above the ``table`` row whose ``column`` is
    ``value``, climbing owner references: (table, pk), or None."""
    seen: set[tuple[str, Any]] = set()
    while (table, value) not in seen:
        seen.add((table, value))
        spec = graph.table(table)
        row = _row_by(closure, spec, column, value)
        if row is None:
            return None
        if spec.billing_period is not None and len(spec.pk) == 1:
            return table, row[spec.pk[0]]
        parents = [r for r in spec.owner_refs if r.table != table and row.get(r.column) is not None]
        if not parents:
            return None
        ref = parents[0]
        table, column, value = ref.table, ref.target_column, row[ref.column]
    return None


def _row_by(closure: Closure, spec: TableSpec, column: str, value: Any) -> dict[str, Any] | None:
    rows = closure.rows.get(spec.name, {})
    if len(spec.pk) == 1 and column == spec.pk[0]:
        return rows.get((value,))
    for row in rows.values():
        if row.get(column) == value:
            return row
    return None


def owner_windows(
    connection: sa.Connection, graph: Graph, closure: Closure, window: UsageWindow, now: datetime
) -> tuple[
    dict[str, dict[tuple[datetime, datetime | None], dict[Reference, set[Any]]]], tuple[OwnerWindow, ...]
]:
    """Modes current and since: per usage table, the owner values grouped by their own window;
    and the windows."""
    groups: dict[str, dict[tuple[datetime, datetime | None], dict[Reference, set[Any]]]] = {}
    owners_of: dict[tuple[str, Reference], dict[Any, tuple[str, Any] | None]] = {}
    wanted: dict[str, set[Any]] = defaultdict(set)
    for spec in graph.tables_in_order(("usage",)):
        for ref, values in closure.usage_owners.get(spec.name, {}).items():
            found = {v: _period_owner(graph, closure, ref.table, ref.target_column, v) for v in values}
            owners_of[(spec.name, ref)] = found
            for owner in found.values():
                if owner is not None:
                    wanted[owner[0]].add(owner[1])
    for table, rows in closure.rows.items():  # every row with a period of its own gets its window
        spec = graph.table(table)
        if spec.billing_period is not None and len(spec.pk) == 1 and spec.scope == "owned":
            wanted[table].update(pk[0] for pk in rows)
    windows: dict[tuple[str, Any], OwnerWindow] = {}
    for table, pks in wanted.items():
        windows.update(_windows_of(connection, graph, graph.table(table), pks, window, now))
    assert window.start is not None
    for (usage_table, ref), found in owners_of.items():
        by_window = groups.setdefault(usage_table, {})
        for value, owner in found.items():
            w = windows.get(owner) if owner is not None else None
            bounds = (w.start, w.end) if w is not None else (window.start, window.end)
            by_window.setdefault(bounds, defaultdict(set))[ref].add(value)
    ordered = tuple(sorted(windows.values(), key=lambda w: (w.table, str(w.pk))))
    return groups, ordered


def _windows_of(
    connection: sa.Connection,
    graph: Graph,
    spec: TableSpec,
    pks: set[Any],
    window: UsageWindow,
    now: datetime,
) -> dict[tuple[str, Any], OwnerWindow]:
    period = spec.billing_period
    assert period is not None
    t = table_clause(spec)
    pk = spec.pk[0]
    cols: list[sa.ColumnClause[Any]] = [t.c[pk], t.c[period.column]]
    if period.time_zone:
        cols.append(t.c[period.time_zone])
    keys = natural_keys(connection, graph, spec.name, pk, pks)
    out: dict[tuple[str, Any], OwnerWindow] = {}
    for part in chunks(sorted(pks, key=str)):
        for row in connection.execute(sa.select(*cols).where(t.c[pk].in_(part))):
            code = period.codes.get(str(row[1])) or window.billing_period or "monthly"
            tz = (row[2] or None) if period.time_zone else None
            what = f"{spec.name} {describe(keys.get(row[0], {pk: row[0]}))}: {period.time_zone}"
            zone(tz, what=what)  # an unknown name is refused, naming the row
            start, end = owner_bounds(window, code, now, tz)
            out[(spec.name, row[0])] = OwnerWindow(
                spec.name, key_value(row[0]), keys.get(row[0], {}), code, tz, start, end
            )
    return out


# -- the selection -----------------------------------------------------------------------------


def usage_clause(
    connection: sa.Connection,
    spec: TableSpec,
    owners: dict[Reference, set[Any]],
    plan: UsagePlan,
    groups: dict[tuple[datetime, datetime | None], dict[Reference, set[Any]]] | None,
) -> sa.ColumnElement[bool]:
    """The rows of usage table ``spec`` this export carries (before the carried keys are taken out)."""
    t = table_clause(spec)
    owned = sa.or_(*(_in(t.c[ref.column], values) for ref, values in owners.items()))
    window = plan.window
    if groups:
        in_window: sa.ColumnElement[bool] = sa.or_(
            *(
                sa.and_(
                    sa.or_(*(_in(t.c[ref.column], values) for ref, values in by_ref.items())),
                    *window_bounds(connection, spec, start, end),
                )
                for (start, end), by_ref in sorted(
                    groups.items(), key=lambda g: (g[0][0], g[0][1] or datetime.max)
                )
            )
        )
    else:
        bounds = window_bounds(connection, spec, window.start, window.end)
        in_window = sa.and_(owned, *bounds) if bounds else owned
    late = plan.late.high_water.get(spec.name) if plan.late is not None else None
    if late is not None:
        if plan.late is not None and spec.name in plan.late.left:
            return owned  # neither carried nor left (taken out as it streams): late, whatever its key
        pk = t.c[spec.pk[0]]
        return sa.or_(in_window, sa.and_(owned, pk > late))
    return in_window


def high_water(connection: sa.Connection, spec: TableSpec) -> Any:
    """The highest key of a usage table with an integer key (0: empty; None: a key of another kind)."""
    if len(spec.pk) != 1 or not spec.column_map[spec.pk[0]].type.startswith("int"):
        return None
    t = table_clause(spec)
    return connection.execute(sa.select(sa.func.max(t.c[spec.pk[0]]))).scalar() or 0


def left_keys(
    connection: sa.Connection,
    spec: TableSpec,
    owners: dict[Reference, set[Any]],
    hw: Any,
    carried: list[pa.Array],
) -> pa.Array:
    """The keys of the owners' rows at or below the high-water ``hw`` that the export did not
    carry (read in its snapshot): what it left in the source."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = table_clause(spec)
    pk = t.c[spec.pk[0]]
    owned = sa.or_(*(_in(t.c[ref.column], values) for ref, values in owners.items()))
    pk_type = spec.arrow_schema().field(spec.pk[0]).type
    keys = pa.array(connection.execute(sa.select(pk).where(owned, pk <= hw)).scalars().all(), pk_type)
    if carried:
        done = pa.concat_arrays([k.cast(pk_type) for k in carried])
        keys = keys.filter(pc.invert(pc.is_in(keys, value_set=done)))
    return keys


def outside_exists(connection: sa.Connection, spec: TableSpec, owners: dict[Reference, set[Any]]) -> bool:
    """Whether the owners have any usage in ``spec`` at all (outside the window)."""
    t = table_clause(spec)
    owned = sa.or_(*(_in(t.c[ref.column], values) for ref, values in owners.items()))
    query = sa.select(sa.literal(1)).select_from(t).where(owned).limit(1)
    return connection.execute(query).first() is not None


# -- what earlier exports carried --------------------------------------------------------------


def _encode(keys: list[pa.Array]) -> bytes:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    values = pa.concat_arrays([k.cast(keys[0].type) for k in keys]) if keys else pa.array([], pa.int64())
    table = pa.table({"key": values.take(pc.array_sort_indices(values))})
    sink = io.BytesIO()
    # sorted integer keys: delta-packed (1M keys: ~0.9 MB, ~10 ms); no dictionary (all distinct)
    delta = pa.types.is_integer(values.type) and values.type.bit_width >= 32
    pq.write_table(
        table,
        sink,
        compression="zstd",
        use_dictionary=False,
        column_encoding={"key": "DELTA_BINARY_PACKED"} if delta else None,
    )
    return sink.getvalue()


def _decode(blob: bytes) -> pa.Array:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(blob)).column("key").combine_chunks()


def record_usage(connection: sa.Connection, bundle_id: str, graph: Graph, plan: UsagePlan) -> None:
    """Record the keys the export carried and the tables' high-water (before it is recorded done),
    into the tables the export made sure of when it began (:func:`ensure_tables`)."""
    rows = []
    for spec in graph.tables_in_order(("usage",)):
        keys = plan.keys.get(spec.name, [])
        hw = plan.high_water.get(spec.name)
        if not keys and hw is None:
            continue
        left = plan.left.get(spec.name)
        rows.append(
            {
                "bundle_id": bundle_id,
                "table_name": spec.name,
                "high_water": None if hw is None else str(hw),
                "rows": sum(len(k) for k in keys),
                "keys": _encode(keys),
                "left_keys": None if left is None else _encode([left]),
            }
        )
    if rows:
        connection.execute(usage_keys_table.insert(), rows)


def read_late(connection: sa.Connection, graph: Graph, root: Root, base: str) -> Late:
    """The high-water of the root's marking export ``base`` and every key its exports carried since."""
    import pyarrow as pa

    ensure_tables(connection)
    exports, usage = tracking.exports_table, usage_keys_table
    started = connection.execute(
        sa.select(exports.c.started_at).where(exports.c.bundle_id == base)
    ).scalar_one()
    found = connection.execute(
        sa.select(
            usage.c.bundle_id, usage.c.table_name, usage.c.high_water, usage.c["keys"], usage.c.left_keys
        )
        .join(exports, exports.c.bundle_id == usage.c.bundle_id)
        .where(exports.c.root_table == root.spec.name, exports.c.root_pk == str(root.pk))
        .where(exports.c.status == "done", exports.c.started_at >= started)
        # the marking export and the usage exports after it (not audit copies: they went nowhere)
        .where(
            sa.or_(
                exports.c.bundle_id == base, sa.and_(exports.c.kind == "usage", exports.c.depends_on == base)
            )
        )
    ).all()
    late = Late(base)
    carried: dict[str, list[pa.Array]] = defaultdict(list)
    for bundle_id, table, hw, blob, left in found:
        if table not in graph.tables:
            continue
        spec = graph.table(table)
        if bundle_id == base and hw is not None:
            late.high_water[table] = spec.from_text(spec.pk[0], hw)
            if left is not None:
                late.left[table] = _decode(left)
        carried[table].append(_decode(blob))
    for table, arrays in carried.items():
        late.carried[table] = pa.concat_arrays(arrays) if len(arrays) > 1 else arrays[0]
    return late


def has_pending(connection: sa.Connection, graph: Graph, root: Root, plan: UsagePlan, now: datetime) -> bool:
    """Whether the root has usage its exports did not carry: read before anything is recorded,
    so that a pass over roots with nothing new writes nothing (keys only, in key order)."""
    import pyarrow as pa

    owned = Closure(connection, graph, follow_shared=False)
    owned.add(root.spec.name, [root.row])
    owned.run()
    groups: dict[str, Any] = {}
    if plan.window.mode in ("current", "since"):
        groups, _ = owner_windows(connection, graph, owned, plan.window, now)
    for spec in graph.tables_in_order(("usage",)):
        owners = owned.usage_owners.get(spec.name)
        if not owners or len(spec.pk) != 1:
            continue
        t = table_clause(spec)
        pk_type = spec.arrow_schema().field(spec.pk[0]).type
        where = usage_clause(connection, spec, owners, plan, groups.get(spec.name))
        query = sa.select(t.c[spec.pk[0]]).where(where)
        for part in connection.execution_options(yield_per=65_536).execute(query).scalars().partitions():
            batch = pa.RecordBatch.from_arrays([pa.array(part, pk_type)], names=[spec.pk[0]])
            if without_carried(batch, spec, plan.late).num_rows:
                return True
    return False


def without_carried(batch: pa.RecordBatch, spec: TableSpec, late: Late | None) -> pa.RecordBatch:
    """The batch without the rows an earlier export of the root carried, or that its marking
    export left in the source."""
    import pyarrow.compute as pc

    if late is None:
        return batch
    column = batch.column(spec.pk[0])
    for known in (late.carried.get(spec.name), late.left.get(spec.name)):
        if known is not None and len(known):
            batch = batch.filter(
                pc.invert(pc.is_in(batch.column(spec.pk[0]), value_set=known.cast(column.type)))
            )
    return batch
