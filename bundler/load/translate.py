"""Translate a bundle from its release to the target's, by upgrade rules declared as data.

An upgrade step (``bundle_spec/upgrades/<from>-<to>.json``, validated by
``bundle_spec/upgrade.schema.json``) lists the rules that turn the tables of one release
into those of the next: ``rename_table``, ``rename_column``, ``add_column`` (filled with a
default), ``drop_column``, ``map_codes`` (a changed code list) and ``split_table`` (some
columns of a table move to a new table). Rules apply in order, each to the layout the
rules before it left; steps chain (r1 → r2 → r3) along the shortest path the step files
offer. A bundle of the target's own release passes through untouched; a pair of releases
with no path between them is refused by name (:class:`NoUpgradePath`).

Nothing here names a billing table. The rules are simulated once on the entity graph's
layout (:func:`check_step`): a rule naming a table or column that is not there at that
point, or a result that differs from the target graph's tables, columns, types and
nullability, is a :class:`~bundler.errors.SpecError` before any data is read. The same
simulation compiles, for every table of the target release, the list of vectorised
operations (pyarrow.compute) that make its record batches from one table of the bundle,
one batch at a time: memory is bounded by the batch size.

A split: every row of the source table gives one row of the new table (unless the rule
says ``skip_when_all_null`` and every moved column is null), whose ``key`` columns are
copied from columns of the source row. In ``r1 → r2`` both the new table's surrogate key
``customer_contacts.i_customer_contact`` and its owner reference
``customer_contacts.i_customer`` are the source ``customers.i_customer``: a row of the
new table has *the same source id as the customer it comes from*, so its id map (and
ledger rows) are keyed by the source customer id, and the reference is rewritten through
the customers' id map like any other. :meth:`Translator.split_origin` tells the loader.
``r1 → r2`` keeps ``skip_when_all_null`` false: one contact row per customer, even when
every contact column is empty, as r2 itself keeps them (and so a round trip r1 → r2
gives the rows an r2 system would hold).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.errors import BundleInvalid, BundlerError, ExitCode, SpecError
from bundler.graph import SPEC_DIR, Graph, arrow_type
from bundler.keys import Key, describe, key_value

if TYPE_CHECKING:
    import pyarrow as pa

    from bundler.bundle import Bundle

UPGRADES_DIR = SPEC_DIR / "upgrades"
UPGRADE_SCHEMA = SPEC_DIR / "upgrade.schema.json"


# -- errors ------------------------------------------------------------------------------------


class NoUpgradePath(BundlerError):
    """No chain of upgrade steps leads from the bundle's release to the target's."""

    exit_code = ExitCode.FAILED

    def __init__(
        self, from_release: str, to_release: str, known: Sequence[UpgradeStep], directory: Path
    ) -> None:
        self.from_release = from_release
        self.to_release = to_release
        steps = ", ".join(s.name for s in known) or "none"
        super().__init__(
            f"no upgrade path from release {from_release} to release {to_release} "
            f"(known upgrade steps: {steps})",
            hint=f"load it into a target of release {from_release}, or add an upgrade step to {directory}",
        )


class UnmappedCode(BundlerError):
    """A value of a code column that the upgrade's ``map_codes`` rule does not name."""

    exit_code = ExitCode.FAILED

    def __init__(
        self,
        *,
        step: UpgradeStep,
        table: str,
        column: str,
        value: Any,
        bundle: str | None = None,
        row: Key | None = None,
        count: int = 1,
        others: Sequence[Any] = (),
    ) -> None:
        self.bundle = bundle
        self.table = table
        self.column = column
        self.value = value
        self.row = row
        where = f"bundle {bundle}: " if bundle else ""
        at = f" of row {describe(row)}" if row else ""
        more = ""
        if count > 1:
            listed = ", ".join(repr(v) for v in others[:5])
            more = f" ({count} rows have unmapped codes{': ' + listed if listed else ''})"
        super().__init__(
            f"{where}{table}.{column}{at} holds {value!r}, a code the upgrade {step.name} does not map{more}",
            hint=f"add it to the map_codes rule of {table}.{column} in {step.path}, or change it in the source",
        )


# -- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenameTable:
    from_table: str
    to_table: str
    kind = "rename_table"


