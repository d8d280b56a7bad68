"""Layers: shared rows that earlier bundles of the same source already carried.

A layered bundle (format 2) carries its root's own rows and only those shared rows that
no earlier bundle it depends on carried as they are now; the others travel as references
(their source key and natural key, under the manifest's outside rows with ``from``
naming the bundle that carried them). The load maps them through that bundle's ledger.

What a bundle carried is read from the bundle itself, so ``bundler export --after
BUNDLE…`` works offline; the lineup keeps the layers of its run in memory. Each carried
row is remembered with a digest of its content: a shared row that changed in the source
since (a tariff edited mid-run) does not match and is carried again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bundler.errors import UsageError
from bundler.graph import Graph, TableSpec
from bundler.keys import key_value
from bundler.manifest import Outside, OutsideRow
from bundler.sql import Closure, chunks, natural_keys, sorted_values, table_clause

if TYPE_CHECKING:
    import pyarrow as pa
    import sqlalchemy as sa

    from bundler.bundle import Bundle


def row_digests(batch: pa.RecordBatch | pa.Table, spec: TableSpec) -> list[str]:
    """A digest of each row's content, over the graph's columns in the graph's order.

    Values are rendered as natural-key values are, so a row read from the source and the
    same row read back from a bundle's Parquet file give the same digest.
    """
    names = [c for c in spec.column_names if c in batch.schema.names]
    columns = [batch.column(c).to_pylist() for c in names]
    out = []
    for values in zip(*columns, strict=True):
        text = json.dumps([key_value(v) for v in values], ensure_ascii=False, separators=(",", ":"))
        out.append(hashlib.sha256(text.encode()).hexdigest()[:32])
    return out


@dataclass
class Layers:
    """Shared rows carried by earlier bundles of one source system: table → pk → (bundle, digest)."""

    system_id: str
    carried: dict[str, dict[Any, tuple[str, str]]] = field(default_factory=dict)
    bundles: list[str] = field(default_factory=list)

    def add_rows(self, bundle_id: str, spec: TableSpec, batches: Iterable[pa.RecordBatch]) -> None:
        """Remember the shared rows of ``spec`` that ``bundle_id`` carried (later bundles win)."""
        if len(spec.pk) != 1:
            return  # composite keys (link tables) are reached through their owners, never referenced
        mine = self.carried.setdefault(spec.name, {})
        for batch in batches:
            pks = batch.column(spec.pk[0]).to_pylist()
            for pk, digest in zip(pks, row_digests(batch, spec), strict=True):
                mine[pk] = (bundle_id, digest)
        if bundle_id not in self.bundles:
            self.bundles.append(bundle_id)

    def add_bundle(self, bundle: Bundle, graph: Graph) -> None:
        """Remember what an earlier bundle carried (it must come from the same source system)."""
        manifest = bundle.manifest
        if manifest.source.system_id != self.system_id:
            raise UsageError(
                f"bundle {bundle.name} comes from source system {manifest.source.system_id}, "
                f"this source is {self.system_id}",
                hint="--after takes bundles exported from the same source",
            )
        for table, entry in manifest.tables.items():
            spec = graph.tables.get(table)
            if spec is not None and spec.is_shared and entry.scope == "shared":
                self.add_rows(manifest.bundle_id, spec, bundle.iter_batches(table))

    def known(self, table: str) -> dict[Any, tuple[str, str]]:
        """The carried rows of ``table``: pk value → (bundle id, digest)."""
        return self.carried.get(table, {})

    def __bool__(self) -> bool:
        return any(self.carried.values())


def open_layers(system_id: str, bundles: Sequence[Bundle], graph: Graph) -> Layers:
    """The layers of ``bundles`` (``export --after``), in the order given (later ones win)."""
    layers = Layers(system_id)
    for bundle in bundles:
        layers.add_bundle(bundle, graph)
    return layers


def settle_layers(
    closure: Closure,
    layers: Layers,
    read: Callable[[TableSpec, sa.ColumnElement[bool]], Iterable[pa.RecordBatch]],
    keys: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, int]:
    """Carry again the layered rows whose content changed since their layer; how many, per table.

    ``read`` streams a table's rows as the export reads them (the same snapshot, the same
    Arrow types), so an unchanged row gives the digest its layer recorded. ``keys``: filled
    with the primary and natural key columns of the rows read, per table (see
    :func:`layered_outside`).
    """
    checked: dict[str, set[Any]] = {}
    recarried: dict[str, int] = {}
    while True:
        changed: dict[str, set[Any]] = {}
        for table, values in list(closure.layered.items()):
            todo = values - checked.setdefault(table, set())
            if not todo:
                continue
            checked[table] |= todo
            spec = closure.graph.table(table)
            known = layers.known(table)
            t = table_clause(spec)
            for part in chunks(sorted_values(todo)):
                for batch in read(spec, t.c[spec.pk[0]].in_(part)):
                    if keys is not None:
                        named = list(dict.fromkeys([spec.pk[0], *spec.natural_key]))
                        keys.setdefault(table, []).extend(batch.select(named).to_pylist())
                    pks = batch.column(spec.pk[0]).to_pylist()
                    for pk, digest in zip(pks, row_digests(batch, spec), strict=True):
                        if known[pk][1] != digest:
                            changed.setdefault(table, set()).add(pk)
        if not changed:
            return recarried
        for table, pks in changed.items():
            recarried[table] = recarried.get(table, 0) + len(pks)
            closure.carry(table, pks)


#: column types whose values read through Arrow and through the database's driver give the
#: same natural-key value on PostgreSQL (a timestamp or a decimal may be rendered otherwise)
_SAME_KEY_TYPES = ("int", "uint", "string", "bool")


def layered_outside(
    closure: Closure, layers: Layers, read: dict[str, list[dict[str, Any]]] | None = None
) -> dict[str, Outside]:
    """The layered rows as outside rows of the manifest: natural keys, and the bundles that carried them.

    ``read``: the key columns of the layered rows as :func:`settle_layers` read them in the
    snapshot; on PostgreSQL, a table whose natural key holds only integers, text and booleans
    (and references, looked up) takes its keys from there instead of reading the rows again.
    """
    out: dict[str, Outside] = {}
    postgresql = closure.connection.dialect.name == "postgresql"
    for table, values in sorted(closure.layered.items()):
        spec = closure.graph.table(table)
        column = spec.pk[0]
        rows = None
        if (
            postgresql
            and read is not None
            and all(
                c in spec.ref_by_column or spec.column_map[c].type.startswith(_SAME_KEY_TYPES)
                for c in spec.natural_key
            )
        ):
            rows = [r for r in read.get(table, []) if r[column] in values]
            if {r[column] for r in rows} != set(values):
                rows = None  # not all read there: ask the database
        keys = natural_keys(closure.connection, closure.graph, table, column, values, rows=rows)
        known = layers.known(table)
        ordered = sorted(values, key=str)
        out[table] = Outside(
            column,
            spec.scope,
            tuple(OutsideRow(key_value(v), keys[v]) for v in ordered),
            tuple(dict.fromkeys(known[v][0] for v in ordered)),
        )
    return out
