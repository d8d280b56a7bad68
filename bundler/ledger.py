"""The target's ledger, shared by load, reverse, clean and the lineup: what it pairs with a
row's key, the compact ledger of usage rows, and forgetting what a clean removed. New
surrogate ids are taken by :mod:`bundler.ids`."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import sqlalchemy as sa

from bundler import tracking
from bundler.sql import chunks, table_clause

if TYPE_CHECKING:
    import pyarrow as pa

    from bundler.graph import TableSpec


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
    ``source_system`` (not of kind ``skip_kind``), count; a row's ledger row first, then the
    ranges (for integer keys).
    """
    wanted = sorted(set(pks))
    ledger, loads = tracking.ledger_table, tracking.loads_table
    key, other = (
        (ledger.c.source_pk, ledger.c.target_pk)
        if by == "source"
        else (ledger.c.target_pk, ledger.c.source_pk)
    )
    found: dict[str, str] = {}
    for part in chunks(wanted):
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
    rest = _integers(p for p in wanted if p not in found)
    for mine, theirs in _range_map(connection, table, rest, by, bundles, source_system, skip_kind).items():
        found.setdefault(mine, theirs)
    return found


# -- the compact ledger of usage rows --------------------------------------------------------
#
# A big usage load creates a million rows whose ids the target hands out in ranges: one ledger
# row each cost as much as the rows themselves (three text columns, two indexes). So the rows
# a load *creates* in a table whose source and target keys are both integers are recorded as
# runs instead, in ``bundler_ledger_ranges``: source keys s..s+n-1 became target keys t..t+n-1.
# Runs shorter than RUN_MIN go to ``bundler_ledger`` row by row, as everything else does. Every
# reader below answers from both tables, so none of them needs to know which one a row is in.

#: a run of consecutive keys shorter than this is recorded row by row
RUN_MIN = 4
#: the most rows one range holds: a range that covers key k starts after k - RUN_MAX, which
#: keeps every lookup by key an index range scan
RUN_MAX = 1 << 20
#: rows read at a time when a range is cut to the rows that remain
RECORD_SLICE = 65_536
#: up to this many ranges are written into a query as literal bounds; more are joined
INLINE_RANGES = 64


def _as_int64(values: pa.Array) -> pa.Array:
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.int64())


def compactable(source: pa.Array, target: pa.Array) -> bool:
    """Whether rows with these keys can be recorded as runs: both integers, none missing."""
    import pyarrow as pa

    return (
        pa.types.is_integer(source.type)
        and pa.types.is_integer(target.type)
        and source.null_count == 0
        and target.null_count == 0
    )