@dataclass(frozen=True)
class RenameColumn:
    table: str
    from_column: str
    to_column: str
    kind = "rename_column"


@dataclass(frozen=True)
class AddColumn:
    table: str
    column: str
    default: str | int | float | None
    type: str
    kind = "add_column"


@dataclass(frozen=True)
class DropColumn:
    table: str
    column: str
    kind = "drop_column"


@dataclass(frozen=True)
class MapCodes:
    table: str
    column: str
    map: Mapping[str, str | int]
    unmapped: str = "error"
    kind = "map_codes"


@dataclass(frozen=True)
class SplitTable:
    table: str
    into: str
    columns: tuple[str, ...]
    key: Mapping[str, str]
    skip_when_all_null: bool = False
    kind = "split_table"


Rule = RenameTable | RenameColumn | AddColumn | DropColumn | MapCodes | SplitTable


@dataclass(frozen=True)
class UpgradeStep:
    """One upgrade step file: the rules from release ``from_release`` to ``to_release``."""

    from_release: str
    to_release: str
    rules: tuple[Rule, ...]
    description: str = ""
    path: str = "<memory>"

    @property
    def name(self) -> str:
        return f"{self.from_release} → {self.to_release}"


def _rule(doc: dict[str, Any]) -> Rule:
    kind = doc["kind"]
    if kind == "rename_table":
        return RenameTable(doc["from"], doc["to"])
    if kind == "rename_column":
        return RenameColumn(doc["table"], doc["from"], doc["to"])
    if kind == "add_column":
        return AddColumn(doc["table"], doc["column"], doc["default"], doc["type"])
    if kind == "drop_column":
        return DropColumn(doc["table"], doc["column"])
    if kind == "map_codes":
        return MapCodes(doc["table"], doc["column"], dict(doc["map"]), doc.get("unmapped", "error"))
    if kind == "split_table":
        return SplitTable(
            doc["table"],
            doc["into"],
            tuple(doc["columns"]),
            dict(doc["key"]),
            bool(doc.get("skip_when_all_null", False)),
        )
    raise SpecError(f"unknown upgrade rule kind {kind!r}")  # pragma: no cover - the schema refuses it


def parse_step(doc: Any, *, path: str = "<memory>") -> UpgradeStep:
    """Validate an upgrade step document against its JSON Schema and type it."""
    import jsonschema

    schema = json.loads(UPGRADE_SCHEMA.read_text())
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path)
    )
    if errors:
        # The most specific message: the deepest path (an `allOf`/`if` wrapper says little).
        first = max(errors, key=lambda e: len(e.absolute_path))
        at = "/".join(str(p) for p in first.absolute_path) or "(top)"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise SpecError(
            f"upgrade step {path} does not validate at {at}: {first.message}{more}",
            hint=f"fix it to match {UPGRADE_SCHEMA}",
        )
    return UpgradeStep(
        from_release=doc["from"],
        to_release=doc["to"],
        rules=tuple(_rule(r) for r in doc["rules"]),
        description=doc.get("description", ""),
        path=path,
    )


