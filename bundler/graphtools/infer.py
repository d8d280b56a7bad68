"""``bundler graph infer``: a first entity graph from a live database's catalog.

The catalog gives tables, primary keys, foreign keys, unique constraints and column types
exactly; what only the operator knows is guessed and marked for review (each table's
``doc`` starts with ``REVIEW:`` and says what was guessed):

- **scope**: tables reachable from a root table through foreign keys pointing at it
  (children) are ``owned``, with the first such key as owner reference; a table with a
  natural primary key and no references is a ``prerequisite``; the rest is ``shared``;
- **natural key**: the first unique constraint (or unique index) that is not the primary
  key; else the primary key (for a surrogate key that is a placeholder to replace);
- **usage**: never guessed (a time-windowed table is a decision): set the scope and its
  ``time_column`` by hand.

A database without a root (``roots`` empty) still gives a graph that validates, all of it
shared or prerequisite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bundler.errors import UsageError
from bundler.graph import parse_graph
from bundler.graphtools.types import FALLBACK, graph_type

#: tables of the toolkit itself, never part of a graph
OWN_TABLES = "bundler_"
REVIEW = "REVIEW: "


@dataclass
class Inferred:
    """The graph document, and per table what was guessed (to review)."""

    doc: dict[str, Any]
    review: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class _Table:
    name: str
    columns: list[dict[str, Any]]
    pk: list[str]
    fks: list[tuple[str, str, str]]  # column, table, target column
    uniques: list[list[str]]


def _catalog(engine: sa.Engine, schema: str | None) -> tuple[dict[str, _Table], dict[str, str]]:
    inspector = sa.inspect(engine)
    tables: dict[str, _Table] = {}
    skipped: dict[str, str] = {}
    for name in sorted(inspector.get_table_names(schema=schema)):
        if name.startswith(OWN_TABLES):
            continue
        pk = list(inspector.get_pk_constraint(name, schema=schema).get("constrained_columns") or [])
        uniques = [list(u["column_names"]) for u in inspector.get_unique_constraints(name, schema=schema)]
        uniques += [
            [str(c) for c in i["column_names"]]
            for i in inspector.get_indexes(name, schema=schema)
            if i.get("unique") and all(i["column_names"])
        ]
        if engine.dialect.name == "sqlite":
            uniques += [u for u in _sqlite_uniques(engine, name) if u not in uniques]
        if not pk:
            if not uniques:
                skipped[name] = "no primary key and no unique constraint: declare its key by hand"
                continue
            pk = uniques[0]
        fks = []
        for fk in inspector.get_foreign_keys(name, schema=schema):
            if len(fk["constrained_columns"]) != 1:
                continue  # composite foreign keys: declare the references by hand
            fks.append((fk["constrained_columns"][0], fk["referred_table"], fk["referred_columns"][0]))
        columns: list[dict[str, Any]] = [dict(c) for c in inspector.get_columns(name, schema=schema)]
        tables[name] = _Table(name, columns, pk, fks, uniques)
    return tables, skipped


def _sqlite_uniques(engine: sa.Engine, table: str) -> list[list[str]]:
    """SQLite's column-level UNIQUE constraints (its inspector reports only the named ones)."""
    quoted = table.replace("'", "''")
    with engine.connect() as conn:
        found = []
        for index in conn.exec_driver_sql(f"PRAGMA index_list('{quoted}')").mappings():
            if index["origin"] == "u":
                name = str(index["name"]).replace("'", "''")
                cols = conn.exec_driver_sql(f"PRAGMA index_info('{name}')").mappings().all()
                found.append([str(c["name"]) for c in sorted(cols, key=lambda c: c["seqno"])])
        return found


