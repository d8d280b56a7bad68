"""Retrop: carry a customer back from the target to the source, usage and balances.

An emergency measure for a customer who must return to the source system after a load.
Two steps, each a library call the CLI wraps:

``reverse_export(target_engine, customer, out_dir)`` runs against the **target** only:

1. finds the customer and the load that brought it (``bundler_loads``); a customer no
   load brought, or one that came inside its reseller's bundle, is refused, naming why;
2. marks it Exported in the target (the customer and every owned row with a status, as an
   export does; recorded in the target's ``bundler_exports`` with each row's previous
   status, so a failure restores them);
3. reads the customer's usage (xDRs) in one snapshot and sorts each row:

   - **already in the source**: a load from that source created it (the ledger says so;
     a change made to it on the target stays there);
   - **returnable**: every reference maps back to the source. References to owned and
     shared rows map through the ledger of the loads from that source (target pk →
     source pk); references to prerequisites, which loads match by natural key and never
     copy, keep the target's value and travel by natural key in the bundle's
     ``prerequisites``, for ``reverse load`` to match in the source;
   - **not returnable**: some reference is to a row made on the target (an account, an
     invoice, a destination no load brought), or to nothing at all;

4. writes a **reverse bundle** (kind ``reverse``, the ordinary format, verified by
   ``inspect verify``): the returnable rows with source ids, the prerequisites they
   need, and in the manifest's ``reverse`` section the source system and export it
   returns to, the customer's rows with their status and balance as they stand in the
   target (a balance where the graph marks one: the customer's, a debit account's), and
   every row that cannot be returned, with the reasons.

``reverse_load(source_engine, bundle)`` runs against the **source**, in one transaction:

1. refuses a bundle of another kind, one made for another source system (or for an
   export this source has no record of), and a customer the source has terminated;
2. checks that the bundle's release and the source's agree on the usage tables (a
   reverse transfer translates nothing: the columns must be the same, or it stops);
3. matches the prerequisites by natural key; rows whose prerequisite the source lacks
   are not returned (and reported); rows whose natural key the source already holds are
   skipped;
4. inserts the rest with new source ids, sets each balance to the target's figure,
   gives every row the export marked Exported its previous status back (warning about a
   row terminated in the target that becomes alive again), records the bundle in the
   source's ``bundler_loads`` and ``bundler_ledger``, and the export as ``reversed``;
5. returns (and the CLI prints and writes beside the bundle) the report for the
   administrator: what was not returned, and every balance adjustment made.

Applying the same reverse bundle again changes nothing and says so.

The limits, stated in ``--help`` too (:data:`LIMITS`): usage must be returned before the
billing period closes; configuration changed on the target is lost; a customer
terminated in the source cannot be restored; an account terminated in the target but
alive in the source becomes active again.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import Bundle, BundleWriter, open_bundle
from bundler.db import begin_write
from bundler.errors import BundleInvalid, BundlerError, RootError, SpecError, UsageError
from bundler.export.closure import Closure, chunks, lookup_row, natural_keys, sorted_values, table_clause
from bundler.export.export import (
    _close_record,
    _mark,
    _Marks,
    _restore,
    _Root,
    _sha_of,
    _slug,
    source_graph,
)
from bundler.export.snapshot import Snapshot, open_snapshot
from bundler.export.window import current_period
from bundler.graph import Graph, TableSpec
from bundler.keys import Key, describe, key_text, key_value
from bundler.load.load import _IdAllocator, ledger_map, match_keys, target_graph
from bundler.progress import NullProgress, Progress

if TYPE_CHECKING:
    import pyarrow as pa

LIMITS = (
    "usage must be returned before the billing period closes in the source (a closed period "
    "does not bill the xDRs returned into it);",
    "configuration changed on the target (products, tariffs, features, new accounts) is lost: "
    "only usage, balances and statuses go back;",
    "a customer terminated in the source cannot be restored (reverse load refuses it);",
    "an account terminated in the target but alive in the source becomes active again "
    "(reverse load warns about each one).",
)

ROOT_KIND = "customer"
REVERSE_KIND = "reverse"
REVERSED = "reversed"  # bundler_exports.status of an export a reverse bundle undid


# -- results ---------------------------------------------------------------------------------


@dataclass
class ReverseExportResult:
    """What ``reverse export`` wrote, and how it sorted the customer's usage."""

    bundle_id: str
    path: Path
    manifest: dict[str, Any]
    returnable: dict[str, int]
    from_source: dict[str, int]
    not_returned: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    warnings: list[str]
    marked_rows: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "bundle_id": self.bundle_id,
            "path": str(self.path),
            "kind": m["kind"],
            "root": m["root"],
            "source_system": m["reverse"]["source_system"],
            "export_bundle": m["reverse"]["export_bundle"],
            "returnable": dict(self.returnable),
            "already_in_source": dict(self.from_source),
            "not_returned": self.not_returned,
            "rows": self.rows,
            "marked_in_target": self.marked_rows,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """The human report."""
        root = self.manifest["root"]
        out = [
            f"{self.path}",
            f"reverse bundle {self.bundle_id}: {root['table']} {describe(root['natural_key'])} "
            f"for source system {self.manifest['reverse']['source_system']} "
            f"(export {self.manifest['reverse']['export_bundle']})",
            f"  marked Exported in the target: {self.marked_rows} row(s)",
        ]
        for table in sorted(set(self.returnable) | set(self.from_source)):
            out.append(
                f"  {table}: {self.returnable.get(table, 0)} returnable, "
                f"{self.from_source.get(table, 0)} already in the source"
            )
        for row in self.rows:
            balance = row["balance"]
            shown = f", {balance['column']} {balance['value']}" if balance else ""
            out.append(f"  {row['table']} {describe(row['natural_key'])}: status {row['status']!r}{shown}")
        out.extend(_not_returned_lines(self.not_returned))
        out.extend(f"  warning: {w}" for w in self.warnings)
        return out