def load_step(path: str | Path) -> UpgradeStep:
    """Read, validate and type one upgrade step file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise SpecError(f"cannot read upgrade step {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"upgrade step {path} is not valid JSON: {exc}") from None
    return parse_step(doc, path=str(path))


def known_steps(directory: str | Path | None = None) -> list[UpgradeStep]:
    """Every upgrade step file of ``directory`` (default ``bundle_spec/upgrades/``)."""
    folder = Path(directory) if directory is not None else UPGRADES_DIR
    steps = [load_step(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    seen: dict[tuple[str, str], UpgradeStep] = {}
    for step in steps:
        pair = (step.from_release, step.to_release)
        if pair in seen:
            raise SpecError(
                f"two upgrade steps {step.name}: {seen[pair].path} and {step.path}", hint="keep one"
            )
        if step.from_release == step.to_release:
            raise SpecError(f"upgrade step {step.path} goes from release {step.from_release} to itself")
        seen[pair] = step
    return steps


def upgrade_path(
    from_release: str, to_release: str, *, directory: str | Path | None = None
) -> list[UpgradeStep]:
    """The steps, in order, from ``from_release`` to ``to_release``: the fewest the step files allow.

    The same release needs none (``[]``). Raises :class:`NoUpgradePath` when no chain of
    steps leads there (a downgrade, or a release no step names).
    """
    if from_release == to_release:
        return []
    steps = known_steps(directory)
    by_from: dict[str, list[UpgradeStep]] = {}
    for step in steps:
        by_from.setdefault(step.from_release, []).append(step)
    came: dict[str, UpgradeStep | None] = {from_release: None}
    queue = deque([from_release])
    while queue:
        release = queue.popleft()
        for step in by_from.get(release, []):
            if step.to_release in came:
                continue
            came[step.to_release] = step
            if step.to_release == to_release:
                path: list[UpgradeStep] = []
                at: UpgradeStep | None = step
                while at is not None:
                    path.append(at)
                    at = came[at.from_release]
                return path[::-1]
            queue.append(step.to_release)
    raise NoUpgradePath(
        from_release, to_release, steps, Path(directory) if directory is not None else UPGRADES_DIR
    )


# -- the layout simulation ---------------------------------------------------------------------


@dataclass
class _Col:
    name: str
    type: str
    nullable: bool
    origin: str | None  # the bundle column it carries, None for an added column


@dataclass
class _Table:
    """One table of the release being built: its columns, and how to make it from the bundle."""

    origin: str  # the bundle table its rows come from
    columns: dict[str, _Col]
    pk: tuple[str, ...]
    ops: list[_Op] = field(default_factory=list)
    key_ops: list[_Op] = field(default_factory=list)  # what happens to a natural key (no splits)
    # made by a split: (rule, table split from, step, key column -> bundle column it copies)
    split: tuple[SplitTable, _Table, UpgradeStep, dict[str, str]] | None = None
    born: bool = False  # made by a split: a natural key of the bundle never names it


def _initial(graph: Graph) -> dict[str, _Table]:
    return {
        name: _Table(
            origin=name,
            columns={c.name: _Col(c.name, c.type, c.nullable, c.name) for c in spec.columns},
            pk=spec.pk,
        )
        for name, spec in graph.tables.items()
    }


def _apply_step(state: dict[str, _Table], step: UpgradeStep, problems: list[str]) -> None:
    for number, rule in enumerate(step.rules, 1):
        where = f"{step.path}: rule {number} ({rule.kind})"
        problem = _apply_rule(state, rule, step)
        if problem:
            problems.append(f"{where}: {problem}")


def _apply_rule(state: dict[str, _Table], rule: Rule, step: UpgradeStep) -> str | None:
    """Apply one rule to the layout; a problem (and the layout unchanged) when it does not fit."""
    if isinstance(rule, RenameTable):
        if rule.from_table not in state:
            return f"there is no table {rule.from_table!r} at this point"
        if rule.to_table in state:
            return f"table {rule.to_table!r} exists already"
        state[rule.to_table] = state.pop(rule.from_table)
        return None
    table = state.get(rule.table)
    if table is None:
        return f"there is no table {rule.table!r} at this point"
    cols = table.columns
    if isinstance(rule, RenameColumn):
        if rule.from_column not in cols:
            return f"{rule.table} has no column {rule.from_column!r} at this point"
        if rule.to_column in cols:
            return f"{rule.table} has a column {rule.to_column!r} already"
        table.columns = {
            (rule.to_column if n == rule.from_column else n): (
                _Col(rule.to_column, c.type, c.nullable, c.origin) if n == rule.from_column else c
            )
            for n, c in cols.items()
        }
        table.pk = tuple(rule.to_column if c == rule.from_column else c for c in table.pk)
        op = _Rename(rule.from_column, rule.to_column)
        table.ops.append(op)
        table.key_ops.append(op)
        return None
    if isinstance(rule, AddColumn):
        if rule.column in cols:
            return f"{rule.table} has a column {rule.column!r} already"
        try:
            add = _Add(rule.column, rule.type, rule.default)
        except (SpecError, ValueError, TypeError, ArithmeticError) as exc:
            return f"default {rule.default!r} of {rule.table}.{rule.column} is not a {rule.type}: {exc}"
        cols[rule.column] = _Col(rule.column, rule.type, rule.default is None, None)
        table.ops.append(add)
        table.key_ops.append(add)
        return None
    if isinstance(rule, DropColumn):
        if rule.column not in cols:
            return f"{rule.table} has no column {rule.column!r} at this point"
        del cols[rule.column]
        op_drop = _Drop((rule.column,))
        table.ops.append(op_drop)
        table.key_ops.append(op_drop)
        return None
    if isinstance(rule, MapCodes):
        if rule.column not in cols:
            return f"{rule.table} has no column {rule.column!r} at this point"
        try:
            op_map = _Map(rule, step, cols[rule.column].type, table.pk)
        except Exception as exc:  # any cast failure is the rule's fault
            return f"the codes of {rule.table}.{rule.column} are not all {cols[rule.column].type}: {exc}"
        table.ops.append(op_map)
        table.key_ops.append(op_map)
        return None
    # SplitTable
    if rule.into in state:
        return f"table {rule.into!r} exists already"
    missing = [c for c in (*rule.columns, *rule.key.values()) if c not in cols]
    if missing:
        return f"{rule.table} has no column {missing[0]!r} at this point"
    clash = [c for c in rule.key if c in rule.columns]
    if clash:
        return f"key column {clash[0]!r} of {rule.into} is also a moved column"
    new_cols = {
        new: _Col(new, cols[src].type, cols[src].nullable, cols[src].origin) for new, src in rule.key.items()
    }
    new_cols.update({c: cols[c] for c in rule.columns})
    new_pk = tuple(
        next(new for new, src in rule.key.items() if src == c) for c in table.pk if c in rule.key.values()
    )
    state[rule.into] = _Table(
        origin=table.origin,
        columns=new_cols,
        pk=new_pk,
        ops=[*table.ops, _Split(rule)],
        split=(rule, table, step, {new: cols[src].origin or src for new, src in rule.key.items()}),
        born=True,
    )
    for c in rule.columns:
        del cols[c]
    op_drop = _Drop(rule.columns)
    table.ops.append(op_drop)
    table.key_ops.append(op_drop)
    return None


def _compare(state: dict[str, _Table], graph: Graph, label: str) -> list[str]:
    """Where the simulated layout differs from ``graph``'s tables and columns."""
    problems: list[str] = []
    for name in sorted(set(state) - set(graph.tables)):
        problems.append(f"{label}: table {name} would remain, but release {graph.release} has no such table")
    for name in sorted(set(graph.tables) - set(state)):
        problems.append(
            f"{label}: table {name} of release {graph.release} is made by no rule "
            "(a split_table or rename_table rule must make it)"
        )
    for name in sorted(set(state) & set(graph.tables)):
        table, spec = state[name], graph.tables[name]
        have, want = table.columns, spec.column_map
        for col in [c for c in spec.column_names if c not in have]:
            problems.append(f"{label}: {name}.{col} of release {graph.release} is made by no rule")
        for col in [c for c in have if c not in want]:
            problems.append(
                f"{label}: {name}.{col} would remain, but release {graph.release} has no such column"
            )
        for col in [c for c in spec.column_names if c in have]:
            got, need = have[col], want[col]
            if got.type != need.type:
                problems.append(
                    f"{label}: {name}.{col} would be {got.type}, release {graph.release} has {need.type}"
                )
            elif got.nullable and not need.nullable:
                problems.append(
                    f"{label}: {name}.{col} may be null, but it is NOT NULL in release {graph.release}"
                )
        if table.split is not None:
            rule = table.split[0]
            if not set(spec.pk) <= set(rule.key):
                problems.append(
                    f"{label}: the primary key {', '.join(spec.pk)} of {name} is not among the key columns of "
                    f"the split_table rule that makes it"
                )
    return problems


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
    state = _initial(from_graph)
    _apply_step(state, step, problems)
    problems.extend(_compare(state, to_graph, step.path))
    return problems


