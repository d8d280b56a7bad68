"""SQL over the entity graph, shared by every verb: table clauses, natural keys, lookups,
and the closure of a root (every row a bundle must carry, found by walking the graph).

Two rules, applied until nothing new turns up:

- **ownership, downward**: when a row is in, every row that belongs to it (through an
  owner reference) is in: a customer's accounts, a tariff's rates, a reseller's
  sub-customers;
- **reference, upward**: when a row is in, every shared row it references is in;
  a referenced prerequisite, or an owned row of another root, is recorded by natural
  key instead of being copied.

Usage rows (xDRs) are not materialised here: the closure says which owner values they
hang from, the exporter streams them, and feeds the values they reference back in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import sqlalchemy as sa

from bundler.graph import Graph, Reference, Scope, TableSpec
from bundler.keys import Key, key_text, key_value

IN_CHUNK = 2_000


_CLAUSES: dict[int, tuple[TableSpec, sa.TableClause]] = {}


def table_clause(spec: TableSpec) -> sa.TableClause:
    """A lightweight SQLAlchemy table for ``spec`` (no reflection), one per spec."""
    cached = _CLAUSES.get(id(spec))
    if cached is None or cached[0] is not spec:
        cached = (spec, sa.table(spec.name, *(sa.column(c) for c in spec.column_names)))
        _CLAUSES[id(spec)] = cached
    return cached[1]


_SELECT_IN: dict[tuple[int, tuple[str, ...], str], tuple[TableSpec, sa.Select[Any]]] = {}


def select_in(spec: TableSpec, columns: Iterable[str], column: str) -> sa.Select[Any]:
    """``SELECT columns FROM spec's table WHERE column IN (…)``, the values bound as ``values``
    (expanding): one statement per table, columns and column, built (and compiled, by
    SQLAlchemy's cache) once instead of for every query; a closure walk runs dozens."""
    names = tuple(columns)
    key = (id(spec), names, column)
    cached = _SELECT_IN.get(key)
    if cached is None or cached[0] is not spec:
        t = table_clause(spec)
        stmt = sa.select(*(t.c[c] for c in names)).where(
            t.c[column].in_(sa.bindparam("values", expanding=True))
        )
        cached = _SELECT_IN[key] = (spec, stmt)
    return cached[1]


def lookup_row(
    connection: sa.Connection, spec: TableSpec, columns: Iterable[str], ident: str | int
) -> dict[str, Any] | None:
    """The row an operator names by id or name: ``columns`` tried in order (integer ones only for digits)."""
    t = table_clause(spec)
    text = str(ident).strip()
    for col in columns:
        if spec.column_map[col].type.startswith("int"):
            if not text.lstrip("-").isdigit():
                continue
            value: Any = int(text)
        else:
            value = text
        row = connection.execute(sa.select(t).where(t.c[col] == value)).mappings().first()
        if row is not None:
            return dict(row)
    return None


def chunks(values: Iterable[Any], size: int = IN_CHUNK) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for value in values:
        batch.append(value)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def sorted_values(values: Iterable[Any]) -> list[Any]:
    return sorted(values, key=lambda v: (str(type(v)), v))


def row_dicts(result: sa.Result[Any]) -> list[dict[str, Any]]:
    """The rows of ``result`` as dicts by column name (half the time of ``dict(row._mapping)``,
    which builds a view of the keys for every row: ~4 ms of a small root's closure walk)."""
    names = tuple(result.keys())
    return [dict(zip(names, row, strict=True)) for row in result]


class Closure:
    """Rows reached from the roots, per table, and what they reference outside."""

    def __init__(
        self,
        connection: sa.Connection,
        graph: Graph,
        *,
        follow_shared: bool = True,
        carried: Callable[[str], Mapping[Any, Any]] | None = None,
    ) -> None:
        self.connection = connection
        self.graph = graph
        self.follow_shared = follow_shared
        # shared rows an earlier bundle carried (table -> pk values): referenced, not followed
        self._carried = carried
        self.layered: dict[str, set[Any]] = defaultdict(set)
        # table -> pk tuple -> row (pk, reference and referenced columns)
        self.rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = defaultdict(dict)
        # table -> column -> values present among included rows (to answer "is it in?")
        self._present: dict[str, dict[str, set[Any]]] = defaultdict(lambda: defaultdict(set))
        # references leading outside: table -> target column -> values
        self.outside: dict[str, dict[str, set[Any]]] = defaultdict(lambda: defaultdict(set))
        # usage table -> owner reference -> owner values
        self.usage_owners: dict[str, dict[Reference, set[Any]]] = defaultdict(lambda: defaultdict(set))
        self._queue: list[tuple[str, list[dict[str, Any]]]] = []
        self._needed_columns: dict[str, tuple[str, ...]] = {}

    # -- what is fetched per table ---------------------------------------------------------

    def _columns(self, spec: TableSpec) -> tuple[str, ...]:
        if spec.name not in self._needed_columns:
            wanted = list(spec.pk)
            wanted += [r.column for r in spec.references]
            wanted += [r.target_column for _, r in self.graph.referencing[spec.name]]
            if spec.status:
                wanted.append(spec.status.column)
            self._needed_columns[spec.name] = tuple(
                dict.fromkeys(c for c in spec.column_names if c in wanted)
            )
        return self._needed_columns[spec.name]

    def fetch(self, spec: TableSpec, column: str, values: Iterable[Any]) -> list[dict[str, Any]]:
        """Rows of ``spec`` whose ``column`` is one of ``values`` (pk, reference and status columns)."""
        stmt = select_in(spec, self._columns(spec), column)
        found: list[dict[str, Any]] = []
        for part in chunks(sorted_values(values)):
            found.extend(row_dicts(self.connection.execute(stmt, {"values": part})))
        return found

    # -- building ------------------------------------------------------------------------

    def add(self, table: str, rows: Iterable[dict[str, Any]]) -> int:
        spec = self.graph.table(table)
        new = []
        for row in rows:
            pk = tuple(row[c] for c in spec.pk)
            if pk in self.rows[table]:
                continue
            self.rows[table][pk] = row
            for col, value in row.items():
                if value is not None and not isinstance(value, dict | list):  # JSON a driver decoded
                    self._present[table][col].add(value)
            new.append(row)
        if new:
            self._queue.append((table, new))
        return len(new)

    def contains(self, table: str, column: str, value: Any) -> bool:
        return value in self._present[table][column]

    def reference(self, table: str, column: str, values: Iterable[Any]) -> None:
        """Rows of other tables reference ``table.column`` with ``values``: bring in or record them."""
        target = self.graph.table(table)
        missing = {v for v in values if v is not None and not self.contains(table, column, v)}
        if not missing:
            return
        if target.is_shared and self.follow_shared and self._carried is not None and column == target.pk[0]:
            known = self._carried(table)
            layered = {v for v in missing if v in known}
            self.layered[table] |= layered
            missing -= layered
        if missing and target.is_shared and self.follow_shared:
            found = self.fetch(target, column, missing)
            self.add(table, found)
            missing -= {row[column] for row in found}
        if missing:
            self.outside[table][column] |= missing

    def run(self) -> None:
        while self._queue:
            table, new = self._queue.pop()
            spec = self.graph.table(table)
            for child, ref in self.graph.owned_children[table]:
                values = {row[ref.target_column] for row in new if row.get(ref.target_column) is not None}
                if not values:
                    continue
                if child.is_usage:
                    self.usage_owners[child.name][ref] |= values
                elif child.scope in (Scope.OWNED, Scope.SHARED):
                    self.add(child.name, self.fetch(child, ref.column, values))
            for ref in spec.references:
                if ref.table == table and ref.owner:
                    continue  # a parent of the same table (a sub-customer's reseller): outside unless included
                self.reference(ref.table, ref.target_column, (row.get(ref.column) for row in new))
        self._settle_outside()

    def carry(self, table: str, values: Iterable[Any]) -> None:
        """Carry layered rows after all (they changed since their layer): include and follow them."""
        spec = self.graph.table(table)
        values = set(values)
        self.layered[table] -= values
        self.add(table, self.fetch(spec, spec.pk[0], values))
        self.run()

    def _settle_outside(self) -> None:
        """Drop from ``outside`` what was included after being recorded (self-references too)."""
        for table, by_col in list(self.outside.items()):
            for col, values in list(by_col.items()):
                values -= self._present[table][col]
                if not values:
                    del by_col[col]
            if not by_col:
                del self.outside[table]
        for table, values in list(self.layered.items()):
            values -= self._present[table][self.graph.table(table).pk[0]]
            if not values:
                del self.layered[table]
        for spec in self.graph.tables.values():
            for ref in spec.references:
                if ref.table == spec.name and ref.owner:
                    values = {row.get(ref.column) for row in self.rows[spec.name].values()}
                    values -= {None} | self._present[spec.name][ref.target_column]
                    if values:
                        self.outside[spec.name][ref.target_column] |= values

    # -- reading the result ----------------------------------------------------------------

    def tables(self, scopes: tuple[str, ...]) -> list[TableSpec]:
        return [
            self.graph.tables[t]
            for t in self.graph.dependency_order
            if t in self.rows and self.rows[t] and self.graph.tables[t].scope in scopes
        ]

    def selection(self, spec: TableSpec) -> sa.ColumnElement[bool] | None:
        """A WHERE clause that selects exactly this table's included rows (None: no rows)."""
        t = table_clause(spec)
        rows = self.rows.get(spec.name)
        if not rows:
            return None
        if len(spec.pk) == 1:
            return _in(t.c[spec.pk[0]], [pk[0] for pk in rows])
        # a composite-key row is reached only through its owner references, so the rows whose
        # owner is in are exactly the included ones
        clauses = [
            _in(t.c[ref.column], {row[ref.column] for row in rows.values()}) for ref in spec.owner_refs
        ]
        return sa.or_(*clauses) if clauses else None

    def usage_selection(self, spec: TableSpec) -> sa.ColumnElement[bool] | None:
        t = table_clause(spec)
        owners = self.usage_owners.get(spec.name)
        if not owners:
            return None
        return sa.or_(*(_in(t.c[ref.column], values) for ref, values in owners.items()))


def _in(column: sa.ColumnClause[Any], values: Iterable[Any]) -> sa.ColumnElement[bool]:
    ordered = sorted_values(set(values))
    parts = [column.in_(part) for part in chunks(ordered)]
    return parts[0] if len(parts) == 1 else sa.or_(*parts)


def natural_keys(
    connection: sa.Connection,
    graph: Graph,
    table: str,
    column: str,
    values: Iterable[Any],
    *,
    rows: list[dict[str, Any]] | None = None,
) -> dict[Any, Key]:
    """The natural key of each row of ``table`` whose ``column`` is one of ``values``.

    Reference columns in a natural key are replaced by the referenced row's key, recursively.
    ``rows``: those rows, read already through ``connection`` (``column`` and the natural key's
    columns at least): not read again.
    """
    spec = graph.table(table)
    if rows is None:
        stmt = select_in(spec, dict.fromkeys([column, *spec.natural_key]), column)
        rows = []
        for part in chunks(sorted_values(set(values))):
            rows.extend(row_dicts(connection.execute(stmt, {"values": part})))
    nested: dict[str, dict[Any, Key]] = {}
    for col in spec.natural_key:
        ref = spec.ref_by_column.get(col)
        if ref is not None:
            nested[col] = natural_keys(
                connection, graph, ref.table, ref.target_column, {r[col] for r in rows if r[col] is not None}
            )
    keys: dict[Any, Key] = {}
    for r in rows:
        key: Key = {}
        for col in spec.natural_key:
            value = r[col]
            key[col] = nested[col].get(value) if col in nested and value is not None else key_value(value)
        keys[r[column]] = key
    return keys


def match_target(
    connection: sa.Connection, spec: TableSpec, keys: Iterable[tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Target rows whose natural key (in target values) is one of ``keys``: key → full row
    (the first found when several share it; :func:`match_candidates` gives them all)."""
    return {key: rows[0] for key, rows in match_candidates(connection, spec, keys).items()}


def match_candidates(
    connection: sa.Connection, spec: TableSpec, keys: Iterable[tuple[Any, ...]]
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Target rows whose natural key (in target values) is one of ``keys``: key → every row
    with it, ordered by primary key (more than one on a schema whose natural key is not unique)."""
    wanted = set(keys)
    if not wanted:
        return {}
    first = spec.natural_key[0]
    firsts = {k[0] for k in wanted}
    stmt = select_in(spec, spec.column_names, first)
    found: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for part in chunks(sorted_values(db_values(spec, first, firsts))):
        for row in connection.execute(stmt, {"values": part}).mappings():
            key = tuple(key_value(row[c]) for c in spec.natural_key)
            if key in wanted:
                found[key].append(dict(row))
    for rows in found.values():
        rows.sort(key=lambda r: tuple(key_value(r[c]) for c in spec.pk))
    return dict(found)


def db_values(spec: TableSpec, column: str, values: Iterable[Any]) -> list[Any]:
    """Key values (JSON scalars) back into values a query can compare with the column."""
    from datetime import date, datetime
    from decimal import Decimal

    ctype = spec.column_map[column].type
    out: list[Any] = []
    for v in values:
        if v is None:
            continue
        if ctype.startswith("timestamp"):
            out.append(datetime.fromisoformat(v))
        elif ctype == "date32":
            out.append(date.fromisoformat(v))
        elif ctype.startswith("decimal"):
            out.append(Decimal(v))
        else:
            out.append(v)
    return out


def match_keys(
    connection: sa.Connection,
    graph: Graph,
    spec: TableSpec,
    column: str,
    keys: list[Key],
    ambiguous: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """Natural keys (possibly nested) → the target's value of ``column`` for the rows that have them.

    With ``ambiguous``, a key that several target rows have is put there (key text → their
    values of ``column``) and left out of the result, never resolved by picking one.
    """
    if not keys:
        return {}
    t = table_clause(spec)
    # the candidates with their natural keys' columns, in one query (natural_keys reads no more)
    names = tuple(dict.fromkeys([column, *spec.natural_key]))
    selected = [t.c[c] for c in names]
    scalar = next((c for c in spec.natural_key if c not in spec.ref_by_column), None)
    candidates: list[dict[str, Any]] = []
    if scalar is not None:
        firsts = db_values(spec, scalar, {k.get(scalar) for k in keys})
        stmt = select_in(spec, names, scalar)
        for part in chunks(sorted_values(firsts)):
            candidates.extend(row_dicts(connection.execute(stmt, {"values": part})))
    else:
        candidates = row_dicts(connection.execute(sa.select(*selected)))
    candidates = [r for r in candidates if r[column] is not None]
    target_keys = natural_keys(connection, graph, spec.name, column, (), rows=candidates)
    out: dict[str, Any] = {}
    seen: dict[str, list[Any]] = defaultdict(list)
    for value, k in target_keys.items():
        text = key_text(k)
        out[text] = value
        seen[text].append(value)
    if ambiguous is not None:
        wanted = {key_text(k) for k in keys}
        for text, values in seen.items():
            if len(values) > 1 and text in wanted:
                ambiguous[text] = sorted_values(values)
                del out[text]
    return out