class CreatedLedger:
    """The ledger of the rows one load (or clean) creates in tables with integer keys, written as
    runs of consecutive keys (``bundler_ledger_ranges``) and, for what does not form one, row by
    row. Rows come batch by batch; a run may go on across batches until :meth:`finish`."""

    def __init__(self, connection: sa.Connection, bundle_id: str) -> None:
        self.conn = connection
        self.bundle_id = bundle_id
        self._open: dict[str, tuple[int, int, int]] = {}  # table -> (source first, target first, n)
        self.rows = 0  # ledger rows and ranges written

    def add(self, table: str, source: pa.Array, target: pa.Array) -> None:
        """Record that source keys ``source`` became target keys ``target`` (integers, in step)."""
        import pyarrow.compute as pc

        s, t = _as_int64(source), _as_int64(target)
        if len(s) != len(t):
            raise ValueError(f"{table}: {len(s)} source keys for {len(t)} target keys")
        n = len(s)
        if not n:
            return
        # where a run breaks: a key that is not its predecessor + 1, on either side
        step = pc.or_(pc.not_equal(pc.pairwise_diff(s), 1), pc.not_equal(pc.pairwise_diff(t), 1))
        breaks = pc.indices_nonzero(pc.fill_null(step, False)).to_pylist()
        starts = [0, *breaks]
        runs = [
            (first_s, first_t, end - start)
            for first_s, first_t, start, end in zip(
                s.take(starts).to_pylist(), t.take(starts).to_pylist(), starts, [*breaks, n], strict=True
            )
        ]
        open_run = self._open.pop(table, None)
        if open_run is not None:
            os_, ot, on = open_run
            s0, t0, n0 = runs[0]
            if s0 == os_ + on and t0 == ot + on:  # the batch goes on with the open run
                runs[0] = (os_, ot, on + n0)
            else:
                runs.insert(0, open_run)
        self._open[table] = runs.pop()
        self._write(table, runs)

    def finish(self, table: str) -> None:
        """Write the run the last batch of ``table`` ended with."""
        open_run = self._open.pop(table, None)
        if open_run is not None:
            self._write(table, [open_run])

    def _write(self, table: str, runs: list[tuple[int, int, int]]) -> None:
        import pyarrow as pa

        from bundler.bulk import insert_arrow

        ranges = [
            (s0 + offset, t0 + offset, min(RUN_MAX, n - offset))
            for s0, t0, n in runs
            if n >= RUN_MIN
            for offset in range(0, n, RUN_MAX)
        ]
        if ranges:
            k = len(ranges)
            insert_arrow(
                self.conn,
                tracking.ledger_ranges_table,
                pa.RecordBatch.from_arrays(
                    [
                        pa.array([self.bundle_id] * k, pa.string()),
                        pa.array([table] * k, pa.string()),
                        pa.array([s0 for s0, _, _ in ranges], pa.int64()),
                        pa.array([s0 + n - 1 for s0, _, n in ranges], pa.int64()),
                        pa.array([t0 for _, t0, _ in ranges], pa.int64()),
                        pa.array([t0 + n - 1 for _, t0, n in ranges], pa.int64()),
                    ],
                    names=[
                        "bundle_id",
                        "table_name",
                        "source_first",
                        "source_last",
                        "target_first",
                        "target_last",
                    ],
                ),
            )
            self.rows += k
        singles = [(s0 + i, t0 + i) for s0, t0, n in runs if n < RUN_MIN for i in range(n)]
        if singles:
            self.rows += write_rows(
                self.conn,
                self.bundle_id,
                table,
                pa.array([str(a) for a, _ in singles], pa.string()),
                pa.array([str(b) for _, b in singles], pa.string()),
                "created",
            )


def write_rows(
    connection: sa.Connection, bundle_id: str, table: str, source: pa.Array, target: pa.Array, action: str
) -> int:
    """Ledger rows (one per row) for keys as text: source -> target; how many."""
    import pyarrow as pa

    from bundler.bulk import insert_arrow

    n = len(source)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([bundle_id] * n, pa.string()),
            pa.array([table] * n, pa.string()),
            source,
            target,
            pa.array([action] * n, pa.string()),
        ],
        names=["bundle_id", "table_name", "source_pk", "target_pk", "action"],
    )
    return insert_arrow(connection, tracking.ledger_table, batch)


class LedgerRows:
    """Ledger rows (one per row) of one load, gathered from table after table and written
    together: one bulk insert for a small bundle's ~15 tables instead of one per table.
    Written when :data:`LEDGER_FLUSH_ROWS` are waiting, and by :meth:`flush`."""

    def __init__(self, connection: sa.Connection, bundle_id: str) -> None:
        self.conn = connection
        self.bundle_id = bundle_id
        self.rows = 0  # rows written, or waiting
        self._waiting: list[tuple[str, pa.Array, pa.Array, str]] = []
        self._count = 0

    def add(self, table: str, source: pa.Array, target: pa.Array, action: str) -> None:
        """Ledger rows of ``table``, keys as text: source -> target."""
        if not len(source):
            return
        self._waiting.append((table, source, target, action))
        self._count += len(source)
        self.rows += len(source)
        if self._count >= LEDGER_FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        from bundler.bulk import insert_arrow

        if not self._waiting:
            return
        n = self._count
        tables = pa.array([t for t, source, _, _ in self._waiting for _ in range(len(source))], pa.string())
        actions = pa.array([a for _, source, _, a in self._waiting for _ in range(len(source))], pa.string())
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([self.bundle_id] * n, pa.string()),
                tables,
                pa.concat_arrays([_plain(source) for _, source, _, _ in self._waiting]),
                pa.concat_arrays([_plain(target) for _, _, target, _ in self._waiting]),
                actions,
            ],
            names=["bundle_id", "table_name", "source_pk", "target_pk", "action"],
        )
        self._waiting, self._count = [], 0
        insert_arrow(self.conn, tracking.ledger_table, batch)