# -- operations on record batches --------------------------------------------------------------


class _Frame:
    """The named columns of one batch while it is being translated."""

    def __init__(self, columns: dict[str, pa.Array], num_rows: int) -> None:
        self.columns = columns
        self.num_rows = num_rows


@dataclass
class _Context:
    bundle: str | None
    table: str


class _Op:
    def apply(self, frame: _Frame, ctx: _Context) -> _Frame:  # pragma: no cover - abstract
        raise NotImplementedError

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        return key


class _Rename(_Op):
    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def apply(self, frame: _Frame, ctx: _Context) -> _Frame:
        return _Frame(
            {(self.new if n == self.old else n): a for n, a in frame.columns.items()}, frame.num_rows
        )

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        return {(self.new if n == self.old else n): v for n, v in key.items()}


class _Drop(_Op):
    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = frozenset(columns)

    def apply(self, frame: _Frame, ctx: _Context) -> _Frame:
        return _Frame({n: a for n, a in frame.columns.items() if n not in self.columns}, frame.num_rows)

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        return {n: v for n, v in key.items() if n not in self.columns}


class _Add(_Op):
    def __init__(self, column: str, type_name: str, default: Any) -> None:
        import pyarrow as pa

        self.column = column
        self.type = arrow_type(type_name)
        self.scalar = pa.scalar(None, self.type) if default is None else _cast_scalar(default, self.type)
        self.key_value = key_value(self.scalar.as_py())

    def apply(self, frame: _Frame, ctx: _Context) -> _Frame:
        import pyarrow as pa

        if self.scalar.is_valid:
            array = pa.repeat(self.scalar, frame.num_rows)
        else:
            array = pa.nulls(frame.num_rows, self.type)
        return _Frame({**frame.columns, self.column: array}, frame.num_rows)

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        return {**key, self.column: self.key_value}


