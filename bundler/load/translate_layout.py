"""The layout simulation: upgrade rules applied to the entity graph's tables, before any data.

The rules are simulated once on the entity graph's layout: a rule naming a table or
column that is not there at that point, or a result that differs from the target graph's
tables, columns, types and nullability, is a problem (:func:`check_step` lists them all).
The same simulation compiles, for every table of the target release, the list of
operations (:mod:`bundler.load.translate_ops`) that make its record batches from one
table of the bundle. Each rule kind has its own small function (:data:`RULE_APPLIERS`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bundler.errors import SpecError
from bundler.graph import ColumnSpec, Graph, TableSpec
from bundler.load.translate_ops import AddOp, DropOp, MapOp, Op, RenameOp, SplitOp
from bundler.load.upgrade_rules import (
    AddColumn,
    DropColumn,
    MapCodes,
    RenameColumn,
    RenameTable,
    Rule,
    SplitTable,
    UpgradeStep,
)


@dataclass
class LayoutColumn:
    name: str
    type: str
    nullable: bool
    origin: str | None  # the bundle column it carries, None for an added column


@dataclass
class LayoutTable:
    """One table of the release being built: its columns, and how to make it from the bundle."""

    origin: str  # the bundle table its rows come from
    columns: dict[str, LayoutColumn]
    pk: tuple[str, ...]
    ops: list[Op] = field(default_factory=list)
    key_ops: list[Op] = field(default_factory=list)  # what happens to a natural key (no splits)
    # made by a split: (rule, table split from, step, key column -> bundle column it copies)
    split: tuple[SplitTable, LayoutTable, UpgradeStep, dict[str, str]] | None = None
    born: bool = False  # made by a split: a natural key of the bundle never names it


def initial_layout(graph: Graph) -> dict[str, LayoutTable]:
    """The layout of ``graph`` itself: every table made of the bundle table of its name, unchanged."""
    return {
        name: LayoutTable(
            origin=name,
            columns={c.name: LayoutColumn(c.name, c.type, c.nullable, c.name) for c in spec.columns},
            pk=spec.pk,
        )
        for name, spec in graph.tables.items()
    }


Layout = dict[str, LayoutTable]
"""The tables of the release being built, by name."""

RuleApplier = Callable[[Layout, Any, UpgradeStep], str | None]
TableRuleApplier = Callable[[Layout, LayoutTable, Any, UpgradeStep], str | None]


def apply_step(state: Layout, step: UpgradeStep, problems: list[str]) -> None:
    """Apply every rule of ``step`` to the layout in order; each rule that does not fit is a problem."""
    for number, rule in enumerate(step.rules, 1):
        where = f"{step.path}: rule {number} ({rule.kind})"
        problem = apply_rule(state, rule, step)
        if problem:
            problems.append(f"{where}: {problem}")


def apply_rule(state: Layout, rule: Rule, step: UpgradeStep) -> str | None:
    """Apply one rule to the layout; a problem (and the layout unchanged) when it does not fit."""
    return RULE_APPLIERS[rule.kind](state, rule, step)


def _on_table(apply: TableRuleApplier) -> RuleApplier:
    """A rule acting on one table (``rule.table``): a problem when it is not there at this point."""

    def applier(state: Layout, rule: Any, step: UpgradeStep) -> str | None:
        table = state.get(rule.table)
        if table is None:
            return f"there is no table {rule.table!r} at this point"
        return apply(state, table, rule, step)

    applier.__name__ = applier.__qualname__ = apply.__name__
    applier.__doc__ = apply.__doc__
    return applier


def _add_op(table: LayoutTable, op: Op) -> None:
    """``op`` makes the table's batches and translates its natural keys."""
    table.ops.append(op)
    table.key_ops.append(op)


def _rename_table(state: Layout, rule: RenameTable, step: UpgradeStep) -> str | None:
    if rule.from_table not in state:
        return f"there is no table {rule.from_table!r} at this point"
    if rule.to_table in state:
        return f"table {rule.to_table!r} exists already"
    state[rule.to_table] = state.pop(rule.from_table)
    return None


