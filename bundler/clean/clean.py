"""Clean: remove exactly what was transferred, from the target or from the source.

For customers moved for testing and to be returned, and for tidying either system after
a migration. Not a general clean-up tool: what was never transferred is refused by name.

**What can be named.** A bundle id (``--bundle``), or entities by kind and id or name
(``--customer acme``, ``--kind tariff --id T-Retail``). The kinds come from the
``entities`` section of the entity graph (customer, distributor, reseller, vendor,
product, tariff, access level, DID number, SIM card, CPE in the reference system); the
engine names no billing table. Several may be named in one run: they are planned and
removed together, in one transaction.

**The side.** ``--side target`` removes what loads created, by the target's ledger
(``bundler_loads``, ``bundler_ledger``); ``--side source`` removes what was exported, by
the source's export records (``bundler_exports``, ``bundler_export_marks``). Without
``--side`` a bundle id names its side (it is recorded as a load or as an export); else the
database does: one that recorded loads but no exports is a target, one that recorded
exports but no loads a source; with both or neither the side must be stated.

**Target: the set.** For an entity, the loads are the one whose ledger says it *created*
the entity's row, plus every load that depends on it (the usage bundles of a customer
bundle), transitively. The set is the entity and everything that depends on it
(ownership, downward: a customer's accounts, a tariff's rates, a reseller's
sub-customers, and the usage rows of those), restricted to rows those loads created; then,
upward, every shared row (configuration) those loads created that the set references, with
what belongs to it. For ``--bundle ID`` the same, starting from every row the bundle and
its dependents created. Rows the ledger names as *reused* are never in the set; rows the
ledger does not name are never in the set.

**Source: the set.** The entity must belong (itself, or through its owners: a SIM card to
its customer, a sub-customer to its reseller) to a root that is Exported and has a
finished, marking export (``--no-mark`` audit copies do not count). The set is the
entity's closure as an export computes it (owned rows downward, the shared rows they
reference upward, recomputed from the source as it is now: billing and provisioning stop
at Exported, so it has not changed), and the usage rows of its owned rows inside the usage
window of one of the root's exports (the usage bundles' windows included): usage outside
every window never travelled and is not removed. Shared configuration cannot be named
directly on the source: it goes with the root it was exported with. ``--bundle ID``
names an export: a root bundle (its usage bundles included), or a usage bundle alone (its
usage rows only). Configuration bundles are refused: their rows stay in use in the source.

**Kept rows.** A row of the set that a row outside the set still references is kept,
and so is, in turn, everything that belongs to a kept row and everything a kept row
references: a shared row that another customer still uses survives with its rates; a
customer to which the target added an account after the load is kept whole. Each kept
row is listed with what holds it (``kept tariffs 'T-Retail': still referenced by
products 'X' (not transferred)``), each holder with why it is outside the set: *not
transferred* / *not exported*, *transferred* (or *exported*) *by bundle B, not selected*,
*… outside what was named* (same bundle, not a dependent of the named entity), *not
exported: outside the exported usage window*, or *kept*. Usage outside the exported window
holds its account on the source. Rows held from outside come first, the named rows first
of all.

**Removal.** Children first (reverse dependency order), in one transaction; references
that break cycles (``customers.i_default_site``) and self-references are set to NULL first.
:func:`plan_clean` computes the plan and writes nothing; :func:`run_clean` computes it
again inside its transaction and refuses when the database changed in between, and again
when a delete removes another number of rows than planned. The keys of the set's owned
and shared rows are held in memory; usage rows (xDRs) never are: they are selected,
counted and deleted by SQL, by owner and by the ledger (target) or the export windows
(source). Run it while no load writes the same rows; a racing insert that a foreign key
protects makes the delete fail and roll back.

**Bookkeeping.** Target: every ledger row that names a removed row goes (a reuse recorded
by another load included: the row it names is gone); a load all of whose created
rows are gone is forgotten (its reused ledger rows and its ``bundler_loads`` row go), so
the same bundle can be loaded again; a load with kept rows keeps its record and the
ledger rows of those rows, so a later clean can finish it. Source: the export marks of
removed rows go; the exports of a removed root are recorded as ``cleaned``.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bundler import tracking
from bundler.errors import BundlerError, RootError, UsageError
from bundler.export.closure import Closure, chunks, lookup_row, natural_keys, sorted_values, table_clause
from bundler.graph import EntitySpec, Graph, Reference, TableSpec, graph_for_release, load_graph
from bundler.keys import Key, describe, key_value
from bundler.progress import NullProgress, Progress

SIDES = ("source", "target")
NOT_A_CLEANER = "bundler clean removes only what was transferred; it is not a general clean-up tool"
# export kinds whose root an export marks Exported
_ROOT_EXPORTS = ("customer", "reseller", "vendor")

PK = tuple[Any, ...]


class CleanRefused(BundlerError):
    """Asked to remove something that was never transferred, or that clean does not touch."""


# -- requests, plans, results ----------------------------------------------------------------


@dataclass(frozen=True)
class CleanRequest:
    """What the operator asked for: bundle ids and (kind, id-or-name) entities, on a side."""

    entities: tuple[tuple[str, str], ...] = ()
    bundles: tuple[str, ...] = ()
    side: str | None = None
    spec: str | None = None


@dataclass(frozen=True)
class Selected:
    """One named thing, resolved: what it is and the loads or exports it covers."""

    what: str
    bundles: tuple[str, ...]


@dataclass(frozen=True)
class KeptRow:
    """A row of the set that stays, and why."""

    table: str
    pk: Any
    label: str
    reason: str
    # held by a row outside the set that is not itself kept: a cause, not a consequence
    held_from_outside: bool = False

    def line(self) -> str:
        return f"kept {self.table} {self.label}: {self.reason}"


@dataclass
class CleanPlan:
    """What a clean would remove (children first) and keep. Nothing is written to make it."""

    request: CleanRequest
    side: str
    side_reason: str
    database: str
    release: str
    selected: list[Selected]
    tables: dict[str, int]
    unlink: dict[str, int]
    kept: list[KeptRow]
    closes: list[str]
    partly: dict[str, int]

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def signature(self) -> tuple[Any, ...]:
        """What must not change between the plan and the run."""
        return (
            self.side,
            tuple(self.tables.items()),
            tuple(sorted((k.table, json.dumps(k.pk)) for k in self.kept)),
            tuple(sorted(self.closes)),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "side_reason": self.side_reason,
            "database": self.database,
            "release": self.release,
            "selected": [{"what": s.what, "bundles": list(s.bundles)} for s in self.selected],
            "rows": self.rows,
            "tables": dict(self.tables),
            "unlink": dict(self.unlink),
            "kept": [
                {
                    "table": k.table,
                    "pk": k.pk,
                    "label": k.label,
                    "reason": k.reason,
                    "held_from_outside": k.held_from_outside,
                }
                for k in self.kept
            ],
            ("forget_loads" if self.side == "target" else "close_exports"): list(self.closes),
            ("loads_kept" if self.side == "target" else "exports_kept"): dict(self.partly),
        }


@dataclass
class CleanResult:
    plan: CleanPlan
    deleted: dict[str, int]
    bookkeeping_rows: int
    closed: list[str]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(self.deleted.values())

    def summary(self) -> dict[str, Any]:
        out = self.plan.summary()
        out.update(
            outcome="cleaned",
            deleted=dict(self.deleted),
            rows_deleted=self.rows,
            bookkeeping_rows_removed=self.bookkeeping_rows,
            seconds=round(self.seconds, 3),
        )
        out["forgot_loads" if self.plan.side == "target" else "closed_exports"] = list(self.closed)
        return out


# -- small helpers ---------------------------------------------------------------------------


def _pk_text(values: PK) -> str:
    """A primary key as the ledger and the export marks write it."""
    return str(values[0]) if len(values) == 1 else json.dumps([key_value(v) for v in values])


def _pk_json(values: PK) -> Any:
    return key_value(values[0]) if len(values) == 1 else [key_value(v) for v in values]


def _typed(spec: TableSpec, column: str, text: str) -> Any:
    ctype = spec.column_map[column].type if column in spec.column_map else "string"
    return int(text) if ctype.startswith("int") else text


def _short(key: Key) -> str:
    if len(key) == 1:
        (value,) = key.values()
        if isinstance(value, str):
            return repr(value)
        if not isinstance(value, dict):
            return str(value)
    return describe(key)


def _graph(connection: sa.Connection, spec: str | Path | None) -> Graph:
    if spec is not None:
        return load_graph(spec)
    return graph_for_release(tracking.read_system(connection).release)


def _count(connection: sa.Connection, table: sa.Table, inspector: Any) -> int:
    if not inspector.has_table(table.name):
        return 0
    return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _side(connection: sa.Connection, request: CleanRequest) -> tuple[str, str]:
    if request.side is not None:
        if request.side not in SIDES:
            raise UsageError(f"--side {request.side!r}: choose source or target")
        return request.side, "stated"
    inspector = sa.inspect(connection)
    loads, exports = tracking.loads_table, tracking.exports_table
    for bundle_id in request.bundles:
        loaded = (
            inspector.has_table(loads.name)
            and connection.execute(sa.select(loads.c.bundle_id).where(loads.c.bundle_id == bundle_id)).first()
        )
        exported = (
            inspector.has_table(exports.name)
            and connection.execute(
                sa.select(exports.c.bundle_id).where(exports.c.bundle_id == bundle_id)
            ).first()
        )
        if loaded and not exported:
            return "target", f"inferred: bundle {bundle_id} is recorded as a load here"
        if exported and not loaded:
            return "source", f"inferred: bundle {bundle_id} is recorded as an export here"
    n_loads = _count(connection, loads, inspector)
    n_exports = _count(connection, exports, inspector)
    if n_loads and not n_exports:
        return "target", f"inferred: this database recorded {n_loads} load(s) and no export"
    if n_exports and not n_loads:
        return "source", f"inferred: this database recorded {n_exports} export(s) and no load"
    if not n_loads and not n_exports:
        raise UsageError(
            "cannot tell the side: this database recorded neither exports nor loads, so nothing was "
            "transferred from or into it",
            hint="pass --side source or --side target if it really is one",
        )
    raise UsageError(
        f"cannot tell the side: this database recorded {n_exports} export(s) and {n_loads} load(s)",
        hint="say which to clean with --side source or --side target",
    )


def _find(
    connection: sa.Connection, graph: Graph, entity: EntitySpec, ident: str, side: str
) -> dict[str, Any]:
    """The row an operator names by id or name, checked to be of the entity's kind."""

    spec = graph.table(entity.table)
    text = str(ident).strip()
    row = lookup_row(connection, spec, entity.lookup, ident)
    kind = entity.kind.replace("_", " ")
    if row is None:
        raise RootError(
            f"no {kind} {text!r} in the {side} ({spec.name} has no row with {' or '.join(entity.lookup)} = {text!r})",
            hint="check the id or name: on each side, ids are that database's own",
        )
    data = row
    for col, allowed in entity.where.items():
        if data[col] not in allowed:
            others = [
                k
                for k, e in graph.entities.items()
                if e.table == spec.name and all(data[c] in v for c, v in e.where.items())
            ]
            hint = f"it is a {others[0].replace('_', ' ')}: use --kind {others[0]}" if others else None
            raise RootError(f"{spec.name} {text!r} is not a {kind} ({col} = {data[col]!r})", hint=hint)
    return data