def _cast_scalar(value: Any, type_: pa.DataType) -> pa.Scalar:
    import pyarrow as pa

    if isinstance(value, bool):
        raise TypeError("a boolean is no column value")
    if pa.types.is_string(type_) or pa.types.is_decimal(type_) or isinstance(value, str):
        return pa.scalar(str(value)).cast(type_)
    return pa.scalar(value).cast(type_)


class _Map(_Op):
    def __init__(self, rule: MapCodes, step: UpgradeStep, type_name: str, pk: tuple[str, ...]) -> None:
        import pyarrow as pa

        self.rule, self.step, self.pk = rule, step, pk
        type_ = arrow_type(type_name)
        olds = list(rule.map)
        self.old = pa.array(olds, pa.string()).cast(type_)
        self.new = pa.array([str(v) for v in rule.map.values()], pa.string()).cast(type_)
        # natural keys hold JSON scalars (bundler.keys.key_value): map those the same way
        self.key_map = {
            key_value(o): key_value(n)
            for o, n in zip(self.old.to_pylist(), self.new.to_pylist(), strict=True)
        }

    def apply(self, frame: _Frame, ctx: _Context) -> _Frame:
        import pyarrow.compute as pc

        values = frame.columns[self.rule.column]
        index = pc.index_in(values, value_set=self.old)
        mapped = pc.take(self.new, index)
        unmapped = pc.and_(pc.is_null(index), pc.is_valid(values))
        if self.rule.unmapped == "keep":
            mapped = pc.if_else(unmapped, values, mapped)
        elif pc.any(unmapped).as_py():
            first = pc.index(unmapped, True).as_py()
            bad = pc.filter(values, unmapped)
            row = {c: key_value(frame.columns[c][first].as_py()) for c in self.pk if c in frame.columns}
            raise UnmappedCode(
                step=self.step,
                table=self.rule.table,
                column=self.rule.column,
                value=values[first].as_py(),
                bundle=ctx.bundle,
                row=row or {"row": first},
                count=len(bad),
                others=pc.unique(bad).to_pylist(),
            )
        return _Frame({**frame.columns, self.rule.column: mapped}, frame.num_rows)

    def key(self, key: dict[str, Any], table: str) -> dict[str, Any]:
        column = self.rule.column
        if column not in key or key[column] is None or isinstance(key[column], dict):
            return key
        value = key[column]
        if value in self.key_map:
            return {**key, column: self.key_map[value]}
        if self.rule.unmapped == "keep":
            return key
        raise UnmappedCode(step=self.step, table=table, column=column, value=value, row=key)