def _rename_column(state: Layout, table: LayoutTable, rule: RenameColumn, step: UpgradeStep) -> str | None:
    cols = table.columns
    if rule.from_column not in cols:
        return f"{rule.table} has no column {rule.from_column!r} at this point"
    if rule.to_column in cols:
        return f"{rule.table} has a column {rule.to_column!r} already"
    table.columns = {
        (rule.to_column if n == rule.from_column else n): (
            LayoutColumn(rule.to_column, c.type, c.nullable, c.origin) if n == rule.from_column else c
        )
        for n, c in cols.items()
    }
    table.pk = tuple(rule.to_column if c == rule.from_column else c for c in table.pk)
    _add_op(table, RenameOp(rule.from_column, rule.to_column))
    return None


def _add_column(state: Layout, table: LayoutTable, rule: AddColumn, step: UpgradeStep) -> str | None:
    cols = table.columns
    if rule.column in cols:
        return f"{rule.table} has a column {rule.column!r} already"
    try:
        add = AddOp(rule.column, rule.type, rule.default)
    except (SpecError, ValueError, TypeError, ArithmeticError) as exc:
        return f"default {rule.default!r} of {rule.table}.{rule.column} is not a {rule.type}: {exc}"
    cols[rule.column] = LayoutColumn(rule.column, rule.type, rule.default is None, None)
    _add_op(table, add)
    return None


def _drop_column(state: Layout, table: LayoutTable, rule: DropColumn, step: UpgradeStep) -> str | None:
    cols = table.columns
    if rule.column not in cols:
        return f"{rule.table} has no column {rule.column!r} at this point"
    del cols[rule.column]
    _add_op(table, DropOp((rule.column,)))
    return None


def _map_codes(state: Layout, table: LayoutTable, rule: MapCodes, step: UpgradeStep) -> str | None:
    cols = table.columns
    if rule.column not in cols:
        return f"{rule.table} has no column {rule.column!r} at this point"
    try:
        op_map = MapOp(rule, step, cols[rule.column].type, table.pk)
    except Exception as exc:  # any cast failure is the rule's fault
        return f"the codes of {rule.table}.{rule.column} are not all {cols[rule.column].type}: {exc}"
    _add_op(table, op_map)
    return None


def _split_problem(state: Layout, table: LayoutTable, rule: SplitTable) -> str | None:
    """Why ``rule`` cannot split ``table`` at this point; None when it can."""
    if rule.into in state:
        return f"table {rule.into!r} exists already"
    missing = [c for c in (*rule.columns, *rule.key.values()) if c not in table.columns]
    if missing:
        return f"{rule.table} has no column {missing[0]!r} at this point"
    clash = [c for c in rule.key if c in rule.columns]
    if clash:
        return f"key column {clash[0]!r} of {rule.into} is also a moved column"
    return None


def _split_off(table: LayoutTable, rule: SplitTable, step: UpgradeStep) -> LayoutTable:
    """The new table ``rule`` makes of ``table``: its key columns, the moved columns, its operations."""
    cols = table.columns
    new_cols = {
        new: LayoutColumn(new, cols[src].type, cols[src].nullable, cols[src].origin)
        for new, src in rule.key.items()
    }
    new_cols.update({c: cols[c] for c in rule.columns})
    new_pk = tuple(
        next(new for new, src in rule.key.items() if src == c) for c in table.pk if c in rule.key.values()
    )
    return LayoutTable(
        origin=table.origin,
        columns=new_cols,
        pk=new_pk,
        ops=[*table.ops, SplitOp(rule)],
        split=(rule, table, step, {new: cols[src].origin or src for new, src in rule.key.items()}),
        born=True,
    )


