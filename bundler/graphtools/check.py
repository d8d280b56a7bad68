"""A graph against a live database: what the graph names that the database lacks (each
column with the role the graph gives it: status, time, natural key, balance, lookup, ...),
and what the database has that the graph leaves out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bundler.errors import SpecError
from bundler.graph import Graph, Scope
from bundler.graphtools.infer import OWN_TABLES


@dataclass
class CatalogReport:
    lacks: list[str] = field(default_factory=list)  # named by the graph, absent in the database
    left_out: list[str] = field(default_factory=list)  # in the database, not in the graph

    def to_dict(self) -> dict[str, Any]:
        return {"lacks": self.lacks, "left_out": self.left_out}


def _roles(graph: Graph) -> dict[str, dict[str, str]]:
    """table → column → the role the graph gives it (the first that names it)."""
    roles: dict[str, dict[str, str]] = {}
    for spec in graph.tables.values():
        named = roles.setdefault(spec.name, {})
        for role, cols in (
            ("status column", (spec.status.column,) if spec.status else ()),
            ("time column", (spec.time_column,) if spec.time_column else ()),
            ("balance column", (spec.balance.column,) if spec.balance else ()),
            ("billing period column", (spec.billing_period.column,) if spec.billing_period else ()),
            ("primary key column", spec.pk),
            ("natural key column", spec.natural_key),
            ("reference column", tuple(r.column for r in spec.references)),
            ("column", spec.column_names),
        ):
            for col in cols:
                named.setdefault(col, role)
    for label, specs in (("lookup column of root", graph.roots), ("lookup column of entity", graph.entities)):
        for kind, root in specs.items():
            for col in root.lookup:
                roles.setdefault(root.table, {}).setdefault(col, f"{label} {kind}")
    return roles


def _db_columns(connection: sa.Connection, tables: list[str]) -> dict[str, set[str] | None]:
    inspector = sa.inspect(connection)
    present = set(inspector.get_table_names())
    wanted = [t for t in tables if t in present]
    found: dict[str, set[str] | None] = {t: None for t in tables}
    if wanted:
        multi = inspector.get_multi_columns(filter_names=wanted)
        for (_, table), columns in multi.items():
            found[table] = {c["name"] for c in columns}
    return found


def missing_columns(connection: sa.Connection, graph: Graph) -> list[str]:
    """Every table and column the graph's copied and matched tables name that the database lacks."""
    tables = [t.name for t in graph.tables.values() if t.scope is not Scope.MIRROR]
    have = _db_columns(connection, tables)
    roles = _roles(graph)
    problems: list[str] = []
    for table in tables:
        columns = have[table]
        if columns is None:
            problems.append(f"table {table} is missing")
            continue
        problems.extend(
            f"{table}.{col} ({role}) is missing" for col, role in roles[table].items() if col not in columns
        )
    return problems


def require_columns(connection: sa.Connection, graph: Graph, where: str) -> None:
    """Refuse a graph that names columns the database lacks, all of them at once, before any work."""
    problems = missing_columns(connection, graph)
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise SpecError(
            f"the entity graph {graph.path} does not fit the {where} database: {shown}",
            hint=f"fix the graph (bundler graph check --spec {graph.path} --db URL lists it all)",
        )


def check_graph(connection: sa.Connection, graph: Graph) -> CatalogReport:
    """What the graph names that the database lacks, and what it leaves out."""
    report = CatalogReport(lacks=missing_columns(connection, graph))
    inspector = sa.inspect(connection)
    db_tables = [t for t in inspector.get_table_names() if not t.startswith(OWN_TABLES)]
    have = _db_columns(connection, db_tables)
    for table in sorted(db_tables):
        if table not in graph.tables:
            report.left_out.append(f"table {table}")
            continue
        spec = graph.tables[table]
        report.left_out.extend(f"{table}.{c}" for c in sorted(have[table] or ()) if c not in spec.column_map)
        declared = {r.column for r in spec.references}
        for fk in inspector.get_foreign_keys(table):
            for col in fk["constrained_columns"]:
                if col not in declared:
                    report.left_out.append(
                        f"{table}.{col}: foreign key to {fk['referred_table']} is not a declared reference"
                    )
    return report