class _Split(_Op):
    def __init__(self, rule: SplitTable) -> None:
        self.rule = rule

    def apply(self, frame: _Frame, ctx: _Context) -> _Frame:
        import pyarrow as pa
        import pyarrow.compute as pc

        src = frame.columns
        columns = {new: src[old] for new, old in self.rule.key.items()}
        columns.update({c: src[c] for c in self.rule.columns})
        if not self.rule.skip_when_all_null:
            return _Frame(columns, frame.num_rows)
        keep = pc.is_valid(src[self.rule.columns[0]])
        for c in self.rule.columns[1:]:
            keep = pc.or_(keep, pc.is_valid(src[c]))
        if pc.all(keep).as_py() is not False:
            return _Frame(columns, frame.num_rows)
        kept = pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns)).filter(keep)
        return _Frame(dict(zip(kept.schema.names, kept.columns, strict=True)), kept.num_rows)


# -- the translator ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitOrigin:
    """How a table made by a ``split_table`` rule comes from the bundle.

    ``key`` maps each of its key columns to the bundle column it copies (in the bundle's
    naming). Its primary key is among them and copies the source table's primary key: a
    row of ``table`` has the same source id as the row of ``parent`` it comes from, so the
    id map and the ledger of ``table`` are keyed by that source id.
    """

    table: str  # the target table the split makes
    source: str  # the bundle table its rows come from
    parent: str  # the target table the rest of each source row becomes
    key: Mapping[str, str]
    skip_when_all_null: bool
    step: str  # the upgrade step file that declares it


@dataclass(frozen=True)
class _Plan:
    table: str
    origin: str
    ops: tuple[_Op, ...]
    schema: pa.Schema
    origin_columns: tuple[str, ...]