def _column(col: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    try:
        type_ = graph_type(col["type"])
    except TypeError as exc:
        type_ = FALLBACK
        notes.append(f"column {col['name']} read as text ({exc})")
    entry: dict[str, Any] = {"name": col["name"], "type": type_, "nullable": bool(col.get("nullable", True))}
    if col.get("default") is not None:
        entry["default"] = str(col["default"])
    return entry


def infer_graph(
    engine: sa.Engine,
    *,
    system: str,
    release: str,
    roots: dict[str, str] | None = None,
    schema: str | None = None,
) -> Inferred:
    """A graph of ``engine``'s database; ``roots`` maps root kinds to their tables."""
    tables, skipped = _catalog(engine, schema)
    roots = dict(roots or {})
    for kind, table in roots.items():
        if table not in tables:
            raise UsageError(f"root {kind}: the database has no table {table!r} (or it has no key)")
    owner = _owned(tables, set(roots.values()))
    review: dict[str, list[str]] = {}
    docs: dict[str, Any] = {}
    for name, t in tables.items():
        notes: list[str] = []
        columns = [_column(c, notes) for c in t.columns]
        types = {c["name"]: c["type"] for c in columns}
        nullable = {c["name"]: c["nullable"] for c in columns}
        refs = [
            {
                "column": col,
                "table": target,
                "target_column": target_col,
                "nullable": nullable[col],
                "owner": owner.get(name) == col,
            }
            for col, target, target_col in t.fks
            if target in tables
        ]
        referencing = {c for c, _, _ in t.fks}
        surrogate = len(t.pk) == 1 and types[t.pk[0]].startswith("int") and t.pk[0] not in referencing
        pk_kind = "composite" if len(t.pk) > 1 else "surrogate" if surrogate else "natural"
        natural = next((u for u in t.uniques if u != t.pk), None)
        if natural is None:
            natural = list(t.pk)
            if surrogate:
                notes.append(f"natural key: no unique constraint, the surrogate key {t.pk[0]} stands in")
        else:
            notes.append(f"natural key guessed from the unique constraint on {', '.join(natural)}")
        if name in owner:
            scope = "owned"
            notes.append(
                f"scope owned: belongs to a root through {owner[name]}"
                if owner[name]
                else "scope owned: a root table"
            )
        elif pk_kind == "natural" and not refs:
            scope = "prerequisite"
            notes.append("scope prerequisite: a code list (natural key, no references)")
        else:
            scope = "shared"
            notes.append("scope shared (or usage: then set its time_column)")
        docs[name] = {
            "doc": REVIEW + "; ".join(notes),
            "pk": list(t.pk),
            "pk_kind": pk_kind,
            "scope": scope,
            "natural_key": natural,
            "columns": columns,
            "references": refs,
        }
        review[name] = notes
    doc = {
        "graph_version": 1,
        "system": system,
        "release": release,
        "description": f"Inferred by `bundler graph infer` from {engine.url.render_as_string()}; "
        "review every table whose doc starts with REVIEW.",
        "roots": {
            kind: {"table": table, "lookup": _lookup(tables[table], docs[table]), "all": i}
            for i, (kind, table) in enumerate(roots.items())
        },
        "tables": docs,
    }
    parse_graph(doc, path="<inferred>")  # what is written validates
    return Inferred(doc, review, skipped)


def _lookup(table: _Table, doc: dict[str, Any]) -> list[str]:
    return list(
        dict.fromkeys([*table.pk[:1], *(c for c in doc["natural_key"] if len(doc["natural_key"]) == 1)])
    )


def _owned(tables: dict[str, _Table], root_tables: set[str]) -> dict[str, str | None]:
    """Owned tables → their owner reference column (None for a root table): every table
    reachable from a root by following foreign keys that point at an owned table."""
    owner: dict[str, str | None] = {t: None for t in root_tables}
    changed = True
    while changed:
        changed = False
        for name, t in tables.items():
            if name in owner:
                continue
            for col, target, _ in t.fks:
                if target in owner and target != name:
                    owner[name] = col
                    changed = True
                    break
    return owner