@dataclass
class ReverseLoadResult:
    """What ``reverse load`` did in the source: the report for the administrator."""

    bundle_id: str
    bundle: str
    outcome: str  # returned | already-returned
    root: dict[str, Any]
    imported: dict[str, int] = field(default_factory=dict)
    already_in_source: dict[str, int] = field(default_factory=dict)
    not_returned: list[dict[str, Any]] = field(default_factory=list)
    balances: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    report_paths: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "bundle": self.bundle,
            "outcome": self.outcome,
            "root": self.root,
            "imported": dict(self.imported),
            "already_in_source": dict(self.already_in_source),
            "not_returned": self.not_returned,
            "balance_adjustments": self.balances,
            "statuses": self.statuses,
            "warnings": list(self.warnings),
            "report": [str(p) for p in self.report_paths],
            "seconds": round(self.seconds, 3),
        }

    def lines(self) -> list[str]:
        """The human report."""
        root = self.root
        name = f"{root.get('table')} {describe(root.get('natural_key') or {})}"
        if self.outcome == "already-returned":
            return [f"{self.bundle_id}: already applied to this source; nothing changed ({name})"]
        out = [f"reverse bundle {self.bundle_id}: {name} returned to the source"]
        for table in sorted(set(self.imported) | set(self.already_in_source)):
            out.append(
                f"  {table}: {self.imported.get(table, 0)} imported, "
                f"{self.already_in_source.get(table, 0)} already in the source"
            )
        for s in self.statuses:
            out.append(
                f"  status: {s['table']} {describe(s['natural_key'])}: {s['column']} {s['before']!r} → {s['after']!r}"
            )
        if self.balances:
            out.append("  balance adjustments (set to the target's figures):")
            for b in self.balances:
                out.append(
                    f"    {b['table']} {describe(b['natural_key'])} {b['column']}: "
                    f"{b['before']} → {b['after']} ({_signed(b['difference'])})"
                )
        out.extend(_not_returned_lines(self.not_returned))
        if self.not_returned:
            out.append(
                "  the balances above include the charges of the rows not returned, which the source has no "
                "record of: settle that difference by hand"
            )
        out.extend(f"  warning: {w}" for w in self.warnings)
        return out


def _signed(text: str | None) -> str:
    if text is None:
        return "was empty"
    return text if text.startswith("-") else f"+{text}"