#: ledger rows waiting to be written at most (see :class:`LedgerRows`)
LEDGER_FLUSH_ROWS = 65_536


def _plain(values: pa.Array) -> pa.Array:
    """Text keys as one plain string array (a chunked one combined)."""
    import pyarrow as pa

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.cast(pa.string())


def _integers(texts: Iterable[str]) -> list[int]:
    """The keys among ``texts`` that are integers written the canonical way (a range can hold them)."""
    out = []
    for text in texts:
        if text.lstrip("-").isdigit():
            value = int(text)
            if str(value) == text:
                out.append(value)
    return sorted(set(out))


def _range_map(
    connection: sa.Connection,
    table: str,
    keys: list[int],
    by: str,
    bundles: Sequence[str] | None,
    source_system: str | None,
    skip_kind: str | None,
) -> dict[str, str]:
    """What the ranges pair with each of the (sorted, integer) ``keys``, as text."""
    r, loads = tracking.ledger_ranges_table, tracking.loads_table
    first, last, other = (
        (r.c.source_first, r.c.source_last, r.c.target_first)
        if by == "source"
        else (r.c.target_first, r.c.target_last, r.c.source_first)
    )
    found: dict[str, str] = {}
    if not keys:
        return found
    q = sa.select(first, last, other).where(
        r.c.table_name == table, first <= keys[-1], first > keys[0] - RUN_MAX, last >= keys[0]
    )
    if bundles is not None:
        q = q.where(r.c.bundle_id.in_(bundles))
    if source_system is not None:
        q = q.join(loads, loads.c.bundle_id == r.c.bundle_id).where(loads.c.source_system == source_system)
        if skip_kind is not None:
            q = q.where(loads.c.kind != skip_kind)
    for lo, hi, theirs in connection.execute(q):
        for key in keys[bisect_left(keys, lo) : bisect_right(keys, hi)]:
            found.setdefault(str(key), str(theirs + key - lo))
    return found


def created_in(connection: sa.Connection, spec: TableSpec, bundles: Iterable[str]) -> sa.ColumnElement[bool]:
    """Rows of ``spec`` (single-column key) that the loads ``bundles`` created, as a condition on
    its table (:func:`bundler.sql.table_clause`): by their ranges (as literal bounds when there are
    few) and by their ledger rows (an uncorrelated ``IN``)."""
    ledger, r = tracking.ledger_table, tracking.ledger_ranges_table
    wanted = sorted(bundles)
    key = table_clause(spec).c[spec.pk[0]]
    integer = spec.column_map[spec.pk[0]].type.startswith("int")
    parts: list[sa.ColumnElement[bool]] = []
    if integer:
        bounds = connection.execute(
            sa.select(r.c.target_first, r.c.target_last)
            .where(r.c.bundle_id.in_(wanted), r.c.table_name == spec.name)
            .order_by(r.c.target_first)
            .limit(INLINE_RANGES + 1)
        ).all()
        if len(bounds) > INLINE_RANGES:
            parts.append(
                sa.exists()
                .where(
                    r.c.bundle_id.in_(wanted),
                    r.c.table_name == spec.name,
                    r.c.target_first <= key,
                    r.c.target_first > key - RUN_MAX,
                    r.c.target_last >= key,
                )
                .correlate_except(r)
            )
        else:
            parts.extend(key.between(lo, hi) for lo, hi in bounds)
    rows = sa.and_(
        ledger.c.bundle_id.in_(wanted), ledger.c.table_name == spec.name, ledger.c.action == "created"
    )
    if _has_rows(connection, spec.name, wanted):
        if integer:
            parts.append(key.in_(sa.select(sa.cast(ledger.c.target_pk, sa.BigInteger)).where(rows)))
        else:
            parts.append(sa.cast(key, sa.String).in_(sa.select(ledger.c.target_pk).where(rows)))
    return sa.or_(*parts) if parts else sa.false()