def _split_table(state: Layout, table: LayoutTable, rule: SplitTable, step: UpgradeStep) -> str | None:
    problem = _split_problem(state, table, rule)
    if problem:
        return problem
    state[rule.into] = _split_off(table, rule, step)
    for c in rule.columns:
        del table.columns[c]
    _add_op(table, DropOp(rule.columns))
    return None


RULE_APPLIERS: dict[str, RuleApplier] = {
    RenameTable.kind: _rename_table,
    RenameColumn.kind: _on_table(_rename_column),
    AddColumn.kind: _on_table(_add_column),
    DropColumn.kind: _on_table(_drop_column),
    MapCodes.kind: _on_table(_map_codes),
    SplitTable.kind: _on_table(_split_table),
}
"""How each kind of rule changes the layout: a problem (and the layout unchanged) when it does not fit."""


def compare_layout(state: Layout, graph: Graph, label: str) -> list[str]:
    """Where the simulated layout differs from ``graph``'s tables and columns."""
    problems = _table_problems(state, graph, label)
    for name in sorted(set(state) & set(graph.tables)):
        table, spec = state[name], graph.tables[name]
        problems.extend(_column_problems(name, table, spec, graph.release, label))
        if table.split is not None and not set(spec.pk) <= set(table.split[0].key):
            problems.append(
                f"{label}: the primary key {', '.join(spec.pk)} of {name} is not among the key columns of "
                f"the split_table rule that makes it"
            )
    return problems


def _table_problems(state: Layout, graph: Graph, label: str) -> list[str]:
    """The tables the layout has and ``graph`` lacks, then those ``graph`` has and the layout lacks."""
    problems: list[str] = []
    for name in sorted(set(state) - set(graph.tables)):
        problems.append(f"{label}: table {name} would remain, but release {graph.release} has no such table")
    for name in sorted(set(graph.tables) - set(state)):
        problems.append(
            f"{label}: table {name} of release {graph.release} is made by no rule "
            "(a split_table or rename_table rule must make it)"
        )
    return problems


def _column_problems(name: str, table: LayoutTable, spec: TableSpec, release: str, label: str) -> list[str]:
    """Where the columns of one simulated table differ from ``spec``'s: names, types, nullability."""
    have, want = table.columns, spec.column_map
    problems = [
        f"{label}: {name}.{col} of release {release} is made by no rule"
        for col in spec.column_names
        if col not in have
    ]
    problems.extend(
        f"{label}: {name}.{col} would remain, but release {release} has no such column"
        for col in have
        if col not in want
    )
    for col in [c for c in spec.column_names if c in have]:
        problem = _column_type_problem(have[col], want[col], release)
        if problem:
            problems.append(f"{label}: {name}.{col} {problem}")
    return problems


def _column_type_problem(got: LayoutColumn, need: ColumnSpec, release: str) -> str | None:
    """How a simulated column's type or nullability does not fit the target's column; None if it does."""
    if got.type != need.type:
        return f"would be {got.type}, release {release} has {need.type}"
    if got.nullable and not need.nullable:
        return f"may be null, but it is NOT NULL in release {release}"
    return None


def check_step(step: UpgradeStep, from_graph: Graph, to_graph: Graph) -> list[str]:
    """Everything wrong with ``step`` between these two graphs; ``[]`` when it is complete.

    Every rule must name tables and columns that exist at its point, and the rules,
    applied to the layout of ``from_graph``, must give exactly the tables and columns of
    ``to_graph`` (names, types; a column NOT NULL there must not be nullable here).
    """
    problems: list[str] = []
    if step.from_release != from_graph.release:
        problems.append(
            f"{step.path}: goes from release {step.from_release}, the graph is of {from_graph.release}"
        )
    if step.to_release != to_graph.release:
        problems.append(f"{step.path}: goes to release {step.to_release}, the graph is of {to_graph.release}")
    state = initial_layout(from_graph)
    apply_step(state, step, problems)
    problems.extend(compare_layout(state, to_graph, step.path))
    return problems
