"""Reading the target for a reverse export: the customer's rows with status and balance,
and its usage sorted into returnable, already in the source, and not returnable."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler.bundle_writer import BundleWriter
from bundler.errors import BundlerError
from bundler.export.snapshot import Snapshot
from bundler.graph import Graph, Scope, TableSpec
from bundler.keys import Key, describe, key_value
from bundler.ledger import ledger_map
from bundler.manifest import Outside, OutsideRow
from bundler.marking import Marks, Root
from bundler.progress import Progress
from bundler.reverse.common import REVERSE_KIND, Origin, parent_columns
from bundler.sql import Closure, chunks, natural_keys, sorted_values, table_clause

if TYPE_CHECKING:
    import pyarrow as pa


class _Explained:
    """What a travelling balance holds: the returned usage, and the items not returned, by table."""

    def __init__(self) -> None:
        self.returned = Decimal(0)
        self.not_returned: dict[str, Decimal] = {}

    def to_doc(self) -> dict[str, Any]:
        return {
            "returned_usage": format(self.returned, "f"),
            "not_returned": {t: format(v, "f") for t, v in sorted(self.not_returned.items())},
        }


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


class Reader:
    """Reads the root's state and usage in the target and writes the reverse bundle's tables."""

    def __init__(
        self,
        snapshot: Snapshot,
        graph: Graph,
        root: Root,
        origin: Origin,
        writer: BundleWriter,
        marks: Marks,
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
        self.owned: Closure | None = None
        # (table, target pk) of each row whose balance travels -> the amounts its figure holds
        self.explained: dict[tuple[str, Any], _Explained] = {}
        # usage table with usage children -> the values its children reference, of the rows returned
        self.returned_values: dict[str, set[Any]] = {}

    def run(self) -> None:
        """Read everything; the findings stay on the reader (``rows``, ``returnable``, …)."""
        owned = Closure(self.conn, self.graph, follow_shared=False)
        owned.add(self.root.spec.name, [self.root.row])
        owned.run()
        self.owned = owned
        self._rows(owned)
        for spec in owned.tables((Scope.OWNED,)):
            if len(spec.pk) == 1:
                self._made_on_target(spec, owned)
        selected: dict[str, sa.ColumnElement[bool]] = {}
        for spec in self.graph.tables_in_order((Scope.USAGE,)):
            parent = self.graph.usage_parent(spec)
            where: sa.ColumnElement[bool] | None
            if parent is not None:
                # a usage row of a usage row (an invoice line of its invoice): read with its parents
                if parent.table not in selected:
                    continue
                of_parent = table_clause(self.graph.table(parent.table)).c[parent.target_column]
                where = (
                    table_clause(spec)
                    .c[parent.column]
                    .in_(sa.select(of_parent).where(selected[parent.table]))
                )
            else:
                where = owned.usage_selection(spec)
            if where is not None:
                selected[spec.name] = where
                self._usage(spec, where)
        for row in self.rows:
            found = self.explained.get((row["table"], row.pop("_target_pk")))
            if found is not None and row["balance"] is not None:
                row["balance"]["explained"] = found.to_doc()
        if self.before_period and self.period_start is not None:
            self.warnings.append(
                f"{self.before_period} returnable row(s) are from before the current billing period "
                f"(which began {self.period_start}): if the source has closed that period, they will not be billed"
            )

    # -- the root's rows: status and balance ------------------------------------------------

    def _rows(self, owned: Closure) -> None:
        for spec in owned.tables((Scope.OWNED,)):
            if spec.status is None and spec.balance is None:
                continue
            if len(spec.pk) != 1:
                continue
            found = self._state(spec, [pk[0] for pk in owned.rows[spec.name]])
            keys = natural_keys(self.conn, self.graph, spec.name, spec.pk[0], list(found))
            back = self.ledger.map(spec.name, list(found))
            marked = self.marks.by_table.get(spec.name, {})
            for pk in sorted_values(found):
                self._row(spec, pk, found[pk], keys.get(pk, {}), back.get(str(pk)), marked)

    def _state(self, spec: TableSpec, pks: list[Any]) -> dict[Any, dict[str, Any]]:
        """The pk, status, balance and amount columns of the rows of ``spec`` with these pks, by pk."""
        pk_col = spec.pk[0]
        wanted = [pk_col]
        if spec.status:
            wanted.append(spec.status.column)
        if spec.balance:
            wanted += [spec.balance.column, *spec.balance.where]
        if spec.amount:
            wanted.append(spec.amount)
        t = table_clause(spec)
        found: dict[Any, dict[str, Any]] = {}
        for part in chunks(sorted_values(pks)):
            stmt = sa.select(*(t.c[c] for c in dict.fromkeys(wanted))).where(t.c[pk_col].in_(part))
            found.update({r[pk_col]: dict(r) for r in self.conn.execute(stmt).mappings()})
        return found

    def _row(
        self,
        spec: TableSpec,
        pk: Any,
        row: dict[str, Any],
        key: Key,
        source_pk: str | None,
        marked: dict[Any, str],
    ) -> None:
        """One of the root's rows: to return (with status and balance), or made on the target."""
        status = None
        if spec.status:
            status = marked.get(pk, row[spec.status.column])  # as it was before this export marked it
        balance = None
        if spec.balance and all(row[c] in allowed for c, allowed in spec.balance.where.items()):
            balance = {"column": spec.balance.column, "value": key_value(row[spec.balance.column])}
            self.explained[(spec.name, pk)] = _Explained()
        if source_pk is None:
            held = f"; its {balance['column']} {balance['value']} stays in the target" if balance else ""
            item: dict[str, Any] = {
                "table": spec.name,
                "natural_key": key,
                "target_pk": key_value(pk),
                "time": None,
                "reasons": [f"made on the target: the source has no such row{held}"],
            }
            if balance:
                item["amount"] = {"column": balance["column"], "value": balance["value"]}
            self.not_returned.append(item)
            return
        self.rows.append(
            {
                "table": spec.name,
                "source_pk": key_value(spec.from_text(spec.pk[0], source_pk)),
                "natural_key": key,
                "status": status,
                "balance": balance,
                "_target_pk": pk,  # dropped once the balances are explained
            }
        )
        if spec.balance and balance is None:
            # not carried (a credit account's): reverse load reports it if it differs in the source
            self.rows[-1]["held"] = {
                "column": spec.balance.column,
                "value": key_value(row[spec.balance.column]),
            }

    def _made_on_target(self, spec: TableSpec, owned: Closure) -> None:
        """Report the root's rows of ``spec`` that no load brought (a payment, an invoice made on the target).

        Tables with a status or a balance are reported by :meth:`_row` already.
        """
        if spec.status is not None or spec.balance is not None:
            return
        rows = owned.rows.get(spec.name, {})
        if not rows:
            return
        came = self.ledger.map(spec.name, [pk[0] for pk in rows])
        made = [pk[0] for pk in rows if str(pk[0]) not in came]
        if not made:
            return
        keys = natural_keys(self.conn, self.graph, spec.name, spec.pk[0], made)
        amounts = self._state(spec, made) if spec.amount is not None else {}
        for pk in sorted_values(made):
            row = {**rows[(pk,)], **amounts.get(pk, {})}
            item: dict[str, Any] = {
                "table": spec.name,
                "natural_key": keys.get(pk, {}),
                "target_pk": key_value(pk),
                "time": None,
                "reasons": ["made on the target: the source has no such row"],
            }
            if spec.amount is not None:
                item["amount"] = {"column": spec.amount, "value": key_value(row[spec.amount])}
                self._attribute(spec, row, row[spec.amount], returned=False)
            self.not_returned.append(item)

    def _holder(self, spec: TableSpec, row: dict[str, Any]) -> tuple[str, Any] | None:
        """The nearest row up ``row``'s owners whose balance travels (its charges are that balance's)."""
        assert self.owned is not None
        for _ in range(len(self.graph.tables)):
            for ref in spec.owner_refs:
                value = row.get(ref.column)
                parent = self.owned.rows.get(ref.table, {}).get((value,)) if value is not None else None
                if parent is None:
                    continue
                if (ref.table, value) in self.explained:
                    return (ref.table, value)
                spec, row = self.graph.table(ref.table), parent
                break
            else:
                return None
        return None

    def _attribute(self, spec: TableSpec, row: dict[str, Any], amount: Any, *, returned: bool) -> None:
        """Count ``amount`` into the explanation of the balance that holds ``row``."""
        holder = self._holder(spec, row) if amount is not None else None
        if holder is None:
            return
        found = self.explained[holder]
        if returned:
            found.returned += Decimal(amount)
        else:
            found.not_returned[spec.name] = found.not_returned.get(spec.name, Decimal(0)) + Decimal(amount)

    def _attribute_batch(
        self, spec: TableSpec, batch: pa.RecordBatch, rows: list[int], *, returned: bool
    ) -> None:
        """Count the amounts of ``rows`` of ``batch`` (target values) into the balances that hold them."""
        if spec.amount is None or not rows:
            return
        amounts = batch.column(spec.amount).to_pylist()
        owners = {ref.column: batch.column(ref.column).to_pylist() for ref in spec.owner_refs}
        for i in rows:
            self._attribute(spec, {c: v[i] for c, v in owners.items()}, amounts[i], returned=returned)

    # -- usage --------------------------------------------------------------------------------

    def by_key_tables(self) -> list[str]:
        """The outside tables whose values stay the target's, matched by natural key at load."""
        return sorted(t for t in self.used if self.graph.table(t).scope is Scope.PREREQUISITE)

    def _resolve(self, table: str, column: str, values: set[Any]) -> None:
        """Fill ``mapped`` and ``keys`` for the target values of ``table.column`` not seen yet."""
        new = {v for v in values if v not in self.mapped[table]}
        if not new:
            return
        spec = self.graph.table(table)
        keys = natural_keys(self.conn, self.graph, table, column, new)
        by_key = spec.scope is Scope.PREREQUISITE
        back = {} if by_key else self.ledger.map(table, list(new))
        for v in new:
            self.keys[table][v] = keys.get(v)
            if keys.get(v) is None:
                self.mapped[table][v] = None
            elif by_key:
                self.mapped[table][v] = v
            else:
                source = back.get(str(v))
                self.mapped[table][v] = spec.from_text(column, source) if source is not None else None

    def _reason(self, spec: TableSpec, column: str, value: Any) -> str:
        ref = spec.ref_by_column[column]
        if ref == self.graph.usage_parent(spec):
            return f"{column} = {value!r}: its {ref.table} row is not returned by this bundle"
        key = self.keys[ref.table].get(value)
        if key is None:
            return f"{column} = {value!r}: the target has no {ref.table} row with {ref.target_column} = {value!r}"
        return (
            f"{column} = {value!r}: {ref.table} {describe(key)} was made on the target "
            "(no load from the source brought it)"
        )

    def _usage(self, spec: TableSpec, where: sa.ColumnElement[bool]) -> None:
        out = self.writer.table(spec.name, spec.arrow_schema(), spec.scope, spec.sensitive)
        task = f"reverse export {spec.name}"
        self.progress.start(task)
        for batch in self._scanned(spec, where):
            self.progress.advance(task, batch.num_rows)
            kept = self._returnable(spec, batch)
            if kept.num_rows == 0:
                continue
            self._attribute_batch(spec, kept, list(range(kept.num_rows)), returned=True)
            for column in parent_columns(self.graph, spec):  # the rows their usage children may follow
                self.returned_values.setdefault(spec.name, set()).update(kept.column(column).to_pylist())
            kept = self._to_source(spec, kept)
            self._count_before_period(spec, kept)
            out.write(kept)
            self.returnable[spec.name] = self.returnable.get(spec.name, 0) + kept.num_rows
        self.progress.finish(task)

    def _returnable(self, spec: TableSpec, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of ``batch`` to return: new on the target, every reference mapping back.

        Counts the rows already in the source; reports the others with their reasons.
        """
        import pyarrow as pa

        pks = batch.column(spec.pk[0]).to_pylist()
        came = self.ledger.map(spec.name, pks)
        fresh = [str(pk) not in came for pk in pks]
        self.from_source[spec.name] = self.from_source.get(spec.name, 0) + fresh.count(False)
        columns = {ref.column: batch.column(ref.column).to_pylist() for ref in spec.references}
        parent = self.graph.usage_parent(spec)
        for ref in spec.references:
            values = {v for v, f in zip(columns[ref.column], fresh, strict=True) if f and v is not None}
            if ref == parent:  # a parent returned in this bundle keeps its value (the load maps it)
                returned = self.returned_values.get(ref.table, set())
                self.mapped[ref.table].update((v, v if v in returned else None) for v in values)
                unseen = {v for v in values if v not in returned and v not in self.keys[ref.table]}
                if unseen:  # the natural keys of the parents left behind, for the report
                    self.keys[ref.table].update(
                        natural_keys(self.conn, self.graph, ref.table, ref.target_column, unseen)
                    )
            else:
                self._resolve(ref.table, ref.target_column, values)
        keep = [is_fresh and self._maps_back(spec, batch, i, columns) for i, is_fresh in enumerate(fresh)]
        return batch.filter(pa.array(keep, pa.bool_()))

    def _maps_back(
        self, spec: TableSpec, batch: pa.RecordBatch, i: int, columns: dict[str, list[Any]]
    ) -> bool:
        """Whether every reference of row ``i`` maps back to the source; if not, it is reported."""
        reasons = [
            self._reason(spec, ref.column, columns[ref.column][i])
            for ref in spec.references
            if columns[ref.column][i] is not None
            and self.mapped[ref.table].get(columns[ref.column][i]) is None
        ]
        if reasons:
            self.not_returned.append(self._report_row(spec, batch, i, reasons))
            self._attribute_batch(spec, batch, [i], returned=False)
        return not reasons

    def _to_source(self, spec: TableSpec, kept: pa.RecordBatch) -> pa.RecordBatch:
        """``kept`` with every reference as the bundle carries it; the values used are noted."""
        import pyarrow as pa

        for ref in spec.references:
            idx = kept.schema.get_field_index(ref.column)
            table_map = self.mapped[ref.table]
            original = kept.column(idx).to_pylist()
            mapped = [None if v is None else table_map[v] for v in original]
            kept = kept.set_column(idx, kept.schema.field(idx), pa.array(mapped, kept.schema.field(idx).type))
            if ref == self.graph.usage_parent(spec):
                continue  # its parent travels in the bundle: not an outside row
            column, used = self.used.setdefault(ref.table, (ref.target_column, set()))
            if column != ref.target_column:
                raise BundlerError(
                    f"{ref.table} is referenced through several columns ({column}, {ref.target_column}); "
                    "a bundle declares one column per outside table"
                )
            used.update((m, v) for m, v in zip(mapped, original, strict=True) if v is not None)
        return kept

    def _count_before_period(self, spec: TableSpec, kept: pa.RecordBatch) -> None:
        import pyarrow as pa

        when = kept.schema.field(spec.time_column).type if spec.time_column else None
        if when is not None and pa.types.is_timestamp(when) and self.period_start is not None:
            import pyarrow.compute as pc

            early = pc.less(kept.column(spec.time_column), pa.scalar(self.period_start, when))
            self.before_period += int(pc.sum(early).as_py() or 0)

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
        item = {
            "table": spec.name,
            "natural_key": key,
            "target_pk": key_value(batch.column(spec.pk[0])[i].as_py()),
            "time": key_value(when) if when is not None else None,
            "reasons": reasons,
        }
        if spec.amount is not None:
            item["amount"] = {"column": spec.amount, "value": key_value(batch.column(spec.amount)[i].as_py())}
        return item

    def prerequisites(self) -> dict[str, Outside]:
        """Every outside row the returnable rows reference: value in the bundle → natural key."""
        out: dict[str, Outside] = {}
        for table in sorted(self.used):
            column, pairs = self.used[table]
            rows = {}
            for value, target_value in pairs:
                key = self.keys[table][target_value]
                assert key is not None
                rows[value] = key
            out[table] = Outside(
                column,
                self.graph.table(table).scope,
                tuple(OutsideRow(key_value(v), rows[v]) for v in sorted_values(rows)),
            )
        return out