def _has_rows(connection: sa.Connection, table: str, bundles: list[str]) -> bool:
    """Whether the loads ``bundles`` have ledger rows (not ranges) of created rows of ``table``."""
    ledger = tracking.ledger_table
    found = connection.execute(
        sa.select(ledger.c.bundle_id)
        .where(ledger.c.bundle_id.in_(bundles), ledger.c.table_name == table, ledger.c.action == "created")
        .limit(1)
    ).first()
    return found is not None


def created_counts(connection: sa.Connection, bundles: Iterable[str]) -> Counter[str]:
    """How many rows each of the loads ``bundles`` created, by its ledger (rows and ranges)."""
    ledger, r = tracking.ledger_table, tracking.ledger_ranges_table
    wanted = sorted(bundles)
    counts: Counter[str] = Counter()
    for bundle_id, n in connection.execute(
        sa.select(ledger.c.bundle_id, sa.func.count())
        .where(ledger.c.bundle_id.in_(wanted), ledger.c.action == "created")
        .group_by(ledger.c.bundle_id)
    ):
        counts[bundle_id] += int(n)
    for bundle_id, n in connection.execute(
        sa.select(r.c.bundle_id, sa.func.sum(r.c.target_last - r.c.target_first + 1))
        .where(r.c.bundle_id.in_(wanted))
        .group_by(r.c.bundle_id)
    ):
        counts[bundle_id] += int(n)
    return counts


def created_counts_where(
    connection: sa.Connection, spec: TableSpec, where: sa.ColumnElement[bool], bundles: Iterable[str]
) -> Counter[str]:
    """How many rows of ``spec`` that satisfy ``where`` each of the loads ``bundles`` created."""
    wanted = sorted(bundles)
    t = table_clause(spec)
    key = t.c[spec.pk[0]]
    mine = tracking.ledger_table.alias("mine")
    r = tracking.ledger_ranges_table.alias("mine_ranges")
    counts: Counter[str] = Counter()
    queries = []
    if _has_rows(connection, spec.name, wanted):
        queries.append(
            sa.select(mine.c.bundle_id, sa.func.count())
            .select_from(t.join(mine, mine.c.target_pk == sa.cast(key, sa.String)))
            .where(
                where,
                mine.c.table_name == spec.name,
                mine.c.action == "created",
                mine.c.bundle_id.in_(wanted),
            )
            .group_by(mine.c.bundle_id)
        )
    if spec.column_map[spec.pk[0]].type.startswith("int"):
        queries.append(
            sa.select(r.c.bundle_id, sa.func.count())
            .select_from(t.join(r, sa.and_(key >= r.c.target_first, key <= r.c.target_last)))
            .where(where, r.c.table_name == spec.name, r.c.bundle_id.in_(wanted))
            .group_by(r.c.bundle_id)
        )
    for q in queries:
        for bundle_id, n in connection.execute(q):
            counts[bundle_id] += int(n)
    return counts


def records(connection: sa.Connection, table: str, target_pk: str) -> list[tuple[str, str]]:
    """What the ledger says of the target row ``table`` ``target_pk`` (text): (bundle, action) pairs."""
    ledger, r = tracking.ledger_table, tracking.ledger_ranges_table
    found = [
        (bundle_id, action)
        for bundle_id, action in connection.execute(
            sa.select(ledger.c.bundle_id, ledger.c.action).where(
                ledger.c.table_name == table, ledger.c.target_pk == target_pk
            )
        )
    ]
    for key in _integers([target_pk]):
        found.extend(
            (bundle_id, "created")
            for bundle_id in connection.execute(
                sa.select(r.c.bundle_id).where(
                    r.c.table_name == table,
                    r.c.target_first <= key,
                    r.c.target_first > key - RUN_MAX,
                    r.c.target_last >= key,
                )
            ).scalars()
        )
    return found