def _not_returned_lines(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return ["  not returned: nothing"]
    out = [f"  not returned ({len(items)}):"]
    for item in items:
        when = f" ({item['time']})" if item.get("time") else ""
        out.append(f"    {item['table']} {describe(item['natural_key'])}{when}: {'; '.join(item['reasons'])}")
    return out


# -- the target's ledger -------------------------------------------------------------------


@dataclass(frozen=True)
class _Origin:
    """The load that brought the root into the target, and where it came from."""

    export_bundle: str  # the bundle id: the source's export
    source_system: str
    root_source_pk: str


class _Ledger:
    """Target pk → source pk, through the ledger of every load from one source system."""

    def __init__(self, connection: sa.Connection, source_system: str) -> None:
        self.conn = connection
        self.source_system = source_system

    def map(self, table: str, target_pks: list[Any]) -> dict[str, str]:
        """Target pk (as text) → source pk (as text), for the rows of ``table`` a load wrote or reused."""
        return ledger_map(
            self.conn,
            table,
            (str(v) for v in target_pks),
            by="target",
            source_system=self.source_system,
            skip_kind=REVERSE_KIND,
        )


def _typed(spec: TableSpec, column: str, text: str) -> Any:
    """A pk as text (ledger, tracking) as the column's value."""
    return int(text) if spec.column_map[column].type.startswith("int") else text


def _origin(connection: sa.Connection, root: _Root) -> _Origin:
    loads = tracking.loads_table
    row = connection.execute(
        sa.select(loads.c.bundle_id, loads.c.source_system, loads.c.root_source_pk)
        .where(loads.c.root_table == root.spec.name, loads.c.root_target_pk == str(root.pk))
        .where(loads.c.kind == ROOT_KIND, loads.c.outcome == "loaded")
        .order_by(loads.c.loaded_at.desc())
    ).first()
    if row is None:
        name = f"{ROOT_KIND} {describe(root.key)} ({root.spec.pk[0]}={root.pk})"
        ledger = tracking.ledger_table
        within = connection.execute(
            sa.select(loads.c.bundle_id, loads.c.kind)
            .join(ledger, ledger.c.bundle_id == loads.c.bundle_id)
            .where(ledger.c.table_name == root.spec.name, ledger.c.target_pk == str(root.pk))
            .where(ledger.c.action == "created", loads.c.outcome == "loaded")
        ).first()
        if within is not None:
            raise RootError(
                f"{name} arrived inside {within.kind} bundle {within.bundle_id}, not as a customer of its own",
                hint="a reverse transfer returns a customer that was exported and loaded as its own root",
            )
        raise RootError(
            f"{name} did not arrive by a load: this target's ledger (bundler_loads) names no load of it",
            hint="a reverse transfer returns only a customer that bundler load brought into this target",
        )
    return _Origin(str(row.bundle_id), str(row.source_system), str(row.root_source_pk))


def _find_root(connection: sa.Connection, graph: Graph, ident: str | int) -> _Root:
    """The customer named by id or name in the target."""
    root = graph.root(ROOT_KIND)
    spec = graph.table(root.table)
    text = str(ident).strip()
    row = lookup_row(connection, spec, root.lookup, ident)
    if row is None:
        raise RootError(
            f"no {ROOT_KIND} {text!r} in the target ({spec.name} has no row with "
            f"{' or '.join(root.lookup)} = {text!r})",
            hint="name it by its id in the target or by its name",
        )
    data = row
    for col, allowed in root.where.items():
        if data[col] not in allowed:
            raise RootError(f"{spec.name} {text!r} is not a {ROOT_KIND} ({col} = {data[col]!r})")
    pk = data[spec.pk[0]]
    key = natural_keys(connection, graph, spec.name, spec.pk[0], [pk])[pk]
    return _Root(ROOT_KIND, spec, data, key)


def _check_target_state(connection: sa.Connection, root: _Root) -> None:
    status = root.spec.status
    if status is None or root.row[status.column] != status.exported:
        return
    exports = tracking.exports_table
    earlier = connection.execute(
        sa.select(exports.c.bundle_id)
        .where(exports.c.root_table == root.spec.name, exports.c.root_pk == str(root.pk))
        .where(exports.c.kind == REVERSE_KIND, exports.c.status == "done")
        .order_by(exports.c.started_at.desc())
    ).first()
    if earlier is not None:
        raise RootError(
            f"{ROOT_KIND} {describe(root.key)} is already Exported in the target by reverse bundle {earlier.bundle_id}",
            hint="apply that bundle to the source with bundler reverse load",
        )
    raise RootError(
        f"{ROOT_KIND} {describe(root.key)} is Exported in the target ({status.column} = {status.exported!r})",
        hint="a reverse transfer starts from a customer active in the target",
    )


# -- reverse export --------------------------------------------------------------------------


class _Reader:
    """Reads the root's state and usage in the target and writes the reverse bundle's tables."""

    def __init__(
        self,
        snapshot: Snapshot,
        graph: Graph,
        root: _Root,
        origin: _Origin,
        writer: BundleWriter,
        marks: _Marks,
        progress: Progress,
        batch_rows: int,
        period_start: datetime | None,
    ) -> None:
        self.snapshot = snapshot
        self.conn = snapshot.connection
        self.graph = graph
        self.root = root
        self.ledger = _Ledger(self.conn, origin.source_system)
        self.writer = writer
        self.marks = marks
        self.progress = progress
        self.batch_rows = batch_rows
        self.period_start = period_start
        self.returnable: dict[str, int] = {}
        self.from_source: dict[str, int] = {}
        self.not_returned: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        # referenced table -> target value -> value in the bundle (None: does not map back)
        self.mapped: dict[str, dict[Any, Any]] = defaultdict(dict)
        # referenced table -> target value -> natural key in the target (None: no such row)
        self.keys: dict[str, dict[Any, Key | None]] = defaultdict(dict)
        # referenced table -> (column, values used in the bundle)
        self.used: dict[str, tuple[str, set[Any]]] = {}
        self.before_period = 0

    def run(self) -> dict[str, Any]:
        owned = Closure(self.conn, self.graph, follow_shared=False)
        owned.add(self.root.spec.name, [self.root.row])
        owned.run()
        self._rows(owned)
        for spec in self.graph.tables_in_order(("usage",)):
            where = owned.usage_selection(spec)
            if where is not None:
                self._usage(spec, where)
        if self.before_period and self.period_start is not None:
            self.warnings.append(
                f"{self.before_period} returnable row(s) are from before the current billing period "
                f"(which began {self.period_start}): if the source has closed that period, they will not be billed"
            )
        return {"prerequisites": self._prerequisites(), "by_key": sorted(self._by_key_tables())}

    # -- the root's rows: status and balance ------------------------------------------------

    def _rows(self, owned: Closure) -> None:
        for spec in owned.tables(("owned",)):
            if spec.status is None and spec.balance is None:
                continue
            if len(spec.pk) != 1:
                continue
            pk_col = spec.pk[0]
            pks = [pk[0] for pk in owned.rows[spec.name]]
            wanted = [pk_col]
            if spec.status:
                wanted.append(spec.status.column)
            if spec.balance:
                wanted += [spec.balance.column, *spec.balance.where]
            t = table_clause(spec)
            found: dict[Any, dict[str, Any]] = {}
            for part in chunks(sorted_values(pks)):
                stmt = sa.select(*(t.c[c] for c in dict.fromkeys(wanted))).where(t.c[pk_col].in_(part))
                found.update({r[pk_col]: dict(r) for r in self.conn.execute(stmt).mappings()})
            keys = natural_keys(self.conn, self.graph, spec.name, pk_col, list(found))
            back = self.ledger.map(spec.name, list(found))
            marked = self.marks.by_table.get(spec.name, {})
            for pk in sorted_values(found):
                row = found[pk]
                status = None
                if spec.status:
                    status = marked.get(pk, row[spec.status.column])  # as it was before this export marked it
                balance = None
                if spec.balance and all(row[c] in allowed for c, allowed in spec.balance.where.items()):
                    balance = {"column": spec.balance.column, "value": key_value(row[spec.balance.column])}
                source_pk = back.get(str(pk))
                if source_pk is None:
                    held = (
                        f"; its {balance['column']} {balance['value']} stays in the target" if balance else ""
                    )
                    self.not_returned.append(
                        {
                            "table": spec.name,
                            "natural_key": keys.get(pk, {}),
                            "target_pk": key_value(pk),
                            "time": None,
                            "reasons": [f"made on the target: the source has no such row{held}"],
                        }
                    )
                    continue
                self.rows.append(
                    {
                        "table": spec.name,
                        "source_pk": key_value(_typed(spec, pk_col, source_pk)),
                        "natural_key": keys.get(pk, {}),
                        "status": status,
                        "balance": balance,
                    }
                )

    # -- usage --------------------------------------------------------------------------------

    def _by_key_tables(self) -> set[str]:
        return {t for t in self.used if self.graph.table(t).scope == "prerequisite"}

    def _resolve(self, table: str, column: str, values: set[Any]) -> None:
        """Fill ``mapped`` and ``keys`` for the target values of ``table.column`` not seen yet."""
        new = {v for v in values if v not in self.mapped[table]}
        if not new:
            return
        spec = self.graph.table(table)
        keys = natural_keys(self.conn, self.graph, table, column, new)
        by_key = spec.scope == "prerequisite"
        back = {} if by_key else self.ledger.map(table, list(new))
        for v in new:
            self.keys[table][v] = keys.get(v)
            if keys.get(v) is None:
                self.mapped[table][v] = None
            elif by_key:
                self.mapped[table][v] = v
            else:
                source = back.get(str(v))
                self.mapped[table][v] = _typed(spec, column, source) if source is not None else None

    def _reason(self, spec: TableSpec, column: str, value: Any) -> str:
        ref = spec.ref_by_column[column]
        key = self.keys[ref.table].get(value)
        if key is None:
            return f"{column} = {value!r}: the target has no {ref.table} row with {ref.target_column} = {value!r}"
        return (
            f"{column} = {value!r}: {ref.table} {describe(key)} was made on the target "
            "(no load from the source brought it)"
        )

    def _usage(self, spec: TableSpec, where: sa.ColumnElement[bool]) -> None:
        import pyarrow as pa

        out = self.writer.table(spec.name, spec.arrow_schema(), spec.scope)
        task = f"reverse export {spec.name}"
        self.progress.start(task)
        pk_col = spec.pk[0]
        for batch in self._scanned(spec, where):
            self.progress.advance(task, batch.num_rows)
            pks = batch.column(pk_col).to_pylist()
            came = self.ledger.map(spec.name, pks)
            fresh = [str(pk) not in came for pk in pks]
            self.from_source[spec.name] = self.from_source.get(spec.name, 0) + fresh.count(False)
            columns = {ref.column: batch.column(ref.column).to_pylist() for ref in spec.references}
            for ref in spec.references:
                values = {v for v, f in zip(columns[ref.column], fresh, strict=True) if f and v is not None}
                self._resolve(ref.table, ref.target_column, values)
            keep: list[bool] = []
            for i, is_fresh in enumerate(fresh):
                if not is_fresh:
                    keep.append(False)
                    continue
                reasons = [
                    self._reason(spec, ref.column, columns[ref.column][i])
                    for ref in spec.references
                    if columns[ref.column][i] is not None
                    and self.mapped[ref.table].get(columns[ref.column][i]) is None
                ]
                keep.append(not reasons)
                if reasons:
                    self.not_returned.append(self._report_row(spec, batch, i, reasons))
            mask = pa.array(keep, pa.bool_())
            kept = batch.filter(mask)
            if kept.num_rows == 0:
                continue
            for ref in spec.references:
                idx = kept.schema.get_field_index(ref.column)
                table_map = self.mapped[ref.table]
                original = kept.column(idx).to_pylist()
                mapped = [None if v is None else table_map[v] for v in original]
                kept = kept.set_column(
                    idx, kept.schema.field(idx), pa.array(mapped, kept.schema.field(idx).type)
                )
                column, used = self.used.setdefault(ref.table, (ref.target_column, set()))
                if column != ref.target_column:
                    raise BundlerError(
                        f"{ref.table} is referenced through several columns ({column}, {ref.target_column}); "
                        "a bundle declares one column per outside table"
                    )
                used.update((m, v) for m, v in zip(mapped, original, strict=True) if v is not None)
            when = kept.schema.field(spec.time_column).type if spec.time_column else None
            if when is not None and pa.types.is_timestamp(when) and self.period_start is not None:
                import pyarrow.compute as pc

                early = pc.less(kept.column(spec.time_column), pa.scalar(self.period_start, when))
                self.before_period += int(pc.sum(early).as_py() or 0)
            out.write(kept)
            self.returnable[spec.name] = self.returnable.get(spec.name, 0) + kept.num_rows
        self.progress.finish(task)

    def _scanned(self, spec: TableSpec, where: sa.ColumnElement[bool]) -> Iterator[pa.RecordBatch]:
        """The rows of ``stmt``, batch by batch, through a scratch Parquet file.

        Sorting a batch needs queries (the ledger, natural keys), and a streaming read
        holds its connection (COPY on PostgreSQL, an unbuffered cursor on MariaDB) until
        it ends: so the rows are streamed to disk first, then read back, all inside the
        one snapshot. Memory stays bounded by the batch size.
        """
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory(prefix=".reverse-scan-", dir=self.writer.out_dir) as scratch:
            path = Path(scratch) / f"{spec.name}.parquet"
            writer: pq.ParquetWriter | None = None
            try:
                for batch in self.snapshot.read(spec, where, split=True):
                    if writer is None:
                        writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
                    writer.write_batch(batch)
            finally:
                if writer is not None:
                    writer.close()
            if writer is None:
                return
            with pq.ParquetFile(path) as pf:
                yield from pf.iter_batches(batch_size=self.batch_rows)

    def _report_row(
        self, spec: TableSpec, batch: pa.RecordBatch, i: int, reasons: list[str]
    ) -> dict[str, Any]:
        key: Key = {}
        for col in spec.natural_key:
            value = batch.column(col)[i].as_py()
            ref = spec.ref_by_column.get(col)
            key[col] = (
                self.keys[ref.table].get(value) if ref is not None and value is not None else key_value(value)
            )
        when = batch.column(spec.time_column)[i].as_py() if spec.time_column else None
        return {
            "table": spec.name,
            "natural_key": key,
            "target_pk": key_value(batch.column(spec.pk[0])[i].as_py()),
            "time": key_value(when) if when is not None else None,
            "reasons": reasons,
        }

    def _prerequisites(self) -> dict[str, Any]:
        """Every outside row the returnable rows reference: value in the bundle → natural key."""
        out: dict[str, Any] = {}
        for table in sorted(self.used):
            column, pairs = self.used[table]
            rows = {}
            for value, target_value in pairs:
                key = self.keys[table][target_value]
                assert key is not None
                rows[value] = key
            out[table] = {
                "column": column,
                "scope": self.graph.table(table).scope,
                "rows": [{"value": key_value(v), "key": rows[v]} for v in sorted_values(rows)],
            }
        return out


def reverse_export(
    target_engine: sa.Engine,
    customer: str | int,
    out_dir: str | Path,
    *,
    spec: str | Path | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    batch_rows: int = 65_536,
) -> ReverseExportResult:
    """Write the reverse bundle of a customer that a load brought into this target.

    Marks the customer Exported in the target. See the module docstring for what the
    bundle holds and how each usage row is sorted.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    now = now or tracking.now()
    with begin_write(target_engine) as connection:
        graph, system = target_graph(connection, spec)
    with begin_write(target_engine) as connection:
        root = _find_root(connection, graph, customer)
        origin = _origin(connection, root)
        _check_target_state(connection, root)
    bundle_id = f"{REVERSE_KIND}-{_slug(root.key)}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    with begin_write(target_engine) as connection:
        # again, under a row lock: two reverse exports of one customer must not both go on
        t = table_clause(root.spec)
        fresh = (
            connection.execute(sa.select(t).where(t.c[root.spec.pk[0]] == root.pk).with_for_update())
            .mappings()
            .one()
        )
        root = _Root(ROOT_KIND, root.spec, dict(fresh), root.key)
        _check_target_state(connection, root)
        connection.execute(
            tracking.exports_table.insert().values(
                bundle_id=bundle_id,
                kind=REVERSE_KIND,
                root_table=root.spec.name,
                root_pk=str(root.pk),
                root_key=key_text(root.key)[:255],
                usage_mode="all",
                marked=1,
                depends_on=origin.export_bundle,
                status="running",
                started_at=tracking.now(),
            )
        )
        marks = _mark(connection, graph, root, bundle_id)
    progress.note(f"{bundle_id}: marked {marks.count} row(s) Exported in the target")
    period_start = None
    if root.spec.billing_period is not None:
        code = root.spec.billing_period.codes.get(str(root.row[root.spec.billing_period.column]))
        if code is not None:
            period_start = current_period(code, now)[0]
    writer = BundleWriter(out_dir, bundle_id)
    try:
        with open_snapshot(target_engine, batch_rows=batch_rows) as snapshot:
            reader = _Reader(snapshot, graph, root, origin, writer, marks, progress, batch_rows, period_start)
            body = reader.run()
        manifest = {
            "kind": REVERSE_KIND,
            "root": {
                "table": root.spec.name,
                "source_pk": key_value(_typed(root.spec, root.spec.pk[0], origin.root_source_pk)),
                "natural_key": root.key,
            },
            "source": {"system_id": system.system_id, "release": system.release, "dialect": system.dialect},
            "graph": {"system": graph.system, "release": graph.release, "sha256": graph.sha256},
            "created_at": now.isoformat(timespec="seconds") + "Z",
            "marked": True,
            "usage": {"mode": "all", "from": None, "to": None, "billing_period": None},
            "prerequisites": body["prerequisites"],
            "depends_on": [origin.export_bundle],
            "reverse": {
                "source_system": origin.source_system,
                "export_bundle": origin.export_bundle,
                "by_key": body["by_key"],
                "rows": reader.rows,
                "not_returned": reader.not_returned,
            },
        }
        path, doc = writer.finish(manifest)
    except BaseException as exc:
        writer.abort()
        _restore(target_engine, graph, bundle_id, marks, f"{type(exc).__name__}: {exc}")
        raise
    try:
        _close_record(
            target_engine, bundle_id, "done", manifest_sha256=_sha_of(path), rows=doc["totals"]["rows"]
        )
    except BaseException:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        _restore(target_engine, graph, bundle_id, marks, "could not record the finished reverse export")
        raise
    for warning in reader.warnings:
        progress.note(f"{bundle_id}: {warning}")
    return ReverseExportResult(
        bundle_id=bundle_id,
        path=path,
        manifest=doc,
        returnable=reader.returnable,
        from_source=reader.from_source,
        not_returned=reader.not_returned,
        rows=reader.rows,
        warnings=reader.warnings,
        marked_rows=marks.count,
        seconds=time.monotonic() - started,
    )


# -- reverse load ----------------------------------------------------------------------------


def _bundle_graph(manifest: dict[str, Any]) -> Graph:
    from bundler.inspect.query import graph_of

    return graph_of(manifest)


def _compatible(bundle_graph: Graph, source: Graph, manifest: dict[str, Any], tables: list[str]) -> None:
    """Refuse unless the source's release reads the bundle's usage, keys and rows as they are.

    A reverse transfer translates nothing: there is no upgrade path backwards, so the
    tables it touches must be alike in both releases.
    """
    problems: list[str] = []
    pair = f"release {bundle_graph.release} (the bundle) and release {source.release} (this source)"

    def same_key(table: str, seen: set[str]) -> None:
        if table in seen:
            return
        seen.add(table)
        mine, theirs = bundle_graph.tables.get(table), source.tables.get(table)
        if mine is None or theirs is None:
            problems.append(f"table {table} is not in both releases")
            return
        if mine.natural_key != theirs.natural_key:
            problems.append(
                f"{table} is named by ({', '.join(mine.natural_key)}) in one and ({', '.join(theirs.natural_key)}) in the other"
            )
            return
        for col in mine.natural_key:
            if col in mine.ref_by_column:
                same_key(mine.ref_by_column[col].table, seen)

    for table in tables:
        mine, theirs = bundle_graph.table(table), source.tables.get(table)
        if theirs is None:
            problems.append(f"the usage table {table} is not in release {source.release}")
            continue
        a = [(c.name, c.type) for c in mine.columns]
        b = [(c.name, c.type) for c in theirs.columns]
        if a != b:
            differing = sorted({name for name, _ in set(a) ^ set(b)}) or ["their order"]
            problems.append(f"the columns of {table} differ: {', '.join(differing)}")
        ra = {(r.column, r.table, r.target_column) for r in mine.references}
        rb = {(r.column, r.table, r.target_column) for r in theirs.references}
        if ra != rb:
            problems.append(f"the references of {table} differ")
    for table, entry in manifest["prerequisites"].items():
        theirs = source.tables.get(table)
        if theirs is None or entry["column"] not in theirs.column_map:
            problems.append(f"{table}.{entry['column']} is not in release {source.release}")
        elif table in manifest["reverse"]["by_key"]:
            same_key(table, set())
    for row in manifest["reverse"]["rows"]:
        theirs = source.tables.get(row["table"])
        if theirs is None:
            problems.append(f"table {row['table']} is not in release {source.release}")
        elif row["balance"] is not None and theirs.balance is None:
            problems.append(
                f"the graph of release {source.release} marks no balance column of {row['table']}"
            )
    if problems:
        raise SpecError(
            f"cannot return the bundle's rows between {pair}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="a reverse transfer carries usage only between releases whose usage tables are alike; "
            "settle this customer by hand",
        )


def _decimal_text(spec: TableSpec, column: str, value: Any) -> str:
    """A decimal value with exactly the column's scale, as text."""
    from bundler.graph import arrow_type

    scale = getattr(arrow_type(spec.column_map[column].type), "scale", 0)
    return format(Decimal(str(value)).quantize(Decimal(1).scaleb(-scale)), "f")


class _Apply:
    """One reverse load, inside the source's transaction."""

    def __init__(
        self,
        connection: sa.Connection,
        bundle: Bundle,
        graph: Graph,
        progress: Progress,
        batch_rows: int,
        result: ReverseLoadResult,
    ) -> None:
        self.conn = connection
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.rev = self.manifest["reverse"]
        self.graph = graph
        self.progress = progress
        self.batch_rows = batch_rows
        self.result = result
        # outside table -> bundle value -> source value (None: the source lacks it), and why
        self.maps: dict[str, dict[Any, Any]] = {}
        self.missing: dict[str, dict[Any, str]] = defaultdict(dict)
        self.alloc = _IdAllocator(connection)
        self._reflected: dict[str, sa.Table] = {}

    def reflected(self, name: str) -> sa.Table:
        if name not in self._reflected:
            self._reflected[name] = sa.Table(name, sa.MetaData(), autoload_with=self.conn)
        return self._reflected[name]

    # -- checks ---------------------------------------------------------------------------------

    def claim(self) -> None:
        """Record the bundle in ``bundler_loads`` first: a concurrent run of it waits here, then stops."""
        root = self.manifest["root"]
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    tracking.loads_table.insert().values(
                        bundle_id=self.bundle.bundle_id,
                        kind=REVERSE_KIND,
                        root_table=root["table"],
                        root_source_pk=None,
                        root_target_pk=str(root["source_pk"]),
                        root_key=key_text(root["natural_key"])[:255],
                        source_system=self.manifest["source"]["system_id"],
                        manifest_sha256=self.bundle.manifest_sha256,
                        depends_on=self.rev["export_bundle"],
                        loaded_at=tracking.now(),
                        outcome="running",
                        rows_created=0,
                        rows_reused=0,
                    )
                )
        except sa.exc.IntegrityError:
            raise BundlerError(
                f"reverse bundle {self.bundle.bundle_id} was applied by another run at the same time",
                hint="nothing was changed by this one; run it again to see the outcome",
            ) from None

    def root_row(self) -> None:
        root = self.manifest["root"]
        spec = self.graph.table(root["table"])
        t = table_clause(spec)
        pk = _typed(spec, spec.pk[0], str(root["source_pk"]))
        row = self.conn.execute(sa.select(t).where(t.c[spec.pk[0]] == pk)).mappings().first()
        name = f"{ROOT_KIND} {describe(root['natural_key'])}"
        if row is None:
            raise RootError(
                f"{name} ({spec.pk[0]}={pk}) is no longer in the source",
                hint="it cannot be returned; settle it by hand",
            )
        status = spec.status
        if status is not None:
            value = row[status.column]
            if value in status.terminated:
                raise RootError(
                    f"{name} was terminated in the source ({status.column} = {value!r}): "
                    "a customer terminated in the source cannot be restored",
                    hint="settle its usage and balance by hand, or reopen it in the source first",
                )
            if value != status.exported:
                raise RootError(
                    f"{name} is not Exported in the source ({status.column} = {value!r})",
                    hint="the source has taken it back already (a restored export?); nothing to return",
                )

    def check_export(self, system_id: str) -> None:
        exports, loads = tracking.exports_table, tracking.loads_table
        export_id = self.rev["export_bundle"]
        row = self.conn.execute(sa.select(exports).where(exports.c.bundle_id == export_id)).first()
        root = self.manifest["root"]
        if row is None or row.root_table != root["table"] or row.root_pk != str(root["source_pk"]):
            raise RootError(
                f"reverse bundle {self.bundle.bundle_id} is not for this source system: it returns "
                f"{ROOT_KIND} {describe(root['natural_key'])} of export {export_id}, which this source "
                f"({system_id}) did not make",
                hint="apply it to the source the customer was exported from",
            )
        if row.status == REVERSED:
            other = self.conn.execute(
                sa.select(loads.c.bundle_id).where(
                    loads.c.depends_on == export_id,
                    loads.c.kind == REVERSE_KIND,
                    loads.c.bundle_id != self.bundle.bundle_id,
                )
            ).first()
            by = f" by reverse bundle {other.bundle_id}" if other else ""
            raise RootError(
                f"export {export_id} was already reversed{by}", hint="a customer is returned once per export"
            )

    # -- prerequisites -------------------------------------------------------------------------

    def resolve(self) -> None:
        """Map every outside value of the bundle to the source's, or say why it cannot be."""
        by_key = set(self.rev["by_key"])
        for table, entry in sorted(self.manifest["prerequisites"].items()):
            spec = self.graph.table(table)
            column = entry["column"]
            values = {
                _typed(spec, column, str(r["value"])) if r["value"] is not None else None: r["key"]
                for r in entry["rows"]
            }
            mapping: dict[Any, Any] = {}
            if table in by_key:
                found = match_keys(self.conn, self.graph, spec, column, list(values.values()))
                for value, key in values.items():
                    mapping[value] = found.get(key_text(key))
                    if mapping[value] is None:
                        self.missing[table][value] = f"{table} {describe(key)} does not exist in the source"
            else:
                t = table_clause(spec)
                present: set[Any] = set()
                for part in chunks(sorted_values(values)):
                    present.update(
                        self.conn.execute(sa.select(t.c[column]).where(t.c[column].in_(part))).scalars()
                    )
                for value, key in values.items():
                    mapping[value] = value if value in present else None
                    if value not in present:
                        self.missing[table][value] = f"{table} {describe(key)} is no longer in the source"
            self.maps[table] = mapping

    # -- usage --------------------------------------------------------------------------------

    def usage(self, table: str) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        from bundler.bulk import insert_arrow

        spec = self.graph.table(table)
        target = self.reflected(table)
        plain_key = [c for c in spec.natural_key if c not in spec.ref_by_column]
        task = f"reverse load {table}"
        self.progress.start(task, self.bundle.tables()[table]["rows"])
        imported = skipped = 0
        for batch in self.bundle.iter_batches(table, self.batch_rows):
            self.progress.advance(task, batch.num_rows)
            reasons: dict[int, list[str]] = defaultdict(list)
            original = batch
            for ref in spec.references:
                idx = batch.schema.get_field_index(ref.column)
                mapping = self.maps.get(ref.table, {})
                mapped = []
                for i, v in enumerate(batch.column(idx).to_pylist()):
                    m = None if v is None else mapping.get(v)
                    if v is not None and m is None:
                        why = self.missing[ref.table].get(v, f"the bundle does not declare {ref.table} {v!r}")
                        reasons[i].append(f"{ref.column} = {v!r}: {why}")
                    mapped.append(m)
                batch = batch.set_column(
                    idx, batch.schema.field(idx), pa.array(mapped, batch.schema.field(idx).type)
                )
            keep = [i not in reasons for i in range(batch.num_rows)]
            for i in sorted(reasons):
                self.result.not_returned.append(self._report_row(spec, original, i, reasons[i]))
            if plain_key and len(plain_key) == len(spec.natural_key):
                present = self._present(spec, batch, plain_key)
                for i in range(batch.num_rows):
                    if keep[i] and tuple(key_value(batch.column(c)[i].as_py()) for c in plain_key) in present:
                        keep[i] = False
                        skipped += 1
            batch = batch.filter(pa.array(keep, pa.bool_()))
            if batch.num_rows == 0:
                continue
            bundle_pks = pc.cast(batch.column(spec.pk[0]), pa.string()) if len(spec.pk) == 1 else None
            if spec.surrogate:
                ids = pa.array(
                    self.alloc.take(table, spec.surrogate, batch.num_rows),
                    batch.schema.field(spec.surrogate).type,
                )
                batch = batch.set_column(
                    batch.schema.get_field_index(spec.surrogate), batch.schema.field(spec.surrogate), ids
                )
            insert_arrow(self.conn, target, batch)
            if bundle_pks is not None:
                self._ledger(table, bundle_pks, pc.cast(batch.column(spec.pk[0]), pa.string()))
            imported += batch.num_rows
        self.progress.finish(task)
        self.result.imported[table] = imported
        self.result.already_in_source[table] = skipped

    def _present(self, spec: TableSpec, batch: pa.RecordBatch, columns: list[str]) -> set[tuple[Any, ...]]:
        """The natural keys of the batch that the source already holds."""
        from bundler.load.load import _db_values

        t = table_clause(spec)
        first = columns[0]
        found: set[tuple[Any, ...]] = set()
        firsts = _db_values(spec, first, {key_value(v) for v in batch.column(first).to_pylist()})
        for part in chunks(sorted_values(firsts)):
            stmt = sa.select(*(t.c[c] for c in columns)).where(t.c[first].in_(part))
            found.update(tuple(key_value(v) for v in row) for row in self.conn.execute(stmt))
        return found

    def _report_row(
        self, spec: TableSpec, batch: pa.RecordBatch, i: int, reasons: list[str]
    ) -> dict[str, Any]:
        when = batch.column(spec.time_column)[i].as_py() if spec.time_column else None
        return {
            "table": spec.name,
            "natural_key": {c: key_value(batch.column(c)[i].as_py()) for c in spec.natural_key},
            "target_pk": key_value(batch.column(spec.pk[0])[i].as_py()),
            "time": key_value(when) if when is not None else None,
            "reasons": reasons,
        }

    def _ledger(self, table: str, bundle_pks: pa.Array, source_pks: pa.Array) -> None:
        import pyarrow as pa

        from bundler.bulk import insert_arrow

        n = len(bundle_pks)
        insert_arrow(
            self.conn,
            tracking.ledger_table,
            pa.RecordBatch.from_arrays(
                [
                    pa.array([self.bundle.bundle_id] * n, pa.string()),
                    pa.array([table] * n, pa.string()),
                    bundle_pks,
                    source_pks,
                    pa.array(["created"] * n, pa.string()),
                ],
                names=["bundle_id", "table_name", "source_pk", "target_pk", "action"],
            ),
        )

    # -- balances and statuses ----------------------------------------------------------------

    def balances(self) -> None:
        for row in self.rev["rows"]:
            if row["balance"] is None:
                continue
            spec = self.graph.table(row["table"])
            assert spec.balance is not None
            column = spec.balance.column
            pk = _typed(spec, spec.pk[0], str(row["source_pk"]))
            t = table_clause(spec)
            before = self.conn.execute(sa.select(t.c[column]).where(t.c[spec.pk[0]] == pk)).first()
            if before is None:
                self.result.warnings.append(
                    f"{spec.name} {describe(row['natural_key'])} is no longer in the source: its balance "
                    f"{row['balance']['value']} was not set"
                )
                continue
            after = Decimal(_decimal_text(spec, column, row["balance"]["value"]))
            old = Decimal(_decimal_text(spec, column, before[0])) if before[0] is not None else None
            table = self.reflected(spec.name)
            value: Any = str(after) if isinstance(table.c[column].type, sa.String) else after
            self.conn.execute(sa.update(table).where(table.c[spec.pk[0]] == pk).values({column: value}))
            self.result.balances.append(
                {
                    "table": spec.name,
                    "natural_key": row["natural_key"],
                    "source_pk": key_value(pk),
                    "column": column,
                    "before": key_value(old),
                    "after": key_value(after),
                    "difference": key_value(after - old) if old is not None else None,
                }
            )

    def statuses(self, bundle_graph: Graph) -> None:
        """Give every row the export marked its previous status back; warn about rows terminated in the target."""
        marks = tracking.export_marks_table
        in_target = {(r["table"], str(r["source_pk"])): r for r in self.rev["rows"]}
        for mark in self.conn.execute(
            sa.select(marks)
            .where(marks.c.bundle_id == self.rev["export_bundle"])
            .order_by(marks.c.table_name, marks.c.row_pk)
        ):
            spec = self.graph.table(mark.table_name)
            if spec.status is None:
                continue
            status = spec.status
            pk = _typed(spec, spec.pk[0], mark.row_pk)
            t = table_clause(spec)
            done = self.conn.execute(
                sa.update(t)
                .where(t.c[spec.pk[0]] == pk, t.c[status.column] == status.exported)
                .values({status.column: mark.previous_status})
            ).rowcount
            if not done:
                continue
            row = in_target.get((mark.table_name, mark.row_pk))
            key = (
                row["natural_key"]
                if row
                else natural_keys(self.conn, self.graph, spec.name, spec.pk[0], [pk]).get(pk, {})
            )
            self.result.statuses.append(
                {
                    "table": spec.name,
                    "natural_key": key,
                    "source_pk": key_value(pk),
                    "column": status.column,
                    "before": status.exported,
                    "after": mark.previous_status,
                }
            )
            theirs = bundle_graph.tables.get(spec.name)
            terminated = (
                theirs.status.terminated if theirs is not None and theirs.status else status.terminated
            )
            if (
                row is not None
                and row["status"] in terminated
                and mark.previous_status not in status.terminated
            ):
                self.result.warnings.append(
                    f"{spec.name} {describe(key)} was terminated in the target ({status.column} = {row['status']!r}) "
                    f"but is alive in the source and becomes {mark.previous_status!r} again; "
                    "terminate it in the source by hand if it must stay closed"
                )

    def record(self) -> None:
        now = tracking.now()
        loads = tracking.loads_table
        self.conn.execute(
            sa.update(loads)
            .where(loads.c.bundle_id == self.bundle.bundle_id)
            .values(outcome="loaded", loaded_at=now, rows_created=sum(self.result.imported.values()))
        )
        exports = tracking.exports_table
        self.conn.execute(
            sa.update(exports)
            .where(
                sa.or_(
                    exports.c.bundle_id == self.rev["export_bundle"],
                    exports.c.depends_on == self.rev["export_bundle"],
                )
            )
            .where(exports.c.status == "done")
            .values(
                status=REVERSED,
                message=f"returned by reverse bundle {self.bundle.bundle_id} on {now:%Y-%m-%d %H:%M:%S}",
            )
        )


