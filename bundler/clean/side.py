"""The side a clean works on, and what both sides share: resolving what was named into scopes.

:class:`Side` is the part of a clean that differs between the target (by its ledger, in
:mod:`bundler.clean.target`) and the source (by its export records, in
:mod:`bundler.clean.source`): which rows a named bundle or entity covers, which usage rows
were transferred, why a row outside the set is outside it, and the bookkeeping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bundler import tracking
from bundler.clean.model import PK, CleanPlan, CleanRequest, labels, pk_text
from bundler.errors import RootError, UsageError
from bundler.graph import EntitySpec, Graph, Reference, Scope, TableSpec
from bundler.sql import Closure, chunks, lookup_row, sorted_values, table_clause

if TYPE_CHECKING:
    from bundler.clean.plan import CleanSet

SIDES = ("source", "target")
_REVERSE = "reverse"  # the kind of a reverse transfer's records (bundler.reverse.common)


@dataclass
class CleanScope:
    """One named thing: the rows it reaches and the loads or exports that transferred them."""

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
        return self.created is None or pk_text(pk) in self.created.get(table, ())


class Side(ABC):
    """Resolves what was named into scopes, on one connection; a subclass per side."""

    name: str
    # why a usage row whose owner is in the set but that was not transferred is outside it
    # (None: say what its ledger says)
    untransferred_usage: str | None = None

    def __init__(self, connection: sa.Connection, graph: Graph) -> None:
        self.conn = connection
        self.graph = graph
        self.scopes: list[CleanScope] = []
        self.named: set[tuple[str, PK]] = set()  # the rows the operator named, listed first when kept

    # -- resolving what was named ----------------------------------------------------------

    def resolve(self, request: CleanRequest) -> None:
        if not request.entities and not request.bundles:
            raise UsageError(
                "name what to clean: --bundle ID, --customer ID_OR_NAME or --kind KIND --id ID",
                hint="see bundler clean --help",
            )
        for bundle_id in request.bundles:
            self.scopes.append(self.bundle_scope(bundle_id))
        for kind, ident in request.entities:
            entity = _resolve_kind(self.graph, kind)
            row = _find(self.conn, self.graph, entity, ident, self.name)
            spec = self.graph.table(entity.table)
            self.named.add((spec.name, tuple(row[c] for c in spec.pk)))
            self.scopes.append(self.entity_scope(entity, row))

    def selected(self) -> set[str]:
        """Every load or export the named things cover."""
        return set().union(*(s.bundles for s in self.scopes))

    def labels(self, table: str, pks: Iterable[PK]) -> dict[PK, str]:
        return labels(self.conn, self.graph, table, pks)

    def what(self, entity: EntitySpec, row: dict[str, Any]) -> str:
        spec = self.graph.table(entity.table)
        pk = tuple(row[c] for c in spec.pk)
        return (
            f"{entity.kind.replace('_', ' ')} {self.labels(spec.name, [pk])[pk]} ({spec.name} {pk_text(pk)})"
        )

    def usage_shared(self, closure: Closure, bundles: frozenset[str]) -> Iterator[tuple[Reference, set[Any]]]:
        """The shared rows (reference, values) that the transferred usage rows of the closure's
        owners reference."""
        for spec in self.graph.in_scope(Scope.USAGE):
            owners = closure.usage_owners.get(spec.name)
            if not owners:
                continue
            for ref in spec.references:
                if ref.owner or not self.graph.tables[ref.table].is_shared:
                    continue
                yield ref, self._usage_distinct(spec, ref.column, owners, bundles)

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
                        t.c[ref.column].in_(part), t.c[column].is_not(None), self.transferred(spec, bundles)
                    )
                )
                found.update(self.conn.execute(stmt).scalars())
        return found

    # -- what each side says -----------------------------------------------------------------

    @abstractmethod
    def bundle_scope(self, bundle_id: str) -> CleanScope:
        """The rows a named bundle (and the bundles depending on it) transferred."""

    @abstractmethod
    def entity_scope(self, entity: EntitySpec, row: dict[str, Any]) -> CleanScope:
        """The rows transferred with a named entity's row: it and what belongs to it."""

    @abstractmethod
    def transferred(self, spec: TableSpec, bundles: frozenset[str]) -> sa.ColumnElement[bool]:
        """Usage rows of ``spec`` that ``bundles`` transferred."""

    @abstractmethod
    def status(self, spec: TableSpec, pk: PK, row: dict[str, Any]) -> str:
        """Why a row (not a kept one) outside the set is outside it, in a few words."""

    @abstractmethod
    def closes(self, cleanset: CleanSet, counts: dict[str, int]) -> tuple[list[str], dict[str, int]]:
        """The loads or exports the clean closes, and the loads that keep some rows."""

    @abstractmethod
    def forget_rows(self, table: str, texts: list[str]) -> int:
        """Remove the bookkeeping rows that name removed rows (by pk text); how many."""

    @abstractmethod
    def forget_usage(self, spec: TableSpec, bundles: list[str]) -> int:
        """Remove the bookkeeping rows of removed usage rows of ``spec``; how many."""

    @abstractmethod
    def close(self, plan: CleanPlan) -> int:
        """Record the loads or exports the plan closes; how many bookkeeping rows that took."""


# -- which side ------------------------------------------------------------------------------


def choose_side(connection: sa.Connection, request: CleanRequest) -> tuple[str, str]:
    """The side to clean and why: stated, or inferred from a named bundle or the database."""
    if request.side is not None:
        if request.side not in SIDES:
            raise UsageError(f"--side {request.side!r}: choose source or target")
        return request.side, "stated"
    inspector = sa.inspect(connection)
    return _side_of_bundles(connection, request.bundles, inspector) or _side_of_database(
        connection, inspector
    )


def _recorded(connection: sa.Connection, table: sa.Table, bundle_id: str, inspector: Any) -> bool:
    return bool(
        inspector.has_table(table.name)
        and connection.execute(sa.select(table.c.bundle_id).where(table.c.bundle_id == bundle_id)).first()
    )


def _side_of_bundles(
    connection: sa.Connection, bundles: tuple[str, ...], inspector: Any
) -> tuple[str, str] | None:
    for bundle_id in bundles:
        loaded = _recorded(connection, tracking.loads_table, bundle_id, inspector)
        exported = _recorded(connection, tracking.exports_table, bundle_id, inspector)
        if loaded and not exported:
            return "target", f"inferred: bundle {bundle_id} is recorded as a load here"
        if exported and not loaded:
            return "source", f"inferred: bundle {bundle_id} is recorded as an export here"
    return None


def _count(connection: sa.Connection, table: sa.Table, inspector: Any) -> int:
    """How many records ``table`` holds, reverse transfers left out: a reverse export is
    recorded by a target, a reverse load by a source, and neither changes which side it is."""
    if not inspector.has_table(table.name):
        return 0
    stmt = sa.select(sa.func.count()).select_from(table).where(table.c.kind != _REVERSE)
    return int(connection.execute(stmt).scalar_one())


def _side_of_database(connection: sa.Connection, inspector: Any) -> tuple[str, str]:
    n_loads = _count(connection, tracking.loads_table, inspector)
    n_exports = _count(connection, tracking.exports_table, inspector)
    if n_loads and not n_exports:
        return (
            "target",
            f"inferred: this database recorded {n_loads} load(s) and no export",
        )
    if n_exports and not n_loads:
        return (
            "source",
            f"inferred: this database recorded {n_exports} export(s) and no load",
        )
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


# -- what was named --------------------------------------------------------------------------


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
