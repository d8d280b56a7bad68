"""Applying a reverse bundle to the source, inside its transaction: claim the bundle,
check the export and the customer, map the outside values, insert the usage, set the
balances, give back the statuses and record it all."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler import tracking
from bundler.bundle import Bundle
from bundler.errors import BundlerError
from bundler.graph import Graph, TableSpec
from bundler.ids import IdAllocator
from bundler.keys import describe, key_text, key_value
from bundler.manifest import Outside
from bundler.progress import Progress
from bundler.reverse.checks import check_export_record, check_root_row
from bundler.reverse.common import REVERSE_KIND, REVERSED, parent_columns, reverse_section, root_of
from bundler.reverse.report import ReverseLoadResult
from bundler.sql import chunks, db_values, match_keys, natural_keys, sorted_values, table_clause

if TYPE_CHECKING:
    import pyarrow as pa


def _decimal_text(spec: TableSpec, column: str, value: Any) -> str:
    """A decimal value with exactly the column's scale, as text."""
    from bundler.graph import arrow_type

    scale = getattr(arrow_type(spec.column_map[column].type), "scale", 0)
    return format(Decimal(str(value)).quantize(Decimal(1).scaleb(-scale)), "f")


class Apply:
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
        self.root = root_of(self.manifest, bundle.name)
        self.rev = reverse_section(self.manifest, bundle.name)
        self.graph = graph
        self.progress = progress
        self.batch_rows = batch_rows
        self.result = result
        # outside table -> bundle value -> source value (None: the source lacks it), and why
        self.maps: dict[str, dict[Any, Any]] = {}
        self.missing: dict[str, dict[Any, str]] = defaultdict(dict)
        self.alloc = IdAllocator(connection)
        self._reflected: dict[str, sa.Table] = {}

    def reflected(self, name: str) -> sa.Table:
        if name not in self._reflected:
            self._reflected[name] = sa.Table(name, sa.MetaData(), autoload_with=self.conn)
        return self._reflected[name]

    # -- checks ---------------------------------------------------------------------------------

    def claim(self) -> None:
        """Record the bundle in ``bundler_loads`` first: a concurrent run of it waits here, then stops."""
        root = self.root
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    tracking.loads_table.insert().values(
                        bundle_id=self.bundle.bundle_id,
                        kind=REVERSE_KIND,
                        root_table=root.table,
                        root_source_pk=None,
                        root_target_pk=str(root.source_pk),
                        root_key=key_text(root.natural_key)[:255],
                        source_system=self.manifest.source.system_id,
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
        """Refuse a customer the source no longer has, has terminated, or has taken back."""
        check_root_row(self.conn, self.graph, self.root)

    def check_export(self, system_id: str) -> None:
        """Refuse an export this source did not make, or one already reversed."""
        check_export_record(self.conn, self.root, self.rev["export_bundle"], system_id, self.bundle.bundle_id)

    # -- prerequisites -------------------------------------------------------------------------

    def resolve(self) -> None:
        """Map every outside value of the bundle to the source's, or say why it cannot be."""
        by_key = set(self.rev["by_key"])
        for table, entry in sorted(self.manifest.prerequisites.items()):
            spec = self.graph.table(table)
            values = {
                spec.from_text(entry.column, str(r.value)) if r.value is not None else None: r.key
                for r in entry.rows
            }
            if table in by_key:
                self.maps[table] = self._by_key(spec, entry, values)
            else:
                self.maps[table] = self._present_values(spec, entry, values)

    def _by_key(self, spec: TableSpec, entry: Outside, values: dict[Any, Any]) -> dict[Any, Any]:
        """Bundle value → the source's value of the row with the same natural key (None: none)."""
        mapping: dict[Any, Any] = {}
        found = match_keys(self.conn, self.graph, spec, entry.column, list(values.values()))
        for value, key in values.items():
            mapping[value] = found.get(key_text(key))
            if mapping[value] is None:
                self.missing[spec.name][value] = f"{spec.name} {describe(key)} does not exist in the source"
        return mapping

    def _present_values(self, spec: TableSpec, entry: Outside, values: dict[Any, Any]) -> dict[Any, Any]:
        """Bundle value → itself where the source still has it (the value is the source's already)."""
        column = entry.column
        t = table_clause(spec)
        present: set[Any] = set()
        for part in chunks(sorted_values(values)):
            present.update(self.conn.execute(sa.select(t.c[column]).where(t.c[column].in_(part))).scalars())
        mapping: dict[Any, Any] = {}
        for value, key in values.items():
            mapping[value] = value if value in present else None
            if value not in present:
                self.missing[spec.name][value] = f"{spec.name} {describe(key)} is no longer in the source"
        return mapping

    # -- usage --------------------------------------------------------------------------------

    def usage(self, table: str) -> None:
        """Insert the usage rows of ``table`` the source can take and has not got yet."""
        spec = self.graph.table(table)
        self.reflected(table)  # the source must have the table, rows or not
        task = f"reverse load {table}"
        self.progress.start(task, self.manifest.tables[table].rows)
        imported = skipped = 0
        for batch in self.bundle.iter_batches(table, self.batch_rows):
            self.progress.advance(task, batch.num_rows)
            mapped, keep = self._mapped(spec, batch)
            skipped += self._skip_present(spec, mapped, keep)
            imported += self._insert(spec, mapped, keep)
        self.progress.finish(task)
        self.result.imported[table] = imported
        self.result.already_in_source[table] = skipped

    def _mapped(self, spec: TableSpec, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, list[bool]]:
        """``batch`` with its references as the source's values, and which rows can be returned.

        Rows with a reference the source cannot take are reported as not returned.
        """
        import pyarrow as pa

        reasons: dict[int, list[str]] = defaultdict(list)
        original = batch
        parent = self.graph.usage_parent(spec)
        for ref in spec.references:
            idx = batch.schema.get_field_index(ref.column)
            mapping = self.maps.get(ref.table, {})
            unknown = (
                f"its {ref.table} row {{!r}} was not returned to the source"
                if ref == parent
                else f"the bundle does not declare {ref.table} {{!r}}"
            )
            mapped = []
            for i, v in enumerate(batch.column(idx).to_pylist()):
                m = None if v is None else mapping.get(v)
                if v is not None and m is None:
                    why = self.missing[ref.table].get(v, unknown.format(v))
                    reasons[i].append(f"{ref.column} = {v!r}: {why}")
                mapped.append(m)
            batch = batch.set_column(
                idx, batch.schema.field(idx), pa.array(mapped, batch.schema.field(idx).type)
            )
        for i in sorted(reasons):
            item = self._report_row(spec, original, i, reasons[i])
            self.result.not_returned.append(item)
            amount = item.get("amount", {}).get("value")
            if amount is not None:
                self.result.dropped[spec.name] = key_value(
                    Decimal(self.result.dropped.get(spec.name, "0")) + Decimal(amount)
                )
        return batch, [i not in reasons for i in range(batch.num_rows)]

    def _skip_present(self, spec: TableSpec, batch: pa.RecordBatch, keep: list[bool]) -> int:
        """Unmark the rows whose natural key the source already holds; how many there were."""
        plain_key = [c for c in spec.natural_key if c not in spec.ref_by_column]
        if not plain_key or len(plain_key) != len(spec.natural_key):
            return 0
        skipped = 0
        present = self._present(spec, batch, plain_key)
        for i in range(batch.num_rows):
            if keep[i] and tuple(key_value(batch.column(c)[i].as_py()) for c in plain_key) in present:
                keep[i] = False
                skipped += 1
        return skipped

    def _insert(self, spec: TableSpec, batch: pa.RecordBatch, keep: list[bool]) -> int:
        """Insert the kept rows with new source ids, recorded in the ledger; how many."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from bundler.bulk import ValueRefused, insert_arrow

        batch = batch.filter(pa.array(keep, pa.bool_()))
        if batch.num_rows == 0:
            return 0
        bundle_keys = {c: batch.column(c) for c in spec.pk}
        followed = {c: batch.column(c) for c in parent_columns(self.graph, spec)}
        bundle_pks = pc.cast(batch.column(spec.pk[0]), pa.string()) if len(spec.pk) == 1 else None
        if spec.surrogate:
            ids = pa.array(
                self.alloc.take(spec.name, spec.surrogate, batch.num_rows),
                batch.schema.field(spec.surrogate).type,
            )
            batch = batch.set_column(
                batch.schema.get_field_index(spec.surrogate), batch.schema.field(spec.surrogate), ids
            )
        try:
            insert_arrow(self.conn, self.reflected(spec.name), batch)
        except ValueRefused as exc:
            known = exc.row is not None and 0 <= exc.row < batch.num_rows
            row = describe({c: v[exc.row].as_py() for c, v in bundle_keys.items()}) if known else "?"
            refused = exc.named(
                f"reverse bundle {self.bundle.bundle_id}: table {spec.name}, row {row} (key in the bundle)",
                None
                if exc.nul
                else "nothing was written; widen the source's column to hold the value, then load the "
                "reverse bundle again",
            )
            raise refused from refused.cause(exc)
        if bundle_pks is not None:
            self._ledger(spec.name, bundle_pks, pc.cast(batch.column(spec.pk[0]), pa.string()))
        for column, values in followed.items():  # its usage children follow the new ids
            mapping = self.maps.setdefault(spec.name, {})
            mapping.update(zip(values.to_pylist(), batch.column(column).to_pylist(), strict=True))
        return batch.num_rows

    def _present(self, spec: TableSpec, batch: pa.RecordBatch, columns: list[str]) -> set[tuple[Any, ...]]:
        """The natural keys of the batch that the source already holds."""

        t = table_clause(spec)
        first = columns[0]
        found: set[tuple[Any, ...]] = set()
        firsts = db_values(spec, first, {key_value(v) for v in batch.column(first).to_pylist()})
        for part in chunks(sorted_values(firsts)):
            stmt = sa.select(*(t.c[c] for c in columns)).where(t.c[first].in_(part))
            found.update(tuple(key_value(v) for v in row) for row in self.conn.execute(stmt))
        return found

    def _report_row(
        self, spec: TableSpec, batch: pa.RecordBatch, i: int, reasons: list[str]
    ) -> dict[str, Any]:
        when = batch.column(spec.time_column)[i].as_py() if spec.time_column else None
        item = {
            "table": spec.name,
            "natural_key": {c: key_value(batch.column(c)[i].as_py()) for c in spec.natural_key},
            "target_pk": key_value(batch.column(spec.pk[0])[i].as_py()),
            "time": key_value(when) if when is not None else None,
            "reasons": reasons,
        }
        if spec.amount is not None:
            item["amount"] = {"column": spec.amount, "value": key_value(batch.column(spec.amount)[i].as_py())}
        return item

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
        """Set every balance the bundle carries to the target's figure; note the adjustment."""
        for row in self.rev["rows"]:
            if row["balance"] is not None:
                self._balance(row)
            elif row.get("held") is not None:
                self._held(row)

    def _held(self, row: dict[str, Any]) -> None:
        """Report a balance the bundle does not carry that the target changed: it is not returned."""
        spec = self.graph.table(row["table"])
        held = row["held"]
        column = held["column"]
        pk = spec.from_text(spec.pk[0], str(row["source_pk"]))
        t = table_clause(spec)
        here = self.conn.execute(sa.select(t.c[column]).where(t.c[spec.pk[0]] == pk)).first()
        if here is None or held["value"] is None:
            return
        theirs = Decimal(_decimal_text(spec, column, held["value"]))
        ours = Decimal(_decimal_text(spec, column, here[0])) if here[0] is not None else None
        if ours == theirs:
            return
        self.result.not_returned.append(
            {
                "table": spec.name,
                "natural_key": row["natural_key"],
                "target_pk": row["source_pk"],
                "time": None,
                "amount": {"column": column, "value": key_value(theirs)},
                "reasons": [
                    f"its {column} changed on the target to {key_value(theirs)} (the source's is {key_value(ours)}): "
                    f"a reverse bundle carries the {column} only of rows with "
                    + ", ".join(
                        f"{c} in {list(v)}" for c, v in (spec.balance.where if spec.balance else {}).items()
                    )
                ],
            }
        )

    def _balance(self, row: dict[str, Any]) -> None:
        spec = self.graph.table(row["table"])
        assert spec.balance is not None
        column = spec.balance.column
        pk = spec.from_text(spec.pk[0], str(row["source_pk"]))
        t = table_clause(spec)
        before = self.conn.execute(sa.select(t.c[column]).where(t.c[spec.pk[0]] == pk)).first()
        if before is None:
            self.result.warnings.append(
                f"{spec.name} {describe(row['natural_key'])} is no longer in the source: its balance "
                f"{row['balance']['value']} was not set"
            )
            return
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
                "explained": row["balance"].get("explained"),
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
            if spec.status is not None:
                self._status(spec, mark, in_target.get((mark.table_name, mark.row_pk)), bundle_graph)

    def _status(self, spec: TableSpec, mark: Any, row: dict[str, Any] | None, bundle_graph: Graph) -> None:
        status = spec.status
        assert status is not None
        pk = spec.from_text(spec.pk[0], mark.row_pk)
        t = table_clause(spec)
        done = self.conn.execute(
            sa.update(t)
            .where(t.c[spec.pk[0]] == pk, t.c[status.column] == status.exported)
            .values({status.column: mark.previous_status})
        ).rowcount
        if not done:
            return
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
        terminated = theirs.status.terminated if theirs is not None and theirs.status else status.terminated
        if row is not None and row["status"] in terminated and mark.previous_status not in status.terminated:
            self.result.warnings.append(
                f"{spec.name} {describe(key)} was terminated in the target ({status.column} = {row['status']!r}) "
                f"but is alive in the source and becomes {mark.previous_status!r} again; "
                "terminate it in the source by hand if it must stay closed"
            )

    def record(self) -> None:
        """The bundle loaded, in ``bundler_loads``; the export (and its usage exports) reversed."""
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