def forget_gone(connection: sa.Connection, spec: TableSpec, bundles: Sequence[str]) -> int:
    """Forget what the loads ``bundles`` created in ``spec`` whose row is gone from the table: their
    ledger rows, and their ranges (a range some of whose rows remain is cut to those); how many
    ledger rows and ranges were removed. The queries read ``spec``'s table, never the ledger table
    they delete from (MariaDB refuses that)."""
    ledger, r = tracking.ledger_table, tracking.ledger_ranges_table
    t = table_clause(spec)
    key = t.c[spec.pk[0]]
    integer = spec.column_map[spec.pk[0]].type.startswith("int")
    target = sa.cast(ledger.c.target_pk, sa.BigInteger) if integer else ledger.c.target_pk
    wanted = sorted(bundles)
    n = 0
    if _has_rows(connection, spec.name, wanted):
        n += int(
            connection.execute(
                sa.delete(ledger).where(
                    ledger.c.bundle_id.in_(wanted),
                    ledger.c.action == "created",
                    ledger.c.table_name == spec.name,
                    ~sa.exists().where(key == target),
                )
            ).rowcount
        )
    if not integer:
        return n
    alive = sa.func.count(key)
    ranges = connection.execute(
        sa.select(r.c.bundle_id, r.c.source_first, r.c.target_first, r.c.target_last, alive)
        .select_from(r.outerjoin(t, sa.and_(key >= r.c.target_first, key <= r.c.target_last)))
        .where(r.c.bundle_id.in_(wanted), r.c.table_name == spec.name)
        .group_by(r.c.bundle_id, r.c.source_first, r.c.target_first, r.c.target_last)
    ).all()
    for bundle_id, source_first, target_first, target_last, left in ranges:
        if left == target_last - target_first + 1:
            continue
        connection.execute(
            sa.delete(r).where(
                r.c.bundle_id == bundle_id, r.c.table_name == spec.name, r.c.source_first == source_first
            )
        )
        n += 1
        if left:
            _record_survivors(connection, spec, bundle_id, source_first, target_first, target_last)
    return n


def _record_survivors(
    connection: sa.Connection,
    spec: TableSpec,
    bundle_id: str,
    source_first: int,
    target_first: int,
    target_last: int,
) -> None:
    """Record again, as runs, the rows of a range that are still in the table."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = table_clause(spec).c[spec.pk[0]]
    writer = CreatedLedger(connection, bundle_id)
    after = target_first - 1
    while True:  # in slices by key: no open cursor while the ledger is written
        found = (
            connection.execute(
                sa.select(key).where(key > after, key <= target_last).order_by(key).limit(RECORD_SLICE)
            )
            .scalars()
            .all()
        )
        if not found:
            break
        targets = pa.array(found, pa.int64())
        writer.add(spec.name, pc.add(targets, source_first - target_first), targets)
        after = found[-1]
    writer.finish(spec.name)


def forget_ranges(connection: sa.Connection, bundle_id: str) -> int:
    """Remove every range of the load ``bundle_id``; how many."""
    r = tracking.ledger_ranges_table
    return int(connection.execute(sa.delete(r).where(r.c.bundle_id == bundle_id)).rowcount)


class Entry(NamedTuple):
    """One row the ledger holds for a load, as its text columns."""

    table_name: str
    source_pk: str
    target_pk: str
    action: str


def entries(connection: sa.Connection, bundle_id: str) -> Iterator[Entry]:
    """Every row the ledger holds for the load ``bundle_id``, its ranges written out row by row."""
    ledger, r = tracking.ledger_table, tracking.ledger_ranges_table
    for row in connection.execute(
        sa.select(ledger.c.table_name, ledger.c.source_pk, ledger.c.target_pk, ledger.c.action).where(
            ledger.c.bundle_id == bundle_id
        )
    ).all():
        yield Entry(*row)
    for table, s0, t0, t1 in connection.execute(
        sa.select(r.c.table_name, r.c.source_first, r.c.target_first, r.c.target_last).where(
            r.c.bundle_id == bundle_id
        )
    ).all():
        for i in range(t1 - t0 + 1):
            yield Entry(table, str(s0 + i), str(t0 + i), "created")