def reverse_load(
    source_engine: sa.Engine,
    bundle_path: str | Path,
    *,
    spec: str | Path | None = None,
    report_dir: str | Path | None = None,
    progress: Progress | None = None,
    batch_rows: int = 65_536,
) -> ReverseLoadResult:
    """Apply a reverse bundle to the source it returns a customer to, in one transaction.

    Writes the report (``<bundle id>.report.json`` and ``.report.txt``) into
    ``report_dir`` (default: beside the bundle). See the module docstring for the steps.
    """
    from bundler.inspect.verify import verify_bundle

    progress = progress or NullProgress()
    started = time.monotonic()
    with open_bundle(bundle_path) as bundle:
        manifest = bundle.manifest
        if manifest.get("kind") != REVERSE_KIND:
            raise UsageError(
                f"bundle {bundle.name} is a {manifest.get('kind')!r} bundle, not a reverse bundle",
                hint="load it with bundler load; bundler reverse load takes what bundler reverse export wrote",
            )
        report = verify_bundle(bundle.source)
        if report.problems:
            raise BundleInvalid(
                bundle.name,
                [str(p) for p in report.problems],
                hint="run bundler inspect verify for the full list",
            )
        if "reverse" not in manifest:
            raise BundleInvalid(bundle.name, ["manifest.json of a reverse bundle has no reverse section"])
        bundle_graph = _bundle_graph(manifest)
        with begin_write(source_engine) as connection:
            graph, system = source_graph(connection, spec)
        result = ReverseLoadResult(bundle.bundle_id, str(bundle_path), "returned", manifest["root"])
        rev = manifest["reverse"]
        if rev["source_system"] != system.system_id:
            raise RootError(
                f"reverse bundle {bundle.bundle_id} is not for this source system: it returns "
                f"{ROOT_KIND} {describe(manifest['root']['natural_key'])} to system {rev['source_system']}, "
                f"this database is system {system.system_id}",
                hint="apply it to the source the customer was exported from",
            )
        usage = [t for t in bundle.tables() if bundle_graph.table(t).scope == "usage"]
        if len(usage) != len(bundle.tables()):
            others = ", ".join(sorted(set(bundle.tables()) - set(usage)))
            raise BundleInvalid(bundle.name, [f"a reverse bundle carries usage only; it holds {others}"])
        _compatible(bundle_graph, graph, manifest, usage)
        with begin_write(source_engine) as connection:
            loads = tracking.loads_table
            done = connection.execute(sa.select(loads).where(loads.c.bundle_id == bundle.bundle_id)).first()
            if done is not None:
                if done.manifest_sha256 != bundle.manifest_sha256:
                    raise BundleInvalid(
                        bundle.name,
                        [f"a different bundle with id {bundle.bundle_id} was applied on {done.loaded_at}"],
                        hint="bundle ids are unique: this one was altered or re-made by hand",
                    )
                result.outcome = "already-returned"
                result.seconds = time.monotonic() - started
                return result
            apply = _Apply(connection, bundle, graph, progress, batch_rows, result)
            apply.claim()
            apply.check_export(system.system_id)
            apply.root_row()
            apply.resolve()
            for table in [t for t in graph.dependency_order if t in usage]:
                apply.usage(table)
            apply.balances()
            apply.statuses(bundle_graph)
            apply.record()
        result.not_returned[:0] = rev["not_returned"]
        result.report_paths = _write_report(
            result, Path(report_dir) if report_dir else Path(bundle.source).parent
        )
    for warning in result.warnings:
        progress.note(f"{result.bundle_id}: {warning}")
    result.seconds = time.monotonic() - started
    return result


def _write_report(result: ReverseLoadResult, folder: Path) -> list[Path]:
    """``<bundle id>.report.json`` and ``.report.txt`` in ``folder``, each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    doc = result.summary()
    doc.pop("report", None)
    doc.pop("seconds", None)
    for suffix, text in (
        (".report.json", json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"),
        (".report.txt", "\n".join(result.lines()) + "\n"),
    ):
        path = folder / f"{result.bundle_id}{suffix}"
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written
