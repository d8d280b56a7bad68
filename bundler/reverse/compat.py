"""Whether the source's release reads a reverse bundle as it is: a reverse transfer
translates nothing, so the tables it touches must be alike in both releases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bundler.errors import SpecError
from bundler.graph import Graph, TableSpec
from bundler.manifest import Outside


def check_compatible(
    bundle_graph: Graph,
    source: Graph,
    tables: list[str],
    prerequisites: Mapping[str, Outside],
    reverse: Mapping[str, Any],
) -> None:
    """Refuse unless the source's release reads the bundle's usage, keys and rows as they are.

    ``tables`` are the bundle's usage tables, ``prerequisites`` and ``reverse`` the
    manifest's sections. There is no upgrade path backwards, so the tables a reverse
    transfer touches must be alike in both releases.
    """
    problems = [
        *_usage_problems(bundle_graph, source, tables),
        *_prerequisite_problems(bundle_graph, source, prerequisites, set(reverse["by_key"])),
        *_row_problems(source, reverse["rows"]),
    ]
    if problems:
        pair = f"release {bundle_graph.release} (the bundle) and release {source.release} (this source)"
        raise SpecError(
            f"cannot return the bundle's rows between {pair}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            hint="a reverse transfer carries usage only between releases whose usage tables are alike; "
            "settle this customer by hand",
        )


def _usage_problems(bundle_graph: Graph, source: Graph, tables: list[str]) -> list[str]:
    """Usage tables missing from the source's release, or with other columns or references."""
    problems: list[str] = []
    for table in tables:
        mine, theirs = bundle_graph.table(table), source.tables.get(table)
        if theirs is None:
            problems.append(f"the usage table {table} is not in release {source.release}")
            continue
        problems.extend(_table_problems(mine, theirs))
    return problems


def _table_problems(mine: TableSpec, theirs: TableSpec) -> list[str]:
    """How one table's columns (names, types, order) and references differ between releases."""
    problems: list[str] = []
    a = [(c.name, c.type) for c in mine.columns]
    b = [(c.name, c.type) for c in theirs.columns]
    if a != b:
        differing = sorted({name for name, _ in set(a) ^ set(b)}) or ["their order"]
        problems.append(f"the columns of {mine.name} differ: {', '.join(differing)}")
    ra = {(r.column, r.table, r.target_column) for r in mine.references}
    rb = {(r.column, r.table, r.target_column) for r in theirs.references}
    if ra != rb:
        problems.append(f"the references of {mine.name} differ")
    return problems


def _prerequisite_problems(
    bundle_graph: Graph, source: Graph, prerequisites: Mapping[str, Outside], by_key: set[str]
) -> list[str]:
    """Outside columns the source lacks; tables matched by natural key named otherwise there."""
    problems: list[str] = []
    for table, entry in prerequisites.items():
        theirs = source.tables.get(table)
        if theirs is None or entry.column not in theirs.column_map:
            problems.append(f"{table}.{entry.column} is not in release {source.release}")
        elif table in by_key:
            _same_key(bundle_graph, source, table, set(), problems)
    return problems


def _same_key(bundle_graph: Graph, source: Graph, table: str, seen: set[str], problems: list[str]) -> None:
    """Note in ``problems`` where ``table``'s natural key, nested keys included, differs."""
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
            _same_key(bundle_graph, source, mine.ref_by_column[col].table, seen, problems)


def _row_problems(source: Graph, rows: list[dict[str, Any]]) -> list[str]:
    """The customer's rows whose table, or balance column, the source's release lacks."""
    problems: list[str] = []
    for row in rows:
        theirs = source.tables.get(row["table"])
        if theirs is None:
            problems.append(f"table {row['table']} is not in release {source.release}")
        elif row["balance"] is not None and theirs.balance is None:
            problems.append(
                f"the graph of release {source.release} marks no balance column of {row['table']}"
            )
    return problems