class Translator:
    """Turns the tables and natural keys of a bundle of ``from_graph`` into ``to_graph``'s.

    Build it with :func:`translator_for` (which finds the upgrade path) or from explicit
    steps. The rules are checked against both graphs at once: a :class:`SpecError` lists
    what does not fit.
    """

    def __init__(self, from_graph: Graph, to_graph: Graph, steps: Sequence[UpgradeStep]) -> None:
        self.from_graph = from_graph
        self.to_graph = to_graph
        self.steps = tuple(steps)
        state = _initial(from_graph)
        problems: list[str] = []
        for step in self.steps:
            _apply_step(state, step, problems)
        if self.steps or from_graph.sha256 != to_graph.sha256:
            label = " + ".join(s.path for s in self.steps) or "no upgrade step"
            problems.extend(_compare(state, to_graph, label))
        if problems:
            route = " → ".join([from_graph.release, *(s.to_release for s in self.steps)])
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise SpecError(
                f"the upgrade {route} does not turn the entity graph {from_graph.path} into {to_graph.path}: "
                f"{problems[0]}{more}",
                hint="fix the upgrade step file (bundler.load.translate.check_step lists every problem)",
            )
        self._state = state
        self._by_target: dict[str, _Plan] = {}
        self._by_origin: dict[str, list[str]] = {}
        for name, table in state.items():
            spec = to_graph.table(name)
            self._by_target[name] = _Plan(
                table=name,
                origin=table.origin,
                ops=tuple(table.ops),
                schema=spec.arrow_schema(),
                origin_columns=from_graph.table(table.origin).column_names,
            )
            self._by_origin.setdefault(table.origin, []).append(name)
        self._by_object = {id(t): n for n, t in state.items()}
        self._key_target = {t.origin: n for n, t in state.items() if not t.born}

    @property
    def identity(self) -> bool:
        """True when the bundle is already in the target's release: batches pass through."""
        return not self.steps

    def tables(self, bundle_tables: Iterable[str]) -> list[str]:
        """The target tables the given bundle tables become, in the target's dependency order."""
        wanted: set[str] = set()
        for table in bundle_tables:
            if table not in self._by_origin:
                self.from_graph.table(table)  # raises a SpecError naming the graph
            wanted.update(self._by_origin.get(table, ()))
        return [t for t in self.to_graph.dependency_order if t in wanted]

    def source_of(self, target_table: str) -> str:
        """The bundle table whose rows make ``target_table``."""
        return self._plan(target_table).origin

    def split_origin(self, target_table: str) -> SplitOrigin | None:
        """For a table made by a ``split_table`` rule, how; None for every other table."""
        table = self._state.get(target_table)
        if table is None:
            self._plan(target_table)
        if table is None or table.split is None:
            return None
        rule, parent, step, key = table.split
        return SplitOrigin(
            table=target_table,
            source=table.origin,
            parent=self._by_object.get(id(parent), rule.table),
            key=key,
            skip_when_all_null=rule.skip_when_all_null,
            step=step.path,
        )

    def _plan(self, target_table: str) -> _Plan:
        try:
            return self._by_target[target_table]
        except KeyError:
            raise SpecError(
                f"table {target_table!r} is not in the entity graph of release {self.to_graph.release} "
                f"({self.to_graph.path})"
            ) from None

    def batches(
        self,
        bundle: Bundle,
        target_table: str,
        batch_rows: int = 65_536,
        *,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """The bundle's rows of ``target_table``, translated, one record batch at a time.

        Each batch has exactly ``to_graph.table(target_table).arrow_schema()`` (its columns
        in that order), or, with ``columns``, just those fields of it in that order. A
        bundle without the source table gives no batch.
        """
        import pyarrow as pa

        plan = self._plan(target_table)
        schema = plan.schema
        if columns is not None:
            unknown = [c for c in columns if schema.get_field_index(c) < 0]
            if unknown:
                raise SpecError(
                    f"{target_table} has no column {unknown[0]!r} in release {self.to_graph.release}"
                )
            schema = pa.schema([schema.field(c) for c in columns])
        if plan.origin not in bundle.tables():
            return
        ctx = _Context(bundle.name, plan.origin)
        for batch in bundle.iter_batches(plan.origin, batch_rows):
            if not plan.ops and batch.schema.equals(schema):
                yield batch  # the same release: untouched
                continue
            frame = _Frame(dict(zip(batch.schema.names, batch.columns, strict=True)), batch.num_rows)
            missing = [c for c in plan.origin_columns if c not in frame.columns]
            if missing:
                raise BundleInvalid(
                    bundle.name,
                    [f"table {plan.origin} has no column {missing[0]!r} (release {self.from_graph.release})"],
                )
            for op in plan.ops:
                frame = op.apply(frame, ctx)
            arrays = []
            for f in schema:
                array = frame.columns[f.name]
                arrays.append(array if array.type == f.type else array.cast(f.type))
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)

    def translate_key(self, table: str, key: Mapping[str, Any]) -> tuple[str, Key]:
        """A natural key of a bundle table, in the target's terms: (target table, key).

        Column renames, drops, added columns and code maps apply; a nested key (a
        reference column standing for the referenced row's key) is translated for the
        referenced table. With ``{}`` it just names the target table of a bundle table.
        """
        if table not in self._key_target:
            self.from_graph.table(table)  # raises a SpecError naming the graph
        spec = self.from_graph.table(table)
        out: dict[str, Any] = {}
        for col, value in key.items():
            ref = spec.ref_by_column.get(col)
            if isinstance(value, Mapping) and ref is not None:
                value = self.translate_key(ref.table, value)[1]
            out[col] = value
        target = self._key_target[table]
        if not out:
            return target, {}
        for op in self._state[target].key_ops:
            out = op.key(out, table)
        natural = self.to_graph.table(target).natural_key
        if set(natural) <= set(out):
            out = {c: out[c] for c in natural}
        return target, out

    def translate_column(self, table: str, column: str) -> tuple[str, str | None]:
        """Where a column of a bundle table lands: (target table, column), column None if dropped."""
        self.from_graph.table(table)
        for name, t in self._state.items():
            if t.origin == table and not t.born:
                for c in t.columns.values():
                    if c.origin == column:
                        return name, c.name
        for name, t in self._state.items():
            if t.origin == table and t.born:
                for c in t.columns.values():
                    if c.origin == column and t.split is not None and c.name in t.split[0].columns:
                        return name, c.name
        return self._key_target[table], None


def translator_for(from_graph: Graph, to_graph: Graph, *, directory: str | Path | None = None) -> Translator:
    """The translator from a bundle's graph to the target's, along the upgrade path of their releases."""
    return Translator(
        from_graph, to_graph, upgrade_path(from_graph.release, to_graph.release, directory=directory)
    )
