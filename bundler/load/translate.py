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

The code is in four modules: :mod:`bundler.load.upgrade_rules` (the rules, reading and
validating step files, the path between releases), :mod:`bundler.load.translate_layout`
(the simulation, one small function per rule kind), :mod:`bundler.load.translate_ops`
(the operations on record batches and natural keys) and this one (:class:`Translator`),
which re-exports the public names of the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundler.errors import BundleInvalid, SpecError
from bundler.graph import Graph
from bundler.keys import Key
from bundler.load.translate_layout import (
    Layout,
    LayoutTable,
    apply_step,
    check_step,
    compare_layout,
    initial_layout,
)
from bundler.load.translate_ops import BatchContext, Frame, Op
from bundler.load.upgrade_rules import (
    UPGRADE_SCHEMA,
    UPGRADES_DIR,
    AddColumn,
    DropColumn,
    MapCodes,
    NoUpgradePath,
    RenameColumn,
    RenameTable,
    Rule,
    SplitTable,
    UnmappedCode,
    UpgradeStep,
    known_steps,
    load_step,
    parse_step,
    upgrade_path,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from bundler.bundle import Bundle

__all__ = [
    "UPGRADES_DIR",
    "UPGRADE_SCHEMA",
    "AddColumn",
    "DropColumn",
    "MapCodes",
    "NoUpgradePath",
    "RenameColumn",
    "RenameTable",
    "Rule",
    "SplitOrigin",
    "SplitTable",
    "Translator",
    "UnmappedCode",
    "UpgradeStep",
    "check_step",
    "known_steps",
    "load_step",
    "parse_step",
    "translator_for",
    "upgrade_path",
]


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
    ops: tuple[Op, ...]
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
        state = _simulate(from_graph, to_graph, self.steps)
        self._state = state
        self._by_target: dict[str, _Plan] = {}
        self._by_origin: dict[str, list[str]] = {}
        for name, table in state.items():
            self._by_target[name] = _Plan(
                table=name,
                origin=table.origin,
                ops=tuple(table.ops),
                schema=to_graph.table(name).arrow_schema(),
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
        plan = self._plan(target_table)
        schema = self._batch_schema(plan, columns)
        if plan.origin not in bundle.tables():
            return
        ctx = BatchContext(bundle.name, plan.origin)
        for batch in bundle.iter_batches(plan.origin, batch_rows):
            if not plan.ops and batch.schema.equals(schema):
                yield batch  # the same release: untouched
                continue
            yield self._translate_batch(plan, batch, schema, ctx, bundle)

    def _batch_schema(self, plan: _Plan, columns: Sequence[str] | None) -> pa.Schema:
        """The schema of the batches of ``plan``: the target table's, or just ``columns`` of it."""
        import pyarrow as pa

        schema = plan.schema
        if columns is None:
            return schema
        unknown = [c for c in columns if schema.get_field_index(c) < 0]
        if unknown:
            raise SpecError(f"{plan.table} has no column {unknown[0]!r} in release {self.to_graph.release}")
        return pa.schema([schema.field(c) for c in columns])

    def _translate_batch(
        self, plan: _Plan, batch: pa.RecordBatch, schema: pa.Schema, ctx: BatchContext, bundle: Bundle
    ) -> pa.RecordBatch:
        """One bundle batch of ``plan.origin`` through the operations of ``plan``, cast to ``schema``."""
        import pyarrow as pa

        frame = Frame(dict(zip(batch.schema.names, batch.columns, strict=True)), batch.num_rows)
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
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

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
                landed = _column_carrying(t, column)
                if landed is not None:
                    return name, landed
        for name, t in self._state.items():
            if t.origin == table and t.born and t.split is not None:
                landed = _column_carrying(t, column, among=t.split[0].columns)
                if landed is not None:
                    return name, landed
        return self._key_target[table], None


def _column_carrying(table: LayoutTable, column: str, among: Sequence[str] | None = None) -> str | None:
    """The first column of ``table`` (of ``among``, if given) that carries bundle column ``column``."""
    for c in table.columns.values():
        if c.origin == column and (among is None or c.name in among):
            return c.name
    return None


def _simulate(from_graph: Graph, to_graph: Graph, steps: Sequence[UpgradeStep]) -> Layout:
    """The layout ``steps`` make of ``from_graph``; a :class:`SpecError` when it is not ``to_graph``'s."""
    state = initial_layout(from_graph)
    problems: list[str] = []
    for step in steps:
        apply_step(state, step, problems)
    if steps or from_graph.sha256 != to_graph.sha256:
        label = " + ".join(s.path for s in steps) or "no upgrade step"
        problems.extend(compare_layout(state, to_graph, label))
    if problems:
        route = " → ".join([from_graph.release, *(s.to_release for s in steps)])
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise SpecError(
            f"the upgrade {route} does not turn the entity graph {from_graph.path} into {to_graph.path}: "
            f"{problems[0]}{more}",
            hint="fix the upgrade step file (bundler.load.translate.check_step lists every problem)",
        )
    return state


def translator_for(from_graph: Graph, to_graph: Graph, *, directory: str | Path | None = None) -> Translator:
    """The translator from a bundle's graph to the target's, along the upgrade path of their releases."""
    return Translator(
        from_graph, to_graph, upgrade_path(from_graph.release, to_graph.release, directory=directory)
    )