def _resolve_kind(graph: Graph, kind: str) -> EntitySpec:
    return graph.entity(kind.strip().lower().replace("-", "_").replace(" ", "_"))


# -- scopes: one per named thing -------------------------------------------------------------


@dataclass
class _Scope:
    what: str
    bundles: frozenset[str]
    closure: Closure
    candidates: bool = True
    # target: ledger 'created' rows of the scope's loads, table -> pk text
    created: dict[str, set[str]] | None = None
    # source: the root whose exports are closed when its row is removed
    root: tuple[str, PK] | None = None

    def is_candidate(self, table: str, pk: PK) -> bool:
        if not self.candidates:
            return False
        return self.created is None or _pk_text(pk) in self.created.get(table, ())


@dataclass(frozen=True)
class _UsagePart:
    """Usage rows of ``table`` whose ``ref`` (an owner reference) is one of ``values``, transferred
    by one of ``bundles``. The parts of a table cover disjoint rows."""

    table: str
    ref: Reference
    values: frozenset[Any]
    bundles: frozenset[str]


@dataclass(frozen=True)
class _Held:
    table: str
    column: str
    value: Any
    count: int


@dataclass(frozen=True)
class _Belongs:
    table: str
    pk: PK


class _Planner:
    """Computes a plan on one connection; :meth:`execute` carries it out on the same one."""

    def __init__(self, connection: sa.Connection, graph: Graph, side: str) -> None:
        self.conn = connection
        self.graph = graph
        self.side = side
        self.scopes: list[_Scope] = []
        self.windows: dict[str, tuple[str, datetime | None, datetime | None]] = {}
        self.rows: dict[str, dict[PK, dict[str, Any]]] = defaultdict(dict)
        self.cand: dict[str, set[PK]] = defaultdict(set)
        self.kept: dict[str, dict[PK, list[_Held | _Belongs]]] = defaultdict(dict)
        self.parts: dict[str, list[_UsagePart]] = defaultdict(list)
        self._totals: dict[tuple[str, str], dict[Any, int]] = defaultdict(dict)
        self._index: dict[tuple[str, str], dict[Any, list[PK]]] = {}
        self.created_by: dict[str, dict[str, str]] = defaultdict(dict)
        self.named: set[tuple[str, PK]] = set()  # the rows the operator named, listed first when kept

    # -- resolving what was named ----------------------------------------------------------

    def resolve(self, request: CleanRequest) -> None:
        if not request.entities and not request.bundles:
            raise UsageError(
                "name what to clean: --bundle ID, --customer ID_OR_NAME or --kind KIND --id ID",
                hint="see bundler clean --help",
            )
        for bundle_id in request.bundles:
            self.scopes.append(
                self._target_bundle(bundle_id) if self.side == "target" else self._source_bundle(bundle_id)
            )
        for kind, ident in request.entities:
            entity = _resolve_kind(self.graph, kind)
            row = _find(self.conn, self.graph, entity, ident, self.side)
            spec = self.graph.table(entity.table)
            self.named.add((spec.name, tuple(row[c] for c in spec.pk)))
            if self.side == "target":
                self.scopes.append(self._target_entity(entity, row))
            else:
                self.scopes.append(self._source_entity(entity, row))

    def _what(self, entity: EntitySpec, row: dict[str, Any]) -> str:
        spec = self.graph.table(entity.table)
        pk = tuple(row[c] for c in spec.pk)
        return f"{entity.kind.replace('_', ' ')} {self._labels(spec.name, [pk])[pk]} ({spec.name} {_pk_text(pk)})"

    # target

    def _with_dependents(self, bundles: set[str]) -> frozenset[str]:
        loads = tracking.loads_table
        found = set(bundles)
        frontier = set(bundles)
        while frontier:
            more = set(
                self.conn.execute(
                    sa.select(loads.c.bundle_id).where(loads.c.depends_on.in_(sorted(frontier)))
                ).scalars()
            )
            frontier = more - found
            found |= more
        return frozenset(found)

    def _created(self, bundles: frozenset[str]) -> dict[str, set[str]]:
        ledger = tracking.ledger_table
        usage = [t.name for t in self.graph.in_scope("usage")]
        out: dict[str, set[str]] = defaultdict(set)
        stmt = sa.select(ledger.c.bundle_id, ledger.c.table_name, ledger.c.target_pk).where(
            ledger.c.bundle_id.in_(sorted(bundles)), ledger.c.action == "created"
        )
        if usage:
            stmt = stmt.where(ledger.c.table_name.not_in(usage))
        for bundle_id, table, target_pk in self.conn.execute(stmt):
            out[table].add(target_pk)
            self.created_by[table][target_pk] = bundle_id
        return out

    def _target_bundle(self, bundle_id: str) -> _Scope:
        loads = tracking.loads_table
        load = self.conn.execute(sa.select(loads).where(loads.c.bundle_id == bundle_id)).first()
        if load is None:
            raise CleanRefused(
                f"bundle {bundle_id} was never loaded into this target (or was cleaned from it already)",
                hint=NOT_A_CLEANER,
            )
        bundles = self._with_dependents({bundle_id})
        created = self._created(bundles)
        closure = Closure(self.conn, self.graph, follow_shared=False)
        if load.root_table and load.root_target_pk and load.root_table in self.graph.tables:
            spec = self.graph.table(load.root_table)
            closure.add(
                spec.name, closure.fetch(spec, spec.pk[0], [_typed(spec, spec.pk[0], load.root_target_pk)])
            )
        for table, pks in created.items():
            seed = self.graph.tables.get(table)
            if seed is None or len(seed.pk) != 1:
                continue  # composite keys come with the rows they belong to
            closure.add(table, closure.fetch(seed, seed.pk[0], [_typed(seed, seed.pk[0], p) for p in pks]))
        scope = _Scope(f"bundle {bundle_id}", bundles, closure, created=created)
        self._grow(scope)
        return scope

    def _target_entity(self, entity: EntitySpec, row: dict[str, Any]) -> _Scope:
        spec = self.graph.table(entity.table)
        pk = tuple(row[c] for c in spec.pk)
        ledger = tracking.ledger_table
        found = self.conn.execute(
            sa.select(ledger.c.bundle_id, ledger.c.action).where(
                ledger.c.table_name == spec.name, ledger.c.target_pk == _pk_text(pk)
            )
        ).all()
        what = self._what(entity, row)
        created = {b for b, action in found if action == "created"}
        if not created:
            if found:
                reused = ", ".join(sorted({b for b, _ in found}))
                raise CleanRefused(
                    f"{what} was not created by a load: bundle {reused} reused the target's own row",
                    hint="clean never removes a row a load reused; " + NOT_A_CLEANER,
                )
            raise CleanRefused(
                f"{what} was never transferred into this target (the ledger names no such row)",
                hint=NOT_A_CLEANER,
            )
        bundles = self._with_dependents(created)
        closure = Closure(self.conn, self.graph, follow_shared=False)
        closure.add(spec.name, closure.fetch(spec, spec.pk[0], [pk[0]]))
        scope = _Scope(what, bundles, closure, created=self._created(bundles))
        self._grow(scope)
        return scope

    def _grow(self, scope: _Scope) -> None:
        """Downward from the seeds, then upward to the shared rows the scope's loads created."""
        closure, created = scope.closure, scope.created or {}
        closure.run()
        tried: dict[tuple[str, str], set[Any]] = defaultdict(set)

        def bring(table: str, column: str, values: set[Any]) -> int:
            target = self.graph.tables[table]
            values = {v for v in values if not closure.contains(table, column, v)} - tried[(table, column)]
            if not values:
                return 0
            tried[(table, column)] |= values
            found = closure.fetch(target, column, values)
            mine = [r for r in found if _pk_text(tuple(r[c] for c in target.pk)) in created.get(table, ())]
            return closure.add(table, mine)

        added = 0
        for spec in self.graph.in_scope("usage"):
            owners = closure.usage_owners.get(spec.name)
            if not owners:
                continue
            for ref in spec.references:
                if ref.owner or self.graph.tables[ref.table].scope != "shared":
                    continue
                values = self._usage_distinct(spec, ref.column, owners, scope.bundles)
                added += bring(ref.table, ref.target_column, values)
        while True:
            if added:
                closure.run()
            added = 0
            for table in list(closure.rows):
                spec = self.graph.tables[table]
                mine = [r for pk, r in closure.rows[table].items() if _pk_text(pk) in created.get(table, ())]
                for ref in spec.references:
                    if self.graph.tables[ref.table].scope != "shared":
                        continue
                    added += bring(ref.table, ref.target_column, {r.get(ref.column) for r in mine} - {None})
            if not added:
                break

    # source

    def _transfer_exports(self, table: str, pk: PK) -> dict[str, Any]:
        exports = tracking.exports_table
        rows = self.conn.execute(
            sa.select(exports).where(
                exports.c.root_table == table, exports.c.root_pk == _pk_text(pk), exports.c.status == "done"
            )
        ).all()
        marked = {r.bundle_id: r for r in rows if r.kind in _ROOT_EXPORTS and r.marked}
        usage = {r.bundle_id: r for r in rows if r.kind == "usage" and r.depends_on in marked}
        return {**marked, **usage}

    def _check_exported(
        self, spec: TableSpec, row: dict[str, Any], what: str, bundles: Iterable[str]
    ) -> None:
        status = spec.status
        if status is not None and row[status.column] != status.exported:
            raise CleanRefused(
                f"{what} is not Exported in the source ({status.column} = {row[status.column]!r}): "
                f"export {', '.join(sorted(bundles))} was undone or it was reactivated",
                hint="clean removes from the source only what stays exported; " + NOT_A_CLEANER,
            )

    def _source_scope(
        self,
        what: str,
        bundles: dict[str, Any],
        seeds: dict[str, list[dict[str, Any]]],
        root: tuple[str, PK],
        candidates: bool = True,
    ) -> _Scope:
        for bundle_id, rec in bundles.items():
            self.windows[bundle_id] = (rec.usage_mode, rec.window_from, rec.window_to)
        closure = Closure(self.conn, self.graph, follow_shared=candidates)
        for table, rows in seeds.items():
            spec = self.graph.table(table)
            closure.add(table, closure.fetch(spec, spec.pk[0], [r[spec.pk[0]] for r in rows]))
        closure.run()
        scope = _Scope(what, frozenset(bundles), closure, candidates=candidates, root=root)
        if candidates:  # shared rows only the transferred usage references were in the bundle too
            for spec in self.graph.in_scope("usage"):
                owners = closure.usage_owners.get(spec.name)
                if not owners:
                    continue
                for ref in spec.references:
                    if not ref.owner and self.graph.tables[ref.table].scope == "shared":
                        values = self._usage_distinct(spec, ref.column, owners, scope.bundles)
                        closure.reference(ref.table, ref.target_column, values)
            closure.run()
        return scope

    def _source_bundle(self, bundle_id: str) -> _Scope:
        exports = tracking.exports_table
        rec = self.conn.execute(sa.select(exports).where(exports.c.bundle_id == bundle_id)).first()
        if rec is None:
            raise CleanRefused(f"bundle {bundle_id} was never exported from this source", hint=NOT_A_CLEANER)
        if rec.status != "done":
            raise CleanRefused(
                f"export {bundle_id} is {rec.status}, not done: nothing of it was transferred",
                hint=NOT_A_CLEANER,
            )
        if rec.kind == "config" or not rec.root_table:
            raise CleanRefused(
                f"bundle {bundle_id} carries configuration, which stays in use in the source",
                hint="configuration leaves the source only with the root it was exported with",
            )
        if rec.kind != "usage" and not rec.marked:
            raise CleanRefused(
                f"export {bundle_id} is an audit copy (--no-mark): its root was not moved", hint=NOT_A_CLEANER
            )
        spec = self.graph.table(rec.root_table)
        t = table_clause(spec)
        value = _typed(spec, spec.pk[0], rec.root_pk)
        row = self.conn.execute(sa.select(t).where(t.c[spec.pk[0]] == value)).mappings().first()
        if row is None:
            raise CleanRefused(
                f"the root of export {bundle_id} ({spec.name} {rec.root_pk}) is no longer in the source "
                "(cleaned already?)",
                hint=NOT_A_CLEANER,
            )
        pk = (value,)
        everything = self._transfer_exports(spec.name, pk)
        if rec.kind == "usage":
            bundles = {bundle_id: rec}
        else:
            bundles = {b: r for b, r in everything.items() if b == bundle_id or r.depends_on == bundle_id}
        what = f"bundle {bundle_id} ({spec.name} {self._labels(spec.name, [pk])[pk]})"
        self._check_exported(spec, dict(row), what, bundles)
        return self._source_scope(
            what, bundles, {spec.name: [dict(row)]}, (spec.name, pk), rec.kind != "usage"
        )

    def _source_entity(self, entity: EntitySpec, row: dict[str, Any]) -> _Scope:
        spec = self.graph.table(entity.table)
        what = self._what(entity, row)
        if spec.scope != "owned":
            raise CleanRefused(
                f"{what} is {spec.scope} configuration: on the source it is removed only together with a "
                "root it was exported with, when nothing else uses it",
                hint="clean that customer, reseller or vendor from the source, or this row from the target",
            )
        found = self._exported_root(spec, row)
        if found is None:
            raise CleanRefused(
                f"{what} was never exported from this source (no finished export of it, or of a root it belongs to)",
                hint=NOT_A_CLEANER,
            )
        rspec, rrow, bundles = found
        rpk = tuple(rrow[c] for c in rspec.pk)
        root_what = (
            what if rspec is spec and rrow is row else f"{rspec.name} {self._labels(rspec.name, [rpk])[rpk]}"
        )
        self._check_exported(rspec, rrow, root_what, bundles)
        return self._source_scope(what, bundles, {spec.name: [row]}, (rspec.name, rpk))

    def _exported_root(
        self, spec: TableSpec, row: dict[str, Any]
    ) -> tuple[TableSpec, dict[str, Any], dict[str, Any]] | None:
        """The row itself or the nearest row it belongs to (owner references, upward) with a
        finished, marking export, and those exports."""
        current: tuple[TableSpec, dict[str, Any]] | None = (spec, row)
        seen: set[tuple[str, PK]] = set()
        while current is not None:
            cspec, crow = current
            pk = tuple(crow[c] for c in cspec.pk)
            if (cspec.name, pk) in seen:
                return None
            seen.add((cspec.name, pk))
            bundles = self._transfer_exports(cspec.name, pk)
            if bundles:
                return cspec, crow, bundles
            current = self._owner_of(cspec, crow)
        return None

    def _owner_of(self, spec: TableSpec, row: dict[str, Any]) -> tuple[TableSpec, dict[str, Any]] | None:
        for ref in spec.owner_refs:
            value = row.get(ref.column)
            if value is None:
                continue
            parent = self.graph.table(ref.table)
            t = table_clause(parent)
            found = self.conn.execute(sa.select(t).where(t.c[ref.target_column] == value)).mappings().first()
            if found is not None:
                return parent, dict(found)
        return None

    # -- usage rows: selected by SQL, never held in memory -----------------------------------

    def _transferred(self, spec: TableSpec, bundles: frozenset[str]) -> sa.ColumnElement[bool]:
        """Usage rows of ``spec`` that ``bundles`` transferred: by the ledger, or by export windows."""
        t = table_clause(spec)
        if self.side == "target":
            ledger = tracking.ledger_table
            if len(spec.pk) != 1:
                raise BundlerError(
                    f"usage table {spec.name} has a composite key; clean needs a single-column one"
                )
            return (
                sa.exists()
                .where(
                    ledger.c.bundle_id.in_(sorted(bundles)),
                    ledger.c.table_name == spec.name,
                    ledger.c.action == "created",
                    ledger.c.target_pk == sa.cast(t.c[spec.pk[0]], sa.String),
                )
                .correlate_except(ledger)
            )
        assert spec.time_column is not None
        clauses: list[sa.ColumnElement[bool]] = []
        for bundle_id in sorted(bundles):
            mode, start, end = self.windows[bundle_id]
            if mode == "none":
                continue
            bounds: list[sa.ColumnElement[bool]] = []
            if start is not None:
                bounds.append(t.c[spec.time_column] >= start)
            if end is not None:
                bounds.append(t.c[spec.time_column] < end)
            clauses.append(sa.and_(sa.true(), *bounds))
        return sa.or_(*clauses) if clauses else sa.false()

    def _usage_distinct(
        self, spec: TableSpec, column: str, owners: dict[Reference, set[Any]], bundles: frozenset[str]
    ) -> set[Any]:
        t = table_clause(spec)
        found: set[Any] = set()
        for ref, values in owners.items():
            for part in chunks(sorted_values(values)):
                stmt = (
                    sa.select(t.c[column])
                    .distinct()
                    .where(
                        t.c[ref.column].in_(part), t.c[column].is_not(None), self._transferred(spec, bundles)
                    )
                )
                found.update(self.conn.execute(stmt).scalars())
        return found

    def _build_parts(self) -> None:
        for spec in self.graph.in_scope("usage"):
            for ref in spec.owner_refs:
                owners: dict[Any, set[str]] = defaultdict(set)
                for scope in self.scopes:
                    for value in scope.closure.usage_owners.get(spec.name, {}).get(ref, ()):
                        owners[value] |= scope.bundles
                groups: dict[frozenset[str], set[Any]] = defaultdict(set)
                for value, covering in owners.items():
                    groups[frozenset(covering)].add(value)
                for group, values in sorted(groups.items(), key=lambda g: sorted(g[0])):
                    self.parts[spec.name].append(_UsagePart(spec.name, ref, frozenset(values), group))

    def _kept_values(self, table: str, column: str) -> set[Any]:
        rows = self.rows.get(table, {})
        return {rows[pk][column] for pk in self.kept.get(table, {}) if pk in rows}

    def _usage_slices(
        self, table: str, only: dict[str, set[Any]] | None = None
    ) -> Iterator[tuple[sa.ColumnElement[bool], _UsagePart]]:
        """Disjoint owner clauses (one chunk of owner values each) over the usage rows of ``table``."""
        t = table_clause(self.graph.tables[table])
        for part in self.parts.get(table, []):
            values = set(part.values) - self._kept_values(part.ref.table, part.ref.target_column)
            if only is not None and part.ref.column in only:
                values &= only[part.ref.column]
            for chunk in chunks(sorted_values(values)):
                yield t.c[part.ref.column].in_(chunk), part

    def _usage_clauses(
        self, table: str, only: dict[str, set[Any]] | None = None
    ) -> Iterator[sa.ColumnElement[bool]]:
        """Disjoint clauses that together select the usage rows of ``table`` in the set."""
        spec = self.graph.tables[table]
        for owners, part in self._usage_slices(table, only):
            yield sa.and_(owners, self._transferred(spec, part.bundles))

    def _usage_count(self, table: str) -> int:
        t = table_clause(self.graph.tables[table])
        return sum(
            int(self.conn.execute(sa.select(sa.func.count()).select_from(t).where(clause)).scalar_one())
            for clause in self._usage_clauses(table)
        )

    # -- the set, and what holds it -------------------------------------------------------------

    def merge(self) -> None:
        for scope in self.scopes:
            for table, rows in scope.closure.rows.items():
                for pk, row in rows.items():
                    self.rows[table].setdefault(pk, row)
                    if scope.is_candidate(table, pk):
                        self.cand[table].add(pk)
        self._build_parts()

    def inside(self, table: str) -> list[PK]:
        kept = self.kept.get(table, {})
        return [pk for pk in self.cand.get(table, ()) if pk not in kept]

    def _by(self, table: str, column: str) -> dict[Any, list[PK]]:
        """Candidate rows of ``table`` by their value of ``column``."""
        key = (table, column)
        if key not in self._index:
            index: dict[Any, list[PK]] = defaultdict(list)
            rows = self.rows[table]
            for pk in self.cand.get(table, ()):
                value = rows[pk].get(column)
                if value is not None:
                    index[value].append(pk)
            self._index[key] = index
        return self._index[key]

    def _total(self, table: str, column: str, values: set[Any]) -> dict[Any, int]:
        """How many rows of ``table`` have ``column`` = each value (the database, all rows)."""
        known = self._totals[(table, column)]
        missing = [v for v in values if v not in known]
        if missing:
            t = table_clause(self.graph.tables[table])
            for part in chunks(sorted_values(missing)):
                for value, n in self.conn.execute(
                    sa.select(t.c[column], sa.func.count()).where(t.c[column].in_(part)).group_by(t.c[column])
                ):
                    known[value] = int(n)
            for v in missing:
                known.setdefault(v, 0)
        return known

    def _inside_counts(self, table: str, column: str, values: set[Any]) -> Counter[Any]:
        """How many rows of the set (``table``) have ``column`` = each value."""
        spec = self.graph.tables[table]
        counts: Counter[Any] = Counter()
        if spec.scope != "usage":
            kept = self.kept.get(table, {})
            index = self._by(table, column)
            for v in values:
                counts[v] = sum(1 for pk in index.get(v, ()) if pk not in kept)
            return counts
        t = table_clause(spec)
        for clause in self._usage_clauses(table):
            for part in chunks(sorted_values(values)):
                stmt = (
                    sa.select(t.c[column], sa.func.count())
                    .where(clause, t.c[column].in_(part))
                    .group_by(t.c[column])
                )
                for value, n in self.conn.execute(stmt):
                    counts[value] += int(n)
        return counts

    def keep(self, table: str, pk: PK, why: _Held | _Belongs) -> list[tuple[str, PK]]:
        """Keep a row and, in turn, every row of the set that belongs to it."""
        newly: list[tuple[str, PK]] = []
        queue = [(table, pk, why)]
        while queue:
            t, p, w = queue.pop()
            if p in self.kept[t]:
                self.kept[t][p].append(w)
                continue
            self.kept[t][p] = [w]
            newly.append((t, p))
            row = self.rows[t][p]
            for child, ref in self.graph.owned_children[t]:
                if child.scope == "usage":
                    continue
                for cpk in self._by(child.name, ref.column).get(row.get(ref.target_column), ()):
                    if cpk not in self.kept[child.name]:
                        queue.append((child.name, cpk, _Belongs(t, p)))
        return newly

    def settle(self) -> None:
        """Keep what rows outside the set hold, until nothing changes."""
        while True:
            found: list[tuple[str, PK, _Held]] = []
            for table in list(self.cand):
                members = self.inside(table)
                if not members:
                    continue
                rows = self.rows[table]
                for referrer, ref in self.graph.referencing[table]:
                    by_value: dict[Any, list[PK]] = defaultdict(list)
                    for pk in members:
                        value = rows[pk].get(ref.target_column)
                        if value is not None:
                            by_value[value].append(pk)
                    if not by_value:
                        continue
                    values = set(by_value)
                    total = self._total(referrer.name, ref.column, values)
                    inside = self._inside_counts(referrer.name, ref.column, values)
                    for value, pks in by_value.items():
                        outside = total.get(value, 0) - inside.get(value, 0)
                        if outside > 0:
                            found.extend(
                                (table, pk, _Held(referrer.name, ref.column, value, outside)) for pk in pks
                            )
            if not found:
                return
            for table, pk, why in found:
                self.keep(table, pk, why)

    # -- describing ------------------------------------------------------------------------------

    def _labels(self, table: str, pks: Iterable[PK]) -> dict[PK, str]:
        spec = self.graph.table(table)
        pks = list(pks)
        if len(spec.pk) != 1:
            return {pk: describe({c: key_value(v) for c, v in zip(spec.pk, pk, strict=True)}) for pk in pks}
        keys = natural_keys(self.conn, self.graph, table, spec.pk[0], [pk[0] for pk in pks])
        return {pk: _short(keys[pk[0]]) if pk[0] in keys else f"#{pk[0]}" for pk in pks}

    def _holders(self, why: _Held) -> list[tuple[PK, dict[str, Any]]]:
        """A few rows outside the set that reference the kept value (pk, owner columns)."""
        spec = self.graph.tables[why.table]
        t = table_clause(spec)
        owner_cols = [r.column for r in spec.owner_refs]
        cols = list(dict.fromkeys([*spec.pk, *owner_cols]))
        stmt = sa.select(*(t.c[c] for c in cols)).where(t.c[why.column] == why.value)
        found: list[tuple[PK, dict[str, Any]]] = []
        if spec.scope == "usage":
            only = {why.column: {why.value}}
            clauses = list(self._usage_clauses(why.table, only))
            if clauses:
                stmt = stmt.where(sa.not_(sa.or_(*clauses)))
            for row in self.conn.execute(stmt.limit(3)).mappings():
                found.append((tuple(row[c] for c in spec.pk), dict(row)))
            return found
        inside = set(self.inside(why.table))
        for row in self.conn.execute(stmt.order_by(*(t.c[c] for c in spec.pk))).mappings():
            pk = tuple(row[c] for c in spec.pk)
            if pk not in inside:
                found.append((pk, dict(row)))
                if len(found) == 3:
                    break
        return found

    def _status(self, table: str, pk: PK, row: dict[str, Any]) -> str:
        """Why a row outside the set is outside it, in a few words."""
        if pk in self.kept.get(table, {}):
            return "kept"
        spec = self.graph.tables[table]
        selected = set().union(*(s.bundles for s in self.scopes))
        if spec.scope == "usage":
            t = table_clause(spec)
            for part in self.parts.get(table, []):
                if row.get(part.ref.column) not in part.values:
                    continue
                this = sa.and_(*(t.c[c] == v for c, v in zip(spec.pk, pk, strict=True)))
                stmt = (
                    sa.select(sa.func.count())
                    .select_from(t)
                    .where(this, self._transferred(spec, part.bundles))
                )
                if self.conn.execute(stmt).scalar_one():
                    return "kept"  # transferred, and its owner is kept
                if self.side == "source":
                    return "not exported: outside the exported usage window"
                break
        if self.side == "source":
            found = self._exported_root(spec, row)
            if found is None:
                return "not exported"
            first = sorted(found[2])[0]
            where = "outside what was named" if first in selected else "not selected"
            return f"exported by bundle {first}, {where}"
        ledger = tracking.ledger_table
        records = self.conn.execute(
            sa.select(ledger.c.bundle_id, ledger.c.action).where(
                ledger.c.table_name == table, ledger.c.target_pk == _pk_text(pk)
            )
        ).all()
        created = sorted(b for b, action in records if action == "created")
        if not created:
            return "not transferred"
        where = "outside what was named" if created[0] in selected else "not selected"
        return f"transferred by bundle {created[0]}, {where}"

    def kept_rows(self) -> list[KeptRow]:
        """Every kept row with what holds it; rows held from outside the set (not by kept rows) first."""
        wanted: dict[str, set[PK]] = defaultdict(set)
        examples: dict[_Held, list[tuple[PK, str]]] = {}
        for table, rows in self.kept.items():
            wanted[table] |= set(rows)
            for whys in rows.values():
                for why in whys:
                    if isinstance(why, _Belongs):
                        wanted[why.table].add(why.pk)
                    elif why not in examples:
                        found = self._holders(why)
                        examples[why] = [(pk, self._status(why.table, pk, row)) for pk, row in found]
                        wanted[why.table] |= {pk for pk, _ in found}
        labels = {table: self._labels(table, pks) for table, pks in wanted.items()}
        out: list[tuple[tuple[Any, ...], KeptRow]] = []
        order = {name: i for i, name in enumerate(self.graph.dependency_order)}
        for table, rows in self.kept.items():
            for pk, whys in rows.items():
                held = [w for w in whys if isinstance(w, _Held)]
                reasons: list[str] = []
                for why in held[:2]:
                    shown_rows = examples[why]
                    shown = ", ".join(f"{labels[why.table][hpk]} ({status})" for hpk, status in shown_rows)
                    more = why.count - len(shown_rows)
                    tail = f" and {more} more" if more > 0 else ""
                    reasons.append(f"still referenced by {why.table} {shown or f'({why.count} rows)'}{tail}")
                if not held:
                    parent = next(w for w in whys if isinstance(w, _Belongs))
                    reasons.append(f"belongs to kept {parent.table} {labels[parent.table][parent.pk]}")
                outside = any(status != "kept" for why in held for _, status in examples[why])
                row = KeptRow(table, _pk_json(pk), labels[table][pk], "; ".join(reasons), outside)
                rank = (
                    (table, pk) not in self.named,
                    not outside,
                    self.graph.tables[table].scope != "owned",
                    order[table],
                    str(pk),
                )
                out.append((rank, row))
        return [row for _, row in sorted(out, key=lambda item: item[0])]

    # -- counts and bookkeeping ---------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in reversed(self.graph.dependency_order):
            spec = self.graph.tables[name]
            n = self._usage_count(name) if spec.scope == "usage" else len(self.inside(name))
            if n:
                out[name] = n
        return out

    def unlinks(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, ref in self._unlink_refs():
            n = sum(1 for pk in self.inside(name) if self.rows[name][pk].get(ref.column) is not None)
            if n:
                out[f"{name}.{ref.column}"] = n
        return out

    def _unlink_refs(self) -> Iterator[tuple[str, Reference]]:
        for name in self.graph.dependency_order:
            spec = self.graph.tables[name]
            if spec.scope == "usage":
                continue
            for ref in spec.references:
                if ref.nullable and (ref.table == name or (name, ref.column) in self.graph.deferred):
                    yield name, ref

    def closes(self, counts: dict[str, int]) -> tuple[list[str], dict[str, int]]:
        """Target: loads all of whose created rows go, and those that keep some. Source: exports closed."""
        if self.side == "source":
            done: set[str] = set()
            for scope in self.scopes:
                if scope.root is not None and scope.root[1] in self.inside(scope.root[0]):
                    done |= scope.bundles
            return sorted(done), {}
        ledger = tracking.ledger_table
        bundles = sorted(set().union(*(s.bundles for s in self.scopes)))
        remaining: Counter[str] = Counter()
        for bundle_id, n in self.conn.execute(
            sa.select(ledger.c.bundle_id, sa.func.count())
            .where(ledger.c.bundle_id.in_(bundles), ledger.c.action == "created")
            .group_by(ledger.c.bundle_id)
        ):
            remaining[bundle_id] += int(n)
        for table in self.cand:
            for pk in self.inside(table):
                bundle_id = self.created_by[table].get(_pk_text(pk))
                if bundle_id is not None:
                    remaining[bundle_id] -= 1
        mine = ledger.alias("mine")
        for spec in self.graph.in_scope("usage"):
            if spec.name not in counts:
                continue
            t = table_clause(spec)
            for clause in self._usage_clauses(spec.name):
                stmt = (
                    sa.select(mine.c.bundle_id, sa.func.count())
                    .select_from(t.join(mine, mine.c.target_pk == sa.cast(t.c[spec.pk[0]], sa.String)))
                    .where(clause, mine.c.table_name == spec.name, mine.c.action == "created")
                    .where(mine.c.bundle_id.in_(bundles))
                    .group_by(mine.c.bundle_id)
                )
                for bundle_id, n in self.conn.execute(stmt):
                    remaining[bundle_id] -= int(n)
        forget = [b for b in bundles if remaining[b] <= 0]
        partly = {b: remaining[b] for b in bundles if remaining[b] > 0}
        return forget, partly

    # -- carrying it out -------------------------------------------------------------------------

    def execute(self, plan: CleanPlan, progress: Progress) -> tuple[dict[str, int], int, list[str]]:
        task = "clean"
        progress.start(task, total=plan.rows)
        for name, ref in self._unlink_refs():
            spec = self.graph.tables[name]
            t = table_clause(spec)
            pks = [pk[0] for pk in self.inside(name) if self.rows[name][pk].get(ref.column) is not None]
            for part in chunks(sorted_values(pks)):
                self.conn.execute(sa.update(t).where(t.c[spec.pk[0]].in_(part)).values({ref.column: None}))
        deleted: dict[str, int] = {}
        bookkeeping = 0
        for name, planned in plan.tables.items():
            spec = self.graph.tables[name]
            if spec.scope == "usage":
                n, b = self._delete_usage(spec)
            else:
                n, b = self._delete_rows(spec)
            bookkeeping += b
            if n != planned:
                raise BundlerError(
                    f"{spec.name}: {n} row(s) deleted where the plan had {planned}: the database changed while "
                    "cleaning; nothing was removed",
                    hint="run the clean again",
                )
            deleted[name] = n
            progress.advance(task, n)
        bookkeeping += self._close(plan)
        progress.finish(task)
        return deleted, bookkeeping, list(plan.closes)

    def _delete_rows(self, spec: TableSpec) -> tuple[int, int]:
        t = table_clause(spec)
        pks = self.inside(spec.name)
        n = 0
        size = 2_000 if len(spec.pk) == 1 else 500
        for part in chunks(sorted(pks, key=str), size):
            if len(spec.pk) == 1:
                where = t.c[spec.pk[0]].in_([p[0] for p in part])
            else:
                where = sa.tuple_(*(t.c[c] for c in spec.pk)).in_(part)
            n += self.conn.execute(sa.delete(t).where(where)).rowcount
        texts = [_pk_text(pk) for pk in pks]
        return n, self._forget_rows(spec.name, texts)

    def _forget_rows(self, table: str, texts: list[str]) -> int:
        """Bookkeeping rows that name removed rows: every ledger row (created, or reused by any
        load) on the target; every export mark on the source."""
        if self.side == "source" and self.graph.tables[table].status is None:
            return 0  # only rows with a status are marked
        book = tracking.ledger_table if self.side == "target" else tracking.export_marks_table
        column = book.c.target_pk if self.side == "target" else book.c.row_pk
        return sum(
            self.conn.execute(sa.delete(book).where(book.c.table_name == table, column.in_(part))).rowcount
            for part in chunks(sorted(texts))
        )

    def _delete_usage(self, spec: TableSpec) -> tuple[int, int]:
        t = table_clause(spec)
        n = sum(
            self.conn.execute(sa.delete(t).where(clause)).rowcount
            for clause in list(self._usage_clauses(spec.name))
        )
        if self.side == "source" or not n:
            return n, 0
        # then the ledger rows of the selected loads whose usage row is gone (the subquery reads the
        # usage table, not the ledger: MariaDB refuses a DELETE that reads its own table)
        ledger = tracking.ledger_table
        pk = t.c[spec.pk[0]]
        target = (
            sa.cast(ledger.c.target_pk, sa.BigInteger)
            if spec.column_map[spec.pk[0]].type.startswith("int")
            else ledger.c.target_pk
        )
        bundles = sorted(set().union(*(p.bundles for p in self.parts.get(spec.name, []))))
        b = self.conn.execute(
            sa.delete(ledger).where(
                ledger.c.bundle_id.in_(bundles),
                ledger.c.action == "created",
                ledger.c.table_name == spec.name,
                ~sa.exists().where(pk == target),
            )
        ).rowcount
        return n, b

    def _close(self, plan: CleanPlan) -> int:
        n = 0
        if self.side == "target":
            ledger, loads = tracking.ledger_table, tracking.loads_table
            for bundle_id in plan.closes:
                left = self.conn.execute(
                    sa.select(sa.func.count()).where(
                        ledger.c.bundle_id == bundle_id, ledger.c.action == "created"
                    )
                ).scalar_one()
                if left:
                    raise BundlerError(
                        f"bundle {bundle_id}: {left} created row(s) are still in its ledger after the clean; "
                        "nothing was removed",
                        hint="run the clean again; if it repeats, report it with --debug",
                    )
                n += self.conn.execute(sa.delete(ledger).where(ledger.c.bundle_id == bundle_id)).rowcount
                n += self.conn.execute(sa.delete(loads).where(loads.c.bundle_id == bundle_id)).rowcount
            return n
        exports = tracking.exports_table
        for bundle_id in plan.closes:
            n += self.conn.execute(
                sa.update(exports)
                .where(exports.c.bundle_id == bundle_id)
                .values(
                    status="cleaned",
                    message=f"removed from the source by bundler clean on {tracking.now():%Y-%m-%d %H:%M:%S}",
                )
            ).rowcount
        return n


# -- entry points ----------------------------------------------------------------------------


def _plan_on(connection: sa.Connection, request: CleanRequest) -> tuple[CleanPlan, _Planner]:
    side, reason = _side(connection, request)
    tracking.ensure_tables(connection)
    graph = _graph(connection, request.spec)
    planner = _Planner(connection, graph, side)
    planner.resolve(request)
    planner.merge()
    planner.settle()
    counts = planner.counts()
    closes, partly = planner.closes(counts)
    plan = CleanPlan(
        request=request,
        side=side,
        side_reason=reason,
        database=connection.engine.url.render_as_string(hide_password=True),
        release=graph.release,
        selected=[Selected(s.what, tuple(sorted(s.bundles))) for s in planner.scopes],
        tables=counts,
        unlink=planner.unlinks(),
        kept=planner.kept_rows(),
        closes=closes,
        partly=partly,
    )
    return plan, planner


def plan_clean(
    engine: sa.Engine,
    *,
    entities: Iterable[tuple[str, str]] = (),
    bundles: Iterable[str] = (),
    side: str | None = None,
    spec: str | Path | None = None,
) -> CleanPlan:
    """What cleaning the named bundles and entities would remove and keep (writes nothing)."""
    request = CleanRequest(
        tuple((str(k), str(i)) for k, i in entities),
        tuple(str(b) for b in bundles),
        side,
        str(spec) if spec is not None else None,
    )
    with engine.connect() as connection, connection.begin():
        plan, _ = _plan_on(connection, request)
    return plan


def run_clean(engine: sa.Engine, plan: CleanPlan, *, progress: Progress | None = None) -> CleanResult:
    """Carry out ``plan`` in one transaction; refuses when the database changed since it was made."""
    progress = progress or NullProgress()
    started = time.monotonic()
    with engine.connect().execution_options(sqlite_begin="immediate") as connection, connection.begin():
        fresh, planner = _plan_on(connection, plan.request)
        if fresh.signature() != plan.signature():
            raise BundlerError(
                "the database changed since the plan was made (rows to remove or to keep differ); nothing was removed",
                hint="look at the new plan (--dry-run) and run the clean again",
            )
        deleted, bookkeeping, closed = planner.execute(fresh, progress)
    return CleanResult(fresh, deleted, bookkeeping, closed, time.monotonic() - started)


__all__ = [
    "CleanPlan",
    "CleanRefused",
    "CleanRequest",
    "CleanResult",
    "KeptRow",
    "Selected",
    "plan_clean",
    "run_clean",
]
